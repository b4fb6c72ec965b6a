"""Softmax cross-entropy with its gradient -> one ``SoftmaxCrossEntropyWithGrad`` node.

``sg.grad`` of a ``SoftmaxCrossEntropy(z, t)`` builds ``(softmax(z) - onehot(t)) * g`` (labels)
or ``(softmax(z) * sum(t) - t) * g`` (probabilities), ``g`` being the upstream gradient of the
per-row losses broadcast along the class axis.  Computed apart, the forward, the softmax and
the gradient read the logits three times and compute ``exp`` twice; the fused op does both
in one pass per row.

The match is exact: the softmax is of the same logits over the last axis, the one-hot of
the same labels (or the same probability rows and their row sum), and ``g`` is constant along
the class axis.  ``g`` usually depends on the forward's output through its shape only
(``mean`` divides by the row count, ``fill`` takes the shape of the losses); those uses are
rebuilt without it.  When ``g`` depends on the loss values (e.g. ``sum(ce ** 2)``), nothing
fires.  A forward with no gradient of this form stays a plain ``SoftmaxCrossEntropy``.
"""

from __future__ import annotations

import numpy as np

from ..graph.basic import Apply, Constant, Variable
from ..graph.fgraph import toposort
from ..ops.elemwise import (
    Elemwise,
    S,  # the scalar IR module (symgraph.scalar is also a function name)
)
from ..ops.fused import SoftmaxCrossEntropyWithGrad
from ..ops.indexing import getitem
from ..ops.nn import ARange, Softmax, SoftmaxCrossEntropy
from ..ops.reduce import Reduce
from ..ops.shape import DimShuffle, Shape, broadcast_to, shape
from .elemwise_util import compose, make_elemwise, used_slots
from .engine import RewriteContext, global_pass
from .stabilize import local_toposort

_DEPTH = 4  # levels of Elemwise producers composed into the candidate gradient's DAG


@global_pass("specialize", name="softmax_ce_grad")
def softmax_ce_grad(ctx: RewriteContext) -> None:
    """Fuse every SoftmaxCrossEntropy whose logits gradient is in the graph."""
    for node in [n for n in ctx.toposort() if isinstance(n.op, SoftmaxCrossEntropy)]:
        if node in ctx.fgraph.nodes:
            _fuse(node, ctx)


def _fuse(ce: Apply, ctx: RewriteContext) -> None:
    z, t = ce.inputs
    for p_node in _softmaxes(z, ctx):
        for root in _candidate_roots(p_node.outputs[0], ctx):
            found = _match(root, p_node.outputs[0], ce, ctx)
            if found is None:
                continue
            g = _detach(found, ce, ctx)
            if g is None:
                continue
            loss, dz = SoftmaxCrossEntropyWithGrad(ce.op.sparse)(z, t, g)
            if ctx.commit(root, [dz], "softmax_ce_grad") is None:
                continue
            ctx.commit(ce, [loss], "softmax_ce_grad")
            # its errors (labels out of range) are about the forward: name the user's
            # cross_entropy line, not the line that took the gradient
            loss.owner.trace = ce.trace
            return


def _softmaxes(z: Variable, ctx: RewriteContext) -> list[Apply]:
    return [c for c, _ in ctx.clients(z) if c != "output" and isinstance(c.op, Softmax)
            and c.op.axis % z.ndim == z.ndim - 1]


def _candidate_roots(p: Variable, ctx: RewriteContext) -> list[Apply]:
    """Elemwise nodes up to three levels below the softmax (nearest first)."""
    found: list[Apply] = []
    frontier = [p]
    for _ in range(3):
        nxt = []
        for v in frontier:
            for c, _ in ctx.clients(v):
                if c != "output" and isinstance(c.op, Elemwise) and c not in found:
                    found.append(c)
                    nxt.append(c.outputs[0])
        frontier = nxt
    return found


def _region(root: Apply, stop: Variable) -> list[Apply]:
    """Elemwise producers of ``root`` (up to ``_DEPTH`` levels, not past ``stop``), producers first."""
    seen: dict[int, Apply] = {}
    frontier = [root]
    for _ in range(_DEPTH):
        nxt = []
        for n in frontier:
            for v in n.inputs:
                o = v.owner
                if v is stop or o is None or not isinstance(o.op, Elemwise) or id(o) in seen:
                    continue
                seen[id(o)] = o
                nxt.append(o)
        frontier = nxt
    return local_toposort(list(seen.values()))


def _match(root: Apply, p: Variable, ce: Apply, ctx: RewriteContext):
    """``(g_expr, g_leaves)`` when ``root`` computes ``core(p, t) * g``, else None."""
    out = root.outputs[0]
    z = ce.inputs[0]
    if out.dtype != z.dtype:
        return None
    expr, leaves = compose(root, _region(root, p))
    if expr.op != "mul":
        return None
    for core, gexpr in (expr.args, expr.args[::-1]):
        if _is_core(core, leaves, p, ce, ctx) and _row_constant(gexpr, leaves, z, ctx):
            return gexpr, leaves
    return None


def _leaf(e: S.SExpr, leaves: list[Variable]) -> Variable | None:
    return leaves[e.value] if e.op == "input" else None


def _is_core(e: S.SExpr, leaves, p: Variable, ce: Apply, ctx: RewriteContext) -> bool:
    """``p - onehot(t)`` (labels) or ``p * sum(t, -1, keepdims) - t`` (probabilities)."""
    z, t = ce.inputs
    if e.op != "sub":
        return False
    a, b = e.args
    if not ce.op.sparse:
        if _leaf(b, leaves) is not t or a.op != "mul":
            return False
        for x, y in (a.args, a.args[::-1]):
            total = _leaf(y, leaves)
            if _leaf(x, leaves) is p and total is not None and _is_row_sum(total, t):
                return True
        return False
    if _leaf(a, leaves) is not p or b.op != "cast" or b.dtype != z.dtype:
        return False
    eq = b.args[0]
    if eq.op != "eq":
        return False
    for lab, cls in (eq.args, eq.args[::-1]):
        if _is_expanded(_leaf(lab, leaves), t) and _is_class_range(cls, leaves, z):
            return True
    return False


def _is_row_sum(v: Variable, t: Variable) -> bool:
    o = v.owner
    return (o is not None and isinstance(o.op, Reduce) and o.op.kind == "sum" and o.inputs[0] is t
            and tuple(o.op.axes) == (t.ndim - 1,) and o.op.keepdims)


def _is_expanded(v: Variable | None, t: Variable) -> bool:
    """``v`` is ``t[..., None]``."""
    if v is None or v.owner is None or not isinstance(v.owner.op, DimShuffle):
        return False
    return v.owner.inputs[0] is t and v.owner.op.order == tuple(range(t.ndim)) + ("x",)


def _is_class_range(e: S.SExpr, leaves, z: Variable) -> bool:
    """``e`` is ``0, 1, ..., n-1`` along the last axis (``n`` = the class count)."""
    n = z.type.shape[-1]
    if e.op == "const":  # arange(1) inlined as a scalar
        return n == 1 and e.value == 0
    v = _leaf(e, leaves)
    if isinstance(v, Constant):
        return (v.ndim == 1 and n is not None and v.value.shape == (n,)
                and np.array_equal(v.value, np.arange(n)))
    if v is not None and v.owner is not None and isinstance(v.owner.op, ARange):
        count = v.owner.inputs[0]  # shape(z)[-1]
        o = count.owner
        return (o is not None and o.inputs[0].owner is not None
                and isinstance(o.inputs[0].owner.op, Shape) and o.inputs[0].owner.inputs[0] is z
                and getattr(o.op, "spec", None) is not None and _is_last(o.op.spec, z.ndim))
    return False


def _is_last(spec, ndim: int) -> bool:
    return len(spec) == 1 and spec[0][0] == "i" and spec[0][1] in (-1, ndim - 1)


def _row_constant(e: S.SExpr, leaves, z: Variable, ctx: RewriteContext) -> bool:
    """Every leaf read by ``e`` is constant along the class axis (scalar or last dim 1) and
    broadcasts to the logits without enlarging them (so the product has the logits' shape)."""
    zs = ctx.shapes.shape(z)
    for n in S.topo([e]):
        if n.op == "input":
            v = leaves[n.value]
            if v.ndim > z.ndim or (v.ndim and v.type.shape[-1] != 1):
                return False
            vs = ctx.shapes.shape(v)
            if any(a != 1 and a != b for a, b in zip(vs[::-1], zs[::-1])):
                return False
    return True


# --- the upstream gradient, rebuilt without the forward's output ----------------------------

def _detach(found, ce: Apply, ctx: RewriteContext) -> Variable | None:
    """``g`` per row (broadcastable to the losses) built without the loss values, or None."""
    gexpr, leaves = found
    slots = sorted(used_slots(gexpr))
    if not slots:  # a constant
        (val,) = S.evaluate([gexpr], [])
        return Constant(np.asarray(val, dtype=ce.inputs[0].dtype))
    if len(slots) == 1 and gexpr.op == "input":
        g = leaves[slots[0]]
    else:
        (e,) = S.substitute([gexpr], {k: S.inp(i, leaves[k].dtype) for i, k in enumerate(slots)})
        g = make_elemwise(e, [leaves[k] for k in slots])
    return _rebuild(_drop_class_axis(g), ce)


def _drop_class_axis(g: Variable) -> Variable:
    """``g`` (size 1 on the last axis, or a scalar) as a per-row tensor."""
    if g.ndim == 0:
        return g
    o = g.owner
    if o is not None and isinstance(o.op, DimShuffle) and o.op.order[-1] == "x" and \
            "x" not in o.op.order[:-1]:
        inner = o.inputs[0]
        if o.op.order[:-1] == tuple(range(inner.ndim)):
            g = inner
            return _strip_shape_slots(g)
    return DimShuffle(tuple(range(g.ndim - 1)), g.ndim)(g)


def _strip_shape_slots(g: Variable) -> Variable:
    """An Elemwise's inputs that only lend their shape are not needed: the fused op broadcasts
    ``g`` to the rows itself (``fill(loss, c)`` becomes ``c``)."""
    o = g.owner
    if o is None or not isinstance(o.op, Elemwise):
        return g
    used = sorted(used_slots(o.op.expr))
    if len(used) == len(o.inputs):
        return g
    if not used:
        (val,) = S.evaluate([o.op.expr], [])
        return Constant(np.asarray(val, dtype=g.dtype))
    (e,) = S.substitute([o.op.expr], {k: S.inp(i, o.inputs[k].dtype) for i, k in enumerate(used)})
    if e.op == "input":
        return o.inputs[used[0]]
    return make_elemwise(e, [o.inputs[k] for k in used])


_SHAPE_FROM_SHAPES = (Elemwise, DimShuffle, Reduce)  # output shape = a function of input shapes
_MAX_DEPTH = 64


def _rebuild(g: Variable, ce: Apply) -> Variable | None:
    """``g`` with the uses of the losses that only need their shape rebuilt on a stand-in of
    that shape (zeros broadcast to the rows of the logits); None when ``g`` needs the values."""
    loss, z = ce.outputs[0], ce.inputs[0]
    dep: set[int] = {id(loss)}
    for node in toposort([g]):
        if any(id(x) in dep for x in node.inputs):
            dep.update(id(o) for o in node.outputs)
    if id(g) not in dep:
        return g
    standin: list[Variable] = []
    memo: dict[tuple[int, bool], Variable | None] = {}

    def rows() -> Variable:
        return getitem(shape(z), slice(None, -1))  # the shape of the losses

    def rebuild(v: Variable, shape_only: bool, depth: int) -> Variable | None:
        if id(v) not in dep:
            return v
        if v is loss:
            if not shape_only:
                return None
            if not standin:
                standin.append(broadcast_to(Constant(np.zeros((), loss.dtype)), rows()))
            return standin[0]
        key = (id(v), shape_only)
        if key in memo:
            return memo[key]
        memo[key] = None
        if depth > _MAX_DEPTH:
            return None
        node, op = v.owner, v.owner.op
        if isinstance(op, Shape) and node.inputs[0] is loss:
            memo[key] = rows()
            return memo[key]
        used = used_slots(op.expr) if isinstance(op, Elemwise) else None
        ins = []
        for k, x in enumerate(node.inputs):
            only = isinstance(op, Shape) or (used is not None and k not in used) or \
                (shape_only and isinstance(op, _SHAPE_FROM_SHAPES))
            r = rebuild(x, only, depth + 1)
            if r is None:
                return None
            ins.append(r)
        memo[key] = op.make_node(*ins).outputs[node.outputs.index(v)]
        return memo[key]

    return rebuild(g, False, 0)
