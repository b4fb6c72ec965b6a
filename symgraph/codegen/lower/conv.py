"""Lowering of 2-d convolution: Conv2d, Conv2dGradWeight and Conv2dGradInput, each on one of
two paths chosen per shape by ``conv_path``:

* ``"im2col"``: the patches copied into a ``(c*kh*kw, n*oh*ow)`` matrix and one BLAS GEMM for
  the batch (col2im scatters the input gradient back);
* ``"direct"``: generated loops with no patch matrix (``conv_direct``), vectorised over the
  channels and register-blocked along output rows.

The direct kernels are shaped for a CPU core (one image per parallel iteration, accumulators
sized for L1), so on the cuda target they would run one thread per image: there the rule
always takes im2col (a grid kernel and the GEMM / cuBLAS).
"""

from __future__ import annotations

from .._scalar import S
from ..kernel_ir import For, Gemm, If, Store, View, iadd, iconst, imul, var
from ..symdim import SymInt
from .conv_direct import DirectConv

# ``None``: choose per shape (``conv_path``); ``"im2col"`` or ``"direct"`` forces a path
# (tests run every path on every shape through this switch)
FORCE_PATH: str | None = None
# the direct path's limits (measured, see docs/architecture-codegen.md): the reduction depth
# of one output element (c*kh*kw forward and for the weight gradient, o*kh*kw for the input
# gradient) above which BLAS on the patch matrix wins, and the least number of channels
# along the vectorised axis (o, or c for the input gradient): one AVX-512 vector of float32
DIRECT_MAX_DEPTH = 1024
DIRECT_MIN_LANES = 16


def conv_path(kind: str, c, o, kh: int, kw: int, spatial, target: str = "cpu") -> str:
    """The path (``"direct"`` or ``"im2col"``) for the ``kind`` (``"forward"``,
    ``"grad_weight"``, ``"grad_input"``) of a convolution with ``c`` input and ``o`` output
    channels, a ``kh x kw`` window and the per-image sizes ``spatial`` (input and output
    heights and widths), lowered for ``target`` (``"cpu"`` or ``"cuda"``: always im2col).

    Sizes of one image only, never the batch size: the path (and so the summation order) is
    the same for every batch size, and a symbolic batch dim needs no guard.  A symbolic
    channel or spatial size (vmap folding a batch into the channels) takes im2col."""
    if FORCE_PATH is not None:
        return FORCE_PATH
    if target == "cuda":
        return "im2col"
    if any(isinstance(d, SymInt) for d in (c, o, *spatial)):
        return "im2col"
    depth, lanes = (o * kh * kw, c) if kind == "grad_input" else (c * kh * kw, o)
    return "direct" if depth <= DIRECT_MAX_DEPTH and lanes >= DIRECT_MIN_LANES else "im2col"


def _clamp(e: S.SExpr, hi: int) -> S.SExpr:
    return S.apply("maximum", S.apply("minimum", e, iconst(hi)), iconst(0))


class ConvLowering(DirectConv):
    """``op_*`` methods of ``Lowerer`` for the convolution ops of symgraph.ops.nn."""

    def _im2col(self, x: View, kh, kw, stride, padding, oh, ow) -> View:
        """The patches of ``x`` as a ``(c*kh*kw, n, oh*ow)`` array: one ``(c*kh*kw, n*oh*ow)``
        matrix, so each convolution GEMM covers the whole batch in one call."""
        n, c, h, w = x.shape
        (sh, sw), (ph, pw) = stride, padding
        col = self.temp(x.dtype, (c * kh * kw, n, oh * ow))
        b, ci, i, j, oy, ox = (var(v) for v in ("i0", "c", "wi", "wj", "oy", "ox"))
        y = iadd(imul(oy, iconst(sh)), iadd(i, iconst(-ph)))
        xx = iadd(imul(ox, iconst(sw)), iadd(j, iconst(-pw)))
        inside = S.apply("and", S.apply("and", S.apply("ge", y, iconst(0)), S.apply("lt", y, iconst(h))),
                         S.apply("and", S.apply("ge", xx, iconst(0)), S.apply("lt", xx, iconst(w))))
        val = x.load([b, ci, _clamp(y, h - 1), _clamp(xx, w - 1)])
        if ph or pw:
            val = S.apply("where", inside, val, S.const(0, x.dtype))
        row = iadd(imul(ci, iconst(kh * kw)), iadd(imul(i, iconst(kw)), j))
        dst = col.index([row, b, iadd(imul(oy, iconst(ow)), ox)])
        body = [For("i0", n, [For("c", c, [For("wi", kh, [For("wj", kw, [For("oy", oh, [
            For("ox", ow, [Store(col.storage, dst, val)])])])])])], parallel=True)]
        self.emit("im2col", body, col.size, [repr(x.storage)], [repr(col.storage)])
        return col

    def _channels_first(self, v: View) -> View:
        """``(n, o, oh, ow)`` -> a contiguous ``(o, n, oh, ow)`` copy: a ``(o, n*oh*ow)`` matrix."""
        return self.contiguous(v.permute((1, 0, 2, 3)))

    def op_Conv2d(self, node, op):
        self._conv_forward(node, op)

    def op_Conv2dEpilogue(self, node, op):
        """The convolution with ``op.expr`` applied to each output element: in the direct
        kernel's stores, or as one map over the GEMM's result on the im2col path."""
        self._conv_forward(node, op, (op.expr, [self.view(v) for v in node.inputs[2:]]))

    def _conv_forward(self, node, op, epilogue: tuple | None = None) -> None:
        x = self.contiguous(self.view(node.inputs[0]))
        w = self.contiguous(self.view(node.inputs[1]))
        n, o, oh, ow = self.shape_of[id(node.outputs[0])]
        c, kh, kw = w.shape[1], w.shape[2], w.shape[3]
        if conv_path("forward", c, o, kh, kw, (x.shape[2], x.shape[3], oh, ow), self.target) == "direct":
            out = self.out_view(node.outputs[0])
            self._direct_forward(x, w, out, op.stride, op.padding, epilogue)
            self.env[id(node.outputs[0])] = out
            return
        col = self._im2col(x, kh, kw, op.stride, op.padding, oh, ow)
        ckk, np_ = c * kh * kw, n * oh * ow
        # one GEMM for the batch: (o, ckk) @ (ckk, n*p) -> (o, n, oh, ow); the graph value is
        # that array seen through a transposed view, copied only when it is a program output
        prod = self.temp(node.inputs[0].dtype, (o, n, oh, ow))
        g = Gemm(prod.dtype, False, False, o, np_, ckk, w.storage, iconst(w.offset), ckk,
                 col.storage, iconst(0), np_, prod.storage, iconst(0), np_)
        self.emit("conv_gemm", [g], o * np_ * ckk, [repr(col.storage)], [repr(prod.storage)])
        if epilogue is None:
            self._publish_conv(node, prod.permute((1, 0, 2, 3)))
            return
        expr, extras = epilogue
        out = self.out_view(node.outputs[0])
        self.map_kernel("conv_epilogue", out, expr, [prod.permute((1, 0, 2, 3))] + extras)
        self.env[id(node.outputs[0])] = out

    def _publish_conv(self, node, result: View) -> None:
        """Bind a convolution's result view, copied only when it is a program output."""
        if id(node.outputs[0]) in self.out_storage:
            out = self.out_view(node.outputs[0])
            self.copy(result, out)
            result = out
        self.env[id(node.outputs[0])] = result

    def op_Conv2dGradWeight(self, node, op):
        x = self.contiguous(self.view(node.inputs[0]))
        gv = self.view(node.inputs[1])
        o, c, kh, kw = self.shape_of[id(node.outputs[0])]
        n, _, oh, ow = gv.shape
        out = self.out_view(node.outputs[0])
        ckk, np_ = c * kh * kw, n * oh * ow
        if np_ == 0:
            self.map_kernel("zeros", out, S.const(0, out.dtype), [])
        elif conv_path("grad_weight", c, o, kh, kw, (x.shape[2], x.shape[3], oh, ow),
                       self.target) == "direct":
            self._direct_grad_weight(x, gv, out, op.stride, op.padding)
        else:
            col = self._im2col(x, kh, kw, op.stride, op.padding, oh, ow)
            gt = self._channels_first(gv)
            # dW (o, ckk) = g (o, n*p) @ col (ckk, n*p)^T: the batch sum is the GEMM's k
            g = Gemm(out.dtype, False, True, o, ckk, np_, gt.storage, iconst(gt.offset), np_,
                     col.storage, iconst(0), np_, out.storage, iconst(out.offset), ckk)
            self.emit("conv_grad_weight", [g], o * np_ * ckk, [repr(col.storage), repr(gt.storage)],
                      [repr(out.storage)])
        self.env[id(node.outputs[0])] = out

    def op_Conv2dGradInput(self, node, op):
        gv = self.view(node.inputs[0])
        w = self.contiguous(self.view(node.inputs[1]))
        n, c, h, wd = self.shape_of[id(node.outputs[0])]
        o, _, kh, kw = w.shape
        _, _, oh, ow = gv.shape
        ckk, np_ = c * kh * kw, n * oh * ow
        if conv_path("grad_input", c, o, kh, kw, (h, wd, oh, ow), self.target) == "direct":
            out = self.out_view(node.outputs[0])
            self._direct_grad_input(gv, w, out, op.stride, op.padding)
            self.env[id(node.outputs[0])] = out
            return
        gt = self._channels_first(gv)
        # col (ckk, n*p) = W^T (ckk, o) @ g (o, n*p), then scattered back onto the input
        colg = self.temp(gv.dtype, (ckk, n, oh * ow))
        g = Gemm(gv.dtype, True, False, ckk, np_, o, w.storage, iconst(w.offset), ckk,
                 gt.storage, iconst(gt.offset), np_, colg.storage, iconst(0), np_)
        self.emit("conv_grad_input_gemm", [g], o * np_ * ckk,
                  [repr(gt.storage), repr(w.storage)], [repr(colg.storage)])
        out = self.out_view(node.outputs[0])
        (sh, sw), (ph, pw) = op.stride, op.padding
        b, ci, i, j, oy, ox, yy, xv = (var(v) for v in ("i0", "c", "wi", "wj", "oy", "ox", "y", "x"))
        y = iadd(imul(oy, iconst(sh)), iadd(i, iconst(-ph)))
        xx = iadd(imul(ox, iconst(sw)), iadd(j, iconst(-pw)))
        inside = S.apply("and", S.apply("and", S.apply("ge", y, iconst(0)), S.apply("lt", y, iconst(h))),
                         S.apply("and", S.apply("ge", xx, iconst(0)), S.apply("lt", xx, iconst(wd))))
        row = iadd(imul(ci, iconst(kh * kw)), iadd(imul(i, iconst(kw)), j))
        src = colg.load([row, b, iadd(imul(oy, iconst(ow)), ox)])
        st = Store(out.storage, out.index([b, ci, y, xx]), src, accumulate="add")
        scatter = [If(inside, [st])] if (ph or pw) else [st]
        zero = [For("c", c, [For("y", h, [For("x", wd, [
            Store(out.storage, out.index([b, ci, yy, xv]), S.const(0, out.dtype))])])])]
        body = [For("i0", n, zero + [For("c", c, [For("wi", kh, [For("wj", kw, [For("oy", oh, [
            For("ox", ow, scatter)])])])])], parallel=True)]
        self.emit("col2im", body, colg.size, [repr(colg.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out
