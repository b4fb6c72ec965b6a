"""``vmap``: the batching transformation, a graph-to-graph rewrite like ``grad``.

``vmap(fn)(xs)`` traces ``fn`` once on per-example placeholders (the batched inputs' types
without the batch axis), then rebuilds the traced graph node by node in topological order:

* a node that depends on no batched value is kept as it is (shared by every example);
* a node with a batched input is rebuilt by its op's ``batch(node, inputs, batched)`` rule
  (beside ``L_op`` on the op class) from the batched inputs, whose batch axis is axis 0.

A rule returns ``(outputs, out_batched)``: the new outputs and, for each, whether it carries
the batch axis (``Shape`` of a batched tensor is the per-example shape, unbatched).  Most
rules add a leading axis to the op's parameters (``axis + 1``); elementwise ops need only
rank alignment.  The helpers below (batch size, padding, folding the batch into another
axis) are what the rules share.

``jacobian`` and ``hessian`` are one batched vector-Jacobian product with an identity
cotangent of symbolic size, so their graphs do not grow with the number of elements.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Sequence

import numpy as np

from .errors import ShapeError
from .graph import basic
from .graph.basic import Apply, Constant, Variable, as_variable, format_trace
from .graph.fgraph import toposort
from .graph.types import TensorType

BatchResult = tuple[list[Variable], list[bool]]
Dim = int | Variable  # a static size, or an int64 scalar computed from shapes

# the batch size of the transformation in progress: rules broadcast unbatched inputs to it
_SIZE: contextvars.ContextVar[Dim | None] = contextvars.ContextVar("vmap_size", default=None)


# --- the transformation ---------------------------------------------------------------------

def vmap(fn: Callable, in_axes=0, out_axes=0) -> Callable:
    """``fn`` (symbolic values to symbolic values) applied over a batch axis as one graph.

    ``in_axes``: the batch axis of every argument (an int), or one entry per argument (an
    int, or ``None`` for an argument passed to every example unchanged).  ``out_axes``: where
    the batch axis goes in each output (an int, or one entry per output; ``None`` for an
    output that does not depend on the batched arguments).  ``fn`` may return one value or a
    tuple / list of them; the result has the same structure.
    """
    if not callable(fn):
        raise TypeError(f"vmap: fn must be callable, got {type(fn).__name__}")
    _check_axes_spec(in_axes, "in_axes")
    _check_axes_spec(out_axes, "out_axes")

    @functools.wraps(fn)
    def batched_fn(*args):
        args = [as_variable(a) for a in args]
        axes = _per_item(in_axes, len(args), "in_axes", "argument")
        if all(a is None for a in axes):
            raise ValueError("vmap: in_axes marks no argument as batched; give at least one an axis")
        fronts = [None if ax is None else _move_to_front(a, ax, k) for k, (a, ax) in
                  enumerate(zip(args, axes))]
        size = _common_size(args, fronts)
        placeholders = [a if f is None else Variable(TensorType(f.dtype, f.type.shape[1:]), name=a.name)
                        for a, f in zip(args, fronts)]
        start = next(basic._ids)  # nodes built by fn have larger ids (fresh random draws)
        traced = fn(*placeholders)
        outs, pack = _flatten_outputs(traced)
        mapping = {id(p): f for p, f in zip(placeholders, fronts) if f is not None}
        results = batch_graph(outs, mapping, size, start)
        out_ax = _per_item(out_axes, len(outs), "out_axes", "output")
        return pack([_place_output(v, b, ax, size, k) for k, ((v, b), ax) in
                     enumerate(zip(results, out_ax))])

    return batched_fn


def batch_graph(outputs: Sequence[Variable], batched_inputs: dict[int, Variable], size: Dim,
                created_after: int = -1) -> list[tuple[Variable, bool]]:
    """Rebuild ``outputs`` with the variables whose ids key ``batched_inputs`` replaced by
    their batched values (batch axis 0, ``size`` long).  Returns ``(value, is_batched)`` per
    output.  Random draws built after variable id ``created_after`` become one independent
    draw per example."""
    env: dict[int, tuple[Variable, bool]] = {k: (v, True) for k, v in batched_inputs.items()}
    token = _SIZE.set(size)
    try:
        for node in toposort(outputs):
            _batch_node(node, env, created_after)
    finally:
        _SIZE.reset(token)
    return [env.get(id(o), (o, False)) for o in outputs]


def _batch_node(node: Apply, env: dict, created_after: int) -> None:
    found = [env.get(id(i)) for i in node.inputs]
    flags = [f is not None and f[1] for f in found]
    fresh_draw = node.op.nondeterministic and node.outputs[0].id > created_after
    if not any(flags) and not fresh_draw:
        if any(f is not None for f in found):  # inputs rebuilt unbatched (e.g. a shape)
            new = node.clone_with_new_inputs([f[0] if f else i for f, i in zip(found, node.inputs)])
            for o, n in zip(node.outputs, new.outputs):
                env[id(o)] = (n, False)
        return
    inputs = [f[0] if f else i for f, i in zip(found, node.inputs)]
    rule = getattr(node.op, "batch", None)
    if rule is None:
        raise NotImplementedError(f"vmap: {node.op} has no batching rule" + format_trace(node.trace))
    outs, out_flags = rule(node, inputs, flags)
    if len(outs) != len(node.outputs) or len(out_flags) != len(outs):
        raise RuntimeError(f"vmap: {node.op}.batch returned {len(outs)} outputs for "
                           f"{len(node.outputs)}")
    for o, n, b in zip(node.outputs, outs, out_flags):
        if n.ndim != o.ndim + int(b):
            raise RuntimeError(f"vmap: {node.op}.batch returned {n.type} for {o.type} "
                               f"({'batched' if b else 'unbatched'})")
        env[id(o)] = (n, b)


def _check_axes_spec(spec, what: str) -> None:
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    for a in items:
        if a is not None and (isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer))):
            raise TypeError(f"vmap: {what} entries must be ints or None, got {type(a).__name__} {a!r}")


def _per_item(spec, n: int, what: str, item: str) -> list:
    if isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ValueError(f"vmap: {what} has {len(spec)} entries for {n} {item}s")
        return list(spec)
    return [spec] * n


def _move_to_front(x: Variable, axis: int, k: int) -> Variable:
    from .ops.shape import transpose
    if x.ndim == 0:
        raise ShapeError(f"vmap: argument {k} ({x.label()}: {x.type}) is a scalar and has no axis "
                         "to map over; pass None in in_axes for it")
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"vmap: in_axes {axis} is out of bounds for argument {k} "
                         f"({x.label()}: {x.type})")
    axis %= x.ndim
    if axis == 0:
        return x
    return transpose(x, (axis,) + tuple(a for a in range(x.ndim) if a != axis))


def _common_size(args: list[Variable], fronts: list[Variable | None]) -> Dim:
    """The batch size (static where any batched argument's is); sizes known to differ raise."""
    batched = [(k, f) for k, f in enumerate(fronts) if f is not None]
    static = {f.type.shape[0] for _, f in batched if f.type.shape[0] is not None}
    if len(static) > 1:
        raise ShapeError("vmap: the batched arguments have different batch sizes: " + ", ".join(
            f"argument {k} ({args[k].label()}: {args[k].type}) has {f.type.shape[0]}"
            for k, f in batched if f.type.shape[0] is not None))
    if static:
        return static.pop()
    return dim(batched[0][1], 0)


def _flatten_outputs(traced):
    if isinstance(traced, (list, tuple)):
        outs = [as_variable(o) for o in traced]
        kind = type(traced)
        return outs, (lambda vs: kind(vs))
    return [as_variable(traced)], (lambda vs: vs[0])


def _place_output(v: Variable, is_batched: bool, axis, size: Dim, k: int) -> Variable:
    from .ops.shape import transpose
    if axis is None:
        if is_batched:
            raise ValueError(f"vmap: out_axes is None for output {k}, but it depends on the "
                             "batched arguments")
        return v
    if not is_batched:
        v = broadcast_batch(v, size)
    if not -v.ndim <= axis < v.ndim:
        raise ShapeError(f"vmap: out_axes {axis} is out of bounds for output {k} ({v.type})")
    axis %= v.ndim
    if axis == 0:
        return v
    order = list(range(1, v.ndim))
    order.insert(axis, 0)
    return transpose(v, tuple(order))


# --- helpers for the rules ------------------------------------------------------------------

def all_batched(outputs) -> BatchResult:
    """A rule's result when every output carries the batch axis."""
    outputs = outputs if isinstance(outputs, list) else [outputs]
    return outputs, [True] * len(outputs)


def not_batchable(node: Apply, why: str):
    """The error of a rule that cannot batch ``node``."""
    return NotImplementedError(f"vmap: cannot batch {node.op}: {why}" + format_trace(node.trace))


def dim(x: Variable, axis: int) -> Dim:
    """Size of ``x`` along ``axis``: an int when static, else an int64 scalar of its shape."""
    return x.shape[axis]


def dims(x: Variable) -> list[Dim]:
    return [dim(x, a) for a in range(x.ndim)]


def mul_dims(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    from .ops.elemwise import mul
    return mul(a, b)


def batch_size(inputs: Sequence[Variable], batched: Sequence[bool]) -> Dim:
    """The batch size: the one of the transformation in progress, else the first batched
    input's leading dim."""
    size = _SIZE.get()
    if size is not None:
        return size
    return dim(next(x for x, b in zip(inputs, batched) if b), 0)


def pad_after_batch(x: Variable, rank: int) -> Variable:
    """Insert size-1 axes after the batch axis so that the per-example rank is ``rank``
    (NumPy's right-aligned broadcasting then keeps the batch axis first)."""
    from .ops.shape import expand_dims
    missing = rank - (x.ndim - 1)
    return expand_dims(x, tuple(range(1, 1 + missing))) if missing > 0 else x


def broadcast_batch(x: Variable, size: Dim) -> Variable:
    """An unbatched ``x`` repeated ``size`` times along a new leading axis."""
    from .ops.shape import broadcast_to, expand_dims
    return broadcast_to(expand_dims(x, 0), tuple([size] + dims(x)))


def ensure_batched(inputs: Sequence[Variable], batched: Sequence[bool]) -> list[Variable]:
    """Every input with the batch axis (unbatched ones broadcast along it)."""
    size = batch_size(inputs, batched)
    return [x if b else broadcast_batch(x, size) for x, b in zip(inputs, batched)]


def first_example(x: Variable, is_batched: bool) -> Variable:
    """A per-example view (for inputs that lend only their shape, such as ``like``)."""
    return x[0] if is_batched else x


def zeros_of(shape_dims: Sequence[Dim], dtype: str) -> Variable:
    """A tensor of the given dims for inputs that lend only their shape (a broadcast view)."""
    from .ops.shape import broadcast_to
    return broadcast_to(Constant(np.zeros((), dtype)), tuple(shape_dims))


def fold_batch(x: Variable, into: int) -> Variable:
    """Merge the batch axis of ``x`` (axis 0) into per-example axis ``into``, batch-major:
    ``(B, d0, d1, ...) -> (d0, .., B * d_into, ...)``."""
    from .ops.shape import reshape, transpose
    rest = list(range(1, x.ndim))
    order = rest[:into] + [0] + rest[into:]
    xt = transpose(x, tuple(order))
    ds = dims(x)[1:]
    new = ds[:into] + [mul_dims(dim(x, 0), ds[into])] + ds[into + 1:]
    return reshape(xt, tuple(new))


def unfold_batch(y: Variable, axis: int, size: Dim) -> Variable:
    """Undo ``fold_batch``: split ``axis`` of ``y`` into ``(size, rest)`` and move the batch
    axis to the front."""
    from .ops.elemwise import floor_divide
    from .ops.shape import reshape, transpose
    ds = dims(y)
    total = ds[axis]
    rest = total // size if isinstance(total, int) and isinstance(size, int) \
        else floor_divide(total, size)
    z = reshape(y, tuple(ds[:axis] + [size, rest] + ds[axis + 1:]))
    order = [axis] + [a for a in range(z.ndim) if a != axis]
    return transpose(z, tuple(order))


def block_diagonal(w: Variable) -> Variable:
    """Per-example weights ``(B, O, C, ...)`` as one ``(B*O, B*C, ...)`` block-diagonal tensor
    (for convolutions whose input and weights are both batched)."""
    from .ops.elemwise import mul
    from .ops.shape import expand_dims, reshape
    size = dim(w, 0)
    eye = identity(size, w.dtype)  # (B, B)
    spread = mul(expand_dims(w, 2), expand_dims(eye, (1,) + tuple(range(3, w.ndim + 1))))
    ds = dims(w)
    return reshape(spread, tuple([mul_dims(size, ds[1]), mul_dims(size, ds[2])] + ds[3:]))


def block_diagonal_part(y: Variable, size: Dim) -> Variable:
    """From ``(B*O, B*C, ...)`` keep the diagonal blocks: ``(B, O, C, ...)``."""
    from .ops.elemwise import floor_divide, mul
    from .ops.reduce import sum as sum_
    from .ops.shape import expand_dims, reshape
    ds = dims(y)

    def part(d):
        return d // size if isinstance(d, int) and isinstance(size, int) else floor_divide(d, size)

    z = reshape(y, tuple([size, part(ds[0]), size, part(ds[1])] + ds[2:]))  # (B, O, B, C, ...)
    eye = expand_dims(identity(size, y.dtype), (1,) + tuple(range(3, z.ndim)))
    return sum_(mul(z, eye), axis=2)


def identity(n: Dim, dtype: str) -> Variable:
    """The ``n x n`` identity (``n`` static or symbolic), built from ``arange`` comparisons."""
    from .ops.elemwise import cast, eq
    from .ops.nn import arange
    from .ops.shape import expand_dims
    if isinstance(n, int):
        return Constant(np.eye(n, dtype=dtype))
    r = arange(n)
    return cast(eq(expand_dims(r, 1), expand_dims(r, 0)), dtype)


# --- indexing -------------------------------------------------------------------------------

def _index_layout(spec: tuple, x_ndim: int, block_rank: int) -> list[tuple]:
    """Labels of the axes of ``x[spec]``, NumPy's placement of the advanced-index block:
    ``("x", axis)`` for an axis of ``x``, ``("n", position)`` for a ``None``, ``("b", j)``
    for the block (in place when the advanced entries are adjacent, else first)."""
    advanced = any(e[0] == "a" for e in spec)
    out: list[tuple] = []
    block_at, positions, axis = None, [], 0
    for k, e in enumerate(spec):
        if e[0] == "n":
            out.append(("n", k))
            continue
        if e[0] == "s":
            out.append(("x", axis))
        elif advanced:
            positions.append(k)
            if block_at is None:
                block_at = len(out)
        axis += 1
    out.extend(("x", a) for a in range(axis, x_ndim))
    if not advanced:
        return out
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    at = block_at if adjacent else 0
    return out[:at] + [("b", j) for j in range(block_rank)] + out[at:]


def batch_index(spec: tuple, x_rank: int, index_rank: int, x: Variable, x_batched: bool,
                indices: Sequence[Variable], idx_batched: Sequence[bool]):
    """The batched form of indexing a per-example ``x`` of rank ``x_rank`` with ``spec``
    (index arrays broadcasting to rank ``index_rank``): ``(spec, indices, perm)`` such that
    ``transpose(x[spec], perm)`` is the batched result (batch axis first).

    Unbatched index arrays: a full slice for the batch axis of ``x``.  Batched index arrays
    (a gather per example): the batch axis is indexed by ``arange(B)`` broadcast against
    them, so each example reads its own row.
    """
    from .ops.nn import arange
    from .ops.shape import expand_dims
    k_rank = index_rank
    want = [("B",)] + _index_layout(spec, x_rank, k_rank)
    full = ("s", None, None, None)
    if not any(idx_batched):
        bspec = (full,) + spec
        layout = _index_layout(bspec, x_rank + 1, k_rank)
        labels = [_relabel_slice(lab) for lab in layout]
        bindices = list(indices)
    else:
        bindices = [pad_after_batch(i, k_rank) if b else i for i, b in zip(indices, idx_batched)]
        if x_batched:
            size = dim(x, 0)
            rows = arange(size)
            rows = expand_dims(rows, tuple(range(1, k_rank + 1))) if k_rank else rows
            bspec = (("a", len(bindices)),) + spec
            bindices.append(rows)
            layout = _index_layout(bspec, x_rank + 1, k_rank + 1)
            labels = [_relabel_gather(lab, shift=1) for lab in layout]
        else:
            bspec = spec
            layout = _index_layout(bspec, x_rank, k_rank + 1)
            labels = [_relabel_gather(lab, shift=0) for lab in layout]
    perm = tuple(labels.index(w) for w in want)
    return bspec, bindices, perm


def _relabel_slice(lab: tuple) -> tuple:
    """Labels of ``x[(:,) + spec]`` in terms of the per-example ``x[spec]``."""
    if lab == ("x", 0):
        return ("B",)
    if lab[0] == "x":
        return ("x", lab[1] - 1)
    if lab[0] == "n":
        return ("n", lab[1] - 1)
    return lab


def _relabel_gather(lab: tuple, shift: int) -> tuple:
    """Labels of a gather whose first block axis is the batch (``shift``: one entry and one
    axis of ``x`` were prepended for the batch)."""
    if lab[0] == "b":
        return ("B",) if lab[1] == 0 else ("b", lab[1] - 1)
    if lab[0] == "x":
        return ("x", lab[1] - shift)
    return ("n", lab[1] - shift)


def inverse_perm(perm: Sequence[int]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)
