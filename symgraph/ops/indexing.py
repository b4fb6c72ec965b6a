"""Indexing: ints, slices, ``None``, ``...`` and integer-array (gather) indices, plus ``take``
and ``one_hot``.  The gradient scatters back with accumulation, so repeated indices add up."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..graph.basic import Apply, Constant, Op, Variable, as_variable
from ..graph.types import TensorType, format_shape, is_int
from . import elemwise as E
from .slicing import (
    STEP_ZERO,
    DynSlice,
    DynSliceInc,
    DynSliceSet,
    as_bound,
    dyn_getitem,
    fits_into,
    slice_parts,
    split_key,
    write_rop,
)

# An index spec is a hashable tuple; each entry is one of
#   ("i", k)            a Python int
#   ("s", start, stop, step)
#   ("n",)              None / np.newaxis
#   ("a", j)            the j-th advanced (integer tensor) index input


def _parse(key, ndim: int):
    """Split a NumPy-style key into a spec and the list of integer-array indices."""
    if not isinstance(key, tuple):
        key = (key,)
    arrays: list[Variable] = []
    spec: list[tuple] = []
    n_ell = sum(1 for k in key if k is Ellipsis)
    if n_ell > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if consumed > ndim:
        raise IndexError(f"too many indices: tensor is {ndim}-dimensional, but {consumed} were indexed")
    for k in key:
        if k is Ellipsis:
            spec.extend([("s", None, None, None)] * (ndim - consumed))
        elif k is None:
            spec.append(("n",))
        elif isinstance(k, slice):
            # symbolic bounds were taken out by ``slicing.split_key``: constants remain
            start, stop, step = (as_bound(k.start, "slice start"),
                                 as_bound(k.stop, "slice stop"), as_bound(k.step, "slice step"))
            if step == 0:
                raise ValueError(STEP_ZERO)
            spec.append(("s", start, stop, step))
        elif isinstance(k, (bool, np.bool_)):
            raise IndexError("boolean scalar indices are not supported")
        elif isinstance(k, (int, np.integer)):
            spec.append(("i", int(k)))
        else:
            v = as_variable(k)
            if not is_int(v.dtype):
                raise IndexError(f"arrays used as indices must be integers, got {v.type} "
                                 "(boolean masks are not supported; use sg.where)")
            spec.append(("a", len(arrays)))
            arrays.append(v)
    return tuple(spec), arrays


def _key(spec, arrays):
    out = []
    for e in spec:
        if e[0] == "i":
            out.append(e[1])
        elif e[0] == "s":
            out.append(slice(e[1], e[2], e[3]))
        elif e[0] == "n":
            out.append(None)
        else:
            out.append(np.asarray(arrays[e[1]]))
    return tuple(out)


def _slice_len(entry, d):
    """Length of ``slice(start, stop, step)`` on an axis of size ``d`` (None when unknown)."""
    if d is None:
        return None
    from ..codegen.symdim import slice_indices
    return slice_indices(*entry[1:], d)[3]


def _infer_shape(spec, x_shape, idx_shapes):
    """Static output shape of ``x[key]`` following NumPy's rules, ``None`` where unknown.

    Integer arrays (and, when any is present, int scalars) broadcast together into one block
    of dims that replaces them when they are adjacent in the key, and goes first otherwise.
    """
    from ..graph.types import broadcast_shapes
    advanced = any(e[0] == "a" for e in spec)
    out: list = []
    block_at, adv_positions, adv_shapes = None, [], []
    axis = 0
    for k, e in enumerate(spec):
        if e[0] == "n":
            out.append(1)
            continue
        if e[0] == "s":
            out.append(_slice_len(e, x_shape[axis]))
        elif advanced:  # an index array, or an int scalar among index arrays
            adv_positions.append(k)
            adv_shapes.append(idx_shapes[e[1]] if e[0] == "a" else ())
            if block_at is None:
                block_at = len(out)
        axis += 1
    out.extend(x_shape[axis:])
    if not advanced:
        return tuple(out)
    block = broadcast_shapes(*adv_shapes, what="index arrays")
    adjacent = adv_positions == list(range(adv_positions[0], adv_positions[-1] + 1))
    at = block_at if adjacent else 0
    return tuple(out[:at]) + tuple(block) + tuple(out[at:])


class Subtensor(Op):
    """``x[key]`` with a static key (ints, slices, None) and integer-array indices as inputs."""

    __props__ = ("spec",)

    def __init__(self, spec: tuple):
        self.spec = spec

    def __str__(self):
        parts = []
        for e in self.spec:
            if e[0] == "i":
                parts.append(str(e[1]))
            elif e[0] == "s":
                parts.append(":".join("" if v is None else str(v) for v in e[1:3]) +
                             ("" if e[3] is None else f":{e[3]}"))
            elif e[0] == "n":
                parts.append("None")
            else:
                parts.append(f"idx{e[1]}")
        return f"Subtensor[{', '.join(parts)}]"

    @property
    def advanced(self) -> bool:
        return any(e[0] == "a" for e in self.spec)

    def make_node(self, x, *indices) -> Apply:
        x = as_variable(x)
        indices = [as_variable(i) for i in indices]
        axis = 0
        for e in self.spec:
            if e[0] == "n":
                continue
            if e[0] == "i":
                d = x.type.shape[axis]
                if d is not None and not -d <= e[1] < d:
                    raise IndexError(f"index {e[1]} is out of bounds for axis {axis} with size {d} "
                                     f"(tensor shape {format_shape(x.type.shape)})")
            if e[0] == "a" and isinstance(indices[e[1]], Constant):
                d, vals = x.type.shape[axis], indices[e[1]].value
                if d is not None and vals.size and (vals.max() >= d or vals.min() < -d):
                    bad = vals[(vals >= d) | (vals < -d)].flat[0]  # the first, as NumPy says
                    raise IndexError(f"index {bad} is out of bounds for axis {axis} with size {d}")
            axis += 1
        shape = _infer_shape(self.spec, x.type.shape, [i.type.shape for i in indices])
        return Apply(self, [x, *indices], [TensorType(x.dtype, shape)])

    def perform(self, node, inputs):
        x, arrays = inputs[0], inputs[1:]
        return [np.array(x[_key(self.spec, arrays)], order="C")]

    def L_op(self, node, inputs, outputs, output_grads):
        x, indices = inputs[0], inputs[1:]
        from .shape import zeros_like
        return [IndexAdd(self.spec)(zeros_like(x), output_grads[0], *indices)] + [None] * len(indices)

    def R_op(self, node, inputs, eval_points):
        return [None if eval_points[0] is None else self(eval_points[0], *inputs[1:])]

    def batch(self, node, inputs, batched):
        """A full slice over the batch axis; index arrays that differ between examples
        gather each example's row (see ``vmap.batch_index``)."""
        from ..vmap import all_batched, batch_index
        from .shape import transpose
        x, indices = inputs[0], inputs[1:]
        rank = max((i.ndim for i in node.inputs[1:]), default=0)
        spec, idx, perm = batch_index(self.spec, node.inputs[0].ndim, rank, x, batched[0],
                                      indices, batched[1:])
        return all_batched(transpose(Subtensor(spec)(x, *idx), perm))


def _check_fits(spec, x: Variable, y: Variable, indices: list) -> None:
    """``y`` must broadcast to the shape of ``x[key]`` (unknown dims are checked at call
    time), as NumPy's ``x[key] += y`` requires."""
    target = _infer_shape(spec, x.type.shape, [i.type.shape for i in indices])
    if not fits_into(target, y):
        raise ShapeError(f"inc_subtensor: value of shape {format_shape(y.type.shape)} cannot be "
                         f"broadcast to the indexed shape {format_shape(target)} of x[key] "
                         f"(x has shape {format_shape(x.type.shape)})")


class IndexWrite(Op):
    """What the index writes share: ``out`` is a copy of ``x`` with ``y`` written at ``x[key]``
    (``y`` broadcasts into it and is cast to ``x``'s dtype); subclasses say how it is written."""

    __props__ = ("spec",)

    def __init__(self, spec: tuple):
        self.spec = spec

    def make_node(self, x, y, *indices) -> Apply:
        x, y = as_variable(x), as_variable(y)
        indices = [as_variable(i) for i in indices]
        _check_fits(self.spec, x, y, indices)
        y = E.cast(y, x.dtype)
        return Apply(self, [x, y, *indices], [TensorType(x.dtype, x.type.shape)])

    def R_op(self, node, inputs, eval_points):
        return write_rop(self, inputs, eval_points)

    def batch(self, node, inputs, batched):
        """See ``batch_scatter``."""
        return batch_scatter(type(self), self.spec, node, inputs, batched)


class IndexAdd(IndexWrite):
    """``out = x.copy(); out[key] += y`` with repeated indices accumulating (``np.add.at``)."""

    def perform(self, node, inputs):
        x, y, arrays = inputs[0], inputs[1], inputs[2:]
        out = np.array(x, copy=True)
        key = _key(self.spec, arrays)
        if any(e[0] == "a" for e in self.spec):
            np.add.at(out, key, y)
        else:
            out[key] += y
        return [out]

    def L_op(self, node, inputs, outputs, output_grads):
        (g,) = output_grads
        y, indices = inputs[1], inputs[2:]
        from .shape import sum_to
        # ``y`` may broadcast into ``x[key]``: its gradient sums back to its own shape
        return [g, sum_to(Subtensor(self.spec)(g, *indices), y)] + [None] * len(indices)


class IndexSet(IndexWrite):
    """``out = x.copy(); out[key] = y``.  With repeated indices the last write wins on the CPU
    backends (NumPy's order); the gradient reaches ``y`` at every one of them."""

    def perform(self, node, inputs):
        x, y, arrays = inputs[0], inputs[1], inputs[2:]
        out = np.array(x, copy=True)
        out[_key(self.spec, arrays)] = y
        return [out]

    def L_op(self, node, inputs, outputs, output_grads):
        (g,) = output_grads
        y, indices = inputs[1], inputs[2:]
        from .shape import sum_to
        zero = Constant(np.zeros((), g.dtype))
        # what was overwritten gets no gradient; ``y`` gets it summed back to its shape
        return ([IndexSet(self.spec)(g, zero, *indices),
                 sum_to(Subtensor(self.spec)(g, *indices), y)] + [None] * len(indices))


def batch_scatter(op_class, spec, node, inputs, batched):
    """The batched form of an index write (``IndexAdd``, ``IndexSet``): ``x`` batched
    (broadcast when it is not), ``y`` laid out like the batched ``x[key]`` (see
    ``vmap.batch_index``), so each example writes into its own row."""
    from ..vmap import all_batched, batch_index, batch_size, broadcast_batch, inverse_perm, pad_after_batch
    from .shape import expand_dims, transpose
    x, y, indices = inputs[0], inputs[1], inputs[2:]
    if not batched[0]:
        x = broadcast_batch(x, batch_size(inputs, batched))
    rank = max((i.ndim for i in node.inputs[2:]), default=0)
    spec, idx, perm = batch_index(spec, node.inputs[0].ndim, rank, x, True, indices, batched[2:])
    sub_rank = len(perm) - 1  # the per-example rank of x[key]
    moved = perm != tuple(range(len(perm)))
    if batched[1]:
        y = pad_after_batch(y, sub_rank)
    elif moved:  # leading size-1 axes (the batch's among them) to transpose with
        y = expand_dims(y, tuple(range(sub_rank + 1 - y.ndim)))
    if moved:
        y = transpose(y, inverse_perm(perm))
    return all_batched(op_class(spec)(x, y, *idx))


def getitem(x, key) -> Variable:
    """``x[key]`` with NumPy semantics for ints, slices (static or symbolic bounds), None,
    ``...`` and int arrays."""
    x = as_variable(x)
    symbolic, rest = split_key(key, x.ndim)
    if symbolic:
        _parse(rest, x.ndim)  # a bad key fails before any node is built
        out = _static_getitem(dyn_getitem(x, symbolic), rest)
    else:
        out = _static_getitem(x, key)
    if out.owner is not None and out is not x:
        out.owner.indexed = (x, key)  # for ``set_subtensor(x[key], y)``
    return out


def _static_getitem(x: Variable, key) -> Variable:
    """``x[key]`` for a key without symbolic slice bounds."""
    spec, arrays = _parse(key, x.ndim)
    if all(e == ("s", None, None, None) for e in spec) and len(spec) == x.ndim:
        return x
    if isinstance(x, Constant) and all(isinstance(a, Constant) for a in arrays):
        # e.g. ``sg.shape(x)[0]`` of a static shape: keep it a constant so shapes stay static
        return Constant(np.array(x.value[_key(spec, [a.value for a in arrays])]))
    from .shape import Shape
    if x.owner is not None and isinstance(x.owner.op, Shape) and len(spec) == 1 and spec[0][0] == "i":
        n = x.type.shape[0]
        dim = x.owner.inputs[0].type.shape[spec[0][1]] if -n <= spec[0][1] < n else None
        if dim is not None:
            return Constant(np.array(dim, dtype=np.int64))
    return Subtensor(spec)(x, *arrays)


_NOT_GIVEN = object()


def inc_subtensor(x, key, y=_NOT_GIVEN) -> Variable:
    """A copy of ``x`` with ``y`` added at ``x[key]`` (repeated indices accumulate).  Also
    Theano's form ``inc_subtensor(x[key], y)``."""
    x, key, y = _write_args("inc_subtensor", x, key, y)
    return _write(x, key, y, IndexAdd, DynSliceInc)


def set_subtensor(x, key, y=_NOT_GIVEN) -> Variable:
    """A copy of ``x`` with ``x[key] = y`` (NumPy assignment; ``y`` broadcasts).  Also
    Theano's form ``set_subtensor(x[key], y)``."""
    x, key, y = _write_args("set_subtensor", x, key, y)
    return _write(x, key, y, IndexSet, DynSliceSet)


def _write_args(what: str, x, key, y) -> tuple:
    """``(x, key, y)`` of either calling form."""
    if y is not _NOT_GIVEN:
        return as_variable(x), key, y
    sub = as_variable(x)
    origin = getattr(sub.owner, "indexed", None) if sub.owner is not None else None
    if origin is None:
        raise TypeError(f"{what}(sub, y): the first argument must be an indexed value such as "
                        f"x[2:5] or x[idx] (or call {what}(x, key, y)), got {sub.label()}")
    return origin[0], origin[1], key


def _write(x: Variable, key, y, static_op, dyn_op) -> Variable:
    """``x`` with ``y`` written at ``x[key]``: an index write of the static key, inside the
    symbolic slices (each written back into the level it was cut from)."""
    symbolic, rest = split_key(key, x.ndim)
    if not symbolic:
        spec, arrays = _parse(key, x.ndim)
        return static_op(spec)(x, y, *arrays)
    spec, arrays = _parse(rest, x.ndim)
    last_takes_y = all(e == ("s", None, None, None) for e in spec)  # nothing left to index
    levels, parts = [x], []
    for j, (axis, k) in enumerate(symbolic):
        parts.append(slice_parts(levels[-1], axis, k))
        if j < len(symbolic) - 1 or not last_takes_y:
            levels.append(DynSlice(axis)(levels[-1], *parts[-1]))
    if last_takes_y:
        value = dyn_op(symbolic[-1][0])(levels.pop(), y, *parts[-1])
    else:
        value = static_op(spec)(levels.pop(), y, *arrays)
    for j in reversed(range(len(levels))):  # ``value`` was cut from ``levels[j]``
        value = DynSliceSet(symbolic[j][0])(levels[j], value, *parts[j])
    return value


def take(x, indices, axis: int | None = None) -> Variable:
    """NumPy ``take``: gather ``indices`` along ``axis`` (of the flattened tensor when None)."""
    x = as_variable(x)
    if axis is None:
        from .shape import flatten
        return getitem(flatten(x), as_variable(indices, dtype="int64"))
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"take: axis {axis} is out of bounds for {x.type}")
    axis %= x.ndim
    idx = as_variable(indices, dtype="int64") if not isinstance(indices, Variable) else indices
    return getitem(x, (slice(None),) * axis + (idx,))


def one_hot(labels, n, dtype: str = "float32") -> Variable:
    """``one_hot(labels, n)[..., k] = (labels == k)`` as ``dtype``; ``n`` (the number of
    classes) is an int or an int scalar variable (then the last dim is known at call time)."""
    labels = as_variable(labels)
    if not is_int(labels.dtype):
        raise TypeError(f"one_hot: labels must be integers, got {labels.type}")
    if isinstance(n, Constant) and n.ndim == 0 and is_int(n.dtype):
        n = int(n.value)
    symbolic = isinstance(n, Variable) and n.ndim == 0 and is_int(n.dtype)
    if not symbolic and (isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer))):
        what = n.type if isinstance(n, Variable) else f"{type(n).__name__} {n!r}"
        raise TypeError(f"one_hot: n (the number of classes) must be an int or an int scalar, "
                        f"got {what}")
    if not symbolic and n < 1:
        raise ValueError(f"one_hot: n (the number of classes) must be at least 1, got {n}")
    from .nn import arange
    from .shape import expand_dims
    classes = Constant(np.arange(n, dtype=labels.dtype)) if not symbolic else \
        E.cast(arange(n), labels.dtype)
    return E.cast(E.eq(expand_dims(labels, -1), classes), dtype)
