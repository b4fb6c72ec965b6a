"""Reductions: sum, prod, max, min, argmax/argmin, and mean/var/std/logsumexp built on them."""

from __future__ import annotations

import builtins

import numpy as np

from ..errors import ShapeError
from ..graph.basic import Apply, Constant, Op, Variable, as_variable
from ..graph.types import TensorType, format_shape, is_float, numpy_result
from . import elemwise as E

_NUMPY = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min,
          "any": np.any, "all": np.all}


def normalize_axes(axis, ndim: int, what: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list, np.ndarray)) else (axis,)
    out = []
    for a in axes:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise TypeError(f"{what}: axis must be an int, a tuple of ints or None, got "
                            f"{type(axis).__name__} {axis!r}")
        if not -ndim <= a < ndim:
            raise ShapeError(f"{what}: axis {a} is out of bounds for a tensor of rank {ndim}")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what}: repeated axis in {axis}")
    return tuple(sorted(out))


def reduced_shape(shape, axes, keepdims) -> tuple:
    if keepdims:
        return tuple(1 if a in axes else d for a, d in enumerate(shape))
    return tuple(d for a, d in enumerate(shape) if a not in axes)


_NO_IDENTITY = {"max": "maximum", "min": "minimum", "argmax": "argmax", "argmin": "argmin"}


def check_nonempty(kind: str, shape: tuple, axes) -> None:
    """NumPy's rule: ``max``/``min``/``argmax``/``argmin`` over no elements (a reduced axis of
    size 0) is a ``ValueError``; unknown (``None``) sizes are checked when called."""
    if kind not in _NO_IDENTITY:
        return
    axes = range(len(shape)) if axes is None else axes
    for a in axes:
        if shape[a] == 0:
            what = (f"attempt to get {kind} of an empty sequence" if kind.startswith("arg") else
                    f"zero-size array to reduction operation {_NO_IDENTITY[kind]} which has "
                    "no identity")
            raise ShapeError(f"{kind}: {what}: axis {a} of the input (shape "
                             f"{format_shape(shape)}) is empty")


class Reduce(Op):
    """``kind`` (sum / prod / max / min / any / all) over ``axes``.

    ``initial`` is NumPy's: the value of a max / min over no elements, which is otherwise an
    error (``logsumexp`` uses ``-inf``).
    """

    __props__ = ("kind", "axes", "keepdims", "initial")

    def __init__(self, kind: str, axes: tuple[int, ...], keepdims: bool = False,
                 initial: float | None = None):
        self.kind, self.axes, self.keepdims = kind, tuple(axes), bool(keepdims)
        self.initial = initial

    def __str__(self):
        extra = (", keepdims" if self.keepdims else "") + \
            ("" if self.initial is None else f", initial={self.initial}")
        return f"{self.kind.capitalize()}{{axes={list(self.axes)}{extra}}}"

    def out_dtype(self, dtype: str) -> str:
        if self.kind in ("any", "all"):
            return "bool"
        if self.kind in ("sum", "prod"):
            return numpy_result(_NUMPY[self.kind](np.zeros(1, dtype)).dtype)
        return dtype

    def make_node(self, x) -> Apply:
        x = as_variable(x)
        for a in self.axes:
            if a >= builtins.max(x.ndim, 1):
                raise ShapeError(f"{self}: axis {a} is out of bounds for {x.type}")
        if self.initial is None:
            check_nonempty(self.kind, x.type.shape, self.axes)
        return Apply(self, [x], [TensorType(self.out_dtype(x.dtype),
                                            reduced_shape(x.type.shape, self.axes, self.keepdims))])

    def perform(self, node, inputs):
        (x,) = inputs
        return [reduce_numpy(self.kind, x, self.axes, self.keepdims, self.initial,
                             node.outputs[0].dtype)]

    def _keep(self, v: Variable, x: Variable) -> Variable:
        """Reinsert the reduced axes of ``v`` as size-1 axes so it broadcasts against ``x``."""
        if self.keepdims or not self.axes:
            return v
        from .shape import expand_dims
        return expand_dims(v, self.axes)

    def L_op(self, node, inputs, outputs, output_grads):
        (x,), (out,), (g,) = inputs, outputs, output_grads
        if not is_float(x.dtype) or self.kind in ("any", "all"):
            return [None]
        g = E.cast(self._keep(g, x), x.dtype)
        if self.kind == "sum":
            return [E.fill(x, g)]
        out_k = self._keep(out, x)
        if self.kind in ("max", "min"):
            # ties share the gradient equally
            hit = E.cast(E.eq(x, out_k), x.dtype)
            count = Reduce("sum", self.axes, keepdims=True)(hit)
            return [E.mul(hit, E.true_divide(g, count))]
        # prod: d out / d x_i is the product of the other entries, exact also at zeros.
        # Divisions use a safe divisor so the branch that `where` discards stays finite (its
        # derivative is then 0, not NaN).  At a zero entry with one other zero the product
        # of the others is 0 but its derivative is not: ``sum_zeros - x`` (value 0, slope 1
        # towards the other zero) keeps second derivatives exact.
        red = Reduce("sum", self.axes, keepdims=True)
        zero = E.eq(x, 0)
        nzeros = red(E.cast(zero, x.dtype))
        prod_nonzero = Reduce("prod", self.axes, keepdims=True)(E.where(zero, 1, x))
        other_zero = E.sub(red(E.where(zero, x, 0)), x)
        at_zero = E.mul(prod_nonzero, E.where(E.eq(nzeros, 1), 1, E.where(E.eq(nzeros, 2), other_zero, 0)))
        other = E.where(zero, at_zero, E.true_divide(out_k, E.where(zero, 1, x)))
        return [E.mul(g, other)]

    def R_op(self, node, inputs, eval_points):
        (v,) = eval_points
        if v is None:
            return [None]
        if self.kind == "sum":
            return [self(v)]
        ones = E.fill(node.outputs[0], Constant(np.ones((), node.outputs[0].dtype)))
        (grad,) = self.L_op(node, inputs, node.outputs, [ones])
        return [Reduce("sum", self.axes, self.keepdims)(E.mul(grad, v))]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched
        return all_batched(Reduce(self.kind, tuple(a + 1 for a in self.axes), self.keepdims)(inputs[0]))


def reduce_numpy(kind: str, x: np.ndarray, axes, keepdims: bool, initial, dtype: str):
    """The reference semantics of a reduction (also ``FusedReduce``'s)."""
    if initial is None:
        check_nonempty(kind, x.shape, axes)
        out = _NUMPY[kind](x, axis=axes, keepdims=keepdims)
    else:
        out = _NUMPY[kind](x, axis=axes, keepdims=keepdims, initial=initial)
    return np.asarray(out, dtype=dtype)


class Argmax(Op):
    """Index of the max (``kind='argmax'``) or min along one axis (or of the flattened tensor)."""

    __props__ = ("kind", "axis", "keepdims")

    def __init__(self, kind: str, axis: int | None, keepdims: bool = False):
        self.kind, self.axis, self.keepdims = kind, axis, keepdims

    def make_node(self, x) -> Apply:
        x = as_variable(x)
        check_nonempty(self.kind, x.type.shape, None if self.axis is None else (self.axis,))
        if self.axis is None:
            shape = (1,) * x.ndim if self.keepdims else ()
        else:
            shape = reduced_shape(x.type.shape, (self.axis,), self.keepdims)
        return Apply(self, [x], [TensorType("int64", shape)])

    def perform(self, node, inputs):
        check_nonempty(self.kind, inputs[0].shape, None if self.axis is None else (self.axis,))
        fn = np.argmax if self.kind == "argmax" else np.argmin
        return [np.asarray(fn(inputs[0], axis=self.axis, keepdims=self.keepdims), dtype=np.int64)]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None]

    def batch(self, node, inputs, batched):
        """``axis + 1``; over the flattened tensor (``axis=None``): over each flattened example."""
        from ..vmap import all_batched, dim
        from .shape import expand_dims, reshape
        (x,) = inputs
        if self.axis is not None:
            return all_batched(Argmax(self.kind, self.axis + 1, self.keepdims)(x))
        out = Argmax(self.kind, 1)(reshape(x, (dim(x, 0), -1)) if x.ndim != 2 else x)
        rank = node.outputs[0].ndim
        return all_batched(expand_dims(out, tuple(range(1, rank + 1))) if rank else out)


def _reduce(kind):
    def fn(x, axis=None, keepdims=False):
        x = as_variable(x)
        op = Reduce(kind, normalize_axes(axis, x.ndim, kind), keepdims)
        if not op.axes and op.out_dtype(x.dtype) == x.dtype:
            return x
        return op(x)
    fn.__name__ = kind
    fn.__doc__ = f"``{kind}`` over ``axis`` (all axes when None), NumPy semantics."
    return fn


sum = _reduce("sum")  # noqa: A001 - NumPy's name
prod = _reduce("prod")
max = _reduce("max")  # noqa: A001
min = _reduce("min")  # noqa: A001
any = _reduce("any")  # noqa: A001
all = _reduce("all")  # noqa: A001


def _count(x: Variable, axes) -> Variable | int:
    """Number of elements reduced over ``axes``: an int when static, else a symbolic scalar."""
    static = 1
    unknown = []
    for a in axes:
        if x.type.shape[a] is None:
            unknown.append(a)
        else:
            static *= x.type.shape[a]
    if not unknown:
        return static
    from .indexing import getitem
    from .shape import Shape
    shp = Shape()(x)
    n = getitem(shp, unknown[0])
    for a in unknown[1:]:
        n = E.mul(n, getitem(shp, a))
    return E.mul(n, static) if static != 1 else n


def all_static(dims) -> bool:
    return builtins.all(d is not None for d in dims)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean over ``axis``; integer inputs give float64 like NumPy."""
    x = as_variable(x)
    axes = normalize_axes(axis, x.ndim, "mean")
    total = sum(x if is_float(x.dtype) else E.cast(x, "float64"), axis=axes, keepdims=keepdims)
    n = _count(x, axes)
    if isinstance(n, int):
        return E.true_divide(total, float(n)) if n != 1 else total
    return E.true_divide(total, E.cast(n, total.dtype))


def var(x, axis=None, keepdims=False, ddof: int = 0):
    """Variance (two-pass: mean first, then mean squared deviation); the divisor is
    ``max(n - ddof, 0)``, as NumPy's."""
    x = as_variable(x)
    axes = normalize_axes(axis, x.ndim, "var")
    xf = x if is_float(x.dtype) else E.cast(x, "float64")
    centered = E.sub(xf, mean(xf, axis=axes, keepdims=True))
    total = sum(E.square(centered), axis=axes, keepdims=keepdims)
    n = _count(x, axes)
    # NumPy's divisor max(n - ddof, 0): no negative counts (0/0 is nan, as NumPy's)
    if isinstance(n, int):
        return E.true_divide(total, float(builtins.max(n - ddof, 0)))
    return E.true_divide(total, E.cast(E.maximum(E.sub(n, ddof), 0), total.dtype))


def std(x, axis=None, keepdims=False, ddof: int = 0):
    """Standard deviation: ``sqrt(var)``; its gradient is 0 where the variance is 0 (a single
    element, or all equal), as PyTorch's, instead of the 0/0 that ``sqrt`` would give."""
    v = var(x, axis=axis, keepdims=keepdims, ddof=ddof)
    zero = E.eq(v, 0)
    # the inner where keeps sqrt's gradient finite on the discarded branch
    return E.where(zero, 0, E.sqrt(E.where(zero, 1, v)))


def logsumexp(x, axis=None, keepdims=False):
    """``log(sum(exp(x)))`` computed stably (the max is shifted out)."""
    x = as_variable(x)
    axes = normalize_axes(axis, x.ndim, "logsumexp")
    if not is_float(x.dtype):  # computed in exp's float dtype (the max's -inf needs a float)
        x = E.cast(x, E.S.result_dtype("exp", (x.dtype,)))
    from ..grad import stop_gradient
    # the shift: -inf over an empty axis (initial), so the result is log(0) = -inf as NumPy's
    m = stop_gradient(Reduce("max", axes, True, initial=-np.inf)(x) if axes else x)
    m_safe = E.where(E.apply_scalar("eq", E.abs_(m), float("inf")), 0, m)
    # exp(x - m) as one node: the stabilize rewrite (log(sum(exp(.))) -> shifted by a max)
    # does not match it, so the graph keeps one max pass
    S = E.S  # the scalar IR module
    dt = E.result_dtype(x.dtype, m_safe.dtype)
    shifted = S.apply("exp", S.apply("sub", S.inp(0, dt), S.inp(1, dt)))
    s = sum(E.Elemwise(shifted, 2, name="exp_sub")(E.cast(x, dt), E.cast(m_safe, dt)),
            axis=axes, keepdims=True)
    out = E.add(E.log(s), m_safe)
    if not keepdims:
        from .shape import squeeze
        out = squeeze(out, axes) if axes else out
    return out


def argmax(x, axis=None, keepdims=False):
    """Index of the largest value along ``axis`` (of the flattened tensor when None)."""
    x = as_variable(x)
    ax = None if axis is None else normalize_axes(axis, x.ndim, "argmax")[0]
    return Argmax("argmax", ax, keepdims)(x)


def argmin(x, axis=None, keepdims=False):
    """Index of the smallest value along ``axis``."""
    x = as_variable(x)
    ax = None if axis is None else normalize_axes(axis, x.ndim, "argmin")[0]
    return Argmax("argmin", ax, keepdims)(x)
