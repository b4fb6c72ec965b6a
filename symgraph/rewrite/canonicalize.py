"""Canonicalisation: one simple form for equivalent graphs.

Elementwise algebra (x*1, x+0, x-0, x/1, --x, constants of add/mul chains gathered) is done on
the scalar DAG inside each ``Elemwise`` (``scalar_rules.CANONICAL``); the rewrites here span
tensor nodes: dimshuffle and reshape chains, no-op shape ops proven by symbolic shapes, sums of
sums, leading broadcast axes of scalars, affine chains split over nodes, StopGradient.
"""

from __future__ import annotations

from ..grad import StopGradient
from ..graph.basic import Apply
from ..ops.elemwise import (
    Elemwise,
    S,  # the scalar IR module (symgraph.scalar is also a function name)
)
from ..ops.reduce import Reduce
from ..ops.shape import BroadcastTo, DimShuffle, Reshape, SumToShape
from . import scalar_rules as R
from .elemwise_util import compose, info, kernel_name, make_elemwise, tidy
from .engine import RewriteContext, local_rewrite


@local_rewrite("canonicalize", "specialize", tracks=(StopGradient,))
def remove_stop_gradient(node: Apply, ctx: RewriteContext):
    """StopGradient(x) -> x (it only matters to ``grad``, which has already run)."""
    return node.inputs[0]


def rebuild(node: Apply, expr: S.SExpr, inputs, ctx: RewriteContext, keep_name: bool = False):
    """The variable replacing an Elemwise ``node``: the input itself for an identity of the
    right shape and dtype, else a new Elemwise."""
    out = node.outputs[0]
    if expr.op == "input":
        v = inputs[expr.value]
        if v.dtype == out.dtype and v.ndim == out.ndim and ctx.shapes.same(v, out):
            return v
    name = node.op.name if keep_name else kernel_name(expr)
    return make_elemwise(expr, inputs, name=name)


@local_rewrite("canonicalize", tracks=(Elemwise,))
def elemwise_simplify(node: Apply, ctx: RewriteContext):
    """Scalar algebra inside one Elemwise, constants inlined, repeated inputs merged."""
    op = node.op
    expr, inputs, changed = tidy(op.expr, node.inputs, node.outputs[0], ctx.shapes)
    new_expr, fired = R.rewrite_expr(expr, R.CANONICAL)
    if not changed and not fired:
        out = node.outputs[0]
        if expr.op == "input":  # an identity whose input already has the output's shape
            v = inputs[expr.value]
            if v.dtype == out.dtype and ctx.shapes.same(v, out):
                return v
        return None
    ctx.note(fired)
    return rebuild(node, new_expr, inputs, ctx, keep_name=not fired and op.partials is None)


_AFFINE = {"add", "sub", "mul", "neg"}


@local_rewrite("fuse", tracks=(Elemwise,))
def elemwise_identity(node: Apply, ctx: RewriteContext):
    """An Elemwise computing one of its inputs unchanged (same dtype and shape) -> that input."""
    expr, out = node.op.expr, node.outputs[0]
    if expr.op == "input":
        v = node.inputs[expr.value]
        if v.dtype == out.dtype and ctx.shapes.same(v, out):
            return v
    return None


@local_rewrite("canonicalize", tracks=(Elemwise,))
def elemwise_affine_chain(node: Apply, ctx: RewriteContext):
    """Chains of one-op add / sub / mul / neg nodes: (x * 2) * 3 -> x * 6, -(-x) -> x.

    A producer is merged in only when it is used by this node alone and the merge lets a
    canonical rule fire (constants gathered, negations cancelled)."""
    if node.op.expr.op not in _AFFINE or info(node.op.expr).n_ops != 1:
        return None
    region = []
    for v in dict.fromkeys(node.inputs):
        p = v.owner
        if (p is not None and isinstance(p.op, Elemwise) and p.op.expr.op in _AFFINE
                and len(ctx.clients(v)) == 1 and not ctx.is_output(v)
                and info(p.op.expr).n_ops == 1):
            region.append(p)
    if not region:
        return None
    expr, leaves = compose(node, region)
    new_expr, fired = R.rewrite_expr(expr, R.CANONICAL)
    if not {"gather_constants", "neg_neg", "sub_neg"} & set(fired):
        return None
    ctx.note(fired)
    return rebuild(node, new_expr, leaves, ctx)


@local_rewrite("canonicalize", tracks=(Elemwise,))
def elemwise_drop_leading_axes(node: Apply, ctx: RewriteContext):
    """An Elemwise input that only gains leading size-1 axes (a broadcast scalar or row) is used
    directly: broadcasting adds those axes anyway."""
    out_nd = node.outputs[0].ndim
    new_inputs, changed = list(node.inputs), False
    for i, v in enumerate(node.inputs):
        p = v.owner
        if p is None or not isinstance(p.op, DimShuffle):
            continue
        order = p.op.order
        k = len(order) - p.op.in_ndim
        if k <= 0 or any(o != "x" for o in order[:k]) or tuple(order[k:]) != tuple(range(p.op.in_ndim)):
            continue
        others = [w.ndim for j, w in enumerate(new_inputs) if j != i]
        if max(others, default=-1) < out_nd:
            continue
        new_inputs[i] = p.inputs[0]
        changed = True
    if not changed:
        return None
    return Elemwise(node.op.expr, node.op.nin, node.op.name, node.op.partials)(*new_inputs)


@local_rewrite("canonicalize", tracks=(DimShuffle,))
def dimshuffle_chain(node: Apply, ctx: RewriteContext):
    """DimShuffle(DimShuffle(x)) -> one DimShuffle (a double transpose -> x)."""
    inner = node.inputs[0].owner
    if inner is None or not isinstance(inner.op, DimShuffle):
        return None
    x = inner.inputs[0]
    order = []
    for o in node.op.order:
        order.append("x" if o == "x" else inner.op.order[o])
    if tuple(order) == tuple(range(x.ndim)):
        return x
    try:
        return DimShuffle(order, x.ndim)(x)
    except ValueError:
        return None


@local_rewrite("canonicalize", tracks=(DimShuffle,))
def dimshuffle_identity(node: Apply, ctx: RewriteContext):
    """DimShuffle that keeps every axis in place -> its input."""
    if tuple(node.op.order) == tuple(range(node.op.in_ndim)):
        return node.inputs[0]
    return None


@local_rewrite("canonicalize", tracks=(Reshape,))
def reshape_chain(node: Apply, ctx: RewriteContext):
    """Reshape(Reshape(x, s1), s2) -> Reshape(x, s2)."""
    inner = node.inputs[0].owner
    if inner is None or not isinstance(inner.op, Reshape):
        return None
    return node.op(inner.inputs[0], node.inputs[1])


@local_rewrite("canonicalize", tracks=(Reshape, BroadcastTo))
def shape_op_noop(node: Apply, ctx: RewriteContext):
    """Reshape / BroadcastTo to the shape the input already has -> the input."""
    x, out = node.inputs[0], node.outputs[0]
    if x.ndim == out.ndim and ctx.shapes.same(x, out):
        return x
    return None


@local_rewrite("canonicalize", "specialize", tracks=(SumToShape,))
def sum_to_shape_static(node: Apply, ctx: RewriteContext):
    """SumToShape whose axes are all decided by symbolic shapes -> a plain sum (or nothing).

    Also in ``specialize``: the fused cross-entropy gradient made there has known shapes."""
    g, out = node.inputs[0], node.outputs[0]
    target = ctx.shapes.shape(out)
    gs = ctx.shapes.shape(g)
    lead = g.ndim - out.ndim
    if lead < 0:
        return None
    axes = list(range(lead))
    for a, (d, t) in enumerate(zip(gs[lead:], target)):
        if d == t:
            continue
        if t == 1:
            axes.append(a + lead)
            continue
        return None
    if not axes:
        return g
    from ..ops.reduce import sum as sum_
    from ..ops.shape import squeeze
    y = sum_(g, axis=tuple(axes), keepdims=True)
    return squeeze(y, tuple(range(lead))) if lead else y


@local_rewrite("canonicalize", tracks=(Reduce,))
def reduce_of_reduce(node: Apply, ctx: RewriteContext):
    """sum(sum(x, a1), a2) -> sum(x, a1 + a2) (same for prod / max / min / any / all)."""
    inner = node.inputs[0].owner
    if inner is None or not isinstance(inner.op, Reduce) or inner.op.kind != node.op.kind:
        return None
    if len(ctx.clients(node.inputs[0])) != 1 or ctx.is_output(node.inputs[0]):
        return None
    x = inner.inputs[0]
    a1, k1 = inner.op.axes, inner.op.keepdims
    a2, k2 = node.op.axes, node.op.keepdims
    if k1:
        axes = tuple(sorted(set(a1) | set(a2)))
        if k2:
            keep = True
        elif set(a1) <= set(a2):
            keep = False
        else:
            return None
    else:
        if k2:
            return None
        remaining = [a for a in range(x.ndim) if a not in a1]
        axes = tuple(sorted(set(a1) | {remaining[a] for a in a2}))
        keep = False
    if Reduce(node.op.kind, axes).out_dtype(x.dtype) != node.outputs[0].dtype:
        return None
    if inner.op.initial != node.op.initial:
        return None
    return Reduce(node.op.kind, axes, keep, node.op.initial)(x)


@local_rewrite("canonicalize", tracks=(Reduce,))
def reduce_no_axes(node: Apply, ctx: RewriteContext):
    """A reduction over no axis -> its input (when the dtype stays)."""
    x = node.inputs[0]
    if not node.op.axes and x.dtype == node.outputs[0].dtype:
        return x
    return None
