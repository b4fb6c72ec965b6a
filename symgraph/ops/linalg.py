"""Linear algebra: batched ``matmul`` (NumPy semantics), ``dot`` and ``outer``."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..graph.basic import Apply, Op, Variable, as_variable
from ..graph.types import TensorType, broadcast_shapes, format_shape, result_dtype
from . import elemwise as E


class MatMul(Op):
    """``a @ b`` for tensors of rank >= 2; leading (batch) dims broadcast like NumPy.

    Rank-1 operands are handled by the ``matmul`` function (it inserts and drops the axis),
    so code generators only ever see rank >= 2.
    """

    def make_node(self, a, b) -> Apply:
        a, b = as_variable(a), as_variable(b)
        if a.ndim < 2 or b.ndim < 2:
            raise ShapeError(f"MatMul needs rank >= 2 operands, got {a.type} and {b.type}")
        k1, k2 = a.type.shape[-1], b.type.shape[-2]
        if k1 is not None and k2 is not None and k1 != k2:
            raise ShapeError(f"matmul: shapes {format_shape(a.type.shape)} and {format_shape(b.type.shape)} "
                             f"do not align: {k1} (last dim of the first) != {k2} "
                             f"(second-to-last dim of the second)")
        batch = broadcast_shapes(a.type.shape[:-2], b.type.shape[:-2], what="matmul batch dimensions")
        dtype = result_dtype(a.dtype, b.dtype)
        if dtype == "bool":
            dtype = "bool"
        a, b = E.cast(a, dtype), E.cast(b, dtype)
        return Apply(self, [a, b], [TensorType(dtype, batch + (a.type.shape[-2], b.type.shape[-1]))])

    def perform(self, node, inputs):
        a, b = inputs
        if a.shape[-1] != b.shape[-2]:
            raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not align")
        return [np.ascontiguousarray(np.matmul(a, b))]

    def L_op(self, node, inputs, outputs, output_grads):
        from .shape import sum_to, transpose
        a, b = inputs
        (g,) = output_grads

        def t(x):
            return transpose(x, tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2))

        return [sum_to(self(g, t(b)), a), sum_to(self(t(a), g), b)]

    def R_op(self, node, inputs, eval_points):
        a, b = inputs
        va, vb = eval_points
        terms = []
        if va is not None:
            terms.append(self(va, b))
        if vb is not None:
            terms.append(self(a, vb))
        if not terms:
            return [None]
        return [terms[0] if len(terms) == 1 else E.add(*terms)]

    def batch(self, node, inputs, batched):
        """Batched operands get axes after the batch axis up to the larger per-example rank,
        so the batch axis lines up with the other operand's (broadcast) batch dims."""
        from ..vmap import all_batched, pad_after_batch
        rank = max(x.ndim for x in node.inputs)
        a, b = (pad_after_batch(x, rank) if f else x for x, f in zip(inputs, batched))
        return all_batched(self(a, b))


def matmul(a, b) -> Variable:
    """Matrix product with NumPy's rules (rank-1 operands, batch broadcasting)."""
    from .shape import expand_dims, squeeze
    a, b = as_variable(a), as_variable(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: scalar operands are not allowed (use *)")
    a2 = expand_dims(a, 0) if a.ndim == 1 else a
    b2 = expand_dims(b, -1) if b.ndim == 1 else b
    out = MatMul()(a2, b2)
    if a.ndim == 1 and b.ndim == 1:
        return squeeze(squeeze(out, -1), -1)
    if a.ndim == 1:
        return squeeze(out, -2)
    if b.ndim == 1:
        return squeeze(out, -1)
    return out


def dot(a, b) -> Variable:
    """NumPy ``dot`` for operands of rank <= 2 (and rank-N with a rank-1/2 right operand)."""
    a, b = as_variable(a), as_variable(b)
    if a.ndim == 0 or b.ndim == 0:
        return E.mul(a, b)
    if b.ndim <= 2:
        return matmul(a, b)
    raise ShapeError(f"dot: rank-{b.ndim} right operands are not supported; use matmul or "
                     f"tensordot-style reshapes ({a.type} . {b.type})")


def outer(a, b) -> Variable:
    """Outer product of two vectors (flattened first, like NumPy)."""
    from .shape import expand_dims, flatten
    a, b = flatten(as_variable(a)), flatten(as_variable(b))
    return E.mul(expand_dims(a, 1), expand_dims(b, 0))
