"""``theano.tensor`` (``T``): typed constructors, the usual math, ``switch``, ``dimshuffle``,
``set_subtensor`` / ``inc_subtensor``, ``tensordot``, ``batched_dot``, ``nnet``, ``signal.pool``."""

from __future__ import annotations

import numpy as np

from .... import ops as _ops
from ....graph.basic import Variable, as_variable
from ....graph.types import TensorType
from ....ops import elemwise as E
from ....ops import reduce as R
from ....ops.linalg import matmul
from ....ops.shape import shape as shape
from ....ops.shape import transpose
from .. import core
from . import nnet as nnet
from . import shared_randomstreams as shared_randomstreams
from . import signal as signal

# --- typed constructors -----------------------------------------------------------------------
_PREFIX = {"b": "int8", "w": "int16", "i": "int32", "l": "int64", "f": "float32", "d": "float64"}
_KINDS = {"scalar": (), "vector": (None,), "row": (1, None), "col": (None, 1), "matrix": (None, None),
          "tensor3": (None,) * 3, "tensor4": (None,) * 4, "tensor5": (None,) * 5}


def _variable(dims, dtype):
    def make(name: str | None = None, dtype: str | None = None) -> Variable:
        return Variable(TensorType(dtype or _resolve(make.dtype), dims), name=name)
    make.dtype = dtype
    return make


def _resolve(dtype):
    return core.config.floatX if dtype is None else dtype


def _plural(single):
    """``T.dmatrices('a', 'b')`` (or a count): several variables at once."""
    def make(*names):
        if len(names) == 1 and isinstance(names[0], int):
            return [single() for _ in range(names[0])]
        return [single(n) for n in names]
    return make


for _kind, _shape in _KINDS.items():
    for _prefix, _dtype in [("", None), *_PREFIX.items()]:  # no prefix: floatX at call time
        _single = _variable(_shape, _dtype)
        globals()[_prefix + _kind] = _single
        globals()[_prefix + {"matrix": "matrices"}.get(_kind, _kind + "s")] = _plural(_single)


def tensor(dtype=None, broadcastable=None, name=None, dims=None) -> Variable:
    """``T.tensor(dtype, broadcastable)``: broadcastable dims have size 1, the others are unknown."""
    if dims is None:
        dims = tuple(1 if b else None for b in (broadcastable or ()))
    return Variable(TensorType(_resolve(dtype), tuple(dims)), name=name)


# --- math ------------------------------------------------------------------------------------
dot, outer = _ops.dot, _ops.outer
exp, log, log1p, expm1, sqrt, tanh, sin, cos = E.exp, E.log, E.log1p, E.expm1, E.sqrt, E.tanh, E.sin, E.cos
abs_, sgn, floor, ceil, erf = E.abs_, E.sign, E.floor, E.ceil, E.erf
maximum, minimum, clip, pow = E.maximum, E.minimum, E.clip, E.power
eq, neq, lt, le, gt, ge = E.eq, E.neq, E.lt, E.le, E.gt, E.ge
add, sub, mul, true_div = E.add, E.sub, E.mul, E.true_divide
sqr = E.square
sum, mean, prod, var, std = R.sum, R.mean, R.prod, R.var, R.std  # noqa: A001 - Theano's names
max, min, argmax, argmin = R.max, R.min, R.argmax, R.argmin  # noqa: A001
cast, arange = E.cast, _ops.arange
reshape, flatten, concatenate, stack = _ops.reshape, _ops.flatten, _ops.concatenate, _ops.stack
sigmoid = E.sigmoid  # T.nnet.sigmoid is the same
grad = core.grad
neg = E.neg


def switch(cond, if_true, if_false) -> Variable:
    """``T.switch``: elementwise select (``sg.where``)."""
    return E.where(cond, if_true, if_false)


def zeros_like(x, dtype=None) -> Variable:
    """Zeros with the shape (and dtype, unless ``dtype`` is given) of ``x``."""
    return _ops.full_like(as_variable(x), 0, dtype)


def ones_like(x, dtype=None) -> Variable:
    """Ones with the shape (and dtype, unless ``dtype`` is given) of ``x``."""
    return _ops.full_like(as_variable(x), 1, dtype)


def zeros(shape, dtype=None) -> Variable:
    """``T.zeros(shape)``: ``shape`` an int, a tuple of ints and symbolic sizes such as
    ``x.shape[0]``, or ``x.shape``; ``floatX`` unless ``dtype`` is given."""
    return _ops.zeros(_shape_arg(shape), _resolve(dtype))


def ones(shape, dtype=None) -> Variable:
    """``T.ones(shape)``, as ``zeros``."""
    return _ops.ones(_shape_arg(shape), _resolve(dtype))


def alloc(value, *shape) -> Variable:
    """``T.alloc(value, *shape)``: ``value`` (keeping its dtype) broadcast to ``shape``."""
    value = as_variable(np.asarray(value, dtype=core.config.floatX) if isinstance(value, float) else value)
    return _ops.broadcast_to(value, _shape_arg(shape))


def _shape_arg(shape):
    """Theano accepts a bare int (or a symbolic scalar) for a one-dimensional shape."""
    if isinstance(shape, (int, np.integer)) or (isinstance(shape, Variable) and shape.ndim == 0):
        return (shape,)
    return tuple(shape) if isinstance(shape, list) else shape


def dimshuffle(x, *pattern) -> Variable:
    """``x.dimshuffle(pattern)``: permute axes, ``'x'`` inserts a broadcastable axis, and
    axes of size 1 left out are dropped."""
    x = as_variable(x)
    if len(pattern) == 1 and isinstance(pattern[0], (list, tuple)):
        pattern = tuple(pattern[0])
    kept = [p for p in pattern if p != "x"]
    if sorted(kept) != sorted(set(kept)) or any(not 0 <= p < x.ndim for p in kept):
        raise ValueError(f"dimshuffle: invalid pattern {pattern} for a rank-{x.ndim} value")
    dropped = [a for a in range(x.ndim) if a not in kept]
    if any(x.type.shape[a] != 1 for a in dropped):
        raise ValueError(f"dimshuffle: pattern {pattern} drops axes {dropped}, which must have size 1 "
                         f"(shape {x.type.shape})")
    if dropped:
        x = _ops.squeeze(x, axis=tuple(dropped))
        remap = {a: i for i, a in enumerate(a for a in range(x.ndim + len(dropped)) if a not in dropped)}
        kept = [remap[p] for p in kept]
    y = transpose(x, tuple(kept)) if kept != sorted(kept) else x
    for pos, p in enumerate(pattern):
        if p == "x":
            y = _ops.expand_dims(y, pos)
    return y


Variable.dimshuffle = lambda self, *pattern: dimshuffle(self, *pattern)


def inc_subtensor(sub, y) -> Variable:
    """``T.inc_subtensor(x[key], y)``: ``x`` with ``y`` added at ``x[key]`` (static or
    symbolic slice bounds)."""
    return _ops.inc_subtensor(sub, y)


def set_subtensor(sub, y) -> Variable:
    """``T.set_subtensor(x[key], y)``: ``x`` with ``x[key]`` replaced by ``y``."""
    return _ops.set_subtensor(sub, y)


def tensordot(a, b, axes=2) -> Variable:
    """NumPy's ``tensordot``: contract the last ``axes`` axes of ``a`` with the first of ``b``
    (or the axis lists ``axes = (a_axes, b_axes)``)."""
    a, b = as_variable(a), as_variable(b)
    if isinstance(axes, int):
        a_axes, b_axes = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        a_axes = [ax % a.ndim for ax in np.atleast_1d(axes[0])]
        b_axes = [ax % b.ndim for ax in np.atleast_1d(axes[1])]
    a_free = [ax for ax in range(a.ndim) if ax not in a_axes]
    b_free = [ax for ax in range(b.ndim) if ax not in b_axes]
    dims = [a.type.shape[ax] for ax in a_free + a_axes] + [b.type.shape[ax] for ax in b_free]
    if any(d is None for d in dims):
        raise ValueError("tensordot: every axis must have a static size (shape "
                         f"{a.type.shape} and {b.type.shape})")
    k = int(np.prod([a.type.shape[ax] for ax in a_axes], dtype=np.int64))
    a2 = reshape(transpose(a, tuple(a_free + a_axes)), (-1, k))
    b2 = reshape(transpose(b, tuple(b_axes + b_free)), (k, -1))
    out_shape = tuple(a.type.shape[ax] for ax in a_free) + tuple(b.type.shape[ax] for ax in b_free)
    return reshape(matmul(a2, b2), out_shape)


def batched_dot(a, b) -> Variable:
    """``T.batched_dot``: ``a[i] @ b[i]`` for every ``i`` of the leading axis."""
    a, b = as_variable(a), as_variable(b)
    if a.ndim == 2 and b.ndim == 2:
        return R.sum(E.mul(a, b), axis=1)
    if a.ndim == 2:
        return reshape(matmul(_ops.expand_dims(a, 1), b), (-1, b.shape[2]))
    if b.ndim == 2:
        return reshape(matmul(a, _ops.expand_dims(b, 2)), (-1, a.shape[1]))
    return matmul(a, b)

