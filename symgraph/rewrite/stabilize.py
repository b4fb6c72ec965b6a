"""Stabilisation: naive formulas that overflow or lose all precision become stable ops.

Scalar forms (log1p, expm1, log-sigmoid, log(1 - sigmoid), BCE on probabilities) are rules on
the scalar DAG (``scalar_rules.STABILIZE``) applied to an Elemwise together with the small
producers it reads, so ``log(1 + x)`` matches even when ``1 + x`` is its own node.  Tensor
forms: log(softmax) -> LogSoftmax, softmax + cross-entropy -> SoftmaxCrossEntropy, and
log(sum(exp(x))) -> the max-shifted logsumexp.

``sg.grad`` calls ``stabilize_cost`` on the cost before differentiating, so the gradient is
built from the stable forms (e.g. softmax minus targets) and is finite too.
"""

from __future__ import annotations

import numpy as np

from ..graph.basic import Apply, Constant, Variable
from ..graph.fgraph import FunctionGraph
from ..ops import elemwise as E
from ..ops.elemwise import (
    Elemwise,
    S,  # the scalar IR module (symgraph.scalar is also a function name)
)
from ..ops.indexing import Subtensor
from ..ops.nn import ARange, LogSoftmax, Softmax, SoftmaxCrossEntropy
from ..ops.reduce import Reduce
from ..ops.shape import Shape, expand_dims, squeeze
from . import scalar_rules as R
from .elemwise_util import compose, info, make_elemwise, tidy
from .engine import RewriteContext, local_rewrite

_RELEVANT = {"add", "sub", "neg", "sigmoid", "exp", "log", "log1p", "softplus", "where", "gt",
             "lt", "maximum"}
_RULES = {**R.STABILIZE, "neg_neg": R.neg_neg, "fold_scalar_constants": R.fold_scalar_constants}


def _small_producers(node: Apply, ctx: RewriteContext, depth: int = 3) -> list[Apply]:
    """Elemwise producers (up to ``depth`` levels) that stabilisation rules may look into."""
    found: list[Apply] = []
    seen: set[int] = set()
    frontier = [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for v in n.inputs:
                p = v.owner
                if (p is None or id(p) in seen or not isinstance(p.op, Elemwise)
                        or p.op.expr.op not in _RELEVANT or info(p.op.expr).n_ops > 3):
                    continue
                seen.add(id(p))
                found.append(p)
                nxt.append(p)
        frontier = nxt
    return local_toposort(found)


def local_toposort(nodes: list[Apply]) -> list[Apply]:
    """``nodes`` ordered so that a producer comes before the nodes of the list that read it."""
    inside = {id(n) for n in nodes}
    order: list[Apply] = []
    done: set[int] = set()
    for start in nodes:
        stack = [(start, False)]
        while stack:
            n, expanded = stack.pop()
            if expanded:
                order.append(n)
                continue
            if id(n) in done:
                continue
            done.add(id(n))
            stack.append((n, True))
            for v in n.inputs:
                if v.owner is not None and id(v.owner) in inside and id(v.owner) not in done:
                    stack.append((v.owner, False))
    return order


@local_rewrite("stabilize", tracks=(Elemwise,))
def scalar_stabilize(node: Apply, ctx: RewriteContext):
    """log1p / expm1 / log-sigmoid / log(1-sigmoid) / BCE-on-probabilities forms."""
    expr = node.op.expr
    if not set(info(expr).ops) & {"log", "log1p", "sub", "add", "maximum", "where"}:
        return None
    region = _small_producers(node, ctx)
    if region:
        expr, leaves = compose(node, region)
    else:
        leaves = list(node.inputs)
    new_expr, fired = R.rewrite_expr(expr, _RULES)
    if not any(f in R.STABILIZE for f in fired):
        return None
    new_expr, keep, _ = tidy(new_expr, leaves, node.outputs[0], ctx.shapes)
    ctx.note(f for f in fired if f in R.STABILIZE)
    return make_elemwise(new_expr, keep)


@local_rewrite("stabilize", tracks=(Elemwise,))
def log_softmax(node: Apply, ctx: RewriteContext):
    """log(softmax(z)) -> log_softmax(z), also inside a bigger elementwise expression."""
    if "log" not in info(node.op.expr).ops:
        return None
    hits = {}
    for n in S.topo([node.op.expr]):
        if n.op == "log" and n.args[0].op == "input":
            v = node.inputs[n.args[0].value]
            if v.owner is not None and isinstance(v.owner.op, Softmax) and v.dtype == n.dtype:
                hits[id(n)] = (n, v)
    if not hits:
        return None
    inputs = list(node.inputs)
    mapping: dict[int, S.SExpr] = {}
    for n, v in hits.values():
        inputs.append(LogSoftmax(v.owner.op.axis)(v.owner.inputs[0]))
        mapping[id(n)] = S.inp(len(inputs) - 1, n.dtype)

    # the rule must see the original log nodes: apply it before rebuilding their parents
    memo: dict[int, S.SExpr] = {}
    for n in S.topo([node.op.expr]):
        if id(n) in mapping:
            memo[id(n)] = mapping[id(n)]
        elif n.op in ("input", "const"):
            memo[id(n)] = n
        elif n.op == "cast":
            memo[id(n)] = S.cast(memo[id(n.args[0])], n.dtype)
        else:
            memo[id(n)] = S.SExpr(n.op, tuple(memo[id(a)] for a in n.args), n.value, n.dtype)
    new_expr = memo[id(node.op.expr)]
    if new_expr.op == "input" and ctx.shapes.same(inputs[new_expr.value], node.outputs[0]):
        return inputs[new_expr.value]
    return make_elemwise(new_expr, inputs)


def _row_count_matches(idx: Variable, z: Variable, ctx: RewriteContext) -> bool:
    """``idx`` is ``arange(rows of z)``."""
    rows = ctx.shapes.shape(z)[0]
    if isinstance(idx, Constant):
        v = idx.value
        return v.ndim == 1 and rows == v.size and np.array_equal(v, np.arange(v.size))
    if idx.owner is None or not isinstance(idx.owner.op, ARange):
        return False
    n = idx.owner.inputs[0]
    if isinstance(n, Constant):
        return rows == int(n.value)
    p = n.owner
    if (p is not None and isinstance(p.op, Subtensor) and p.op.spec == (("i", 0),)
            and p.inputs[0].owner is not None and isinstance(p.inputs[0].owner.op, Shape)):
        return ctx.shapes.shape(p.inputs[0].owner.inputs[0])[0] == rows
    return False


@local_rewrite("stabilize", tracks=(Subtensor,))
def sparse_cross_entropy(node: Apply, ctx: RewriteContext):
    """log_softmax(z)[arange(n), y] -> -SoftmaxCrossEntropy(z, y)."""
    if node.op.spec != (("a", 0), ("a", 1)):
        return None
    ls, rows, labels = node.inputs
    if ls.owner is None or not isinstance(ls.owner.op, LogSoftmax) or ls.ndim != 2:
        return None
    if ls.owner.op.axis != 1 or labels.ndim != 1:
        return None
    z = ls.owner.inputs[0]
    if not _row_count_matches(rows, z, ctx):
        return None
    return E.neg(SoftmaxCrossEntropy(sparse=True)(z, labels))


@local_rewrite("stabilize", tracks=(Reduce,))
def dense_cross_entropy(node: Apply, ctx: RewriteContext):
    """sum(t * log_softmax(z), axis includes the class axis) -> -SoftmaxCrossEntropy(z, t)."""
    op = node.op
    if op.kind != "sum":
        return None
    prod = node.inputs[0]
    p = prod.owner
    if p is None or not isinstance(p.op, Elemwise) or p.op.nin != 2:
        return None
    if p.op.expr.op != "mul" or {a.op for a in p.op.expr.args} != {"input"}:
        return None
    a, b = p.inputs
    for ls, t in ((a, b), (b, a)):
        lo = ls.owner
        if lo is None or not isinstance(lo.op, LogSoftmax) or lo.op.axis != ls.ndim - 1:
            continue
        z = lo.inputs[0]
        last = z.ndim - 1
        if last not in op.axes or t.ndim != z.ndim or t.dtype != z.dtype or prod.dtype != z.dtype:
            continue
        if not ctx.shapes.same(prod, z):
            # the targets might broadcast the logits to more rows: make that explicit
            from ..ops.shape import broadcast_to, shape
            z = broadcast_to(z, shape(prod))
        per_row = E.neg(SoftmaxCrossEntropy(sparse=False)(z, t))
        rest = tuple(x for x in op.axes if x != last)
        out = Reduce("sum", rest, op.keepdims)(per_row) if rest else per_row
        return expand_dims(out, -1) if op.keepdims else out
    return None


@local_rewrite("stabilize", tracks=(Elemwise,))
def naive_logsumexp(node: Apply, ctx: RewriteContext):
    """log(sum(exp(x))) -> max(x) + log(sum(exp(x - max(x))))."""
    expr = node.op.expr
    if node.op.nin != 1 or expr.op != "log" or expr.args[0].op != "input":
        return None
    s = node.inputs[0]
    if s.owner is None or not isinstance(s.owner.op, Reduce) or s.owner.op.kind != "sum":
        return None
    e = s.owner.inputs[0]
    eo = e.owner
    if eo is None or not isinstance(eo.op, Elemwise) or eo.op.nin != 1:
        return None
    if eo.op.expr.op != "exp" or eo.op.expr.args[0].op != "input":
        return None
    x = eo.inputs[0]
    if x.dtype != e.dtype or e.dtype != node.outputs[0].dtype:
        return None
    from ..grad import stop_gradient
    from ..ops.reduce import max as max_
    axes, keep = s.owner.op.axes, s.owner.op.keepdims
    try:
        m = stop_gradient(max_(x, axis=axes, keepdims=True))
    except ValueError:
        return None
    m_safe = E.where(E.apply_scalar("eq", E.abs_(m), float("inf")), 0, m)
    # exp(x - m) as one node, so that this pattern cannot match its own result
    shifted = S.apply("exp", S.apply("sub", S.inp(0, x.dtype), S.inp(1, x.dtype)))
    total = Reduce("sum", axes, True)(make_elemwise(shifted, [x, m_safe]))
    out = E.add(E.log(total), m_safe)
    return out if keep or not axes else squeeze(out, axes)


def stabilize_cost(cost: Variable, wrt) -> Variable:
    """A copy of ``cost``'s graph with the stabilize group applied (``cost`` if nothing fired).

    Called by ``sg.grad`` before differentiating, so gradients of naive formulas are built from
    their stable forms.  Only graphs whose ``wrt`` are all root variables are rewritten (an
    intermediate ``wrt`` must stay in the graph).  The user's graph is never modified.
    """
    if any(w.owner is not None for w in wrt):
        return cost
    if cost.owner is None:
        return cost
    from .engine import privatize, run_groups
    fg = FunctionGraph([], [cost])
    privatize(fg)
    log = run_groups(fg, ["stabilize"])
    if not log:
        return cost
    return fg.outputs[0]


