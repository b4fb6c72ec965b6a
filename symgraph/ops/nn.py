"""Neural-network ops: softmax / log_softmax, softmax cross-entropy, conv2d and pooling.

Row-wise ops are their own op classes (stable forward, and a clear unit for code generators);
their gradients are expressed with ordinary graph ops, so they can be differentiated again.
"""

from __future__ import annotations

import numpy as np

from ..codegen.symdim import as_size
from ..errors import ShapeError
from ..graph.basic import Apply, Constant, Op, Variable, as_variable
from ..graph.types import TensorType, format_shape, is_float, is_int
from . import elemwise as E
from . import reduce as R
from .shape import expand_dims, shape


def _axis(axis: int, ndim: int, what: str) -> int:
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{what}: axis {axis} is out of bounds for rank {ndim}")
    return axis % ndim


def _float_input(x, what: str) -> Variable:
    x = as_variable(x)
    if not is_float(x.dtype):
        raise TypeError(f"{what}: expected a float tensor, got {x.type}")
    if x.ndim == 0:
        raise ShapeError(f"{what}: expected a tensor of rank >= 1, got a scalar")
    return x


def np_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """``x - max - log(sum(exp(x - max)))``; the plain max, as in PyTorch: a row holding +inf,
    NaN or only -inf is NaN throughout."""
    if x.size == 0:  # no rows, or rows of no elements: an empty result (as torch's)
        return np.array(x, copy=True)
    s = x - np.max(x, axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


class Softmax(Op):
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``."""

    __props__ = ("axis",)

    def __init__(self, axis: int):
        self.axis = axis

    def make_node(self, x) -> Apply:
        x = _float_input(x, "softmax")
        return Apply(self, [x], [x.type])

    def perform(self, node, inputs):
        (x,) = inputs
        if x.size == 0:  # as log_softmax: an empty result, on every backend
            return [np.array(x, copy=True)]
        e = np.exp(x - np.max(x, axis=self.axis, keepdims=True))  # see np_log_softmax
        return [e / np.sum(e, axis=self.axis, keepdims=True)]

    def L_op(self, node, inputs, outputs, output_grads):
        (y,), (g,) = outputs, output_grads
        dot = R.sum(E.mul(g, y), axis=self.axis, keepdims=True)
        return [E.mul(y, E.sub(g, dot))]

    def R_op(self, node, inputs, eval_points):
        (v,) = eval_points
        if v is None:
            return [None]
        y = node.outputs[0]
        return [E.mul(y, E.sub(v, R.sum(E.mul(v, y), axis=self.axis, keepdims=True)))]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched
        return all_batched(Softmax(self.axis % node.inputs[0].ndim + 1)(inputs[0]))


class LogSoftmax(Op):
    """``x - logsumexp(x)`` along ``axis``."""

    __props__ = ("axis",)

    def __init__(self, axis: int):
        self.axis = axis

    def make_node(self, x) -> Apply:
        x = _float_input(x, "log_softmax")
        return Apply(self, [x], [x.type])

    def perform(self, node, inputs):
        return [np_log_softmax(inputs[0], self.axis)]

    def L_op(self, node, inputs, outputs, output_grads):
        (y,), (g,) = outputs, output_grads
        return [E.sub(g, E.mul(E.exp(y), R.sum(g, axis=self.axis, keepdims=True)))]

    def R_op(self, node, inputs, eval_points):
        (v,) = eval_points
        if v is None:
            return [None]
        y = node.outputs[0]
        return [E.sub(v, R.sum(E.mul(E.exp(y), v), axis=self.axis, keepdims=True))]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched
        return all_batched(LogSoftmax(self.axis % node.inputs[0].ndim + 1)(inputs[0]))


class ARange(Op):
    """``arange(n)`` as int64 for a (possibly symbolic) scalar ``n``."""

    def make_node(self, n) -> Apply:
        n = as_variable(n, dtype="int64")
        # (a symbolic size while shape-generic code is generated)
        size = as_size(n.value) if isinstance(n, Constant) else None
        return Apply(self, [n], [TensorType("int64", (size,))])

    def perform(self, node, inputs):
        return [np.arange(int(inputs[0]), dtype=np.int64)]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None]

    def batch(self, node, inputs, batched):
        from ..vmap import not_batchable
        raise not_batchable(node, "its length would differ between examples")


def arange(start, stop=None, step=None, dtype=None) -> Variable:
    """NumPy's ``arange``: ``arange(n)`` is ``0, 1, ..., n-1`` and ``arange(start, stop, step)``
    counts by ``step``.  Each part may be an int scalar variable (``x.shape[0]``, an input);
    the result is then int64 (``dtype`` casts it)."""
    if stop is None:
        start, stop = 0, start
    if stop is None:  # an unknown entry of ``x.type.shape``, most likely
        raise TypeError("arange: the size must be an int or an int scalar, got None (for a "
                        "dim unknown until call time use sg.shape(x)[k])")
    parts = (start, stop, step)
    if not any(isinstance(p, Variable) and not isinstance(p, Constant) for p in parts):
        values = [p.value.item() if isinstance(p, Constant) else p for p in parts]
        if values[2] == 0:
            raise ValueError("arange: step cannot be zero")
        if all(isinstance(v, (int, np.integer)) or v is None for v in values):
            return Constant(np.arange(*values, dtype=dtype or np.int64))
        return Constant(np.arange(*values, dtype=dtype))
    from .slicing import symbolic_arange
    out = symbolic_arange(start, stop, step)
    return out if dtype is None else E.cast(out, dtype)


def dense_targets(labels: Variable, like: Variable) -> Variable:
    """One-hot rows shaped like ``like`` (last axis = classes) from integer labels."""
    n = like.type.shape[-1]
    if n is None:
        from .indexing import getitem
        n = getitem(shape(like), -1)
    classes = arange(n)
    return E.cast(E.eq(expand_dims(labels, -1), E.cast(classes, labels.dtype)), like.dtype)


class SoftmaxCrossEntropy(Op):
    """Per-row ``-sum(targets * log_softmax(logits))`` over the last axis.

    ``targets`` are integer class labels (one rank lower than ``logits``) or probabilities
    (same shape).  The gradient with respect to the logits is ``softmax * sum(t) - t``.
    """

    __props__ = ("sparse",)

    def __init__(self, sparse: bool):
        self.sparse = sparse

    def make_node(self, logits, targets) -> Apply:
        logits = _float_input(logits, "cross_entropy")
        targets = as_variable(targets)
        if self.sparse:
            if not is_int(targets.dtype):
                raise TypeError(f"cross_entropy: integer labels expected, got {targets.type}")
            if targets.ndim != logits.ndim - 1:
                raise ShapeError(f"cross_entropy: labels of shape {format_shape(targets.type.shape)} do "
                                 f"not match logits of shape {format_shape(logits.type.shape)} (labels "
                                 "need one dimension less)")
            for _a, (d1, d2) in enumerate(zip(logits.type.shape[:-1], targets.type.shape)):
                if d1 is not None and d2 is not None and d1 != d2:
                    raise ShapeError(f"cross_entropy: labels of shape {format_shape(targets.type.shape)} "
                                     f"do not match logits of shape {format_shape(logits.type.shape)}")
        else:
            if targets.ndim != logits.ndim:
                raise ShapeError(f"cross_entropy: targets of shape {format_shape(targets.type.shape)} "
                                 f"do not match logits of shape {format_shape(logits.type.shape)}")
            from ..graph.types import broadcast_shapes
            broadcast_shapes(logits.type.shape, targets.type.shape, what="cross_entropy")
            targets = E.cast(targets, logits.dtype)
        return Apply(self, [logits, targets], [TensorType(logits.dtype, logits.type.shape[:-1])])

    def perform(self, node, inputs):
        z, t = inputs
        ls = np_log_softmax(z, -1)
        if self.sparse:
            n = z.shape[-1]
            if t.shape != z.shape[:-1]:
                raise ShapeError(f"cross_entropy: labels of shape {t.shape} do not match logits "
                                 f"of shape {z.shape}")
            if t.size and (t.min() < 0 or t.max() >= n):
                raise IndexError(f"cross_entropy: labels must be in [0, {n}), got values in "
                                 f"[{t.min()}, {t.max()}]")
            return [-np.take_along_axis(ls, t[..., None], axis=-1)[..., 0]]
        with np.errstate(invalid="ignore"):
            return [-np.sum(np.where(t == 0, 0, t * ls), axis=-1)]

    def L_op(self, node, inputs, outputs, output_grads):
        z, t = inputs
        g = expand_dims(output_grads[0], -1)
        p = Softmax(z.ndim - 1)(z)
        if self.sparse:
            return [E.mul(E.sub(p, dense_targets(t, z)), g), None]
        total = R.sum(t, axis=-1, keepdims=True)
        gz = E.mul(E.sub(E.mul(p, total), t), g)
        gt = E.mul(E.neg(LogSoftmax(z.ndim - 1)(z)), g)
        return [gz, gt]

    def R_op(self, node, inputs, eval_points):
        z, t = inputs
        vz, vt = eval_points
        terms = []
        if vz is not None:
            p = Softmax(z.ndim - 1)(z)
            if self.sparse:
                dz = E.sub(p, dense_targets(t, z))
            else:
                dz = E.sub(E.mul(p, R.sum(t, axis=-1, keepdims=True)), t)
            terms.append(R.sum(E.mul(dz, vz), axis=-1))
        if vt is not None and not self.sparse:
            terms.append(R.sum(E.mul(E.neg(LogSoftmax(z.ndim - 1)(z)), vt), axis=-1))
        if not terms:
            return [None]
        return [terms[0] if len(terms) == 1 else E.add(*terms)]

    def batch(self, node, inputs, batched):
        """Rows are independent: the batch is one more leading axis of logits and targets."""
        from ..vmap import all_batched, ensure_batched, pad_after_batch
        z, t = ensure_batched(inputs, batched)
        t = pad_after_batch(t, node.inputs[1].ndim) if batched[1] else t
        return all_batched(SoftmaxCrossEntropy(self.sparse)(z, t))


# --- convolution ---------------------------------------------------------------------------

def _pair(v, what: str, minimum: int = 1) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        v = (int(v), int(v))
    v = tuple(int(e) for e in v)
    if len(v) != 2:
        raise ValueError(f"{what} must be an int or a pair, got {v}")
    if min(v) < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {v}")
    return v


def _conv_out(size, k, s, p):
    if size is None or k is None:
        return None
    return (size + 2 * p - k) // s + 1


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int) -> np.ndarray:
    """(N, C, OH, OW, kh, kw) view of all windows."""
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return v[:, :, ::sh, ::sw]


class Conv2d(Op):
    """2-D cross-correlation, NCHW input and OIHW weights, zero padding, stride."""

    __props__ = ("stride", "padding")

    def __init__(self, stride=(1, 1), padding=(0, 0)):
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding", minimum=0)

    def __str__(self):
        return f"Conv2d{{stride={self.stride}, padding={self.padding}}}"

    def make_node(self, x, w) -> Apply:
        x, w = as_variable(x), as_variable(w)
        if x.ndim != 4 or w.ndim != 4:
            raise ShapeError(f"conv2d: input must be NCHW (rank 4) and weights OIHW (rank 4); got "
                             f"{format_shape(x.type.shape)} and {format_shape(w.type.shape)}")
        if x.type.shape[1] is not None and w.type.shape[1] is not None and x.type.shape[1] != w.type.shape[1]:
            raise ShapeError(f"conv2d: input has {x.type.shape[1]} channels (shape "
                             f"{format_shape(x.type.shape)}) but weights expect {w.type.shape[1]} (shape "
                             f"{format_shape(w.type.shape)})")
        (sh, sw), (ph, pw) = self.stride, self.padding
        oh = _conv_out(x.type.shape[2], w.type.shape[2], sh, ph)
        ow = _conv_out(x.type.shape[3], w.type.shape[3], sw, pw)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise ShapeError(f"conv2d: a {w.type.shape[2]}x{w.type.shape[3]} kernel does not fit an input of "
                             f"shape {format_shape(x.type.shape)} with padding {self.padding}")
        from ..graph.types import result_dtype
        dtype = result_dtype(x.dtype, w.dtype)
        x, w = E.cast(x, dtype), E.cast(w, dtype)
        return Apply(self, [x, w], [TensorType(dtype, (x.type.shape[0], w.type.shape[0], oh, ow))])

    def perform(self, node, inputs):
        x, w = inputs
        (ph, pw), (sh, sw) = self.padding, self.stride
        if x.shape[1] != w.shape[1]:
            raise ShapeError(f"conv2d: input has {x.shape[1]} channels but weights expect {w.shape[1]}")
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        win = _windows(xp, w.shape[2], w.shape[3], sh, sw)
        out = np.einsum("ncyxij,ocij->noyx", win, w, optimize=True)
        return [np.ascontiguousarray(out, dtype=x.dtype)]

    def L_op(self, node, inputs, outputs, output_grads):
        x, w = inputs
        (g,) = output_grads
        return [Conv2dGradInput(self.stride, self.padding)(g, w, x),
                Conv2dGradWeight(self.stride, self.padding)(x, g, w)]

    def R_op(self, node, inputs, eval_points):
        x, w = inputs
        vx, vw = eval_points
        terms = [self(vx, w)] if vx is not None else []
        if vw is not None:
            terms.append(self(x, vw))
        return [None if not terms else terms[0] if len(terms) == 1 else E.add(*terms)]

    def batch(self, node, inputs, batched):
        """The batch folds into the images (batched input), the output channels (batched
        weights), or both channel axes with block-diagonal weights (both batched)."""
        from ..vmap import all_batched, batch_size, block_diagonal, fold_batch, unfold_batch
        x, w = inputs
        size = batch_size(inputs, batched)
        if batched[0] and not batched[1]:
            return all_batched(unfold_batch(self(fold_batch(x, 0), w), 0, size))
        if batched[1] and not batched[0]:
            return all_batched(unfold_batch(self(x, fold_batch(w, 0)), 1, size))
        return all_batched(unfold_batch(self(fold_batch(x, 1), block_diagonal(w)), 1, size))


class Conv2dGradInput(Op):
    """Gradient of conv2d w.r.t. its input (a transposed convolution); ``like`` gives the shape."""

    __props__ = ("stride", "padding")

    def __init__(self, stride, padding):
        self.stride, self.padding = tuple(stride), tuple(padding)

    def make_node(self, g, w, like) -> Apply:
        return Apply(self, [g, w, like], [TensorType(g.dtype, like.type.shape)])

    def perform(self, node, inputs):
        g, w, like = inputs
        (ph, pw), (sh, sw) = self.padding, self.stride
        n, c, h, wd = like.shape
        kh, kw = w.shape[2], w.shape[3]
        out = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=g.dtype)
        oh, ow = g.shape[2], g.shape[3]
        contrib = np.einsum("noyx,ocij->ncijyx", g, w, optimize=True)
        for i in range(kh):
            for j in range(kw):
                out[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += contrib[:, :, i, j]
        return [np.ascontiguousarray(out[:, :, ph:ph + h, pw:pw + wd])]

    def L_op(self, node, inputs, outputs, output_grads):
        g, w, like = inputs
        (h,) = output_grads
        return [Conv2d(self.stride, self.padding)(h, w),
                Conv2dGradWeight(self.stride, self.padding)(h, g, w), None]

    def R_op(self, node, inputs, eval_points):
        g, w, like = inputs
        vg, vw = eval_points[0], eval_points[1]
        terms = [self(vg, w, like)] if vg is not None else []
        if vw is not None:
            terms.append(self(g, vw, like))
        return [None if not terms else terms[0] if len(terms) == 1 else E.add(*terms)]

    def batch(self, node, inputs, batched):
        """As ``Conv2d.batch``: the batch folds into the images (batched ``g``), the input
        channels (batched ``w``), or both channel axes (both batched)."""
        from ..vmap import (
            all_batched,
            batch_size,
            block_diagonal,
            dims,
            first_example,
            fold_batch,
            mul_dims,
            unfold_batch,
            zeros_of,
        )
        g, w, like = inputs
        size = batch_size(inputs, batched)
        d = dims(first_example(like, batched[2]))
        if not batched[0] and not batched[1]:  # only the shape source is batched
            from ..vmap import broadcast_batch
            return all_batched(broadcast_batch(self(g, w, zeros_of(d, g.dtype)), size))
        if batched[0] and not batched[1]:
            like_f = zeros_of([mul_dims(size, d[0])] + d[1:], g.dtype)
            return all_batched(unfold_batch(self(fold_batch(g, 0), w, like_f), 0, size))
        like_f = zeros_of([d[0], mul_dims(size, d[1])] + d[2:], g.dtype)
        if batched[1] and not batched[0]:
            return all_batched(unfold_batch(self(g, fold_batch(w, 1), like_f), 1, size))
        return all_batched(unfold_batch(self(fold_batch(g, 1), block_diagonal(w), like_f), 1, size))


class Conv2dGradWeight(Op):
    """Gradient of conv2d w.r.t. its weights; ``like`` gives the weight shape."""

    __props__ = ("stride", "padding")

    def __init__(self, stride, padding):
        self.stride, self.padding = tuple(stride), tuple(padding)

    def make_node(self, x, g, like) -> Apply:
        return Apply(self, [x, g, like], [TensorType(g.dtype, like.type.shape)])

    def perform(self, node, inputs):
        x, g, like = inputs
        (ph, pw), (sh, sw) = self.padding, self.stride
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        win = _windows(xp, like.shape[2], like.shape[3], sh, sw)
        return [np.ascontiguousarray(np.einsum("ncyxij,noyx->ocij", win, g, optimize=True), dtype=g.dtype)]

    def L_op(self, node, inputs, outputs, output_grads):
        x, g, like = inputs
        (h,) = output_grads
        return [Conv2dGradInput(self.stride, self.padding)(g, h, x),
                Conv2d(self.stride, self.padding)(x, h), None]

    def R_op(self, node, inputs, eval_points):
        x, g, like = inputs
        vx, vg = eval_points[0], eval_points[1]
        terms = [self(vx, g, like)] if vx is not None else []
        if vg is not None:
            terms.append(self(x, vg, like))
        return [None if not terms else terms[0] if len(terms) == 1 else E.add(*terms)]

    def batch(self, node, inputs, batched):
        """The batch folds into the input channels (batched ``x``), the output channels
        (batched ``g``), or both, keeping the diagonal blocks (both batched)."""
        from ..vmap import (
            all_batched,
            batch_size,
            block_diagonal_part,
            broadcast_batch,
            dims,
            first_example,
            fold_batch,
            mul_dims,
            unfold_batch,
            zeros_of,
        )
        x, g, like = inputs
        size = batch_size(inputs, batched)
        d = dims(first_example(like, batched[2]))
        if not batched[0] and not batched[1]:  # only the shape source is batched
            return all_batched(broadcast_batch(self(x, g, zeros_of(d, g.dtype)), size))
        if batched[0] and not batched[1]:
            like_f = zeros_of([d[0], mul_dims(size, d[1])] + d[2:], g.dtype)
            return all_batched(unfold_batch(self(fold_batch(x, 1), g, like_f), 1, size))
        if batched[1] and not batched[0]:
            like_f = zeros_of([mul_dims(size, d[0])] + d[1:], g.dtype)
            return all_batched(unfold_batch(self(x, fold_batch(g, 1), like_f), 0, size))
        like_f = zeros_of([mul_dims(size, d[0]), mul_dims(size, d[1])] + d[2:], g.dtype)
        return all_batched(block_diagonal_part(self(fold_batch(x, 1), fold_batch(g, 1), like_f), size))


def conv2d(x, w, stride=1, padding=0) -> Variable:
    """2-D convolution (cross-correlation) of NCHW ``x`` with OIHW ``w``."""
    return Conv2d(stride, padding)(x, w)


# --- pooling -------------------------------------------------------------------------------

class Pool2d(Op):
    """Max or average pooling over the last two axes (no padding)."""

    __props__ = ("mode", "size", "stride")

    def __init__(self, mode: str, size, stride=None):
        self.mode = mode
        self.size = _pair(size, "pool size")
        self.stride = _pair(stride, "pool stride") if stride is not None else self.size

    def __str__(self):
        return f"{self.mode.capitalize()}Pool2d{{size={self.size}, stride={self.stride}}}"

    def make_node(self, x) -> Apply:
        x = as_variable(x)
        if x.ndim < 2:
            raise ShapeError(f"{self.mode}_pool2d: needs rank >= 2 (…, H, W), "
                             f"got {format_shape(x.type.shape)}")
        oh = _conv_out(x.type.shape[-2], self.size[0], self.stride[0], 0)
        ow = _conv_out(x.type.shape[-1], self.size[1], self.stride[1], 0)
        if (oh is not None and oh <= 0) or (ow is not None and ow <= 0):
            raise ShapeError(f"{self.mode}_pool2d: window {self.size} larger than input "
                             f"{format_shape(x.type.shape)}")
        return Apply(self, [x], [TensorType(x.dtype, x.type.shape[:-2] + (oh, ow))])

    def _win(self, x):
        v = np.lib.stride_tricks.sliding_window_view(x, self.size, axis=(-2, -1))
        return v[..., ::self.stride[0], ::self.stride[1], :, :]

    def perform(self, node, inputs):
        win = self._win(inputs[0])
        if self.mode == "max":
            return [np.ascontiguousarray(win.max(axis=(-2, -1)))]
        return [np.ascontiguousarray(win.mean(axis=(-2, -1)), dtype=inputs[0].dtype)]

    def L_op(self, node, inputs, outputs, output_grads):
        (x,), (g,) = inputs, output_grads
        if self.mode == "max":
            return [MaxPool2dGrad(self.size, self.stride)(x, g)]
        return [AvgPool2dGrad(self.size, self.stride)(g, x)]

    def R_op(self, node, inputs, eval_points):
        (v,) = eval_points
        if v is None:
            return [None]
        if self.mode == "avg":
            return [self(v)]
        return [MaxPoolSelect(self.size, self.stride)(inputs[0], v)]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched
        return all_batched(self(inputs[0]))  # pools the last two axes whatever leads them


class MaxPool2dGrad(Op):
    """Routes each window's gradient to the first position of its maximum (overlaps add up).

    ``relu=True`` (made by the ``max_pool_relu_grad`` rewrite, never by ``sg.grad``): ``x`` is
    a ReLU's output and the result is also passed back through that ReLU,
    ``where(0 >= x, 0, grad)``, in the same pass."""

    __props__ = ("size", "stride", "relu")

    def __init__(self, size, stride, relu: bool = False):
        self.size, self.stride, self.relu = tuple(size), tuple(stride), bool(relu)

    def __str__(self):
        return "MaxPool2dReluGrad" if self.relu else "MaxPool2dGrad"

    def make_node(self, x, g) -> Apply:
        return Apply(self, [x, g], [TensorType(x.dtype, x.type.shape)])

    def perform(self, node, inputs):
        x, g = inputs
        (kh, kw), (sh, sw) = self.size, self.stride
        oh, ow = g.shape[-2], g.shape[-1]
        win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(-2, -1))[..., ::sh, ::sw, :, :]
        flat = win.reshape(win.shape[:-2] + (kh * kw,))
        arg = flat.argmax(axis=-1)
        out = np.zeros_like(x)
        for i in range(kh):
            for j in range(kw):
                hit = arg == i * kw + j
                out[..., i:i + sh * oh:sh, j:j + sw * ow:sw] += np.where(hit, g, 0)
        if self.relu:
            out = np.where(0 >= x, np.zeros((), out.dtype), out)
        return [out]

    def L_op(self, node, inputs, outputs, output_grads):
        # linear in g; piecewise constant in x
        gout = output_grads[0]
        if self.relu:
            gout = E.where(E.ge(0, inputs[0]), 0, gout)
        return [None, MaxPoolSelect(self.size, self.stride)(inputs[0], gout)]

    def R_op(self, node, inputs, eval_points):
        vg = eval_points[1]
        return [None if vg is None else self(inputs[0], vg)]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, ensure_batched
        return all_batched(self(*ensure_batched(inputs, batched)))


class MaxPoolSelect(Op):
    """For each pooling window of ``x``, the value of ``h`` at the window's (first) maximum.

    The adjoint of ``MaxPool2dGrad`` with respect to its gradient input, and max pooling's
    Jacobian-vector product.
    """

    __props__ = ("size", "stride")

    def __init__(self, size, stride):
        self.size, self.stride = tuple(size), tuple(stride)

    def make_node(self, x, h) -> Apply:
        pooled = Pool2d("max", self.size, self.stride).make_node(x).outputs[0].type
        return Apply(self, [x, h], [TensorType(h.dtype, pooled.shape)])

    def perform(self, node, inputs):
        x, h = inputs
        (kh, kw), (sh, sw) = self.size, self.stride

        def windows(a):
            w = np.lib.stride_tricks.sliding_window_view(a, (kh, kw), axis=(-2, -1))[..., ::sh, ::sw, :, :]
            return w.reshape(w.shape[:-2] + (kh * kw,))

        arg = windows(x).argmax(axis=-1)
        return [np.take_along_axis(windows(h), arg[..., None], axis=-1)[..., 0].copy()]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None, MaxPool2dGrad(self.size, self.stride)(inputs[0], output_grads[0])]

    def R_op(self, node, inputs, eval_points):
        vh = eval_points[1]
        return [None if vh is None else self(inputs[0], vh)]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, ensure_batched
        return all_batched(self(*ensure_batched(inputs, batched)))


class AvgPool2dGrad(Op):
    """Spreads each window's gradient evenly over it; ``like`` gives the input shape."""

    __props__ = ("size", "stride")

    def __init__(self, size, stride):
        self.size, self.stride = tuple(size), tuple(stride)

    def make_node(self, g, like) -> Apply:
        return Apply(self, [g, like], [TensorType(g.dtype, like.type.shape)])

    def perform(self, node, inputs):
        g, like = inputs
        (kh, kw), (sh, sw) = self.size, self.stride
        oh, ow = g.shape[-2], g.shape[-1]
        out = np.zeros(like.shape, dtype=g.dtype)
        share = g / (kh * kw)
        for i in range(kh):
            for j in range(kw):
                out[..., i:i + sh * oh:sh, j:j + sw * ow:sw] += share
        return [out]

    def L_op(self, node, inputs, outputs, output_grads):
        return [Pool2d("avg", self.size, self.stride)(output_grads[0]), None]

    def R_op(self, node, inputs, eval_points):
        vg = eval_points[0]
        return [None if vg is None else self(vg, inputs[1])]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, batch_size, dims, first_example, zeros_of
        g, like = inputs
        size = batch_size(inputs, batched)
        like_b = zeros_of([size] + dims(first_example(like, batched[1])), g.dtype)
        if not batched[0]:
            from ..vmap import broadcast_batch
            g = broadcast_batch(g, size)
        return all_batched(self(g, like_b))


def max_pool2d(x, size, stride=None) -> Variable:
    """Max pooling over the last two axes with a ``size`` window (stride defaults to size)."""
    return Pool2d("max", size, stride)(x)


def avg_pool2d(x, size, stride=None) -> Variable:
    """Average pooling over the last two axes."""
    return Pool2d("avg", size, stride)(x)
