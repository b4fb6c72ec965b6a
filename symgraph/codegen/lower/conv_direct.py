"""Direct (im2col-free) 2-d convolution kernels: forward, weight gradient and input gradient.

Each kernel keeps its accumulator channels-last (the channel axis innermost and contiguous), so
the innermost loop runs over channels with unit stride in both the accumulator and a
transposed copy of the weights: the loop the renderers vectorise, whatever the vector width.
Register blocking is written into the statements: one loop iteration updates ``PIX`` output
pixels (or ``kw`` window columns, or sums ``GI_OUT`` output channels), so each loaded vector
serves several multiply-adds and each scalar operand (loop-invariant in the channel loop, so
loaded and broadcast once) serves every channel.  Accumulators stay in L1: a block of output
rows (forward), one ``kw x channels`` slice of a partial weight gradient, or the padded
channels-last input gradient of one image.

Summation order depends only on the shapes of one image (never on the batch size or the thread
count), so a choice made on sizes does not change results between calls.
"""

from __future__ import annotations

from .._scalar import S
from ..kernel_ir import For, If, Store, View, iadd, iconst, imul, var

PIX = 4  # output pixels updated per statement group (register blocking along a row)
ACC_BYTES = 16384  # the forward accumulator block (output rows x width x channels): in L1
GROUPS = 8  # batch groups of the weight gradient: partial sums reduced in a fixed order
# the input gradient: output channels summed per statement, and pixels per statement group
# (their product of broadcast gradient values stays in registers across the channel loop)
GI_OUT = 8
GI_PIX = 1


def _sum(terms: list) -> S.SExpr:
    total = terms[0]
    for t in terms[1:]:
        total = S.apply("add", total, t)
    return total


def _zero(view: View, idx_vars: list, extents: list) -> list:
    """Loops storing 0 into ``view`` over the given trailing variables."""
    body = [Store(view.storage, view.index(idx_vars), S.const(0, view.dtype))]
    for name, ext in reversed(extents):
        body = [For(name, ext, body)]
    return body


def _blocks(extent: int, size: int, var_name: str, make) -> list:
    """``For`` over whole blocks of ``size`` along ``extent`` (``make(start, count)`` builds
    the statements of one block) plus the remainder block, with static counts."""
    full, rest = divmod(extent, size)
    out = []
    if full:
        out.append(For(var_name, full, make(imul(var(var_name), iconst(size)), size)))
    if rest:
        out += make(iconst(full * size), rest)
    return out


class DirectConv:
    """``_direct_*`` methods of ``Lowerer``: the im2col-free convolution paths."""

    def _padded(self, x: View, ph: int, pw: int) -> View:
        """``x`` (contiguous NCHW) with ``ph``/``pw`` zero rows/columns on each side."""
        if not (ph or pw):
            return x
        n, c, h, w = x.shape
        xp = self.temp(x.dtype, (n, c, h + 2 * ph, w + 2 * pw))
        b, ci, y, xx = var("i0"), var("c"), var("y"), var("x")
        sy, sx = iadd(y, iconst(-ph)), iadd(xx, iconst(-pw))
        inside = S.apply("and", S.apply("and", S.apply("ge", sy, iconst(0)), S.apply("lt", sy, iconst(h))),
                         S.apply("and", S.apply("ge", sx, iconst(0)), S.apply("lt", sx, iconst(w))))
        clamp = [S.apply("maximum", S.apply("minimum", e, iconst(hi - 1)), iconst(0))
                 for e, hi in ((sy, h), (sx, w))]
        val = S.apply("where", inside, x.load([b, ci, clamp[0], clamp[1]]), S.const(0, x.dtype))
        body = [For("i0", n, [For("c", c, [For("y", h + 2 * ph, [For("x", w + 2 * pw, [
            Store(xp.storage, xp.index([b, ci, y, xx]), val)])])])], parallel=True)]
        self.emit("conv_pad", body, xp.size, [repr(x.storage)], [repr(xp.storage)])
        return xp

    def _direct_forward(self, x: View, w: View, out: View, stride, padding,
                        epilogue: tuple | None = None) -> None:
        """``out = conv2d(x, w)`` (NCHW): a block of ``rows`` output rows is accumulated
        channels-last in ``acc[b]`` (``acc[y, x, :] += sum_j wT[c, i, j, :] *
        xp[c, y*sh+i, x*sw+j]``, in L1, each weight slice serving the whole block), then
        stored transposed into ``out[b, :, y, :]``; with ``epilogue = (expr, extras)`` the
        stored value is ``expr(acc, extras...)`` (extras broadcast to ``out``'s shape)."""
        (sh, sw), (ph, pw) = stride, padding
        n, c = x.shape[0], x.shape[1]
        o, kh, kw = w.shape[0], w.shape[2], w.shape[3]
        oh, ow = out.shape[2], out.shape[3]
        xp = self._padded(x, ph, pw)
        wt = self.contiguous(w.permute((1, 2, 3, 0)))  # (c, kh, kw, o)
        rows = max(1, min(oh, ACC_BYTES // max(ow * o * out.storage.itemsize, 1)))
        acc = self.temp(x.dtype, (n, rows, ow, o))  # the convolution's dtype (the epilogue may cast)
        b, ci, i, oo, r, px = var("i0"), var("c"), var("wi"), var("o"), var("r"), var("x")

        def row_block(y0: S.SExpr, nrows: int) -> list:
            def block(x0: S.SExpr, count: int) -> list:
                stores = []
                for q in range(count):
                    at = iadd(x0, iconst(q))
                    src = iadd(imul(iadd(y0, r), iconst(sh)), i)
                    terms = [S.apply("mul", wt.load([ci, i, iconst(j), oo]),
                                     xp.load([b, ci, src, iadd(imul(at, iconst(sw)), iconst(j))]))
                             for j in range(kw)]
                    stores.append(Store(acc.storage, acc.index([b, r, at, oo]), _sum(terms),
                                        accumulate="add"))
                return [For("o", o, stores)]

            body = _zero(acc, [b, r, px, oo], [("r", nrows), ("x", ow), ("o", o)])
            body.append(For("c", c, [For("wi", kh, [For("r", nrows, _blocks(ow, PIX, "xb", block))])]))
            at = [b, oo, iadd(y0, r), px]
            value = acc.load([b, r, px, oo])
            if epilogue is not None:
                expr, extras = epilogue
                loads = [e.broadcast(out.shape).load(at) for e in extras]
                (value,) = S.substitute([expr], dict(enumerate([value] + loads)))
                value = S.cast(value, out.dtype)
            body.append(For("r", nrows, [For("o", o, [For("x", ow, [
                Store(out.storage, out.index(at), value)])])]))
            return body

        body = [For("i0", n, _blocks(oh, rows, "yb", row_block), parallel=True)]
        extras = [repr(e.storage) for e in epilogue[1]] if epilogue is not None else []
        self.emit("conv_direct", body, out.size * c * kh * kw,
                  [repr(xp.storage), repr(wt.storage)] + extras, [repr(out.storage)])

    def _direct_grad_weight(self, x: View, g: View, out: View, stride, padding) -> None:
        """``dW[o, c, i, j] = sum_{b,y,x} g[b, o, y, x] * xp[b, c, y*sh+i, x*sw+j]``: ``GROUPS``
        parallel partial sums over the images ``t, t+GROUPS, ...``, then their sum in order."""
        (sh, sw), (ph, pw) = stride, padding
        n, c = x.shape[0], x.shape[1]
        o, _, kh, kw = out.shape
        oh, ow = g.shape[2], g.shape[3]
        xp = self._padded(x, ph, pw)
        gt = self.contiguous(g.permute((0, 2, 3, 1)))  # (n, oh, ow, o)
        part = self.temp(out.dtype, (GROUPS, c, kh, kw, o))
        t, m, ci, i, y, oo = var("t"), var("m"), var("c"), var("wi"), var("y"), var("o")
        b = iadd(imul(m, iconst(GROUPS)), t)
        row = iadd(imul(y, iconst(sh)), i)

        def block(x0: S.SExpr, count: int) -> list:
            stores = []
            for j in range(kw):
                terms = []
                for q in range(count):
                    px = iadd(x0, iconst(q))
                    terms.append(S.apply("mul", gt.load([b, y, px, oo]),
                                         xp.load([b, ci, row, iadd(imul(px, iconst(sw)), iconst(j))])))
                stores.append(Store(part.storage, part.index([t, ci, i, iconst(j), oo]), _sum(terms),
                                    accumulate="add"))
            return [For("o", o, stores)]

        image = [For("c", c, [For("wi", kh, [For("y", oh, _blocks(ow, PIX, "xb", block))])])]
        rounds = (n + GROUPS - 1) // GROUPS
        zero = _zero(part, [t, var("zc"), var("zi"), var("zj"), oo],
                     [("zc", c), ("zi", kh), ("zj", kw), ("o", o)])
        body = [For("t", GROUPS, zero + [For("m", rounds, [If(S.apply("lt", b, iconst(n)), image)])],
                    parallel=True)]
        self.emit("conv_direct_grad_weight", body, n * oh * ow * c * kh * kw * o,
                  [repr(xp.storage), repr(gt.storage)], [repr(part.storage)])
        oc, ic, ii, jj = var("i0"), var("c"), var("wi"), var("wj")
        total = _sum([part.load([iconst(k), ic, ii, jj, oc]) for k in range(GROUPS)])
        red = [For("i0", o, [For("c", c, [For("wi", kh, [For("wj", kw, [
            Store(out.storage, out.index([oc, ic, ii, jj]), S.cast(total, out.dtype))])])])], parallel=True)]
        self.emit("conv_grad_weight_sum", red, part.size, [repr(part.storage)], [repr(out.storage)])

    def _direct_grad_input(self, g: View, w: View, out: View, stride, padding) -> None:
        """``dx = conv_transpose(g, w)``: per image, each output pixel scatters
        ``sum_o g[b, o, y, x] * w[o, :, i, j]`` onto the padded channels-last input pixel
        ``(y*sh+i, x*sw+j)``; then the unpadded NCHW result is copied out."""
        (sh, sw), (ph, pw) = stride, padding
        n, c, h, wd = out.shape
        o, _, kh, kw = w.shape
        oh, ow = g.shape[2], g.shape[3]
        hp, wp = h + 2 * ph, wd + 2 * pw
        w2 = self.contiguous(w.permute((0, 2, 3, 1)))  # (o, kh, kw, c)
        acc = self.temp(out.dtype, (n, hp, wp, c))
        b, y, i, j, cc = var("i0"), var("y"), var("wi"), var("wj"), var("c")

        def chans(o0: S.SExpr, count: int) -> list:
            def pixels(x0: S.SExpr, npx: int) -> list:
                stores = []
                for q in range(npx):
                    px = iadd(x0, iconst(q))
                    terms = [S.apply("mul", g.load([b, iadd(o0, iconst(r)), y, px]),
                                     w2.load([iadd(o0, iconst(r)), i, j, cc])) for r in range(count)]
                    dst = acc.index([b, iadd(imul(y, iconst(sh)), i), iadd(imul(px, iconst(sw)), j), cc])
                    stores.append(Store(acc.storage, dst, _sum(terms), accumulate="add"))
                return [For("c", c, stores)]
            return [For("y", oh, _blocks(ow, GI_PIX, "xb", pixels))]

        zero = _zero(acc, [b, var("zy"), var("zx"), cc], [("zy", hp), ("zx", wp), ("c", c)])
        scatter = [For("wi", kh, [For("wj", kw, _blocks(o, GI_OUT, "ob", chans))])]
        body = [For("i0", n, zero + scatter, parallel=True)]
        self.emit("conv_direct_grad_input", body, n * oh * ow * c * kh * kw * o,
                  [repr(g.storage), repr(w2.storage)], [repr(acc.storage)])
        st = acc.strides
        self.copy(View(acc.storage, (n, c, h, wd), (st[0], 1, st[1], st[2]), ph * st[1] + pw * st[2]), out)
