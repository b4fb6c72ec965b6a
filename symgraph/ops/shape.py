"""Shape ops: shape, reshape, dimshuffle (transpose / expand_dims / squeeze), broadcast_to,
concatenate / stack, and ``sum_to`` which reduces a gradient back to an input's shape."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence

import numpy as np

from ..codegen.symdim import SymInt, as_size
from ..errors import ShapeError
from ..graph.basic import Apply, Constant, Op, Variable, as_variable, dim_label
from ..graph.types import TensorType, check_size, format_shape, is_int

# --- symbolic shapes ----------------------------------------------------------------------

class Shape(Op):
    """The runtime shape of a tensor as an int64 vector."""

    def make_node(self, x) -> Apply:
        x = as_variable(x)
        return Apply(self, [x], [TensorType("int64", (x.ndim,))])

    def perform(self, node, inputs):
        return [np.array(np.shape(inputs[0]), dtype=np.int64)]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None]

    def batch(self, node, inputs, batched):
        """The per-example shape: the same for every example, so unbatched."""
        from .indexing import getitem
        return [getitem(shape(inputs[0]), slice(1, None))], [False]


class MakeVector(Op):
    """Stack int scalars into an int64 vector (symbolic shapes such as ``(n, -1)``)."""

    def make_node(self, *parts) -> Apply:
        parts = [as_variable(p, dtype="int64") for p in parts]
        for p in parts:
            if p.ndim != 0 or not is_int(p.dtype):
                raise TypeError(f"shape entries must be int scalars, got {p.type}")
        return Apply(self, parts, [TensorType("int64", (len(parts),))])

    def perform(self, node, inputs):
        parts = [as_size(np.asarray(p)[()]) for p in inputs]
        symbolic = any(isinstance(p, SymInt) for p in parts)  # generating shape-generic code
        return [np.array(parts, dtype=object if symbolic else np.int64)]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None] * len(inputs)

    def batch(self, node, inputs, batched):
        from ..vmap import not_batchable
        raise not_batchable(node, "a shape would differ between examples (shapes may depend "
                                  "on the examples' shapes, not on their values)")


def shape(x) -> Variable:
    """The symbolic shape of ``x`` (an int64 vector); a constant when fully static."""
    x = as_variable(x)
    if x.type.fully_static:
        return Constant(np.array(x.type.shape, dtype=np.int64))
    return x._symbolic_shape()[0]


def symbolic_dims(x: Variable) -> tuple[Variable, tuple]:
    """``Shape(x)`` and ``x.shape``: each static dim an int, each unknown one the int64 scalar
    ``Shape(x)[i]`` named ``x.shape[i]`` (the llvm backend folds it per call; the rewrites
    read it as "dim ``i`` of ``x``")."""
    from .indexing import getitem
    vec = Shape()(x)
    dims = []
    for axis, d in enumerate(x.type.shape):
        if d is None:
            d = getitem(vec, axis)
            d.name = dim_label(x, axis)
        dims.append(d)
    return vec, tuple(dims)


def dim_source(v: Variable) -> tuple[Variable, int] | None:
    """``(x, axis)`` when ``v`` is the symbolic size ``x.shape[axis]``, else ``None``."""
    node = v.owner
    if node is None or len(node.inputs) != 1 or type(node.op).__name__ != "Subtensor":
        return None
    spec = node.op.spec
    vec = node.inputs[0]
    if len(spec) != 1 or spec[0][0] != "i" or vec.owner is None or not isinstance(vec.owner.op, Shape):
        return None
    x = vec.owner.inputs[0]
    return x, spec[0][1] % max(x.ndim, 1)


def unknown_dims_in(v: Variable, limit: int = 64) -> list[str]:
    """The unknown sizes (``x.shape[i]``) that ``v`` is computed from, nearest first."""
    found, seen, todo = [], set(), [v]
    while todo and len(seen) < limit:
        u = todo.pop(0)
        if id(u) in seen:
            continue
        seen.add(id(u))
        src = dim_source(u)
        if src is not None:
            label = dim_label(*src)
            if label not in found:
                found.append(label)
        elif u.owner is not None:
            todo.extend(u.owner.inputs)
    return found


def expression_label(v: Variable, depth: int = 4) -> str:
    """``v`` spelled as the scalar expression that built it (``x.shape[0] // 2 > 3``), for
    messages; its plain label past ``depth`` levels or for anything but scalar arithmetic."""
    from .elemwise import Elemwise
    node = v.owner
    if v.name or depth == 0 or v.ndim or node is None or not isinstance(node.op, Elemwise):
        return v.label()
    parts = [expression_label(i, depth - 1) for i in node.inputs]
    text = re.sub(r"\bin(\d+)\b", lambda m: parts[int(m.group(1))], str(node.op.expr))
    return text[1:-1] if depth == 4 and text.startswith("(") and text.endswith(")") else text


def unknown_value_message(v: Variable, wanted: str) -> str:
    """Why the symbolic ``v`` cannot become ``wanted`` (a Python int, a truth value) while a
    graph is built, and what to do instead."""
    dims = unknown_dims_in(v)
    if not dims:
        return (f"cannot use the symbolic value {expression_label(v)} ({v.type}) as {wanted}: its value is "
                "only known when a compiled function runs")
    src = dim_source(v)
    if src is not None:
        x, axis = src
        return (f"cannot use {dims[0]} (a size of {x.label()}: {x.type}) as {wanted}: it is "
                f"unknown until call time. Pass {dims[0]} itself (a symbolic int64 scalar) "
                "where symgraph takes a size (sg.zeros, sg.arange, reshape, slice bounds), or "
                f"sg.shape({x.label()}) for the whole shape; {x.label()}.type.shape[{axis}] is "
                "None (unknown) when building")
    are = "is" if len(dims) == 1 else "are"
    return (f"cannot use {expression_label(v)} ({v.type}) as {wanted}: it is computed from "
            f"{', '.join(dims)}, which {are} unknown until call time. Keep it symbolic (symgraph "
            "takes symbolic sizes in sg.zeros, sg.arange, reshape and slice bounds), or test "
            "x.type.shape (None where unknown) in Python")


def static_shape_value(vec: Variable) -> tuple | None:
    """What is known at build time about an int64 shape vector: a tuple with ``None`` holes."""
    if isinstance(vec, Constant):
        return tuple(as_size(v) for v in vec.value.reshape(-1))
    if vec.owner is not None and isinstance(vec.owner.op, Shape):
        return vec.owner.inputs[0].type.shape
    if vec.owner is not None and isinstance(vec.owner.op, MakeVector):
        return tuple(as_size(p.value[()]) if isinstance(p, Constant) else None for p in vec.owner.inputs)
    if vec.ndim == 1 and vec.type.shape[0] is not None:
        return (None,) * vec.type.shape[0]
    return None


def _known_size(shape: tuple):
    """The element count of a shape whose dims are all known (ints or symbolic), else None."""
    if any(d is None for d in shape):
        return None
    return math.prod(shape) if not any(isinstance(d, SymInt) for d in shape) else \
        functools.reduce(lambda a, b: a * b, shape, 1)


def as_shape_vector(shape_like) -> Variable:
    """Accept a tuple of ints / int scalars, or an int vector variable."""
    if isinstance(shape_like, Variable):
        if shape_like.ndim != 1 or not is_int(shape_like.dtype):
            raise TypeError(f"a shape must be an int vector, got {shape_like.type}")
        return shape_like if shape_like.dtype == "int64" else _cast_int64(shape_like)
    if isinstance(shape_like, (int, np.integer)):
        shape_like = (shape_like,)
    parts = list(shape_like)
    for k, p in enumerate(parts):
        integral = is_int(p.dtype) and p.ndim == 0 if isinstance(p, Variable) else \
            isinstance(p, (int, np.integer)) and not isinstance(p, (bool, np.bool_))
        if p is None:
            raise TypeError(f"a shape's entry at position {k} of {tuple(shape_like)!r} is None: "
                            "an unknown size is only known at call time. Pass the symbolic size "
                            "instead (x.shape[i], an int64 scalar) or sg.shape(x) for a whole "
                            "shape; x.type.shape has None where x.shape has symbolic sizes")
        if not integral:
            what = p.type if isinstance(p, Variable) else f"{type(p).__name__} {p!r}"
            raise TypeError(f"a shape's entries must be ints or int scalars, got {what} at "
                            f"position {k} of {tuple(shape_like)!r}")
    if all(isinstance(p, (int, np.integer)) for p in parts):
        return Constant(np.array(parts, dtype=np.int64))
    return MakeVector()(*parts)


def _cast_int64(v):
    from .elemwise import cast
    return cast(v, "int64")


def prepend_dim(size, vec: Variable) -> Variable:
    """The shape vector ``(size, *vec)`` for an int64 shape vector ``vec`` (``size`` an int or
    an int scalar); entries known at build time stay ints, so static dims stay static."""
    known = static_shape_value(vec) or (None,) * vec.type.shape[0]
    from .indexing import getitem
    parts = [d if d is not None else getitem(vec, k) for k, d in enumerate(known)]
    return as_shape_vector((size, *parts))


# --- reshape ------------------------------------------------------------------------------

class Reshape(Op):
    """Reshape to a (possibly symbolic) shape vector, one entry may be -1."""

    __props__ = ("ndim",)

    def __init__(self, ndim: int):
        self.ndim = ndim

    def make_node(self, x, shape_vec) -> Apply:
        x = as_variable(x)
        known = static_shape_value(shape_vec)
        out = [None] * self.ndim
        if known is not None:
            if known.count(-1) > 1:
                raise ShapeError(f"reshape: at most one -1 allowed in {known}")
            if any(d is not None and d < -1 for d in known):
                raise ShapeError(f"reshape: negative dimension in {tuple(known)}; each dimension "
                                 "must be >= 0, or -1 (once) for the size that fits")
            out = [d if d is None or d >= 0 else None for d in known]
            total = _known_size(x.type.shape)
            if -1 in known and total is not None and all(d is not None for d in known):
                rest = math.prod(d for d in known if d != -1)
                if rest == 0 or total % rest:
                    raise ShapeError(f"reshape: cannot reshape {format_shape(x.type.shape)} "
                                     f"into {tuple(known)}")
                out[known.index(-1)] = total // rest
            elif -1 in known:
                out[known.index(-1)] = _minus_one_size(x, shape_vec, known)
            if total is not None and all(d is not None and d >= 0 for d in known):
                if math.prod(known) != total:
                    raise ShapeError(f"reshape: cannot reshape array of shape "
                                     f"{format_shape(x.type.shape)} ({total} elements) into "
                                     f"{tuple(known)}")
        return Apply(self, [x, shape_vec], [TensorType(x.dtype, tuple(out))])

    def perform(self, node, inputs):
        x, shp = inputs
        try:
            return [np.reshape(x, tuple(int(d) for d in shp))]
        except ValueError as e:
            raise ShapeError(f"reshape: cannot reshape array of shape {x.shape} into "
                             f"{tuple(int(d) for d in shp)}") from e

    def L_op(self, node, inputs, outputs, output_grads):
        return [reshape(output_grads[0], shape(inputs[0])), None]

    def R_op(self, node, inputs, eval_points):
        if eval_points[0] is None:
            return [None]
        return [Reshape(self.ndim)(eval_points[0], inputs[1])]

    def batch(self, node, inputs, batched):
        """The batch dim in front of the per-example shape."""
        from ..vmap import all_batched, dim, not_batchable
        x, vec = inputs
        if batched[1]:
            raise not_batchable(node, "the new shape would differ between examples")
        return all_batched(reshape(x, prepend_dim(dim(x, 0), vec)))


def _minus_one_size(x: Variable, vec: Variable, known: tuple) -> int | None:
    """The size ``-1`` stands for in ``reshape(x, (..., x.shape[i], ..., -1))`` when every
    unknown dim of ``x`` is passed through as an entry, so the rest is static; else None."""
    if vec.owner is None or not isinstance(vec.owner.op, MakeVector):
        return None
    matched, rest = set(), 1
    for d, part in zip(known, vec.owner.inputs):
        if d is None:
            src = dim_source(part)
            if src is None or src[0] is not x or src[1] in matched:
                return None
            matched.add(src[1])
        elif d != -1:
            rest *= d
    left = [d for a, d in enumerate(x.type.shape) if a not in matched]
    if None in left or rest == 0 or math.prod(left) % rest:
        return None  # unknown, or an error the call reports
    return math.prod(left) // rest


def reshape(x, newshape) -> Variable:
    """Reshape ``x``; ``newshape`` is a tuple (ints, -1, int scalars) or an int vector."""
    x = as_variable(x)
    vec = as_shape_vector(newshape)
    if vec.type.shape[0] is None:
        raise ShapeError("reshape: the length of the new shape must be known")
    known = static_shape_value(vec)
    if known is not None and known == x.type.shape and all(d is not None for d in known):
        return x
    return Reshape(vec.type.shape[0])(x, vec)


def flatten(x, ndim: int = 1) -> Variable:
    """Keep the first ``ndim - 1`` axes and flatten the rest into one."""
    x = as_variable(x)
    if ndim < 1 or ndim > max(x.ndim, 1):
        raise ValueError(f"flatten: ndim must be in [1, {max(x.ndim, 1)}], got {ndim}")
    if ndim == 1:
        return reshape(x, (-1,))
    from .indexing import getitem
    lead, rest = x.type.shape[:ndim - 1], x.type.shape[ndim - 1:]
    if not all(d is not None for d in lead):
        lead = tuple(getitem(shape(x), i) for i in range(ndim - 1))
    # the flattened size is spelled out, not -1: -1 is ambiguous for a zero-size tensor
    if all(d is not None for d in rest):
        size = int(np.prod(rest, dtype=np.int64))
    else:
        from .reduce import prod
        size = prod(getitem(shape(x), slice(ndim - 1, None)))
    return reshape(x, tuple(lead) + (size,))


# --- dimshuffle: transpose, expand_dims, squeeze -------------------------------------------

class DimShuffle(Op):
    """Permute axes, drop size-1 axes and insert new ones; ``order`` uses ``'x'`` for new axes.

    ``DimShuffle((1, 0))`` is a transpose; ``(0, 'x', 1)`` inserts an axis; leaving out an axis
    of size 1 drops it.
    """

    __props__ = ("order", "in_ndim")

    def __init__(self, order: Sequence, in_ndim: int):
        self.order = tuple(order)
        self.in_ndim = in_ndim
        kept = [o for o in self.order if o != "x"]
        if sorted(set(kept)) != sorted(kept) or any(not 0 <= o < in_ndim for o in kept):
            raise ValueError(f"invalid dimshuffle order {self.order} for rank {in_ndim}")
        self.dropped = tuple(a for a in range(in_ndim) if a not in kept)

    def __str__(self):
        if self.is_transpose():
            return f"Transpose{{{','.join(map(str, self.order))}}}"
        return f"DimShuffle{{{','.join(map(str, self.order))}}}"

    def is_transpose(self) -> bool:
        return "x" not in self.order and len(self.order) == self.in_ndim

    def make_node(self, x) -> Apply:
        x = as_variable(x)
        if x.ndim != self.in_ndim:
            raise ShapeError(f"{self}: expected rank {self.in_ndim}, got {x.type}")
        for a in self.dropped:
            if x.type.shape[a] not in (1, None):
                raise ShapeError(f"cannot squeeze axis {a} of size {x.type.shape[a]} "
                                 f"(shape {format_shape(x.type.shape)})")
        out = tuple(1 if o == "x" else x.type.shape[o] for o in self.order)
        return Apply(self, [x], [TensorType(x.dtype, out)])

    def perform(self, node, inputs):
        (x,) = inputs
        for a in self.dropped:
            if x.shape[a] != 1:
                raise ShapeError(f"cannot squeeze axis {a} of size {x.shape[a]} (shape {x.shape})")
        kept = [o for o in self.order if o != "x"]
        y = np.transpose(x, kept + list(self.dropped)) if x.ndim else x
        y = y.reshape(y.shape[:len(kept)])
        new_shape = []
        it = iter(y.shape)
        for o in self.order:
            new_shape.append(1 if o == "x" else next(it))
        return [y.reshape(new_shape)]

    def inverse(self) -> DimShuffle:
        kept = [o for o in self.order if o != "x"]
        order: list = []
        for a in range(self.in_ndim):
            order.append(kept.index(a) if a in kept else "x")
        # positions in the output: map kept-position to output-position
        out_pos = [i for i, o in enumerate(self.order) if o != "x"]
        order = [out_pos[p] if p != "x" else "x" for p in order]
        return DimShuffle(order, len(self.order))

    def L_op(self, node, inputs, outputs, output_grads):
        return [self.inverse()(output_grads[0])]

    def R_op(self, node, inputs, eval_points):
        return [None if eval_points[0] is None else self(eval_points[0])]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched
        order = (0,) + tuple(o if o == "x" else o + 1 for o in self.order)
        return all_batched(DimShuffle(order, self.in_ndim + 1)(inputs[0]))


def _norm_axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what}: axis {axis} is out of bounds for rank {ndim}")
    return axis % ndim


def transpose(x, axes: Sequence[int] | None = None) -> Variable:
    """Permute axes (reverse them when ``axes`` is None)."""
    x = as_variable(x)
    if axes is None:
        axes = tuple(reversed(range(x.ndim)))
    axes = tuple(_norm_axis(a, x.ndim, "transpose") for a in axes)
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {axes} are not a permutation of rank {x.ndim}")
    if axes == tuple(range(x.ndim)):
        return x
    return DimShuffle(axes, x.ndim)(x)


def expand_dims(x, axis) -> Variable:
    """Insert size-1 axes at ``axis`` (an int or a tuple), as NumPy does."""
    x = as_variable(x)
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out_ndim = x.ndim + len(axes)
    axes = sorted(_norm_axis(a, out_ndim, "expand_dims") for a in axes)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"expand_dims: repeated axis in {axis}")
    order: list = []
    it = iter(range(x.ndim))
    for i in range(out_ndim):
        order.append("x" if i in axes else next(it))
    return DimShuffle(order, x.ndim)(x)


def squeeze(x, axis=None) -> Variable:
    """Drop size-1 axes (all statically known ones when ``axis`` is None)."""
    x = as_variable(x)
    if axis is None:
        axes = [a for a, d in enumerate(x.type.shape) if d == 1]
    else:
        axes = [_norm_axis(a, x.ndim, "squeeze") for a in ((axis,) if isinstance(axis, int) else axis)]
    for a in axes:
        if x.type.shape[a] not in (1, None):
            raise ShapeError(f"squeeze: cannot remove axis {a} of size {x.type.shape[a]} "
                             f"(shape {format_shape(x.type.shape)})")
    if not axes:
        return x
    return DimShuffle([a for a in range(x.ndim) if a not in axes], x.ndim)(x)


# --- broadcasting -------------------------------------------------------------------------

class BroadcastTo(Op):
    """Broadcast to a (possibly symbolic) shape, NumPy rules."""

    __props__ = ("ndim",)

    def __init__(self, ndim: int):
        self.ndim = ndim

    def make_node(self, x, shape_vec) -> Apply:
        x = as_variable(x)
        known = static_shape_value(shape_vec) or (None,) * self.ndim
        out = _broadcast_to_shape(x.type.shape, tuple(known))
        check_size(out, x.dtype, what="broadcast_to")
        return Apply(self, [x, shape_vec], [TensorType(x.dtype, out)])

    def perform(self, node, inputs):
        x, shp = inputs
        target = tuple(int(d) for d in shp)
        _broadcast_to_shape(x.shape, target)  # the same message as at build time
        check_size(target, x.dtype, what="broadcast_to")
        return [np.broadcast_to(x, target).copy()]

    def L_op(self, node, inputs, outputs, output_grads):
        return [sum_to(output_grads[0], inputs[0]), None]

    def R_op(self, node, inputs, eval_points):
        return [None if eval_points[0] is None else self(eval_points[0], inputs[1])]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, batch_size, not_batchable, pad_after_batch
        x, vec = inputs
        if batched[1]:
            raise not_batchable(node, "the target shape would differ between examples")
        x = pad_after_batch(x, self.ndim) if batched[0] else x
        return all_batched(broadcast_to(x, prepend_dim(batch_size(inputs, batched), vec)))


def _broadcast_to_shape(shape: tuple, target: tuple) -> tuple:
    """The static result of broadcasting ``shape`` to ``target`` (NumPy's ``broadcast_to``:
    each dim of ``shape`` is 1 or the target's).  Unknown dims on either side are checked at
    call time, so only two known dims that differ (and are not 1 -> n) are a ``ShapeError``."""
    if len(shape) > len(target):
        raise ShapeError(f"broadcast_to: cannot broadcast {format_shape(shape)} to "
                         f"{format_shape(target)}: the target has fewer dimensions")
    padded = (1,) * (len(target) - len(shape)) + tuple(shape)
    out = []
    for axis, (d, t) in enumerate(zip(padded, target)):
        # (a static 1 broadcasts without a question about t; for symbolic sizes being
        # generated, "equal" is the question to ask)
        if d is not None and t is not None and not (type(d) is int and d == 1) and d != t:
            need = "1" if t == 1 else f"1 or {t}"
            raise ShapeError(f"broadcast_to: cannot broadcast {format_shape(shape)} to "
                             f"{format_shape(target)}: dimension {axis - len(target)} is {d}, "
                             f"must be {need}")
        out.append(t if t is not None or d == 1 else d)
    return tuple(out)


def broadcast_to(x, newshape) -> Variable:
    """Broadcast ``x`` to ``newshape`` (a tuple or a symbolic shape vector)."""
    x = as_variable(x)
    vec = as_shape_vector(newshape)
    return BroadcastTo(vec.type.shape[0])(x, vec)


class SumToShape(Op):
    """Sum a gradient over the axes along which its input was broadcast (runtime shapes)."""

    __props__ = ("ndim",)

    def __init__(self, ndim: int):
        self.ndim = ndim

    def make_node(self, g, shape_vec) -> Apply:
        known = static_shape_value(shape_vec) or (None,) * self.ndim
        return Apply(self, [g, shape_vec], [TensorType(g.dtype, tuple(known))])

    def perform(self, node, inputs):
        g, shp = inputs
        return [sum_to_numpy(g, tuple(int(d) for d in shp))]

    def L_op(self, node, inputs, outputs, output_grads):
        from .elemwise import fill
        return [fill(inputs[0], output_grads[0]), None]

    def R_op(self, node, inputs, eval_points):
        return [None if eval_points[0] is None else self(eval_points[0], inputs[1])]

    def batch(self, node, inputs, batched):
        """The per-example leading axes are summed first, then the rest as before."""
        from ..vmap import all_batched, dim, not_batchable
        from .reduce import sum as sum_
        g, vec = inputs
        if batched[1]:
            raise not_batchable(node, "the target shape would differ between examples")
        lead = node.inputs[0].ndim - self.ndim
        if lead > 0:
            g = sum_(g, axis=tuple(range(1, lead + 1)))
        return all_batched(SumToShape(self.ndim + 1)(g, prepend_dim(dim(g, 0), vec)))


def sum_to_numpy(g: np.ndarray, shape: tuple) -> np.ndarray:
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(a for a, (d, t) in enumerate(zip(g.shape, shape)) if t == 1 and d != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return np.array(g.reshape(shape), order="C")


def sum_to(g: Variable, like: Variable) -> Variable:
    """Reduce ``g`` (shaped like a broadcast result) to the shape of ``like``."""
    from .reduce import sum as sum_
    lead = g.ndim - like.ndim
    if lead > 0:
        g = sum_(g, axis=tuple(range(lead)))
    if g.type.shape == like.type.shape and all(d is not None for d in like.type.shape):
        return g
    axes, ambiguous = [], False
    for a, (d, t) in enumerate(zip(g.type.shape, like.type.shape)):
        if t == 1 and d != 1:
            axes.append(a)
        elif t is None and d != t:
            ambiguous = True  # the input may turn out to be 1 at call time
        elif t is None and d is None:
            ambiguous = True
    if axes:
        g = sum_(g, axis=tuple(axes), keepdims=True)
    if ambiguous:
        return SumToShape(like.ndim)(g, shape(like))
    return g


# --- joining ------------------------------------------------------------------------------

class Concatenate(Op):
    """Join tensors along an existing axis."""

    __props__ = ("axis",)

    def __init__(self, axis: int):
        self.axis = axis

    def make_node(self, *xs) -> Apply:
        xs = [as_variable(x) for x in xs]
        if not xs:
            raise ValueError("concatenate needs at least one tensor")
        nd = xs[0].ndim
        if nd == 0:
            raise ShapeError("concatenate: zero-dimensional tensors cannot be concatenated")
        from ..graph.types import result_dtype
        dtype = result_dtype(*[x.dtype for x in xs])
        out = list(xs[0].type.shape)
        for x in xs[1:]:
            if x.ndim != nd:
                raise ShapeError(f"concatenate: all inputs need rank {nd}; got shapes "
                                 f"{', '.join(format_shape(v.type.shape) for v in xs)}")
            for a in range(nd):
                if a == self.axis:
                    continue
                if out[a] is not None and x.type.shape[a] is not None and out[a] != x.type.shape[a]:
                    raise ShapeError(f"concatenate along axis {self.axis}: dimension {a} differs "
                                     f"in shapes {', '.join(format_shape(v.type.shape) for v in xs)}")
                out[a] = out[a] if out[a] is not None else x.type.shape[a]
        sizes = [x.type.shape[self.axis] for x in xs]
        out[self.axis] = sum(sizes) if all(s is not None for s in sizes) else None
        from .elemwise import cast
        xs = [cast(x, dtype) for x in xs]
        return Apply(self, xs, [TensorType(dtype, tuple(out))])

    def perform(self, node, inputs):
        return [np.concatenate(inputs, axis=self.axis)]

    def L_op(self, node, inputs, outputs, output_grads):
        parts = Split(self.axis, len(inputs))(output_grads[0], *inputs)
        return list(parts) if isinstance(parts, list) else [parts]

    def R_op(self, node, inputs, eval_points):
        return [self(*[v if v is not None else zeros_like(x) for x, v in zip(inputs, eval_points)])]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, ensure_batched
        return all_batched(Concatenate(self.axis + 1)(*ensure_batched(inputs, batched)))


class Split(Op):
    """Cut ``x`` along ``axis`` into pieces as long as the ``likes`` are (concatenate's VJP)."""

    __props__ = ("axis", "n")

    def __init__(self, axis: int, n: int):
        self.axis, self.n = axis, n

    def make_node(self, x, *likes) -> Apply:
        outs = []
        for like in likes:
            shp = list(x.type.shape)
            shp[self.axis] = like.type.shape[self.axis]
            outs.append(TensorType(x.dtype, tuple(shp)))
        return Apply(self, [x, *likes], outs)

    def perform(self, node, inputs):
        x, likes = inputs[0], inputs[1:]
        bounds = np.cumsum([np.shape(v)[self.axis] for v in likes])[:-1]
        return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=self.axis)]

    def L_op(self, node, inputs, outputs, output_grads):
        grads = [g if g is not None else zeros_like(o) for g, o in zip(output_grads, outputs)]
        return [Concatenate(self.axis)(*grads)] + [None] * self.n

    def R_op(self, node, inputs, eval_points):
        if eval_points[0] is None:
            return [None] * self.n
        parts = self(eval_points[0], *inputs[1:])
        return list(parts) if isinstance(parts, list) else [parts]

    def batch(self, node, inputs, batched):
        """The ``likes`` lend only their length along ``axis``: a size-1 batch axis will do."""
        from ..vmap import all_batched, ensure_batched
        (x,) = ensure_batched(inputs[:1], batched[:1])
        likes = [v if b else expand_dims(v, 0) for v, b in zip(inputs[1:], batched[1:])]
        parts = Split(self.axis + 1, self.n)(x, *likes)
        return all_batched(list(parts) if isinstance(parts, list) else [parts])


def zeros_like(x: Variable) -> Variable:
    """Zeros of the shape and dtype of ``x``."""
    from .elemwise import fill
    return fill(x, Constant(np.zeros((), dtype=x.dtype)))


def full_like(x, fill_value, dtype=None) -> Variable:
    """``fill_value`` in the shape of ``x`` (and its dtype unless ``dtype`` is given)."""
    from .elemwise import fill
    x = as_variable(x)
    return fill(x if dtype is None else _cast(x, dtype),
                Constant(np.array(fill_value, dtype=dtype or x.dtype)))


def ones_like(x, dtype=None) -> Variable:
    """Ones of the shape (and dtype) of ``x``."""
    return full_like(x, 1, dtype)


def full(shape, fill_value, dtype: str = "float32") -> Variable:
    """A tensor of ``shape`` (ints, int scalars such as ``sg.shape(x)[0]``, or a shape vector
    such as ``sg.shape(x)``) filled with ``fill_value``."""
    if isinstance(shape, Variable) and shape.ndim == 0:
        shape = (shape,)  # one symbolic length, as an int would be
    return broadcast_to(Constant(np.array(fill_value, dtype=dtype)), shape)


def zeros(shape, dtype: str = "float32") -> Variable:
    """Zeros of ``shape`` (see ``full``)."""
    return full(shape, 0, dtype)


def ones(shape, dtype: str = "float32") -> Variable:
    """Ones of ``shape`` (see ``full``)."""
    return full(shape, 1, dtype)


def _cast(x, dtype):
    from .elemwise import cast
    return cast(x, dtype)


def _tensor_list(xs, what: str) -> list:
    """``xs`` must be a list (or tuple) of tensors, as in NumPy; a single tensor is refused
    (a symbolic tensor cannot be split into its rows)."""
    if not isinstance(xs, (list, tuple)):
        raise TypeError(f"{what}: expected a list of tensors, got {type(xs).__name__}"
                        + ("; write [x, y] to join several tensors" if isinstance(xs, Variable) else ""))
    return list(xs)


def concatenate(xs: Sequence, axis: int = 0) -> Variable:
    """Join tensors along ``axis`` (NumPy ``concatenate``)."""
    xs = [as_variable(x) for x in _tensor_list(xs, "concatenate")]
    if not xs:
        raise ValueError("concatenate needs at least one tensor")
    axis = _norm_axis(axis, max(xs[0].ndim, 1), "concatenate")
    if len(xs) == 1:
        return xs[0]
    return Concatenate(axis)(*xs)


def stack(xs: Sequence, axis: int = 0) -> Variable:
    """Join tensors along a new axis (NumPy ``stack``)."""
    xs = [as_variable(x) for x in _tensor_list(xs, "stack")]
    if not xs:
        raise ValueError("stack needs at least one tensor")
    nd = xs[0].ndim
    axis = _norm_axis(axis, nd + 1, "stack")
    for x in xs:
        mismatch = x.ndim != nd or any(a is not None and b is not None and a != b
                                       for a, b in zip(x.type.shape, xs[0].type.shape))
        if mismatch:
            raise ShapeError(f"stack: all inputs need the same shape; got "
                             f"{', '.join(format_shape(v.type.shape) for v in xs)}")
    if all(x.ndim == 0 and is_int(x.dtype) for x in xs):
        return MakeVector()(*xs)
    parts = [expand_dims(x, axis) for x in xs]
    return parts[0] if len(parts) == 1 else Concatenate(axis)(*parts)
