"""Fused ops produced by the rewriter's fuse pass; every backend (and the reference) runs them.

* ``Elemwise`` itself is already the fused elementwise op (its scalar DAG can be any size).
* ``FusedReduce``: a reduction whose input is an elementwise expression of several tensors,
  e.g. ``sum(exp(x - m))`` in one pass with no intermediate buffer.
* ``MatMulEpilogue``: ``a @ b`` followed by an elementwise expression of the product and
  other tensors (bias add, activation), applied in one pass after the GEMM.
"""

from __future__ import annotations

import numpy as np

from .elemwise import S  # symgraph.scalar the module (sg.scalar is also a function)
from ..graph.basic import Apply, Op, as_variable
from ..graph.types import TensorType, broadcast_shapes
from .elemwise import _slot_dtypes
from .reduce import _NUMPY, Reduce, reduced_shape


class FusedReduce(Op):
    """``kind`` over ``axes`` of ``expr(inputs...)`` (inputs broadcast together)."""

    __props__ = ("kind", "axes", "keepdims", "expr", "nin")

    def __init__(self, kind: str, axes: tuple[int, ...], keepdims: bool, expr: S.SExpr, nin: int):
        self.kind, self.axes, self.keepdims = kind, tuple(axes), bool(keepdims)
        self.expr, self.nin = expr, nin
        self.slot_dtypes = _slot_dtypes(expr, nin)

    def __str__(self):
        return f"Fused{self.kind.capitalize()}{{axes={list(self.axes)}, {S.to_text(self.expr)}}}"

    def make_node(self, *inputs) -> Apply:
        inputs = [as_variable(x) for x in inputs]
        for i, (x, want) in enumerate(zip(inputs, self.slot_dtypes)):
            if want is not None and x.dtype != want:
                raise TypeError(f"{self}: input {i} must be {want}, got {x.dtype}")
        shape = broadcast_shapes(*[x.shape for x in inputs], what=str(self))
        dtype = Reduce(self.kind, self.axes).out_dtype(self.expr.dtype)
        return Apply(self, inputs, [TensorType(dtype, reduced_shape(shape, self.axes, self.keepdims))])

    def perform(self, node, inputs):
        (val,) = S.evaluate([self.expr], inputs)
        shape = np.broadcast_shapes(*[np.shape(x) for x in inputs])
        val = np.broadcast_to(val, shape)
        out = _NUMPY[self.kind](val, axis=self.axes, keepdims=self.keepdims)
        return [np.asarray(out, dtype=node.outputs[0].dtype)]


class MatMulEpilogue(Op):
    """``expr(a @ b, extra...)``: slot 0 of ``expr`` is the product, slots 1.. the extras."""

    __props__ = ("expr", "nin")

    def __init__(self, expr: S.SExpr, nin: int):
        self.expr, self.nin = expr, nin  # nin counts the product and the extras

    def __str__(self):
        return f"MatMulEpilogue{{{S.to_text(self.expr)}}}"

    def make_node(self, a, b, *extras) -> Apply:
        from .linalg import MatMul
        prod = MatMul().make_node(a, b).outputs[0]
        shape = broadcast_shapes(prod.shape, *[as_variable(e).shape for e in extras], what=str(self))
        if len(shape) != len(prod.shape):
            raise ValueError(f"{self}: extras may not add dimensions to the product")
        node_inputs = list(prod.owner.inputs) + [as_variable(e) for e in extras]
        return Apply(self, node_inputs, [TensorType(self.expr.dtype, shape)])

    def perform(self, node, inputs):
        a, b, extras = inputs[0], inputs[1], inputs[2:]
        (out,) = S.evaluate([self.expr], [np.matmul(a, b), *extras])
        shape = np.broadcast_shapes(np.matmul(a[..., :1, :], b[..., :, :1]).shape[:-2] +
                                    (a.shape[-2], b.shape[-1]), *[np.shape(e) for e in extras])
        return [np.array(np.broadcast_to(out, shape), order="C")]
