"""Fused ops produced by the rewriter's fuse pass; every backend (and the reference) runs them.

* ``Elemwise`` itself is already the fused elementwise op (its scalar DAG can be any size).
* ``FusedReduce``: a reduction whose input is an elementwise expression of several tensors,
  e.g. ``sum(exp(x - m))`` in one pass with no intermediate buffer.
* ``MatMulEpilogue``: ``a @ b`` followed by an elementwise expression of the product and
  other tensors (bias add, activation), applied in one pass after the GEMM.
* ``SoftmaxCrossEntropyWithGrad``: the per-row softmax cross-entropy and its gradient with
  respect to the logits in one op (one kernel: the logits are read once, exp computed once).
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..graph.basic import Apply, Op, as_variable
from ..graph.types import TensorType, broadcast_shapes
from .elemwise import (
    S,  # symgraph.scalar the module (sg.scalar is also a function)
    _slot_dtypes,
)
from .reduce import Reduce, check_nonempty, reduce_numpy, reduced_shape


def _short_text(expr: S.SExpr, limit: int = 24) -> str:
    """The expression as text, or its size when it is too big to read (keeps printing cheap)."""
    n = S.count_ops([expr])
    return S.to_text(expr) if n <= limit else f"<{n} scalar ops>"


def _cached_text(op: Op, build) -> str:
    """``build()``, made once per op (a fused op's text is printed often: logs, kernel comments)."""
    text = op.__dict__.get("_text")
    if text is None:
        text = op._text = build()
    return text


class FusedReduce(Op):
    """``kind`` over ``axes`` of ``expr(inputs...)`` (inputs broadcast together)."""

    __props__ = ("kind", "axes", "keepdims", "expr", "nin", "initial")

    def __init__(self, kind: str, axes: tuple[int, ...], keepdims: bool, expr: S.SExpr, nin: int,
                 initial: float | None = None):
        self.kind, self.axes, self.keepdims = kind, tuple(axes), bool(keepdims)
        self.expr, self.nin, self.initial = expr, nin, initial  # initial: as Reduce's
        self.slot_dtypes = _slot_dtypes(expr, nin)

    def __str__(self):
        return _cached_text(self, lambda: f"Fused{self.kind.capitalize()}{{axes={list(self.axes)}, "
                                          f"{_short_text(self.expr)}}}")

    def make_node(self, *inputs) -> Apply:
        inputs = [as_variable(x) for x in inputs]
        for i, (x, want) in enumerate(zip(inputs, self.slot_dtypes)):
            if want is not None and x.dtype != want:
                raise TypeError(f"{self}: input {i} must be {want}, got {x.dtype}")
        shape = broadcast_shapes(*[x.type.shape for x in inputs], what=str(self))
        if self.initial is None:
            check_nonempty(self.kind, shape, self.axes)
        dtype = Reduce(self.kind, self.axes).out_dtype(self.expr.dtype)
        return Apply(self, inputs, [TensorType(dtype, reduced_shape(shape, self.axes, self.keepdims))])

    def perform(self, node, inputs):
        (val,) = S.evaluate([self.expr], inputs)
        shape = np.broadcast_shapes(*[np.shape(x) for x in inputs])
        val = np.broadcast_to(val, shape)
        return [reduce_numpy(self.kind, val, self.axes, self.keepdims, self.initial,
                             node.outputs[0].dtype)]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, pad_after_batch
        rank = max(x.ndim for x in node.inputs)
        args = [pad_after_batch(x, rank) if b else x for x, b in zip(inputs, batched)]
        op = FusedReduce(self.kind, tuple(a + 1 for a in self.axes), self.keepdims, self.expr, self.nin)
        return all_batched(op(*args))


class MatMulEpilogue(Op):
    """``expr(a @ b, extra...)``: slot 0 of ``expr`` is the product, slots 1.. the extras."""

    __props__ = ("expr", "nin")

    def __init__(self, expr: S.SExpr, nin: int):
        self.expr, self.nin = expr, nin  # nin counts the product and the extras

    def __str__(self):
        return _cached_text(self, lambda: f"MatMulEpilogue{{{_short_text(self.expr)}}}")

    def make_node(self, a, b, *extras) -> Apply:
        from .linalg import MatMul
        prod = MatMul().make_node(a, b).outputs[0]
        shape = broadcast_shapes(prod.type.shape, *[as_variable(e).type.shape for e in extras],
                                 what=str(self))
        if len(shape) != len(prod.type.shape):
            raise ValueError(f"{self}: extras may not add dimensions to the product")
        node_inputs = list(prod.owner.inputs) + [as_variable(e) for e in extras]
        return Apply(self, node_inputs, [TensorType(self.expr.dtype, shape)])

    def perform(self, node, inputs):
        a, b, extras = inputs[0], inputs[1], inputs[2:]
        (out,) = S.evaluate([self.expr], [np.matmul(a, b), *extras])
        shape = np.broadcast_shapes(np.matmul(a[..., :1, :], b[..., :, :1]).shape[:-2] +
                                    (a.shape[-2], b.shape[-1]), *[np.shape(e) for e in extras])
        return [np.array(np.broadcast_to(out, shape), order="C")]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, pad_after_batch
        rank = node.outputs[0].ndim
        args = [pad_after_batch(x, rank) if b else x for x, b in zip(inputs, batched)]
        return all_batched(self(*args))


class Conv2dEpilogue(Op):
    """``expr(conv2d(x, w), extra...)``: slot 0 of ``expr`` is the convolution, slots 1.. the
    extras (a bias ``(1, C, 1, 1)``, ...), broadcast to the convolution's shape.  The llvm
    backend's direct convolution applies ``expr`` as it stores each output element, so the
    bias and activation after a convolution cost no pass over memory of their own."""

    __props__ = ("expr", "nin", "stride", "padding")

    def __init__(self, expr: S.SExpr, nin: int, stride=(1, 1), padding=(0, 0)):
        self.expr, self.nin = expr, nin  # nin counts the convolution and the extras
        self.stride, self.padding = tuple(stride), tuple(padding)

    def __str__(self):
        return _cached_text(self, lambda: f"Conv2dEpilogue{{stride={self.stride}, padding={self.padding}, "
                                          f"{_short_text(self.expr)}}}")

    def _conv(self):
        from .nn import Conv2d
        return Conv2d(self.stride, self.padding)

    def make_node(self, x, w, *extras) -> Apply:
        conv = self._conv().make_node(x, w).outputs[0]
        extras = [as_variable(e) for e in extras]
        shape = broadcast_shapes(conv.type.shape, *[e.type.shape for e in extras], what=str(self))
        if len(shape) != 4 or any(e.ndim > 4 for e in extras):
            raise ValueError(f"{self}: extras may not add dimensions to the convolution")
        return Apply(self, list(conv.owner.inputs) + extras, [TensorType(self.expr.dtype, shape)])

    def perform(self, node, inputs):
        x, w, extras = inputs[0], inputs[1], inputs[2:]
        (conv,) = self._conv().perform(None, [x, w])
        (out,) = S.evaluate([self.expr], [conv, *extras])
        shape = np.broadcast_shapes(conv.shape, *[np.shape(e) for e in extras])
        return [np.array(np.broadcast_to(out, shape), order="C")]


class SoftmaxCrossEntropyWithGrad(Op):
    """Per-row softmax cross-entropy and its logits gradient: ``(loss, dlogits)``.

    Inputs ``(logits, targets, g)``: ``targets`` as for ``SoftmaxCrossEntropy`` (integer labels
    one rank lower than ``logits`` when ``sparse``, else probabilities broadcastable to the
    logits), ``g`` the upstream gradient of the per-row losses (broadcastable to their shape).
    ``loss = -sum(t * log_softmax(logits))`` per row and
    ``dlogits = (softmax(logits) * sum(t) - t) * g[..., None]`` (``sum(t) = 1``, ``t`` one-hot
    for labels).  Produced by the ``softmax_ce_grad`` rewrite from a ``SoftmaxCrossEntropy``
    and the gradient graph its ``L_op`` builds.
    """

    __props__ = ("sparse",)

    def __init__(self, sparse: bool):
        self.sparse = bool(sparse)

    def make_node(self, logits, targets, g) -> Apply:
        from .elemwise import cast
        from .nn import SoftmaxCrossEntropy
        ce = SoftmaxCrossEntropy(self.sparse).make_node(logits, targets)  # checks, casts targets
        logits, targets = ce.inputs
        rows = ce.outputs[0].type
        g = as_variable(g)
        if g.dtype != logits.dtype:
            g = cast(g, logits.dtype)
        if g.ndim > rows.ndim:
            raise ShapeError(f"{self}: the upstream gradient {g.type} has more dimensions than "
                             f"the per-row losses {rows}")
        broadcast_shapes(rows.shape, g.type.shape, what=str(self))
        return Apply(self, [logits, targets, g], [rows, TensorType(logits.dtype, logits.type.shape)])

    def perform(self, node, inputs):
        from .nn import Softmax, SoftmaxCrossEntropy
        z, t, g = inputs
        (loss,) = SoftmaxCrossEntropy(self.sparse).perform(node, [z, t])
        (p,) = Softmax(-1).perform(node, [z])
        with np.errstate(invalid="ignore", over="ignore"):
            if self.sparse:
                hot = np.arange(z.shape[-1]) == t[..., None]
                d = (p - hot.astype(z.dtype)) * np.expand_dims(g, -1)
            else:
                total = np.sum(t, axis=-1, keepdims=True)
                d = (p * total - t) * np.expand_dims(g, -1)
        d = np.broadcast_to(d, z.shape)
        return [np.asarray(loss, dtype=z.dtype), np.array(d, dtype=z.dtype, order="C")]

    def batch(self, node, inputs, batched):
        from ..vmap import all_batched, ensure_batched, pad_after_batch
        z, t = ensure_batched(inputs[:2], batched[:2])
        t = pad_after_batch(t, node.inputs[1].ndim) if batched[1] else t
        g = pad_after_batch(inputs[2], node.inputs[2].ndim) if batched[2] else inputs[2]
        return all_batched(list(self(z, t, g)))

    def L_op(self, node, inputs, outputs, output_grads):
        from . import elemwise as E
        from . import reduce as R
        from .nn import LogSoftmax, Softmax
        from .shape import expand_dims, sum_to
        z, t, g = inputs
        gl, gd = output_grads
        p = Softmax(z.ndim - 1)(z)
        gcol = expand_dims(g, -1)
        if self.sparse:
            from .nn import dense_targets
            hot, total = dense_targets(t, z), None
            core = E.sub(p, hot)
        else:
            total = R.sum(t, axis=-1, keepdims=True)
            core = E.sub(E.mul(p, total), t)
        # loss = CE(z, t): d/dz = core * gl
        gz = E.mul(core, expand_dims(gl, -1))
        # dlogits = core * g: through softmax for z, the row sum for g
        u = E.mul(gd, gcol) if total is None else E.mul(E.mul(gd, gcol), total)
        gz = E.add(gz, E.mul(p, E.sub(u, R.sum(E.mul(u, p), axis=-1, keepdims=True))))
        gg = sum_to(R.sum(E.mul(gd, core), axis=-1), g)
        if self.sparse:
            return [gz, None, gg]
        gt = E.mul(E.neg(LogSoftmax(z.ndim - 1)(z)), expand_dims(gl, -1))
        gt = E.add(gt, E.mul(gcol, E.sub(R.sum(E.mul(gd, p), axis=-1, keepdims=True), gd)))
        return [gz, sum_to(gt, t), gg]
