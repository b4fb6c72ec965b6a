"""Lowering of elementwise ops and reductions: Elemwise (a map kernel, or a view for an
identity), Reduce, FusedReduce, SumToShape (reduce kernels) and Argmax / Argmin."""

from __future__ import annotations

from ...graph.types import broadcast_shapes, is_float
from .._scalar import S
from ..kernel_ir import Assign, For, Store, iconst, local, var
from ..symdim import static_is
from .helpers import _drop, _expr_name, _idx, _init_value, _loops, _summed


class ElemwiseLowering:
    """``op_*`` methods of ``Lowerer`` for elementwise ops and reductions."""

    def op_Elemwise(self, node, op):
        e = op.expr
        if e.op == "input" and e.dtype == node.outputs[0].dtype:
            # identity / fill: a (broadcast) view of the input, no kernel
            src = self.view(node.inputs[e.value])
            self.env[id(node.outputs[0])] = src.broadcast(self.shape_of[id(node.outputs[0])])
            return
        out = self.out_view(node.outputs[0])
        self.map_kernel(_expr_name(op), out, op.expr, [self.view(v) for v in node.inputs])
        self.env[id(node.outputs[0])] = out

    def op_Reduce(self, node, op):
        x = node.inputs[0]
        full = self.shape_of[id(x)]
        out = self.out_view(node.outputs[0], _drop(full, op.axes))
        self.reduce_kernel(op.kind, op.kind, out, full, op.axes, S.inp(0, x.dtype), [self.view(x)])
        self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])

    def op_FusedReduce(self, node, op):
        full = broadcast_shapes(*[self.shape_of[id(v)] for v in node.inputs])
        out = self.out_view(node.outputs[0], _drop(full, op.axes))
        self.reduce_kernel(f"fused_{op.kind}_{_expr_name(op)}", op.kind, out, full, op.axes, op.expr,
                           [self.view(v) for v in node.inputs])
        self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])

    def op_SumToShape(self, node, op):
        g = self.view(node.inputs[0])
        target = self.shape_of[id(node.outputs[0])]
        lead = g.ndim - len(target)
        axes = tuple(range(lead)) + tuple(lead + a for a, (d, t) in
                                          enumerate(zip(g.shape[lead:], target)) if _summed(d, t))
        if all(static_is(g.shape[a], 1) for a in axes):  # nothing to sum: a view
            v = g.reshape(target)
            if v is not None:
                self.env[id(node.outputs[0])] = v
                return
        out = self.out_view(node.outputs[0], _drop(g.shape, axes))
        self.reduce_kernel("sum_to", "sum", out, g.shape, axes, S.inp(0, g.dtype), [g])
        self.env[id(node.outputs[0])] = out.reshape(target)

    def op_Argmax(self, node, op):
        x = self.contiguous(self.view(node.inputs[0]))
        if op.axis is None:
            x = x.reshape((x.size,))
            axis = 0
        else:
            axis = op.axis
        order = [a for a in range(x.ndim) if a != axis] + [axis]
        xp = x.permute(order)
        kept = xp.shape[:-1]
        out = self.out_view(node.outputs[0], kept)
        idx = _idx(len(kept))
        r = var("r")
        val = xp.load(idx + [r])
        best, pos = local("best", x.dtype), local("pos", "int64")
        cmp = "gt" if op.kind == "argmax" else "lt"
        take = S.apply(cmp, val, best)
        if is_float(x.dtype):
            take = S.apply("or", take, S.apply("and", S.apply("ne", val, val), S.apply("eq", best, best)))
        init = S.const(_init_value("max" if op.kind == "argmax" else "min", x.dtype), x.dtype)
        inner = [Assign("best", init), Assign("pos", iconst(0)),
                 For("r", xp.shape[-1], [Assign("pos", S.apply("where", take, r, pos)),
                                         Assign("best", S.apply("where", take, val, best))]),
                 Store(out.storage, out.index(idx), pos)]
        self.emit(op.kind, _loops(kept, inner), x.size, [repr(x.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])
