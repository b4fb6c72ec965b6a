"""Scalar IR (``symgraph.scalar`` DAGs) -> CUDA C statements and expressions.

``render(roots, reads)`` walks the DAG once, arguments first, and emits one ``const T tN = ...;``
local per operation node, so a sub-expression shared inside the DAG is computed once.  Inputs
and constants are inlined.  NumPy's semantics are kept where C differs: arguments are cast to
the result dtype first (C would promote ``int + float`` to float, NumPy to float64), maximum
and minimum propagate NaN, ``//`` and ``%`` follow Python's sign rules, sigmoid and softplus
use their overflow-free forms.  The helpers named ``sg_*`` live in ``kernels/cuda/scalar.cuh``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import CompileError
from ._scalar import S

C_TYPES = {"bool": "bool", "int8": "signed char", "int16": "short", "int32": "int",
           "int64": "long long", "uint8": "unsigned char", "float32": "float", "float64": "double"}

# primitive -> C function for float32 / float64 arguments
_MATH = {"exp": "exp", "log": "log", "log1p": "log1p", "expm1": "expm1", "sqrt": "sqrt",
         "tanh": "tanh", "erf": "erf", "sin": "sin", "cos": "cos", "floor": "floor",
         "ceil": "ceil"}
_HELPERS = {"sigmoid": "sg_sigmoid", "softplus": "sg_softplus", "sign": "sg_sign",
            "maximum": "sg_max", "minimum": "sg_min", "floordiv": "sg_floordiv",
            "mod": "sg_mod", "pow": "sg_pow", "abs": "sg_abs"}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "lt": "<", "le": "<=",
          "gt": ">", "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||"}


def c_type(dtype: str) -> str:
    """The CUDA C type that stores one element of ``dtype``."""
    try:
        return C_TYPES[dtype]
    except KeyError:
        raise CompileError(f"the cuda backend does not support dtype {dtype!r} "
                           f"(supported: {', '.join(C_TYPES)})") from None


def literal(value, dtype: str) -> str:
    """A C literal of ``value`` that has exactly the value NumPy stores for ``dtype``."""
    if dtype == "bool":
        return "true" if value else "false"
    if dtype in ("float32", "float64"):
        v = float(np.asarray(value, dtype=dtype))
        if math.isnan(v):
            return "__int_as_float(0x7fc00000)" if dtype == "float32" else \
                "__longlong_as_double(0x7ff8000000000000LL)"
        if math.isinf(v):
            bits = ("0x7f800000", "0xff800000") if dtype == "float32" else \
                ("0x7ff0000000000000LL", "0xfff0000000000000LL")
            b = bits[v < 0]
            return f"__int_as_float({b})" if dtype == "float32" else f"__longlong_as_double({b})"
        if dtype == "float32":
            text = repr(float(np.float32(v)))  # shortest text that round-trips the float32
            return f"{text}f"
        return repr(v)
    v = int(np.asarray(value, dtype=dtype))
    if dtype == "int64":
        if v == -2 ** 63:
            return "(-9223372036854775807LL - 1)"
        return f"{v}LL"
    if dtype == "int32":
        return str(v) if v != -2 ** 31 else "(-2147483647 - 1)"
    return f"(({c_type(dtype)}){v})"


DIM_PREFIX = "sg_d"  # kernel parameter ``sg_d<i>``: run-time size number i (shape-generic code)


def size_text(x) -> str:
    """A C int64 expression for a size: a literal, or for a run-time size (``symdim.SymInt``)
    its polynomial over the kernel's ``sg_d<i>`` parameters (``//``, ``%``, min and max with
    Python's semantics, as ``symdim.evaluate``)."""
    from .symdim import SymInt, to_expr
    if not isinstance(x, SymInt):
        return literal(int(x), "int64")
    text: dict[int, str] = {}
    root = to_expr(x)
    for n in S.topo([root]):
        a = [text[id(c)] for c in n.args]
        if n.op == "const":
            t = literal(n.value, "int64")
        elif n.op == "dim":
            t = f"{DIM_PREFIX}{n.value}"
        elif n.op in ("add", "sub", "mul"):
            t = f"({a[0]} {_INFIX[n.op]} {a[1]})"
        else:  # floordiv, mod, maximum, minimum
            t = f"{_HELPERS[n.op]}<long long>({a[0]}, {a[1]})"
        text[id(n)] = t
    return text[id(root)]


def _common(a: str, b: str) -> str:
    dt = np.result_type(np.dtype(a), np.dtype(b)).name
    return dt


class Emitter:
    """Collects the statements of one kernel body and hands out fresh local names."""

    def __init__(self, prefix: str = "t"):
        self.lines: list[str] = []
        self.prefix = prefix
        self.count = 0

    def local(self, dtype: str, expr: str) -> str:
        name = f"{self.prefix}{self.count}"
        self.count += 1
        self.lines.append(f"const {c_type(dtype)} {name} = {expr};")
        return name


def _cast(text: str, src: str, dst: str) -> str:
    if src == dst:
        return text
    if dst == "bool":
        return f"({text} != 0)"
    return f"(({c_type(dst)}){text})"


class Leaves:
    """How the kernel-IR leaves and memory reads print (``var``, ``local``, ``load``)."""

    def var(self, name: str) -> str:
        return f"v_{name}"

    def local(self, name: str) -> str:
        return f"l_{name}"

    def load(self, sid: int, index: str) -> str:
        return f"p{sid}[{index}]"


def render(roots: Sequence[S.SExpr], reads: Callable[[int, str], str] | Sequence[str] = (),
           emitter: Emitter | None = None, leaves: Leaves | None = None) -> tuple[list[str], list[str]]:
    """Render ``roots`` into statements; returns ``(lines, result_expressions)``.

    ``reads(slot, dtype)`` (or a list indexed by slot) gives the C expression of an input slot.
    Pass an ``emitter`` to continue numbering in a kernel that renders several DAGs.  The
    kernel IR's extra nodes (``var``, ``local``, ``load``, ``xor``, ``shr``, ``shl``) print
    through ``leaves``.  Loop variables, locals and constants are inlined; every other node
    becomes one ``const`` local, so shared sub-expressions are computed once.
    """
    em = emitter or Emitter()
    lv = leaves or Leaves()
    start = len(em.lines)
    read = (lambda slot, dtype: reads[slot]) if not callable(reads) else reads
    value: dict[int, str] = {}
    wraps: dict[int, bool] = {}
    for node in S.topo(list(roots)):
        args = [value[id(a)] for a in node.args]
        wraps[id(node)] = node.op in _BITOPS or any(wraps[id(a)] for a in node.args) or (
            node.op == "const" and node.dtype == "int64" and not -2 ** 31 <= node.value < 2 ** 31)
        if node.op == "input":
            value[id(node)] = read(node.value, node.dtype)
        elif node.op == "const":
            value[id(node)] = literal(node.value, node.dtype)
        elif node.op == "var":
            value[id(node)] = lv.var(node.value)
        elif node.op == "dim":  # a run-time size: a kernel parameter
            value[id(node)] = f"{DIM_PREFIX}{node.value}"
        elif node.op == "local":
            value[id(node)] = lv.local(node.value)
        elif node.op == "load":
            value[id(node)] = em.local(node.dtype, lv.load(node.value, args[0]))
        elif node.op in _BITOPS:
            value[id(node)] = em.local(node.dtype, _bitop_text(node.op, node.dtype, args))
        elif node.op == "checked":  # kernel_ir.checked: the kernel has the error words
            site, lo, hi, _extremes = node.value
            value[id(node)] = em.local("int64", f"sg_check({args[0]}, {size_text(lo)}, "
                                                f"{size_text(hi)}, {ERROR_WORDS}, {site})")
        elif node.op == "cast":
            arg = node.args[0]
            value[id(node)] = em.local(node.dtype, _cast(args[0], arg.dtype, node.dtype))
        elif wraps[id(node)] and node.op in ("add", "sub", "mul") and node.dtype in _UNSIGNED:
            u = _UNSIGNED[node.dtype]
            a, b = (_cast(x, n.dtype, node.dtype) for x, n in zip(args, node.args))
            text = f"({c_type(node.dtype)})(({u}){a} {_INFIX[node.op]} ({u}){b})"
            value[id(node)] = em.local(node.dtype, text)
        else:
            value[id(node)] = em.local(node.dtype, _op_text(node, args))
    return em.lines[start:], [value[id(r)] for r in roots]


_BITOPS = {"xor": "^", "shr": ">>", "shl": "<<"}
ERROR_WORDS = "sg_err"  # the kernel parameter holding the bound-check error words
# integer arithmetic that must wrap (the random generator) goes through the unsigned type
_UNSIGNED = {"int64": "unsigned long long", "int32": "unsigned int"}


def _bitop_text(op: str, dtype: str, args: list[str]) -> str:
    u = _UNSIGNED.get(dtype, "unsigned long long")
    return f"({c_type(dtype)})(({u}){args[0]} {_BITOPS[op]} ({u}){args[1]})"


def _op_text(node: S.SExpr, args: list[str]) -> str:
    op, out = node.op, node.dtype
    dts = [a.dtype for a in node.args]
    prim = S.PRIMITIVES[op]
    if prim.bool_result and op in ("lt", "le", "gt", "ge", "eq", "ne"):
        ct = _common(dts[0], dts[1])
        a, b = (_cast(x, d, ct) for x, d in zip(args, dts))
        return f"({a} {_INFIX[op]} {b})"
    if op in ("and", "or"):
        a, b = (_cast(x, d, "bool") for x, d in zip(args, dts))
        return f"({a} {_INFIX[op]} {b})"
    if op == "not":
        return f"(!{_cast(args[0], dts[0], 'bool')})"
    if op == "where":
        c = _cast(args[0], dts[0], "bool")
        return f"({c} ? {_cast(args[1], dts[1], out)} : {_cast(args[2], dts[2], out)})"
    # arithmetic: compute in the result dtype (bool results computed in int, then tested)
    work = "int32" if out == "bool" else out
    xs = [_cast(x, d, work) for x, d in zip(args, dts)]
    if op in _INFIX:
        text = f"({xs[0]} {_INFIX[op]} {xs[1]})"
    elif op == "neg":
        text = f"(-{xs[0]})"
    elif op == "square":
        text = f"({xs[0]} * {xs[0]})"
    elif op in _MATH:
        if work in ("float32", "float64"):
            text = f"{_MATH[op]}{'f' if work == 'float32' else ''}({xs[0]})"
        elif op in ("floor", "ceil"):
            text = xs[0]  # integer floor/ceil keep the value
        else:  # pragma: no cover - result_dtype makes these float
            raise CompileError(f"cuda: {op} on {work}")
    elif op in _HELPERS:
        text = f"{_HELPERS[op]}({', '.join(xs)})"
    else:
        raise CompileError(f"the cuda backend cannot render scalar op {op!r}")
    return _cast(text, work, out) if work != out else text

