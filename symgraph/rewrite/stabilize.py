"""Stabilisation: naive formulas that overflow or lose all precision become stable ops.

Scalar forms (hand-written sigmoid, log1p, expm1, log-sigmoid, log(1 - sigmoid)) are rules on
the scalar DAG (``scalar_rules.STABILIZE``) applied to an Elemwise together with the small
producers it reads, so ``log(1 + x)`` matches even when ``1 + x`` is its own node.  Tensor
forms: a hand-written softmax -> Softmax, log(softmax) -> LogSoftmax, softmax + cross-entropy
-> SoftmaxCrossEntropy, and log(sum(exp(x))) -> the max-shifted logsumexp.

Every rewrite here is an identity of real arithmetic that holds for all values: none assumes
that a clamp never binds or that a guard is always true.

``sg.grad`` calls ``stabilize_cost`` on the cost before differentiating, so the gradient is
built from the stable forms (e.g. softmax minus targets) and is finite too.
"""

from __future__ import annotations

import numpy as np

from ..graph.basic import Apply, Constant, Variable
from ..graph.fgraph import FunctionGraph
from ..graph.types import is_float
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

# producers a stabilisation rule may look into ("input", "const": a ``fill``, e.g. ones-like)
_RELEVANT = {"add", "sub", "neg", "mul", "truediv", "pow", "sigmoid", "exp", "log", "log1p",
             "softplus", "where", "gt", "lt", "maximum", "input", "const"}
_TRIGGERS = {"log", "log1p", "sub", "add", "truediv", "pow"}  # ops at which some rule matches
_RULES = {**R.STABILIZE, "neg_neg": R.neg_neg, "fold_scalar_constants": R.fold_scalar_constants}


def _small_producers(node: Apply, depth: int = 3) -> list[Apply]:
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


def _composed(node: Apply, shapes) -> tuple[S.SExpr, list[Variable]]:
    """``node``'s DAG with its small producers inlined and size-1 constants as literals."""
    region = _small_producers(node)
    if region:
        expr, leaves = compose(node, region)
    else:
        expr, leaves = node.op.expr, list(node.inputs)
    expr, leaves, _ = tidy(expr, leaves, node.outputs[0], shapes)
    return expr, leaves


@local_rewrite("stabilize", tracks=(Elemwise,))
def scalar_stabilize(node: Apply, ctx: RewriteContext):
    """Hand-written sigmoid / log1p / expm1 / log-sigmoid / log(1-sigmoid) / softplus forms."""
    if not set(info(node.op.expr).ops) & _TRIGGERS:
        return None
    expr, leaves = _composed(node, ctx.shapes)
    new_expr, fired = R.rewrite_expr(expr, _RULES)
    if not any(f in R.STABILIZE for f in fired):
        return None
    new_expr, keep, _ = tidy(new_expr, leaves, node.outputs[0], ctx.shapes)
    ctx.note(f for f in fired if f in R.STABILIZE)
    return make_elemwise(new_expr, keep)


def sigmoid_logits(p: Variable) -> Variable | None:
    """``z`` when ``p`` is ``sigmoid(z)``, written with ``sg.sigmoid`` or by hand
    (``1 / (1 + exp(-z))`` and the variants of ``scalar_rules.sigmoid_rule``), else None.

    ``nn.binary_cross_entropy(p, t, from_logits=False)`` uses it to compute the loss from the
    logits, exactly, instead of clamping the logs of an underflowed probability.
    """
    node = p.owner
    if node is None or not isinstance(node.op, Elemwise) or not is_float(p.dtype):
        return None
    expr = node.op.expr
    if expr.op == "sigmoid" and expr.args[0].op == "input":  # sg.sigmoid(z)
        z = node.inputs[expr.args[0].value]
        return z if z.dtype == p.dtype and z.ndim == p.ndim else None
    from .shapes import ShapeInfo
    shapes = ShapeInfo()
    expr, leaves = _composed(node, shapes)
    expr, _ = R.rewrite_expr(expr, {"sigmoid": R.sigmoid_rule})
    if expr.op != "sigmoid":
        return None
    z, keep, _ = tidy(S.cast(expr.args[0], p.dtype), leaves, p, shapes)
    if z.op == "input" and shapes.same(keep[z.value], p):
        return keep[z.value]
    return make_elemwise(z, keep)


def _reduced_back(v: Variable, kind: str, ndim: int, shapes) -> tuple[int, Variable] | None:
    """``(axis, x)`` when ``v``, used against a rank-``ndim`` operand, is the ``kind``-reduction
    of ``x`` over one axis with that axis kept: ``keepdims=True``, dropped and put back by
    ``expand_dims`` / a reshape, or axis 0 dropped and put back by broadcasting."""
    from ..grad import StopGradient
    from ..ops.shape import DimShuffle, Reshape
    o = v.owner
    if o is not None and isinstance(o.op, StopGradient):
        v, o = o.inputs[0], o.inputs[0].owner
    if o is None:
        return None
    if isinstance(o.op, Reduce):
        if o.op.kind != kind or len(o.op.axes) != 1 or o.inputs[0].ndim != ndim:
            return None
        if o.op.keepdims or (o.op.axes == (0,) and v.ndim == ndim - 1):
            return o.op.axes[0], o.inputs[0]
        return None
    if not isinstance(o.op, (DimShuffle, Reshape)) or v.ndim != ndim:
        return None
    r = o.inputs[0].owner
    if r is None or not isinstance(r.op, Reduce) or r.op.kind != kind or len(r.op.axes) != 1 \
            or r.op.keepdims or r.inputs[0].ndim != ndim:
        return None
    (axis,), x = r.op.axes, r.inputs[0]
    if isinstance(o.op, DimShuffle):
        order: list = list(range(ndim - 1))
        order.insert(axis, "x")
        return (axis, x) if tuple(o.op.order) == tuple(order) else None
    want = list(shapes.shape(x))
    want[axis] = 1
    got = shapes.vector_value(o.inputs[1])
    if got is None or len(got) != ndim or got[axis] != 1:
        return None
    # one -1 is inferred as the only dim left over when every other dim matches
    unknown = [a for a, (g, w) in enumerate(zip(got, want)) if g != w]
    return (axis, x) if not unknown or (len(unknown) == 1 and got[unknown[0]] == -1) else None


def _same_value(a: Variable, b: Variable) -> bool:
    """``a`` and ``b`` are the same variable or the same elementwise op of the same inputs."""
    if a is b:
        return True
    pa, pb = a.owner, b.owner
    return (pa is not None and pb is not None and isinstance(pa.op, Elemwise)
            and pa.op == pb.op and len(pa.inputs) == len(pb.inputs)
            and all(x is y for x, y in zip(pa.inputs, pb.inputs)))


def _exp_argument(e: Variable) -> tuple[Variable, Variable | None] | None:
    """``(u, None)`` when ``e`` is ``exp(u)``, ``(z, c)`` when it is ``exp(z - c)``."""
    o = e.owner
    if o is None or not isinstance(o.op, Elemwise) or o.op.expr.op != "exp":
        return None
    arg = o.op.expr.args[0]
    if arg.op == "input" and arg.dtype == e.dtype:
        u = o.inputs[arg.value]
        uo = u.owner
        if uo is not None and isinstance(uo.op, Elemwise) and uo.op.nin == 2 \
                and uo.op.expr == S.apply("sub", S.inp(0, u.dtype), S.inp(1, u.dtype)):
            return uo.inputs[0], uo.inputs[1]
        return u, None
    if arg.op == "sub" and all(a.op == "input" and a.dtype == e.dtype for a in arg.args):
        return o.inputs[arg.args[0].value], o.inputs[arg.args[1].value]
    return None


@local_rewrite("stabilize", tracks=(Elemwise,))
def softmax_by_hand(node: Apply, ctx: RewriteContext):
    """exp(x) / sum(exp(x), axis, keepdims=True) -> softmax(x, axis); also with the sum's axis
    put back by expand_dims or a reshape, and with ``x = z - c``: when ``c`` is ``max(z)`` along
    the axis, softmax(z) (a softmax does not change when a constant along the axis is added).
    """
    expr, out = node.op.expr, node.outputs[0]
    if expr.op != "truediv" or any(a.op != "input" for a in expr.args) or not is_float(out.dtype):
        return None
    e, s = (node.inputs[a.value] for a in expr.args)
    if e is s or e.dtype != out.dtype or e.ndim != out.ndim:
        return None
    found = _reduced_back(s, "sum", e.ndim, ctx.shapes)
    arg = _exp_argument(e)
    if found is None or arg is None or not _same_value(found[1], e):
        return None
    axis, (z, c) = found[0], arg
    if c is None:
        logits = z
    else:
        m = _reduced_back(c, "max", z.ndim, ctx.shapes)
        logits = z if m is not None and m[0] == axis and m[1] is z else E.sub(z, c)
    # the divisor is the sum of ``e`` over ``axis`` put back in place: ``out`` has e's shape
    return Softmax(axis)(logits) if logits.dtype == out.dtype else None


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


def _row_count(idx: Variable, ctx: RewriteContext) -> tuple[object, Variable | None] | None:
    """For ``idx = arange(n)``: the symbolic size ``n`` and the variable holding it (None for a
    constant ``n``); None when ``idx`` is not such a range."""
    if isinstance(idx, Constant):
        v = idx.value
        ok = v.ndim == 1 and np.array_equal(v, np.arange(v.size))
        return (v.size, None) if ok else None
    if idx.owner is None or not isinstance(idx.owner.op, ARange):
        return None
    n = idx.owner.inputs[0]
    if isinstance(n, Constant):
        return int(n.value), None
    p = n.owner
    if (p is not None and isinstance(p.op, Subtensor) and p.op.spec == (("i", 0),)
            and p.inputs[0].owner is not None and isinstance(p.inputs[0].owner.op, Shape)):
        return ctx.shapes.shape(p.inputs[0].owner.inputs[0])[0], n
    return None


def _wrap_negative(labels: Variable, n_classes) -> Variable:
    """Labels with NumPy's negative indices (``-1``: the last class) made non-negative."""
    if labels.dtype.startswith("uint"):
        return labels
    return E.where(E.lt(labels, 0), E.add(labels, n_classes), labels)


@local_rewrite("stabilize", tracks=(Subtensor,))
def sparse_cross_entropy(node: Apply, ctx: RewriteContext):
    """log_softmax(z)[arange(n), y] -> -SoftmaxCrossEntropy(z, y).

    ``n`` may be the rows of ``z``, the length of ``y`` (Theano's
    ``log(p)[arange(y.shape[0]), y]``) or a constant.  When ``n`` is not provably the number
    of rows, the loss is taken over ``z[arange(n)]`` (the rows the indexing reads); labels are
    broadcast like the index arrays, and negative labels count from the end, as in NumPy.
    """
    if node.op.spec != (("a", 0), ("a", 1)):
        return None
    ls, rows, labels = node.inputs
    if ls.owner is None or not isinstance(ls.owner.op, LogSoftmax) or ls.ndim != 2:
        return None
    if ls.owner.op.axis != 1 or labels.ndim != 1 or rows.ndim != 1:
        return None
    z = ls.owner.inputs[0]
    found = _row_count(rows, ctx)
    if found is None:
        return None
    n, n_var = found
    from ..ops.shape import broadcast_to, shape
    if n != ctx.shapes.shape(z)[0]:
        z = Subtensor((("a", 0),))(z, rows)  # the rows the indexing reads (IndexError as it)
    if n != ctx.shapes.shape(labels)[0]:
        labels = broadcast_to(labels, (n_var if n_var is not None else n,))  # as indices do
    classes = z.type.shape[1] if isinstance(z.type.shape[1], int) else shape(z)[1]
    return E.neg(SoftmaxCrossEntropy(sparse=True)(z, _wrap_negative(labels, classes)))


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
    # merge first: a hand-written softmax often builds ``exp(z)`` twice
    log = run_groups(fg, ["merge", "stabilize"])
    if not any(r.group == "stabilize" for r in log):
        return cost
    return fg.outputs[0]


