"""Fusion: elementwise chains become one Elemwise, elementwise producers of a reduction become
a ``FusedReduce``, and bias / activation after a matmul become its ``MatMulEpilogue``.

Duplication policy: an elementwise producer is inlined into a consumer's kernel when every
user of its result is in that kernel, or when it is cheap (at most 3 scalar operations and
none of exp / log / tanh / sigmoid / softplus / erf / sin / cos / pow / sqrt / division) and
then recomputed in each kernel that reads it.  An expensive result read by several kernels is
stored once.  A cheap producer that reads a matmul's or convolution's result, directly or
through elementwise nodes only it reads (``relu(x @ w + b)``, whose output the ReLU gradient
also reads), is not duplicated either, so that it can become that product's epilogue.

Size limit: a fused region stops growing at ``MAX_FUSED_OPS`` scalar operations.  LLVM's
optimiser is superlinear in the size of one loop body (a 5,000-op chain fused into one kernel
took minutes to compile), so very long chains become several kernels of bounded size, which
keeps compile time linear in the graph size at the price of one stored intermediate per cut.
"""

from __future__ import annotations

import heapq

from ..graph.basic import Apply
from ..ops.elemwise import (
    Elemwise,
    S,  # the scalar IR module (symgraph.scalar is also a function name)
)
from ..ops.fused import Conv2dEpilogue, FusedReduce, MatMulEpilogue
from ..ops.linalg import MatMul
from ..ops.nn import Conv2d
from ..ops.reduce import Reduce
from ..ops.shape import Shape
from . import scalar_rules as R
from .elemwise_util import compose, is_cheap, make_elemwise, tidy
from .engine import RewriteContext, global_pass

MAX_FUSED_OPS = 128


def _epilogue_producers(ctx: RewriteContext) -> tuple[type, ...]:
    """The ops whose elementwise epilogue the backend can fuse."""
    return ((MatMul,) if ctx.capabilities.get("matmul_epilogue", False) else ()) + \
        ((Conv2d,) if ctx.capabilities.get("conv_epilogue", False) else ())


EPILOGUE_DEPTH = 4  # elementwise nodes between a product and an epilogue node: bias, activation...


def _in_epilogue_chain(node: Apply, ctx: RewriteContext, producers: tuple[type, ...]) -> bool:
    """Whether ``node`` reads a matmul's or convolution's result, directly or through up to
    ``EPILOGUE_DEPTH`` elementwise nodes each read only by the next (``relu(x @ w + b)``): it
    may become part of that product's epilogue, which a copy of it in another kernel would
    prevent."""
    stack = [(node, 0)]
    while stack:
        n, depth = stack.pop()
        for v in n.inputs:
            p = v.owner
            if p is None:
                continue
            if isinstance(p.op, producers):
                return True
            if depth + 1 < EPILOGUE_DEPTH and isinstance(p.op, Elemwise) and len(ctx.clients(v)) == 1:
                stack.append((p, depth + 1))
    return False


def _grow_region(root: Apply, ctx: RewriteContext, index: dict[int, int]) -> list[Apply]:
    """Elemwise producers to inline into ``root``, in topological order."""
    fg = ctx.fgraph
    inside = {id(root)}
    region: list[Apply] = []
    heap: list[tuple[int, int, Apply]] = []
    visited: set[int] = set()
    producers = _epilogue_producers(ctx)

    def push(node: Apply) -> None:
        for v in node.inputs:
            p = v.owner
            if p is not None and isinstance(p.op, Elemwise) and id(p) not in visited \
                    and p in fg.nodes:
                visited.add(id(p))
                heapq.heappush(heap, (-index.get(id(p), -1), id(p), p))

    push(root)
    size = S.count_ops([root.op.expr])
    while heap:
        _, _, p = heapq.heappop(heap)
        clients = fg.clients.get(p.outputs[0], [])
        all_inside = all(c != "output" and id(c) in inside for c, _ in clients)
        cheap = is_cheap(p.op.expr) and not (producers and _in_epilogue_chain(p, ctx, producers))
        cost = S.count_ops([p.op.expr])
        if (all_inside or cheap) and size + cost <= MAX_FUSED_OPS:
            size += cost
            inside.add(id(p))
            region.append(p)
            push(p)
    region.sort(key=lambda n: index.get(id(n), -1))
    return region


@global_pass("fuse", name="fuse_elemwise")
def fuse_elemwise(ctx: RewriteContext) -> None:
    """Each maximal region of elementwise nodes becomes one Elemwise with a bigger DAG."""
    fg = ctx.fgraph
    order = ctx.toposort()
    index = {id(n): i for i, n in enumerate(order)}
    for root in reversed(order):
        if root not in fg.nodes or not isinstance(root.op, Elemwise):
            continue
        region = _grow_region(root, ctx, index)
        if not region:
            continue
        expr, leaves = compose(root, region)
        expr, _ = R.rewrite_expr(expr, R.CANONICAL)
        expr, leaves, _ = tidy(expr, leaves, root.outputs[0], ctx.shapes)
        ctx.commit(root, [make_elemwise(expr, leaves)], "fuse_elemwise")


def _epilogue_candidates(ctx: RewriteContext, producer: type, shape_readers: bool):
    """Each Elemwise node that is the only value reader of a ``producer`` node's output, with
    that output, its other readers (``Shape`` nodes, allowed with ``shape_readers``: the
    Elemwise result has the same shape), the Elemwise expression over ``[output, extras...]``
    and the extras."""
    fg = ctx.fgraph
    for node in ctx.toposort():
        if node not in fg.nodes or not isinstance(node.op, Elemwise):
            continue
        out = node.outputs[0]
        for prod in dict.fromkeys(node.inputs):
            p = prod.owner
            if p is None or not isinstance(p.op, producer) or ctx.is_output(prod):
                continue
            others = [k for k, _ in fg.clients.get(prod, []) if k is not node]
            if any(not (shape_readers and isinstance(k.op, Shape)) for k in others):
                continue
            extras = [v for v in dict.fromkeys(node.inputs) if v is not prod]
            if out.ndim != prod.ndim or any(e.ndim > prod.ndim for e in extras):
                continue
            if not ctx.shapes.same(out, prod) or out.dtype != node.op.expr.dtype:
                continue
            slot = {id(prod): 0} | {id(e): k + 1 for k, e in enumerate(extras)}
            mapping = {i: S.inp(slot[id(v)], v.dtype) for i, v in enumerate(node.inputs)}
            (expr,) = S.substitute([node.op.expr], mapping)
            yield node, prod, others, expr, extras
            break


@global_pass("fuse", name="fuse_matmul_epilogue")
def fuse_matmul_epilogue(ctx: RewriteContext) -> None:
    """Elemwise(a @ b, extras...) -> MatMulEpilogue, where the backend can run it."""
    if not ctx.capabilities.get("matmul_epilogue", False):
        return
    for node, prod, _, expr, extras in _epilogue_candidates(ctx, MatMul, shape_readers=False):
        a, b = prod.owner.inputs
        ctx.commit(node, [MatMulEpilogue(expr, 1 + len(extras))(a, b, *extras)], "fuse_matmul_epilogue")


@global_pass("fuse", name="fuse_conv_epilogue")
def fuse_conv_epilogue(ctx: RewriteContext) -> None:
    """Elemwise(conv2d(x, w), extras...) -> Conv2dEpilogue (the bias and activation after a
    convolution), where the backend can run it and nothing else reads the convolution's
    values (a ``Shape`` of it, e.g. the bias gradient's, is rewired to the result)."""
    if not ctx.capabilities.get("conv_epilogue", False):
        return
    for node, conv, shape_readers, expr, extras in _epilogue_candidates(ctx, Conv2d, shape_readers=True):
        for k in shape_readers:
            ctx.commit(k, [Shape()(node.outputs[0])], "fuse_conv_epilogue")
        c = conv.owner
        op = Conv2dEpilogue(expr, 1 + len(extras), c.op.stride, c.op.padding)
        ctx.commit(node, [op(c.inputs[0], c.inputs[1], *extras)], "fuse_conv_epilogue")


@global_pass("fuse", name="fuse_reduce")
def fuse_reduce(ctx: RewriteContext) -> None:
    """Reduce(Elemwise(...)) -> FusedReduce: the elementwise body runs inside the reduction."""
    if not ctx.capabilities.get("fused_reduce", True):
        return
    fg = ctx.fgraph
    for node in ctx.toposort():
        if node not in fg.nodes or not isinstance(node.op, Reduce):
            continue
        v = node.inputs[0]
        p = v.owner
        if p is None or not isinstance(p.op, Elemwise) or ctx.is_output(v):
            continue
        if len(fg.clients.get(v, [])) > 1 and not is_cheap(p.op.expr):
            continue
        op = node.op
        if Reduce(op.kind, op.axes).out_dtype(p.op.expr.dtype) != node.outputs[0].dtype:
            continue
        new = FusedReduce(op.kind, op.axes, op.keepdims, p.op.expr, p.op.nin,
                          op.initial)(*p.inputs)
        ctx.commit(node, [new], "fuse_reduce")
