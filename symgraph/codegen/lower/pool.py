"""Lowering of 2-d pooling: Pool2d (max / average), MaxPool2dGrad, MaxPoolSelect and
AvgPool2dGrad, on the (planes, H, W) view of the input."""

from __future__ import annotations

from ...graph.types import is_float
from .._scalar import S
from ..kernel_ir import Assign, For, Store, View, iadd, iconst, imul, local, var
from .helpers import _init_value, combine


def _relu_masked(h: S.SExpr, value: S.SExpr) -> S.SExpr:
    """``value`` passed back through the ReLU whose output is ``h``: ``where(0 >= h, 0, value)``."""
    return S.apply("where", S.apply("ge", S.const(0, h.dtype), h), S.const(0, value.dtype), value)


class PoolLowering:
    """``op_*`` methods of ``Lowerer`` for the pooling ops of symgraph.ops.nn."""

    def _planes(self, v: View) -> View:
        """(B, H, W) contiguous view of a (..., H, W) tensor."""
        v = self.contiguous(v)
        return v.reshape((v.size // max(v.shape[-2] * v.shape[-1], 1), v.shape[-2], v.shape[-1]))

    def _window_argmax(self, x: View, b, oy, ox, size, stride):
        """Statements leaving the first max position of a window in locals ``bi``, ``bj``."""
        (kh, kw), (sh, sw) = size, stride
        i, j = var("wi"), var("wj")
        val = x.load([b, iadd(imul(oy, iconst(sh)), i), iadd(imul(ox, iconst(sw)), j)])
        best = local("best", x.dtype)
        take = S.apply("gt", val, best)
        if is_float(x.dtype):
            take = S.apply("or", take, S.apply("and", S.apply("ne", val, val), S.apply("eq", best, best)))
        first = S.apply("and", S.apply("eq", i, iconst(0)), S.apply("eq", j, iconst(0)))
        take = S.apply("or", take, first)
        return [For("wi", kh, [For("wj", kw, [
            Assign("bi", S.apply("where", take, i, local("bi", "int64"))),
            Assign("bj", S.apply("where", take, j, local("bj", "int64"))),
            Assign("best", S.apply("where", take, val, best))])])]

    def op_Pool2d(self, node, op):
        x = self._planes(self.view(node.inputs[0]))
        oshape = self.shape_of[id(node.outputs[0])]
        oh, ow = oshape[-2], oshape[-1]
        out = self.out_view(node.outputs[0], (x.shape[0], oh, ow))
        (kh, kw), (sh, sw) = op.size, op.stride
        b, oy, ox = var("i0"), var("oy"), var("ox")
        kind = "max" if op.mode == "max" else "sum"

        def at(di, dj):  # the window element at offset (di, dj)
            return x.load([b, iadd(imul(oy, iconst(sh)), di), iadd(imul(ox, iconst(sw)), dj)])

        if kh * kw <= 16:
            # small windows unrolled: the loop over ox (innermost) vectorises
            total = at(iconst(0), iconst(0))
            for k in range(1, kh * kw):
                total = combine(kind, total, at(iconst(k // kw), iconst(k % kw)))
            inner = []
        else:
            total = local("acc", x.dtype)
            update = Assign("acc", combine(kind, total, at(var("wi"), var("wj"))), reduction=True)
            inner = [Assign("acc", S.const(_init_value(kind, x.dtype), x.dtype)),
                     For("wi", kh, [For("wj", kw, [update])])]
        result = total if kind == "max" else S.apply("mul", total, S.const(1.0 / (kh * kw), x.dtype))
        inner.append(Store(out.storage, out.index([b, oy, ox]), S.cast(result, out.dtype)))
        body = [For("i0", x.shape[0], [For("oy", oh, [For("ox", ow, inner)])], parallel=True)]
        self.emit(f"{op.mode}_pool", body, out.size * kh * kw, [repr(x.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out.reshape(oshape)

    def op_MaxPool2dGrad(self, node, op):
        x = self._planes(self.view(node.inputs[0]))
        g = self._planes(self.view(node.inputs[1]))
        out = self.out_view(node.outputs[0], x.shape)
        (sh, sw) = op.stride
        name = "max_pool_relu_grad" if op.relu else "max_pool_grad"
        if tuple(op.size) == tuple(op.stride):
            self._max_pool_grad_tiled(x, g, out, op.size, op.relu, name)
            self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])
            return
        b, oy, ox, y, xx = var("i0"), var("oy"), var("ox"), var("y"), var("x")
        target = out.index([b, iadd(imul(oy, iconst(sh)), local("bi", "int64")),
                            iadd(imul(ox, iconst(sw)), local("bj", "int64"))])
        inner = self._window_argmax(x, b, oy, ox, op.size, op.stride)
        value = g.load([b, oy, ox])
        if op.relu:  # every window adding to a position has that position's value as its max
            value = _relu_masked(local("best", x.dtype), value)
        inner.append(Store(out.storage, target, value, accumulate="add"))
        zero = [For("y", x.shape[1], [For("x", x.shape[2], [
            Store(out.storage, out.index([b, y, xx]), S.const(0, out.dtype))])])]
        body = [For("i0", x.shape[0], zero + [For("oy", g.shape[1], [For("ox", g.shape[2], inner)])],
                    parallel=True)]
        self.emit(name, body, x.size, [repr(x.storage), repr(g.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])

    def _max_pool_grad_tiled(self, x: View, g: View, out: View, size, relu: bool, name: str) -> None:
        """The max-pool gradient when windows tile the input (stride == size): every input
        element belongs to at most one window, so each window writes its own ``kh*kw``
        elements (``g`` where the element is the window's first maximum, NaN counting as the
        largest and the first NaN winning, as ``np.argmax``; else 0), with no scatter and no
        zeroing pass.  The loop over windows along a row vectorises (interleaved accesses).
        ``relu``: the gradient also passes back through the ReLU whose output is ``x``; only the
        window's winner gets a nonzero value, and its value is the window's maximum (NaN if it
        has one), so the mask is applied once per window to ``g``: zero when ``0 >= v`` for
        every element ``v`` of the window."""
        (kh, kw) = size
        planes, h, w = x.shape
        oh, ow = g.shape[1], g.shape[2]
        b, oy, ox = var("i0"), var("oy"), var("ox")

        def at(k):
            return [b, iadd(imul(oy, iconst(kh)), iconst(k // kw)),
                    iadd(imul(ox, iconst(kw)), iconst(k % kw))]

        vals = [x.load(at(k)) for k in range(kh * kw)]
        grad = S.cast(g.load([b, oy, ox]), out.dtype)
        if relu:  # the window's maximum is <= 0 (not NaN) exactly when every element is
            dead = S.apply("ge", S.const(0, x.dtype), vals[0])
            for v in vals[1:]:
                dead = S.apply("and", dead, S.apply("ge", S.const(0, x.dtype), v))
            grad = S.apply("where", dead, S.const(0, out.dtype), grad)
        zero = S.const(0, out.dtype)
        floating = is_float(x.dtype)
        stores = []
        for k, me in enumerate(vals):
            wins = None
            for m, other in enumerate(vals):
                if m == k:
                    continue
                if m < k:  # an earlier element wins ties
                    cond = S.apply("gt", me, other)
                    if floating:  # ... and an earlier NaN wins outright
                        cond = S.apply("and", S.apply("eq", other, other),
                                       S.apply("or", S.apply("ne", me, me), cond))
                else:
                    cond = S.apply("ge", me, other)
                    if floating:  # a NaN here beats every later element
                        cond = S.apply("or", S.apply("ne", me, me), cond)
                wins = cond if wins is None else S.apply("and", wins, cond)
            value = grad if wins is None else S.apply("where", wins, grad, zero)
            stores.append(Store(out.storage, out.index(at(k)), value))
        yy, xx = var("y"), var("x")
        # rows and columns no window covers (the input size is not a multiple of the window)
        edges = []
        if h > oh * kh:
            edges.append(For("y", h - oh * kh, [For("x", w, [
                Store(out.storage, out.index([b, iadd(yy, iconst(oh * kh)), xx]), zero)])]))
        if w > ow * kw:
            edges.append(For("y", oh * kh, [For("x", w - ow * kw, [
                Store(out.storage, out.index([b, yy, iadd(xx, iconst(ow * kw))]), zero)])]))
        body = [For("i0", planes, [For("oy", oh, [For("ox", ow, stores)])] + edges, parallel=True)]
        self.emit(name, body, x.size, [repr(x.storage), repr(g.storage)], [repr(out.storage)])

    def op_MaxPoolSelect(self, node, op):
        x = self._planes(self.view(node.inputs[0]))
        h = self._planes(self.view(node.inputs[1]))
        oshape = self.shape_of[id(node.outputs[0])]
        oh, ow = oshape[-2], oshape[-1]
        out = self.out_view(node.outputs[0], (x.shape[0], oh, ow))
        (sh, sw) = op.stride
        b, oy, ox = var("i0"), var("oy"), var("ox")
        inner = self._window_argmax(x, b, oy, ox, op.size, op.stride)
        inner.append(Store(out.storage, out.index([b, oy, ox]), h.load(
            [b, iadd(imul(oy, iconst(sh)), local("bi", "int64")),
             iadd(imul(ox, iconst(sw)), local("bj", "int64"))])))
        body = [For("i0", x.shape[0], [For("oy", oh, [For("ox", ow, inner)])], parallel=True)]
        self.emit("max_pool_select", body, out.size, [repr(x.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out.reshape(oshape)

    def op_AvgPool2dGrad(self, node, op):
        g = self._planes(self.view(node.inputs[0]))
        like = self.shape_of[id(node.inputs[1])]
        planes = (g.shape[0], like[-2], like[-1])
        out = self.out_view(node.outputs[0], planes)
        (kh, kw), (sh, sw) = op.size, op.stride
        b, oy, ox, i, j, y, xx = (var(n) for n in ("i0", "oy", "ox", "wi", "wj", "y", "x"))
        share = S.apply("mul", g.load([b, oy, ox]), S.const(1.0 / (kh * kw), g.dtype))
        zero = [For("y", planes[1], [For("x", planes[2], [
            Store(out.storage, out.index([b, y, xx]), S.const(0, out.dtype))])])]
        scatter = [For("oy", g.shape[1], [For("ox", g.shape[2], [For("wi", kh, [For("wj", kw, [
            Store(out.storage, out.index([b, iadd(imul(oy, iconst(sh)), i), iadd(imul(ox, iconst(sw)), j)]),
                  share, accumulate="add")])])])])]
        body = [For("i0", planes[0], zero + scatter, parallel=True)]
        self.emit("avg_pool_grad", body, out.size, [repr(g.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out.reshape(like)
