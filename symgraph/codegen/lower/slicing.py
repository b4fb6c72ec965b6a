"""Lowering of slices with symbolic bounds (``ops/slicing.py``: ``DynSlice``, ``DynSliceSet``,
``DynSliceInc``).

A slice's parts (first, step, length) are int64 scalars of the graph, already normalised
(``0 <= first < d`` and the last element in range whenever ``length > 0``).  Here they are
folded values: ints when they follow from input shapes, ``SymInt``s in shape-generic code
(sizes and, for the minibatch idiom ``x[i*bs:(i+1)*bs]``, values of int inputs read at run
time).  A read is a view (no kernel); a write copies ``x`` and runs one slice kernel.
"""

from __future__ import annotations

from ...errors import CompileError
from .._scalar import S
from ..kernel_ir import View
from ..symdim import SymInt, as_size, smax
from .helpers import _op_label


def _axis_slice(v: View, axis: int, first, step, length) -> View:
    """The view of ``v`` with ``axis`` cut to ``length`` elements from ``first`` by ``step``
    (an empty slice never reads its offset, so no question is asked about ``length``)."""
    shape, strides = list(v.shape), list(v.strides)
    shape[axis], strides[axis] = length, strides[axis] * step
    if isinstance(length, SymInt):
        offset = v.offset + first * v.strides[axis]
    else:
        offset = v.offset + (first * v.strides[axis] if length else 0)
    return View(v.storage, tuple(shape), tuple(strides), offset)


class SliceLowering:
    """``op_*`` methods for slices with symbolic bounds (mixed into ``Lowerer``)."""

    def _slice_parts(self, node) -> tuple:
        """The folded ``(first, step, length)`` of a ``DynSlice*`` node (its last three inputs)."""
        vals = [self.value_of.get(id(v)) for v in node.inputs[-3:]]
        if any(v is None for v in vals):
            raise CompileError(f"{_op_label(node)}: the slice start or step depends on run-time "
                               "values that are not int inputs or sizes; native backends need "
                               "slice bounds computed from input shapes and int inputs")
        first, step, length = (as_size(v) for v in vals)
        if isinstance(step, int) and step == 0:  # pragma: no cover - folding ran the op, which raised
            raise CompileError(f"{_op_label(node)}: slice step cannot be zero")
        length = smax(length, 0) if isinstance(length, SymInt) else max(length, 0)
        return first, step, length

    def op_DynSlice(self, node, op):
        """A view: no kernel."""
        x = self.view(node.inputs[0])
        self.env[id(node.outputs[0])] = _axis_slice(x, op.axis, *self._slice_parts(node))

    def op_DynSliceSet(self, node, op):
        self._dyn_slice_write(node, op, accumulate=False)

    def op_DynSliceInc(self, node, op):
        self._dyn_slice_write(node, op, accumulate=True)

    def _dyn_slice_write(self, node, op, accumulate: bool) -> None:
        """``out = x``, then ``y`` written (or added) into the slice of ``out``."""
        x, y = self.view(node.inputs[0]), self.view(node.inputs[1])
        out = self.out_view(node.outputs[0])
        self.copy(x, out)
        dst = _axis_slice(out, op.axis, *self._slice_parts(node))
        if not isinstance(dst.size, SymInt) and dst.size == 0:
            self.env[id(node.outputs[0])] = out
            return
        if accumulate:  # each element is read and written at the same index
            expr = S.apply("add", S.inp(0, dst.dtype), S.inp(1, dst.dtype))
            self.map_kernel("slice_add", dst, expr, [dst, y])
        else:
            self.map_kernel("slice_set", dst, S.inp(0, dst.dtype), [y])
        self.env[id(node.outputs[0])] = out
