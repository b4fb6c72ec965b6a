"""Slices whose bounds are symbolic: ``x[i * bs:(i + 1) * bs]``, ``x[:n // 2]``, ``x[::s]``.

NumPy's ``slice.indices`` rules (negative bounds count from the end, bounds clip to the axis,
the step's sign picks the defaults) are spelled out as a small int64 scalar graph
(``normalize_slice``), so the ops themselves see a slice in its plain form: the index of the
first element ``start``, the ``step`` and the ``length``.  Lowering needs exactly those three;
when they depend only on input shapes the native backends fold them into constants, and when
they depend on the value of an input (the minibatch idiom) the length is a run-time value.

One op reads one axis (``DynSlice``); a key with several symbolic slices is a chain of them,
and the static rest of the key is an ordinary ``Subtensor`` on the result.  Writes
(``DynSliceSet`` / ``DynSliceInc``) write ``y`` into the slice of one axis.
"""

from __future__ import annotations

import numpy as np

from ..codegen.symdim import SymInt, as_size, smax
from ..errors import ShapeError
from ..graph.basic import Apply, Constant, Op, Variable, as_variable
from ..graph.types import TensorType, format_shape, is_int
from . import elemwise as E

Int = int | Variable  # a Python int or an int64 0-d variable

STEP_ZERO = "slice step cannot be zero"


# --- int64 scalar arithmetic that stays Python ints where it can -----------------------------

def _is_static(v) -> bool:
    return isinstance(v, (int, np.integer))


def _add(a: Int, b: Int) -> Int:
    if _is_static(b) and b == 0:
        return a
    return int(a) + int(b) if _is_static(a) and _is_static(b) else E.add(a, b)


def _sub(a: Int, b: Int) -> Int:
    if _is_static(b) and b == 0:
        return a
    return int(a) - int(b) if _is_static(a) and _is_static(b) else E.sub(a, b)


def _max(a: Int, b: Int) -> Int:
    return max(int(a), int(b)) if _is_static(a) and _is_static(b) else E.maximum(a, b)


def _min(a: Int, b: Int) -> Int:
    return min(int(a), int(b)) if _is_static(a) and _is_static(b) else E.minimum(a, b)


def _floordiv(a: Int, b: Int) -> Int:
    if _is_static(b) and b == 1:
        return a
    return int(a) // int(b) if _is_static(a) and _is_static(b) else E.floor_divide(a, b)


def _where(cond, a: Int, b: Int) -> Int:
    if isinstance(cond, (bool, np.bool_)):
        return a if cond else b
    return E.where(cond, a, b)


def _lt(a: Int, b: Int):
    return int(a) < int(b) if _is_static(a) and _is_static(b) else E.lt(a, b)


def as_bound(v, what: str) -> Int | None:
    """A slice part as ``None``, a Python int, or an int64 0-d variable (constants become
    ints, so a key of constants stays a static key)."""
    if v is None or _is_static(v):
        return None if v is None else int(v)
    if isinstance(v, Variable):
        if v.ndim != 0 or not is_int(v.dtype):
            raise TypeError(f"{what} must be an int or an int scalar, got {v.type}")
        if isinstance(v, Constant):
            return int(v.value)
        return v if v.dtype == "int64" else E.cast(v, "int64")
    raise TypeError(f"{what} must be an int, None or an int scalar, got "
                    f"{type(v).__name__} {v!r}")


def is_symbolic_slice(k) -> bool:
    """True for a ``slice`` with at least one non-constant symbolic part."""
    return isinstance(k, slice) and any(isinstance(p, Variable) and not isinstance(p, Constant)
                                        for p in (k.start, k.stop, k.step))


def _clamped(bound: Int, d: Int, lo: Int, hi: Int) -> Int:
    """A bound counted from the end when negative, then clipped to ``[lo, hi]``."""
    wrapped = _where(_lt(bound, 0), _add(bound, d), bound)
    return _min(_max(wrapped, lo), hi)


def _forward(d: Int, start, stop, step: Int) -> tuple[Int, Int]:
    """``(start, length)`` of a slice with a positive step."""
    first = 0 if start is None else _clamped(start, d, 0, d)
    end = d if stop is None else _clamped(stop, d, 0, d)
    return first, _max(0, _floordiv(_add(_sub(end, first), _sub(step, 1)), step))


def _backward(d: Int, start, stop, step: Int) -> tuple[Int, Int]:
    """``(start, length)`` of a slice with a negative step."""
    last = _sub(d, 1)
    first = last if start is None else _clamped(start, d, -1, last)
    end = -1 if stop is None else _clamped(stop, d, -1, last)
    neg = _sub(0, step)
    return first, _max(0, _floordiv(_add(_sub(first, end), _sub(neg, 1)), neg))


def normalize_slice(d: Int, start, stop, step) -> tuple[Int, Int, Int]:
    """NumPy's ``slice(start, stop, step).indices(d)`` as ``(first, step, length)``: ints where
    everything is static, else int64 scalars of the graph.  A symbolic step is checked for
    zero by the op that reads it (the arithmetic here divides by a step that is never 0)."""
    step = 1 if step is None else step
    if _is_static(step):
        if step == 0:
            raise ValueError(STEP_ZERO)
        rule = _forward if step > 0 else _backward
        first, length = rule(d, start, stop, step)
        return first, step, length
    safe = E.where(E.eq(step, 0), 1, step)
    f_first, f_len = _forward(d, start, stop, E.maximum(safe, 1))
    b_first, b_len = _backward(d, start, stop, E.minimum(safe, -1))
    up = E.gt(step, 0)
    return _where(up, f_first, b_first), step, _where(up, f_len, b_len)


def plain_slice(first: int, step: int, length: int) -> slice:
    """The NumPy slice of ``length`` elements from ``first`` by ``step`` (normalised parts)."""
    if step == 0:
        raise ValueError(STEP_ZERO)
    if length <= 0:
        return slice(0, 0)
    stop = first + length * step
    return slice(first, stop if stop >= 0 else None, step)


def _scalar(v: Int) -> Variable:
    return as_variable(v, dtype="int64") if _is_static(v) else v


def _static_int(v: Variable):
    """A constant's int, or the symbolic size a placeholder holds while shape-generic code
    is generated (``codegen/specialize.py``); None when not known."""
    return as_size(v.value) if isinstance(v, Constant) else None


def _slice_dim(d: int | None, first: Variable, step: Variable, length: Variable) -> int | None:
    """The static length of a slice, when its parts say it: a constant length, or an empty
    axis."""
    n = _static_int(length)
    if isinstance(n, SymInt):
        return smax(n, 0)
    if n is not None:
        return max(n, 0)
    return 0 if d == 0 else None


def _check_parts(op: str, first, step, length) -> list[Variable]:
    parts = [_scalar(first), _scalar(step), _scalar(length)]
    for name, p in zip(("start", "step", "length"), parts):
        if p.ndim != 0 or not is_int(p.dtype):
            raise TypeError(f"{op}: the slice {name} must be an int scalar, got {p.type}")
    if _static_int(parts[1]) == 0:  # known when built, or when specialised for a call
        raise ValueError(STEP_ZERO)
    return [p if p.dtype == "int64" else E.cast(p, "int64") for p in parts]


def _key(axis: int, first, step, length) -> tuple:
    return (slice(None),) * axis + (plain_slice(int(first), int(step), int(length)),)


def write_rop(op, inputs, eval_points) -> list:
    """The R-op of a write ``op(x, y, *rest)`` (linear in ``x`` and ``y``): the same write of
    the tangents, a missing one taken as zeros."""
    vx, vy = eval_points[0], eval_points[1]
    if vx is None and vy is None:
        return [None]
    from .shape import zeros_like
    vx = vx if vx is not None else zeros_like(inputs[0])
    vy = vy if vy is not None else zeros_like(inputs[1])
    return [op(vx, vy, *inputs[2:])]


class NonzeroStep(Op):
    """The identity on an int64 step that raises NumPy's error when it is 0 (``arange`` with
    a symbolic step; a slice's step is checked by the op that reads it)."""

    __props__ = ("what",)

    def __init__(self, what: str):
        self.what = what

    def __str__(self):
        return self.what  # errors read "arange: step cannot be zero"

    def make_node(self, step) -> Apply:
        step = as_variable(step, dtype="int64")
        return Apply(self, [step], [TensorType(step.dtype, ())])

    def perform(self, node, inputs):
        if int(inputs[0]) == 0:
            raise ValueError(f"{self.what}: step cannot be zero")
        return [np.array(inputs[0])]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None]


def symbolic_arange(start, stop, step) -> Variable:
    """``arange(start, stop, step)`` as int64 where a part is an int scalar variable:
    ``start + step * arange(length)`` with NumPy's length (never negative)."""
    from .nn import ARange
    start, stop, step = (as_bound(p, f"arange: {name}")
                         for p, name in ((start, "start"), (stop, "stop"), (step, "step")))
    step = 1 if step is None else step
    if _is_static(start) and start == 0 and _is_static(step) and step == 1:
        return ARange()(stop)  # the form rewrites recognise (``log_softmax(z)[arange(n), y]``)
    if _is_static(step):
        if step == 0:
            raise ValueError("arange: step cannot be zero")
        up = step > 0
    else:
        step = NonzeroStep("arange")(step)
        up = E.gt(step, 0)
    # ceil((stop - start) / step) = (stop - start + step -/+ 1) // step
    toward = _where(up, _sub(step, 1), _add(step, 1))
    length = _max(0, _floordiv(_add(_sub(stop, start), toward), step))
    ramp = ARange()(length)
    if not (_is_static(step) and step == 1):
        ramp = E.mul(ramp, step)
    return ramp if _is_static(start) and start == 0 else E.add(ramp, start)


# --- reading ---------------------------------------------------------------------------------

class DynSlice(Op):
    """``x[..., first : first + length * step : step]`` along ``axis``, with the three parts
    int64 scalars (``normalize_slice`` made them from the user's bounds)."""

    __props__ = ("axis",)

    def __init__(self, axis: int):
        self.axis = axis

    def __str__(self):
        return f"DynSlice{{axis={self.axis}}}"

    def make_node(self, x, first, step, length) -> Apply:
        x = as_variable(x)
        if not 0 <= self.axis < x.ndim:
            raise IndexError(f"{self}: axis out of range for {x.type}")
        parts = _check_parts(str(self), first, step, length)
        shape = list(x.type.shape)
        shape[self.axis] = _slice_dim(shape[self.axis], *parts)
        return Apply(self, [x, *parts], [TensorType(x.dtype, tuple(shape))])

    def perform(self, node, inputs):
        x, first, step, length = inputs
        return [np.array(x[_key(self.axis, first, step, length)], order="C")]

    def L_op(self, node, inputs, outputs, output_grads):
        from .shape import zeros_like
        x, parts = inputs[0], inputs[1:]
        return [DynSliceInc(self.axis)(zeros_like(x), output_grads[0], *parts), None, None, None]

    def R_op(self, node, inputs, eval_points):
        return [None if eval_points[0] is None else self(eval_points[0], *inputs[1:])]

    def batch(self, node, inputs, batched):
        """The same slice of every example (the bounds may not differ between examples)."""
        from ..vmap import all_batched, not_batchable
        if any(batched[1:]):
            raise not_batchable(node, "the slice bounds would differ between examples")
        return all_batched(DynSlice(self.axis + 1)(*inputs))


# --- writing ---------------------------------------------------------------------------------

class DynSliceWrite(Op):
    """A copy of ``x`` with ``y`` written into its slice along ``axis`` (``y`` broadcasts to
    the slice's shape and is cast to ``x``'s dtype); subclasses say how it is written."""

    __props__ = ("axis",)
    verb = "write"

    def __init__(self, axis: int):
        self.axis = axis

    def __str__(self):
        return f"{type(self).__name__}{{axis={self.axis}}}"

    def make_node(self, x, y, first, step, length) -> Apply:
        x, y = as_variable(x), as_variable(y)
        if not 0 <= self.axis < x.ndim:
            raise IndexError(f"{self}: axis out of range for {x.type}")
        parts = _check_parts(str(self), first, step, length)
        target = list(x.type.shape)
        target[self.axis] = _slice_dim(target[self.axis], *parts)
        _check_fits(self.verb, tuple(target), x, y)
        return Apply(self, [x, E.cast(y, x.dtype), *parts], [TensorType(x.dtype, x.type.shape)])

    def perform(self, node, inputs):
        x, y, first, step, length = inputs
        key = _key(self.axis, first, step, length)
        target = x[key].shape
        try:
            np.broadcast_to(y, target)
        except ValueError:
            raise ShapeError(f"{self.verb}: value of shape {y.shape} cannot be broadcast to the "
                             f"sliced shape {target} of x (x has shape {x.shape})") from None
        out = np.array(x, copy=True)
        self.write(out, key, y)
        return [out]

    def write(self, out: np.ndarray, key: tuple, y: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def R_op(self, node, inputs, eval_points):
        return write_rop(self, inputs, eval_points)

    def batch(self, node, inputs, batched):
        """Each example writes into its own row; ``y`` lines up with the batched slice."""
        from ..vmap import all_batched, batch_size, broadcast_batch, not_batchable, pad_after_batch
        if any(batched[2:]):
            raise not_batchable(node, "the slice bounds would differ between examples")
        x, y, parts = inputs[0], inputs[1], inputs[2:]
        if not batched[0]:
            x = broadcast_batch(x, batch_size(inputs, batched))
        if batched[1]:
            y = pad_after_batch(y, node.inputs[0].ndim)
        return all_batched(type(self)(self.axis + 1)(x, y, *parts))


def fits_into(target: tuple, y: Variable) -> bool:
    """Whether ``y`` broadcasts to the static shape ``target`` as far as is known at build
    time (unknown dims are checked at call time), as NumPy's ``x[key] = y`` requires."""
    from ..graph.types import broadcast_shapes
    try:
        both = broadcast_shapes(target, y.type.shape)
    except ShapeError:
        return False
    return y.ndim <= len(target) and all(b in (t, None) or t is None for b, t in zip(both, target))


def _check_fits(verb: str, target: tuple, x: Variable, y: Variable) -> None:
    """``y`` must broadcast to the slice's shape ``target`` (unknown dims at call time)."""
    if not fits_into(target, y):
        raise ShapeError(f"{verb}: value of shape {format_shape(y.type.shape)} cannot be "
                         f"broadcast to the sliced shape {format_shape(target)} of x (x has "
                         f"shape {format_shape(x.type.shape)})")


class DynSliceInc(DynSliceWrite):
    """``out = x.copy(); out[slice] += y``."""

    verb = "inc_subtensor"

    def write(self, out, key, y):
        out[key] += y

    def L_op(self, node, inputs, outputs, output_grads):
        from .shape import sum_to
        (g,) = output_grads
        y, parts = inputs[1], inputs[2:]
        return [g, sum_to(DynSlice(self.axis)(g, *parts), y), None, None, None]


class DynSliceSet(DynSliceWrite):
    """``out = x.copy(); out[slice] = y``."""

    verb = "set_subtensor"

    def write(self, out, key, y):
        out[key] = y

    def L_op(self, node, inputs, outputs, output_grads):
        from .shape import sum_to
        (g,) = output_grads
        y, parts = inputs[1], inputs[2:]
        zero = Constant(np.zeros((), g.dtype))
        return [DynSliceSet(self.axis)(g, zero, *parts),
                sum_to(DynSlice(self.axis)(g, *parts), y), None, None, None]


# --- keys ------------------------------------------------------------------------------------

def _dim(x: Variable, axis: int) -> Int:
    d = x.type.shape[axis]
    if d is not None:
        return d
    from .indexing import getitem
    from .shape import shape
    return getitem(shape(x), axis)


def split_key(key, ndim: int) -> tuple[list[tuple[int, slice]], tuple]:
    """``key`` as ``(symbolic, rest)``: the symbolic slices with the axis of ``x`` each reads,
    and the key with each of them replaced by ``:`` (so ``x[key] == x[symbolic][rest]``)."""
    parts = key if isinstance(key, tuple) else (key,)
    consumed = sum(1 for k in parts if k is not None and k is not Ellipsis)
    symbolic, rest, axis = [], [], 0
    for k in parts:
        if k is Ellipsis:
            axis += max(ndim - consumed, 0)
            rest.append(k)
        elif k is None:
            rest.append(k)
        elif is_symbolic_slice(k):
            symbolic.append((axis, k))
            rest.append(slice(None))
            axis += 1
        else:
            rest.append(k)
            axis += 1
    return symbolic, tuple(rest)


def slice_parts(x: Variable, axis: int, k: slice) -> tuple[Int, Int, Int]:
    """``(first, step, length)`` of slice ``k`` on ``x``'s ``axis``."""
    start, stop, step = (as_bound(k.start, "slice start"), as_bound(k.stop, "slice stop"),
                         as_bound(k.step, "slice step"))
    return normalize_slice(_dim(x, axis), start, stop, step)


def dyn_getitem(x: Variable, symbolic: list[tuple[int, slice]]) -> Variable:
    """``x`` sliced by each ``(axis, slice)`` in turn (axes keep their places)."""
    for axis, k in symbolic:
        x = DynSlice(axis)(x, *slice_parts(x, axis, k))
    return x
