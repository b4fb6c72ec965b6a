"""Symbol-to-symbol differentiation: the gradient is built as ordinary graph nodes.

Reverse accumulation over the toposorted graph: every node's output gradient is the sum of
the messages from all its consumers, and each op's ``L_op`` turns that into messages for its
inputs.  The gradient graph therefore grows linearly with the forward graph, and can itself
be differentiated, rewritten, fused and compiled.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from .errors import GradientError
from .graph.basic import Apply, Constant, Op, Variable, as_variable, format_trace
from .graph.fgraph import clone_replace, toposort
from .graph.types import TensorType, format_shape, is_float
from .ops import elemwise as E
from .ops.shape import SumToShape, shape, zeros_like


class StopGradient(Op):
    """Identity in the forward pass; blocks gradients (removed by the rewriter)."""

    def make_node(self, x) -> Apply:
        x = as_variable(x)
        return Apply(self, [x], [x.type])

    def perform(self, node, inputs):
        return [inputs[0]]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None]

    def R_op(self, node, inputs, eval_points):
        return [None]

    def batch(self, node, inputs, batched):
        return [StopGradient()(inputs[0])], [True]


def stop_gradient(x) -> Variable:
    """``x`` unchanged, but treated as a constant by ``grad``."""
    return StopGradient()(x)


def _check_wrt(wrt) -> tuple[list[Variable], bool]:
    single = isinstance(wrt, Variable)
    if not single and not isinstance(wrt, (list, tuple)):
        raise TypeError(f"grad: wrt is {type(wrt).__name__}, not a symbolic variable or a list "
                        "of them (pass the sg.tensor / sg.shared objects the graph was built from)")
    wrt_list = [wrt] if single else list(wrt)
    for i, w in enumerate(wrt_list):
        if not isinstance(w, Variable):
            raise TypeError(f"grad: wrt[{i}] is {type(w).__name__}, not a symbolic variable "
                            "(pass the sg.tensor / sg.shared objects the graph was built from)")
        if isinstance(w, Constant):
            raise TypeError(f"grad: wrt[{i}] is a constant ({w.label()}); gradients are taken "
                            "with respect to inputs, shared variables or intermediate results")
    return wrt_list, single


def _sum(terms: list[Variable]) -> Variable:
    total = terms[0]
    for t in terms[1:]:
        total = E.add(total, t)
    return total


def _ancestors(outputs: Sequence[Variable]) -> set[int]:
    """Ids of the variables whose *values* ``outputs`` are computed from (themselves included).

    Inputs that only lend their shape (``Shape``, the ``like`` slot of ``fill`` /
    ``zeros_like``) do not count: a cost that depends on a tensor's shape alone is
    disconnected from it.
    """
    from .ops.shape import Shape
    from .scalar import inputs_of
    ids = {id(o) for o in outputs}
    for node in reversed(toposort(outputs)):
        if not any(id(o) in ids for o in node.outputs) or isinstance(node.op, Shape):
            continue
        used = range(len(node.inputs))
        if isinstance(node.op, E.Elemwise) and node.op.partials is None:
            used = inputs_of(node.op.expr)
        ids.update(id(node.inputs[i]) for i in used)
    return ids


def _backprop(seeds: dict[Variable, Variable], wrt: Sequence[Variable]) -> dict[int, list[Variable]]:
    """Reverse accumulation from ``seeds`` (variable -> its gradient) down to ``wrt``."""
    roots = list(seeds)
    order = toposort(roots)
    wrt_ids = {id(w) for w in wrt}
    # variables that depend on some wrt: only those need gradients
    relevant: set[int] = set(wrt_ids)
    for node in order:
        if any(id(i) in relevant for i in node.inputs):
            relevant.update(id(o) for o in node.outputs)
    contributions: dict[int, list[Variable]] = {}
    for var, g in seeds.items():
        contributions.setdefault(id(var), []).append(g)
    for node in reversed(order):
        out_grads = [contributions.get(id(o)) for o in node.outputs]
        if all(g is None for g in out_grads):
            continue
        if not any(id(i) in relevant for i in node.inputs):
            continue
        summed = [(_sum(g) if g else None) for g in out_grads]
        if any(g is None for g in summed):
            summed = [g if g is not None else zeros_like(o) for g, o in zip(summed, node.outputs)]
        in_grads = node.op.L_op(node, node.inputs, node.outputs, summed)
        if len(in_grads) != len(node.inputs):
            raise GradientError(f"{node.op}.L_op returned {len(in_grads)} gradients for "
                                f"{len(node.inputs)} inputs")
        for inp, g in zip(node.inputs, in_grads):
            if g is None or id(inp) not in relevant:
                continue
            if g.ndim != inp.ndim:
                raise GradientError(f"{node.op}.L_op returned a gradient of rank {g.ndim} for an "
                                    f"input of rank {inp.ndim}" + format_trace(node.trace))
            if g.dtype != inp.dtype and is_float(inp.dtype):
                g = E.cast(g, inp.dtype)
            contributions.setdefault(id(inp), []).append(g)
    return contributions


def _stabilize_before_backprop(cost: Variable, wrt: list[Variable]) -> Variable:
    """Hook: the rewriter's stabilize group on (a private copy of) the cost graph, so that the
    gradient of e.g. log(softmax(z)) is built from log_softmax and stays finite."""
    from .rewrite.stabilize import stabilize_cost
    return stabilize_cost(cost, wrt)


def grad(cost, wrt, known_grads: dict | None = None, disconnected: str = "raise"):
    """Symbolic gradient of a scalar ``cost`` with respect to ``wrt`` (a variable or a list).

    ``known_grads`` maps variables to gradients to start from (then ``cost`` may be None).
    ``disconnected``: ``"raise"``, ``"warn"`` or ``"ignore"`` when ``cost`` does not depend on
    a ``wrt``; warn and ignore return zeros.
    """
    if disconnected not in ("raise", "warn", "ignore"):
        raise ValueError(f"disconnected must be 'raise', 'warn' or 'ignore', got {disconnected!r}")
    wrt_list, single = _check_wrt(wrt)
    seeds: dict[Variable, Variable] = {}
    if known_grads is not None and not isinstance(known_grads, dict):
        raise TypeError(f"grad: known_grads must be a dict {{variable: gradient}}, got "
                        f"{type(known_grads).__name__}")
    if cost is not None:
        if not isinstance(cost, Variable):
            raise TypeError(f"grad: cost must be a symbolic scalar (built from the variables in "
                            f"wrt), got {type(cost).__name__} {cost!r}")
        if not known_grads and cost.ndim == 0:
            cost = _stabilize_before_backprop(cost, wrt_list)
        if cost.ndim != 0:
            raise ValueError(f"grad: cost must be a scalar, got a tensor of shape "
                             f"{format_shape(cost.type.shape)} ({cost.type}); reduce it first "
                             "(e.g. .sum() or .mean()), or use sg.jacobian / sg.Lop")
        if not is_float(cost.dtype):
            raise TypeError(f"grad: cost must be a float scalar, got {cost.type}")
        seeds[cost] = Constant(np.ones((), cost.dtype))
    for var, g in (known_grads or {}).items():
        g = as_variable(g)
        if g.ndim != var.ndim:
            raise ValueError(f"known_grads: gradient of rank {g.ndim} given for {var} of rank {var.ndim}")
        seeds[var] = E.cast(g, var.dtype) if g.dtype != var.dtype else g
    if not seeds:
        raise ValueError("grad: give a cost or known_grads")
    contributions = _backprop(seeds, wrt_list)
    connected = _ancestors(list(seeds))
    results = []
    for i, w in enumerate(wrt_list):
        terms = contributions.get(id(w))
        if not terms:
            # a path through piecewise-constant or integer ops (floor, argmax, comparisons)
            # carries no message but is connected: its gradient is a plain zero
            if id(w) in connected:
                results.append(zeros_like(w))
                continue
            if disconnected == "raise" and is_float(w.dtype):
                raise GradientError(f"grad: the cost does not depend on wrt[{i}] ({w.label()}: "
                                    f"{w.type}); pass disconnected='ignore' or 'warn' to get zeros",
                                    input_index=i)
            if disconnected == "warn":
                warnings.warn(f"grad: the cost does not depend on {w.label()}; its gradient is zero",
                              stacklevel=2)
            results.append(zeros_like(w))
            continue
        g = _sum(terms)
        if g.dtype != w.dtype:
            g = E.cast(g, w.dtype)
        if any(dg is None and dw is not None for dg, dw in zip(g.type.shape, w.type.shape)):
            # the value already has w's shape; this restores the static dims inference lost
            g = SumToShape(w.ndim)(g, shape(w))
        results.append(g)
    return results[0] if single else results


def Lop(f, wrt, eval_points):
    """Vector-Jacobian product ``v^T (d f / d wrt)`` for outputs ``f`` and vectors ``eval_points``."""
    fs = [f] if isinstance(f, Variable) else list(f)
    vs = [eval_points] if isinstance(eval_points, (Variable, np.ndarray)) else list(eval_points)
    if len(fs) != len(vs):
        raise ValueError(f"Lop: {len(fs)} outputs but {len(vs)} eval points")
    known = {}
    for fi, vi in zip(fs, vs):
        vi = as_variable(vi)
        if vi.ndim != fi.ndim:
            raise ValueError(f"Lop: eval point of rank {vi.ndim} for an output of rank {fi.ndim}")
        known[fi] = vi
    return grad(None, wrt, known_grads=known, disconnected="ignore")


def Rop(f, wrt, eval_points):
    """Jacobian-vector product ``(d f / d wrt) v``, forward mode.

    Uses each op's ``R_op``; ops without one fall back to the double-Lop trick on that node.
    """
    single_f = isinstance(f, Variable)
    fs = [f] if single_f else list(f)
    wrt_list = [wrt] if isinstance(wrt, Variable) else list(wrt)
    vs = [eval_points] if isinstance(eval_points, (Variable, np.ndarray)) else list(eval_points)
    if len(wrt_list) != len(vs):
        raise ValueError(f"Rop: {len(wrt_list)} wrt but {len(vs)} eval points")
    tangent: dict[int, Variable] = {}
    for w, v in zip(wrt_list, vs):
        v = as_variable(v)
        if v.ndim != w.ndim:
            raise ValueError(f"Rop: eval point of rank {v.ndim} for {w.label()} of rank {w.ndim}")
        tangent[id(w)] = E.cast(v, w.dtype) if v.dtype != w.dtype else v
    for node in toposort(fs):
        points = [tangent.get(id(i)) for i in node.inputs]
        if all(p is None for p in points):
            continue
        rop = getattr(node.op, "R_op", None)
        outs = rop(node, node.inputs, points) if rop is not None else None
        if outs is None:
            outs = _rop_by_double_lop(node, points)
        for o, t in zip(node.outputs, outs):
            if t is not None:
                tangent[id(o)] = E.cast(t, o.dtype) if t.dtype != o.dtype and is_float(o.dtype) else t
    results = [tangent.get(id(fi)) if id(fi) in tangent else zeros_like(fi) for fi in fs]
    return results[0] if single_f else results


def _rop_by_double_lop(node, points):
    """J v for one node: differentiate ``<J^T u, v>`` with respect to a dummy ``u``."""
    outs = []
    for k, out in enumerate(node.outputs):
        u = Variable(TensorType(out.type.dtype, out.type.shape), name="u")
        grads_in = [zeros_like(o) if j != k else u for j, o in enumerate(node.outputs)]
        lops = node.op.L_op(node, node.inputs, node.outputs, grads_in)
        terms = [E.mul(lop, v) for lop, v in zip(lops, points) if lop is not None and v is not None]
        if not terms:
            outs.append(None)
            continue
        from .ops.reduce import sum as sum_
        inner = sum_(_sum([sum_(t) for t in terms]))
        jv = grad(inner, u, disconnected="ignore")
        (jv,) = clone_replace([jv], {u: zeros_like(out)})
        outs.append(jv)
    return outs


def jacobian(expr, wrt):
    """The full Jacobian ``d expr / d wrt``: a symbolic tensor of shape ``expr.shape + wrt.shape``.

    Built as one batched vector-Jacobian product (``sg.vmap`` over the rows of an identity
    cotangent), so sizes may be unknown until call time and the graph does not grow with
    the number of elements.  ``wrt`` may be a list; then one Jacobian per entry.
    """
    from .ops.shape import flatten, reshape
    from .vmap import dim, dims, identity, vmap
    expr = as_variable(expr)
    wrt_list, single = _check_wrt(wrt)
    if expr.ndim == 0:
        results = grad(expr, wrt_list, disconnected="ignore")
        return results[0] if single else results
    flat = flatten(expr) if expr.ndim != 1 else expr
    dtype = expr.dtype if is_float(expr.dtype) else "float64"

    def row(v):  # one row of every Jacobian: v^T d flat / d wrt
        return tuple(grad(None, wrt_list, known_grads={flat: v}, disconnected="ignore"))

    rows = vmap(row)(identity(dim(flat, 0), dtype))
    results = []
    for w, jac in zip(wrt_list, rows):
        if expr.ndim != 1:
            jac = reshape(jac, tuple(dims(expr) + dims(w)))
        results.append(jac)
    return results[0] if single else results


def hessian(cost, wrt):
    """The Hessian of a scalar ``cost``: ``jacobian(grad(cost, wrt), wrt)``, one batched
    vector-Jacobian product of the gradient (sizes may be unknown)."""
    wrt_list, single = _check_wrt(wrt)
    results = []
    for w in wrt_list:
        g = grad(cost, w, disconnected="ignore")
        results.append(jacobian(g, w))
    return results[0] if single else results
