"""Lowering of the shape ops: views that cost no kernel (DimShuffle, Reshape of contiguous
data, BroadcastTo, Split, StopGradient) and copies into one output (Concatenate, MakeVector),
plus ARange."""

from __future__ import annotations

from ..kernel_ir import Store, View
from .helpers import _idx, _loops


class ShapeLowering:
    """``op_*`` methods of ``Lowerer`` for the shape ops (symgraph.ops.shape)."""

    def op_DimShuffle(self, node, op):
        x = self.view(node.inputs[0])
        shape, strides = [], []
        for o in op.order:
            if o == "x":
                shape.append(1)
                strides.append(0)
            else:
                shape.append(x.shape[o])
                strides.append(x.strides[o])
        self.env[id(node.outputs[0])] = View(x.storage, tuple(shape), tuple(strides), x.offset)

    def op_Reshape(self, node, op):
        x = self.view(node.inputs[0])
        shape = self.shape_of[id(node.outputs[0])]
        v = x.reshape(shape)
        if v is None:
            v = self.contiguous(x).reshape(shape)
        self.env[id(node.outputs[0])] = v

    def op_BroadcastTo(self, node, op):
        x = self.view(node.inputs[0])
        self.env[id(node.outputs[0])] = x.broadcast(self.shape_of[id(node.outputs[0])])

    def op_Split(self, node, op):
        x = self.view(node.inputs[0])
        start = 0
        for o in node.outputs:
            shp = self.shape_of[id(o)]
            self.env[id(o)] = View(x.storage, shp, x.strides, x.offset + start * x.strides[op.axis])
            start += shp[op.axis]

    def op_Concatenate(self, node, op):
        out = self.out_view(node.outputs[0])
        start = 0
        for v in node.inputs:
            part = self.view(v)
            shp = part.shape
            dst = View(out.storage, shp, out.strides, out.offset + start * out.strides[op.axis])
            if part.size:
                self.copy(part, dst)
            start += shp[op.axis]
        self.env[id(node.outputs[0])] = out

    def op_MakeVector(self, node, op):
        out = self.out_view(node.outputs[0])
        for k, v in enumerate(node.inputs):
            src = self.view(v)
            self.copy(src, View(out.storage, (), (), out.offset + k))
        self.env[id(node.outputs[0])] = out

    def op_ARange(self, node, op):
        """``0..n-1`` (specialisation folds small ones into constants)."""
        out = self.out_view(node.outputs[0])
        (i,) = _idx(1)
        self.emit("arange", _loops(out.shape, [Store(out.storage, out.index([i]), i)]), out.size,
                  [], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out

    def op_StopGradient(self, node, op):
        """The identity (``rewrite=False`` keeps it in the graph; the rewriter drops it)."""
        self.env[id(node.outputs[0])] = self.view(node.inputs[0])
