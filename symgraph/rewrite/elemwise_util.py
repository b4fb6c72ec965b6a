"""Helpers shared by the elementwise rewrites: naming, composing producers into one DAG,
tidying the inputs of an ``Elemwise`` node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..graph.basic import Apply, Constant, Variable
from ..ops.elemwise import (
    Elemwise,
    S,  # the scalar IR module (symgraph.scalar is also a function name)
)

EXPENSIVE = {"exp", "log", "log1p", "expm1", "tanh", "sigmoid", "softplus", "erf", "sin", "cos",
             "pow", "sqrt", "truediv", "floordiv", "mod"}


@dataclass(frozen=True)
class ExprInfo:
    """Facts about an interned DAG, computed once: primitives used (in order), op count."""

    ops: tuple[str, ...]
    n_ops: int


_INFO: dict[S.SExpr, ExprInfo] = {}


def info(expr: S.SExpr) -> ExprInfo:
    hit = _INFO.get(expr)
    if hit is None:
        nodes = S.topo([expr])
        ops = tuple(dict.fromkeys(n.op for n in nodes if n.op in S.PRIMITIVES))
        hit = ExprInfo(ops, sum(1 for n in nodes if n.op not in ("input", "const")))
        if len(_INFO) > 50_000:
            _INFO.clear()
        _INFO[expr] = hit
    return hit


def kernel_name(expr: S.SExpr, fallback: str | None = None) -> str:
    """A stable, readable name: the primitive for one-op DAGs, else ``fused_<ops>``."""
    ops = list(info(expr).ops)
    if len(ops) <= 1 and info(expr).n_ops <= 1:
        return fallback or (ops[0] if ops else ("cast" if expr.op == "cast" else "identity"))
    return "fused_" + "_".join(ops[:4]) + ("_etc" if len(ops) > 4 else "")


def is_cheap(expr: S.SExpr, limit: int = 3) -> bool:
    """Cheap enough to recompute in several kernels rather than store once."""
    i = info(expr)
    return i.n_ops <= limit and not any(op in EXPENSIVE for op in i.ops)


def make_elemwise(expr: S.SExpr, inputs: Sequence[Variable], name: str | None = None) -> Variable:
    """``Elemwise(expr)`` over ``inputs`` (all kept, also unused ones: they carry shape)."""
    return Elemwise(expr, len(inputs), name=name or kernel_name(expr))(*inputs)


def compose(root: Apply, region: Sequence[Apply]) -> tuple[S.SExpr, list[Variable]]:
    """One scalar DAG for ``root`` with the Elemwise nodes of ``region`` inlined.

    ``region`` lists the nodes to inline in topological order (``root`` last or absent);
    returns the DAG and its leaf variables (input slots in order of first use).
    """
    leaves: list[Variable] = []
    slot_of: dict[int, int] = {}
    memo: dict[int, S.SExpr] = {}

    def arg(v: Variable) -> S.SExpr:
        e = memo.get(id(v))
        if e is not None:
            return e
        k = slot_of.get(id(v))
        if k is None:
            k = slot_of[id(v)] = len(leaves)
            leaves.append(v)
        return S.inp(k, v.dtype)

    nodes = [n for n in region if n is not root] + [root]
    for node in nodes:
        mapping = {i: arg(v) for i, v in enumerate(node.inputs)}
        (e,) = S.substitute([node.op.expr], mapping)
        memo[id(node.outputs[0])] = e
    return memo[id(root.outputs[0])], leaves


def tidy(expr: S.SExpr, inputs: Sequence[Variable], out: Variable, shapes
         ) -> tuple[S.SExpr, list[Variable], bool]:
    """Inline size-1 constants, merge repeated inputs, drop unused inputs not needed for shape.

    ``out`` is the variable the result replaces (its shape must be kept); ``shapes`` a
    ``ShapeInfo``.  Returns the new DAG, its inputs and whether anything changed.
    """
    if not any(isinstance(v, Constant) for v in inputs) and \
            len({id(v) for v in inputs}) == len(inputs) and len(used_slots(expr)) == len(inputs):
        return expr, list(inputs), False  # the common case, decided without rebuilding
    changed = False
    mapping: dict[int, S.SExpr] = {}
    keep: list[Variable] = []
    slot_of: dict[int, int] = {}
    max_nd = max((v.ndim for v in inputs if not _small_const(v)), default=-1)
    for i, v in enumerate(inputs):
        if _small_const(v) and v.ndim <= max_nd:
            mapping[i] = S.const(v.value.reshape(()).item(), v.dtype)
            changed = True
            continue
        k = slot_of.get(id(v))
        if k is None:
            k = slot_of[id(v)] = len(keep)
            keep.append(v)
        else:
            changed = True
        mapping[i] = S.inp(k, v.dtype)
    if changed or len(keep) != len(inputs):
        (expr,) = S.substitute([expr], mapping)
    used = used_slots(expr)
    unused = [k for k in range(len(keep)) if k not in used]
    if unused:
        from .shapes import broadcast
        drop: list[int] = []
        for k in unused:
            rest = [shapes.shape(v) for j, v in enumerate(keep) if j != k and j not in drop]
            if rest and broadcast(rest) == shapes.shape(out) and \
                    max(len(r) for r in rest) == out.ndim:
                drop.append(k)
        if drop:
            new_keep = [v for j, v in enumerate(keep) if j not in drop]
            remap = {}
            for j, v in enumerate(keep):
                if j not in drop:
                    remap[j] = S.inp(len(remap), v.dtype)
            (expr,) = S.substitute([expr], remap)
            keep = new_keep
            changed = True
    return expr, keep, changed


_USED: dict[S.SExpr, frozenset] = {}


def used_slots(expr: S.SExpr) -> frozenset:
    """Input slots an expression reads (memoised per interned DAG)."""
    hit = _USED.get(expr)
    if hit is None:
        if len(_USED) > 50_000:
            _USED.clear()
        hit = _USED[expr] = frozenset(S.inputs_of(expr))
    return hit


def _small_const(v: Variable) -> bool:
    return isinstance(v, Constant) and v.value.size == 1
