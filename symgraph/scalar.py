"""The scalar IR: expression DAGs that describe what an elementwise kernel does per element.

Every elementwise tensor op holds one ``SExpr`` DAG over its inputs; a plain ``exp`` is the
one-node DAG ``exp(in0)``, a fused kernel is a larger DAG.  Nodes are hash-consed, so equal
sub-expressions are the same object and a DAG computes each of them once.

Each primitive has a NumPy reference (``PRIMITIVES``) and a derivative rule (``DERIVATIVES``)
written in the same IR, so gradients of fused or SymPy-defined ops come for free.  Code
generators translate the primitives by name.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from .graph.types import as_dtype, is_float, numpy_result

# --- primitive table ---------------------------------------------------------------------

def _sigmoid(x):
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)  # like exp: integers compute in float64
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _softplus(x):
    x = np.asarray(x)
    return np.logaddexp(np.zeros((), x.dtype), x)


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # scipy is optional; math.erf is exact but slow
        erf = np.vectorize(math.erf, otypes=[np.float64])
    x = np.asarray(x)
    return np.asarray(erf(x)).astype(x.dtype if is_float(x.dtype.name) else np.float64)


@dataclass(frozen=True)
class Primitive:
    name: str
    nin: int
    numpy: Callable
    symbol: str | None = None  # infix symbol for printing
    bool_result: bool = False


_P = [
    Primitive("add", 2, np.add, "+"), Primitive("sub", 2, np.subtract, "-"),
    Primitive("mul", 2, np.multiply, "*"), Primitive("truediv", 2, np.true_divide, "/"),
    Primitive("floordiv", 2, np.floor_divide, "//"), Primitive("mod", 2, np.mod, "%"),
    Primitive("pow", 2, np.power, "**"),
    Primitive("maximum", 2, np.maximum), Primitive("minimum", 2, np.minimum),
    Primitive("lt", 2, np.less, "<", True), Primitive("le", 2, np.less_equal, "<=", True),
    Primitive("gt", 2, np.greater, ">", True), Primitive("ge", 2, np.greater_equal, ">=", True),
    Primitive("eq", 2, np.equal, "==", True), Primitive("ne", 2, np.not_equal, "!=", True),
    Primitive("and", 2, np.logical_and, "&", True), Primitive("or", 2, np.logical_or, "|", True),
    Primitive("not", 1, np.logical_not, "~", True),
    Primitive("neg", 1, np.negative, "-"), Primitive("abs", 1, np.abs),
    Primitive("sign", 1, np.sign), Primitive("exp", 1, np.exp), Primitive("log", 1, np.log),
    Primitive("log1p", 1, np.log1p), Primitive("expm1", 1, np.expm1),
    Primitive("sqrt", 1, np.sqrt), Primitive("square", 1, np.square),
    Primitive("tanh", 1, np.tanh), Primitive("sigmoid", 1, _sigmoid),
    Primitive("softplus", 1, _softplus), Primitive("erf", 1, _erf),
    Primitive("sin", 1, np.sin), Primitive("cos", 1, np.cos),
    Primitive("floor", 1, np.floor), Primitive("ceil", 1, np.ceil),
    Primitive("where", 3, np.where),
]
PRIMITIVES: dict[str, Primitive] = {p.name: p for p in _P}

# ops that need a float argument: NumPy computes them in float64 for integer inputs
_FLOAT_ONLY = {"exp", "log", "log1p", "expm1", "sqrt", "tanh", "sigmoid", "softplus", "erf",
               "sin", "cos", "truediv"}


# custom primitives whose dtype rule is that of ``exp`` (float results; small ints -> float32)
_LIKE_EXP = {"sigmoid", "softplus", "erf"}


@cache
def result_dtype(op: str, arg_dtypes: tuple[str, ...]) -> str:
    """The dtype NumPy gives ``op`` applied to arrays of these dtypes (asked of NumPy itself,
    once per signature, so every corner of its type resolution is followed)."""
    prim = PRIMITIVES[op]
    if prim.bool_result:
        return "bool"
    if op == "where":
        return numpy_result(np.result_type(arg_dtypes[1], arg_dtypes[2]))
    fn = np.exp if op in _LIKE_EXP else prim.numpy
    try:
        with np.errstate(all="ignore"):
            out = fn(*[np.ones(1, d) for d in arg_dtypes])
    except TypeError as e:
        raise TypeError(f"{op} is not defined for {' and '.join(arg_dtypes)} tensors "
                        f"(NumPy: {e})") from None
    return numpy_result(out.dtype)  # float16 -> float32 (graph/types.py)


# --- expression nodes --------------------------------------------------------------------

class SExpr:
    """A node of a scalar expression DAG.  Construct with the helpers below, never directly.

    ``op`` is a primitive name or one of ``"input"`` (``value`` = input slot), ``"const"``
    (``value`` = Python number) and ``"cast"``.  Nodes are interned: structurally equal nodes
    are the same object, so ``is`` and ``==`` agree and DAG sharing is automatic.
    """

    __slots__ = ("op", "args", "value", "dtype", "__weakref__", "_key")
    _table: weakref.WeakValueDictionary[tuple, SExpr] = weakref.WeakValueDictionary()

    def __new__(cls, op: str, args: tuple = (), value=None, dtype: str = "float32"):
        # repr keeps 0.0 and -0.0 (and 1 and 1.0) apart
        key = (op, tuple(id(a) for a in args), repr(value), dtype)
        node = cls._table.get(key)
        if node is not None and all(a is b for a, b in zip(node.args, args)):
            return node
        node = object.__new__(cls)
        node.op, node.args, node.value, node.dtype, node._key = op, tuple(args), value, dtype, key
        cls._table[key] = node
        return node

    def __reduce__(self):
        return (SExpr, (self.op, self.args, self.value, self.dtype))

    def __repr__(self) -> str:
        return to_text(self)

    # DAG utilities
    def topo(self) -> list[SExpr]:
        return topo([self])


def topo(roots: Sequence[SExpr]) -> list[SExpr]:
    """Nodes of the DAG reachable from ``roots``, arguments first."""
    order, seen = [], set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((a, False) for a in reversed(node.args) if id(a) not in seen)
    return order


def inp(slot: int, dtype: str) -> SExpr:
    return SExpr("input", (), int(slot), as_dtype(dtype))


def const(value, dtype: str) -> SExpr:
    dtype = as_dtype(dtype)
    if dtype == "bool":
        value = bool(value)
    elif dtype.startswith(("int", "uint")):
        value = int(value)
    else:
        value = float(value)
    return SExpr("const", (), value, dtype)


def cast(x: SExpr, dtype: str) -> SExpr:
    dtype = as_dtype(dtype)
    if x.dtype == dtype:
        return x
    if x.op == "const":
        return const(x.value, dtype)
    return SExpr("cast", (x,), None, dtype)


def apply(op: str, *args: SExpr) -> SExpr:
    """Build ``op(*args)`` with NumPy's dtype rule for the result."""
    prim = PRIMITIVES[op]
    if len(args) != prim.nin:
        raise TypeError(f"{op} takes {prim.nin} arguments, got {len(args)}")
    dtype = result_dtype(op, tuple(a.dtype for a in args))
    return SExpr(op, tuple(args), None, dtype)


def is_const(x: SExpr, value=None) -> bool:
    return x.op == "const" and (value is None or x.value == value)


def inputs_of(root: SExpr | Sequence[SExpr]) -> list[int]:
    roots = [root] if isinstance(root, SExpr) else list(root)
    return sorted({n.value for n in topo(roots) if n.op == "input"})


def substitute(roots: Sequence[SExpr], mapping: dict[int, SExpr]) -> list[SExpr]:
    """Replace ``input`` slots by expressions (used by fusion and by derivative building)."""
    memo: dict[int, SExpr] = {}
    for node in topo(roots):
        if node.op == "input":
            new = mapping.get(node.value, node)
            if new.dtype != node.dtype:
                new = cast(new, node.dtype)
        elif node.op == "const":
            new = node
        elif node.op == "cast":
            new = cast(memo[id(node.args[0])], node.dtype)
        else:
            new = SExpr(node.op, tuple(memo[id(a)] for a in node.args), node.value, node.dtype)
        memo[id(node)] = new
    return [memo[id(r)] for r in roots]


def evaluate(roots: Sequence[SExpr], inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Evaluate the DAG with NumPy (the reference semantics)."""
    values: dict[int, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for node in topo(roots):
            if node.op == "input":
                val = np.asarray(inputs[node.value])
                if val.dtype.name != node.dtype:
                    val = val.astype(node.dtype)
            elif node.op == "const":
                val = np.array(node.value, dtype=node.dtype)
            elif node.op == "cast":
                val = np.asarray(values[id(node.args[0])]).astype(node.dtype)
            else:
                args = [values[id(a)] for a in node.args]
                val = np.asarray(PRIMITIVES[node.op].numpy(*args))
                if val.dtype == np.float16:  # NumPy's float for small ints: symgraph's is float32
                    val = np.asarray(PRIMITIVES[node.op].numpy(*[a.astype(node.dtype) for a in args]))
                if val.dtype.name != node.dtype:
                    val = val.astype(node.dtype)
            values[id(node)] = val
    return [values[id(r)] for r in roots]


def to_text(root: SExpr, names: Sequence[str] | None = None) -> str:
    """Readable infix form, e.g. ``tanh((in0 * 2.0) + in1)``.

    A sub-expression used more than once is written once, as ``t0``, and defined after the
    formula (``(t0 * t0) where t0 = exp(in0)``), so the text grows linearly with the DAG
    instead of exponentially with its depth of sharing.
    """
    order = topo([root])
    uses: dict[int, int] = {}
    for node in order:
        for a in node.args:
            uses[id(a)] = uses.get(id(a), 0) + 1
    cache: dict[int, str] = {}
    bindings: list[str] = []
    for node in order:
        if node.op == "input":
            s = names[node.value] if names else f"in{node.value}"
        elif node.op == "const":
            s = repr(node.value)
        elif node.op == "cast":
            s = f"{node.dtype}({cache[id(node.args[0])]})"
        else:
            prim = PRIMITIVES[node.op]
            args = [cache[id(a)] for a in node.args]
            if prim.symbol and prim.nin == 2:
                s = f"({args[0]} {prim.symbol} {args[1]})"
            elif prim.symbol and prim.nin == 1:
                s = f"{prim.symbol}{args[0]}"
            else:
                s = f"{node.op}({', '.join(args)})"
        if uses.get(id(node), 0) > 1 and node.op not in ("input", "const") and node is not root:
            name = f"t{len(bindings)}"
            bindings.append(f"{name} = {s}")
            s = name
        cache[id(node)] = s
    text = cache[id(root)]
    return f"{text} where {', '.join(bindings)}" if bindings else text


def count_ops(roots: Sequence[SExpr]) -> int:
    return sum(1 for n in topo(roots) if n.op not in ("input", "const"))


# --- derivative rules --------------------------------------------------------------------
# rule(args, out, g) -> adjoint of each argument (None where there is none).
# ``out`` is the node's own value, ``g`` the incoming adjoint; both are SExprs.
# A rule that routes ``g`` to one side of a selection returns ``Masked(cond, g)``: the adjoint
# is ``g`` where ``cond`` holds and exactly 0 elsewhere.  ``adjoints`` carries the mask down to
# the inputs and applies it there, as a select, so the derivative of the discarded side (e.g.
# ``exp(x)`` of elu at x = 1000, inf) never meets the zero as ``0 * inf = NaN``.


@dataclass(frozen=True)
class Masked:
    """An adjoint that is ``value`` where the bool ``cond`` holds and 0 elsewhere."""

    cond: SExpr
    value: SExpr


def _c(value, like: SExpr) -> SExpr:
    return const(value, like.dtype)


def _a(op, *args):
    return apply(op, *args)


def _mul(a, b):
    return _a("mul", a, b)


def _not(c: SExpr) -> SExpr:
    return c.args[0] if c.op == "not" else _a("not", c)


def _selects(cond: SExpr, g: SExpr) -> tuple[Masked, Masked]:
    """``g`` routed to the first argument where ``cond`` holds, to the second elsewhere."""
    return Masked(cond, g), Masked(_not(cond), g)


def _pow_base(a, out, g):
    """d/dx x**p = p * x**(p - 1), and 0 where p == 0 (also at x == 0, as in PyTorch)."""
    x, p = a
    d = _mul(g, _mul(p, _a("pow", x, _a("sub", p, _c(1, p)))))
    if is_const(p):  # x ** 2, x ** 0.5: no mask to test at run time
        return d if p.value != 0 else _c(0, d)
    return Masked(_a("ne", p, _c(0, p)), d)


def _pow_exponent(a, out, g):
    """d/dp x**p = x**p * log(x), in the result's dtype (a float32 base with a float64
    exponent takes the log in float64); 0 at x == 0 with p >= 0, as in PyTorch."""
    x, p = a
    xr = cast(x, out.dtype)
    at_zero = _a("and", _a("eq", xr, _c(0, xr)), _a("ge", p, _c(0, p)))
    return Masked(_not(at_zero), _mul(g, _mul(out, _a("log", xr))))


DERIVATIVES: dict[str, Callable] = {
    "add": lambda a, out, g: (g, g),
    "sub": lambda a, out, g: (g, _a("neg", g)),
    "mul": lambda a, out, g: (_mul(g, a[1]), _mul(g, a[0])),
    "truediv": lambda a, out, g: (_a("truediv", g, a[1]),
                                  _a("neg", _a("truediv", _mul(g, out), a[1]))),
    "neg": lambda a, out, g: (_a("neg", g),),
    "exp": lambda a, out, g: (_mul(g, out),),
    # exp(x), not expm1(x) + 1, which is 0 instead of tiny for x < -17 (float32)
    "expm1": lambda a, out, g: (_mul(g, _a("exp", a[0])),),
    "log": lambda a, out, g: (_a("truediv", g, a[0]),),
    "log1p": lambda a, out, g: (_a("truediv", g, _a("add", a[0], _c(1, a[0]))),),
    "sqrt": lambda a, out, g: (_a("truediv", g, _mul(_c(2, out), out)),),
    "square": lambda a, out, g: (_mul(g, _mul(_c(2, a[0]), a[0])),),
    "tanh": lambda a, out, g: (_mul(g, _a("sub", _c(1, out), _mul(out, out))),),
    "sigmoid": lambda a, out, g: (_mul(g, _mul(out, _a("sub", _c(1, out), out))),),
    "softplus": lambda a, out, g: (_mul(g, _a("sigmoid", a[0])),),
    "erf": lambda a, out, g: (_mul(g, _mul(_c(2 / math.sqrt(math.pi), a[0]),
                                           _a("exp", _a("neg", _mul(a[0], a[0]))))),),
    "sin": lambda a, out, g: (_mul(g, _a("cos", a[0])),),
    "cos": lambda a, out, g: (_a("neg", _mul(g, _a("sin", a[0]))),),
    "abs": lambda a, out, g: (_mul(g, _a("sign", a[0])),),
    # first argument wins ties, so relu(x) = maximum(0, x) has derivative 0 at 0
    "maximum": lambda a, out, g: _selects(_a("ge", a[0], a[1]), g),
    "minimum": lambda a, out, g: _selects(_a("le", a[0], a[1]), g),
    "where": lambda a, out, g: (None, *_selects(a[0], g)),
    "pow": lambda a, out, g: (_pow_base(a, out, g), _pow_exponent(a, out, g)),
    # a % b = a - b * (a // b), with NumPy's rounded quotient
    "mod": lambda a, out, g: (g, _a("neg", _mul(g, _a("floordiv", a[0], a[1])))),
}
# piecewise-constant or boolean results: zero derivative
ZERO_DERIVATIVE = {"sign", "floor", "ceil", "floordiv", "lt", "le", "gt", "ge", "eq", "ne",
                   "and", "or", "not"}

_Adjoint = tuple[SExpr | None, SExpr]  # (mask or None, value): value where mask holds, else 0


def adjoints(root: SExpr, g: SExpr, out_slot: SExpr | None = None,
             mask: SExpr | None = None) -> dict[int, SExpr]:
    """Reverse-mode derivative of ``root`` w.r.t. each input slot, seeded with ``g``.

    Returns ``{slot: adjoint expression}`` for float input slots that the result depends on.
    ``out_slot`` (optional) stands for ``root``'s own value, so ``d exp(x)`` can reuse the
    already computed ``exp(x)`` instead of recomputing it.  Selections (``where``, ``maximum``,
    ``minimum``) mask the adjoint of each side; masks are applied as selects, never as a
    multiplication by 0 (see ``Masked``).  ``mask`` (bool) masks the seed itself: the adjoint
    is ``g`` where it holds and 0 elsewhere.
    """
    order = topo([root])
    adj: dict[int, _Adjoint] = {id(root): (mask, g)}
    result: dict[int, SExpr] = {}
    for node in reversed(order):
        entry = adj.get(id(node))
        if entry is None or node.op == "const":
            continue
        mask, gnode = entry
        if node.op == "input":
            if is_float(node.dtype):
                result[node.value] = masked(mask, gnode)
            continue
        if node.op == "cast":
            arg = node.args[0]
            if is_float(arg.dtype):
                _accumulate(adj, arg, mask, cast(gnode, arg.dtype))
            continue
        if node.op in ZERO_DERIVATIVE or not is_float(node.dtype):
            continue
        rule = DERIVATIVES.get(node.op)
        if rule is None:
            raise NotImplementedError(f"no derivative rule for scalar op {node.op!r}")
        out = out_slot if (node is root and out_slot is not None) else node
        for arg, ga in zip(node.args, rule(node.args, out, gnode)):
            if ga is None or not is_float(arg.dtype):
                continue
            m = mask
            if isinstance(ga, Masked):
                m = ga.cond if m is None else apply("and", m, ga.cond)
                ga = ga.value
            _accumulate(adj, arg, m, cast(ga, arg.dtype))
    return result


def masked(mask: SExpr | None, value: SExpr) -> SExpr:
    """``value`` where the bool ``mask`` holds, else 0, as a select (``value`` when no mask)."""
    if mask is None:
        return value
    zero = const(0, value.dtype)
    if mask.op == "not":
        return apply("where", mask.args[0], zero, value)
    return apply("where", mask, value, zero)


def _accumulate(adj: dict[int, _Adjoint], node: SExpr, mask: SExpr | None, value: SExpr) -> None:
    prev = adj.get(id(node))
    if prev is None:
        adj[id(node)] = (mask, value)
    elif prev[0] is mask:
        adj[id(node)] = (mask, apply("add", prev[1], value))
    else:
        adj[id(node)] = (None, apply("add", masked(*prev), masked(mask, value)))
