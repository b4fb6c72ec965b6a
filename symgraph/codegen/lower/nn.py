"""Lowering of the row-wise neural-net ops: Softmax, LogSoftmax, SoftmaxCrossEntropy and the
fused SoftmaxCrossEntropyWithGrad, each one kernel parallel over rows."""

from __future__ import annotations

import math

from ...graph.types import is_float
from .._scalar import S
from ..kernel_ir import Assign, For, Store, View, iconst, load, local, var
from ..symdim import SymInt
from .helpers import combine


def _row_max(acc: S.SExpr, val: S.SExpr) -> S.SExpr:
    """The running row max of the softmax-like kernels: ``maximum`` (NaN-propagating like
    NumPy's max, and a reduction LLVM vectorises, unlike the compare-and-select form)."""
    if not is_float(val.dtype):
        return combine("max", acc, val)
    return S.apply("maximum", acc, val)


class NNLowering:
    """``op_*`` methods of ``Lowerer`` for the row-wise ops of symgraph.ops.nn and fused."""

    def _rows(self, v: View, axis: int) -> View:
        """A (rows, n) contiguous view with ``axis`` last."""
        order = [a for a in range(v.ndim) if a != axis] + [axis]
        vp = v.permute(order)
        vp = vp if vp.is_contiguous else self.contiguous(vp)
        n = v.shape[axis]
        return vp.reshape((vp.size // max(n, 1) if n else 0, n)), order

    def _row_stats(self, x: View, r, n):
        """Statements computing ``m`` (the row max) and ``s`` (sum of exp(x - m)).

        ``m`` is the plain max, as in PyTorch: a row holding +inf, NaN or only -inf gives
        ``x - m`` NaN somewhere, so the whole row of the result is NaN (not ``[0, nan, 0]``)."""
        xv = x.load([r, var("j")])
        m, s = local("m", x.dtype), local("s", x.dtype)
        mx = local("mx", x.dtype)
        stmts = [Assign("mx", S.const(-math.inf, x.dtype)),
                 For("j", n, [Assign("mx", _row_max(mx, xv), reduction=True)]),
                 Assign("m", mx),
                 Assign("s", S.const(0, x.dtype))]
        return stmts, xv, m, s

    def _softmax_like(self, node, op, log: bool):
        x = self.view(node.inputs[0])
        rows, order = self._rows(x, op.axis)
        nrows, n = rows.shape
        out = self.temp(x.dtype, rows.shape) if order != list(range(x.ndim)) else \
            self.out_view(node.outputs[0], rows.shape)
        r = var("i0")
        stats, xv, m, s = self._row_stats(rows, r, n)
        j = var("j")
        e = S.apply("exp", S.apply("sub", xv, m))
        oi = out.index([r, j])
        if log:
            body = stats + [For("j", n, [Assign("s", S.apply("add", s, e), reduction=True)]),
                            Assign("ls", S.apply("log", s)),
                            For("j", n, [Store(out.storage, oi, S.apply(
                                "sub", S.apply("sub", xv, m), local("ls", x.dtype)))])]
        else:
            body = stats + [For("j", n, [Store(out.storage, oi, e),
                                         Assign("s", S.apply("add", s, e), reduction=True)]),
                            Assign("inv", S.apply("truediv", S.const(1, x.dtype), s)),
                            For("j", n, [Store(out.storage, oi, S.apply(
                                "mul", load(out.storage, oi), local("inv", x.dtype)))])]
        self.emit("log_softmax" if log else "softmax", [For("i0", nrows, body, parallel=True)],
                  rows.size * 3, [repr(x.storage)], [repr(out.storage)])
        # undo the axis permutation
        inv = [order.index(a) for a in range(x.ndim)]
        permuted_shape = tuple(x.shape[a] for a in order)
        res = out.reshape(permuted_shape).permute(inv)
        self.env[id(node.outputs[0])] = res

    def op_Softmax(self, node, op):
        self._softmax_like(node, op, log=False)

    def op_LogSoftmax(self, node, op):
        self._softmax_like(node, op, log=True)

    def op_SoftmaxCrossEntropy(self, node, op):
        z = self.view(node.inputs[0])
        rows, _ = self._rows(z, z.ndim - 1)
        nrows, n = rows.shape
        out = self.out_view(node.outputs[0], (nrows,))
        r, j = var("i0"), var("j")
        stats, xv, m, s = self._row_stats(rows, r, n)
        e = S.apply("exp", S.apply("sub", xv, m))
        body = stats + [For("j", n, [Assign("s", S.apply("add", s, e), reduction=True)]),
                        Assign("ls", S.apply("log", s))]
        ls = local("ls", z.dtype)  # log(sum) - (x - max): no cancellation at large max
        if op.sparse:
            t = self.contiguous(self.view(node.inputs[1])).reshape((nrows,))
            label = self.check_index(S.cast(t.load([r]), "int64"), 0, n, kind="label")
            body.append(Store(out.storage, r, S.apply("sub", ls, S.apply("sub", rows.load([r, label]), m))))
        else:
            t = self.view(node.inputs[1]).broadcast(z.shape)
            t = self.contiguous(t).reshape((nrows, n))
            tv = t.load([r, j])
            term = S.apply("where", S.apply("eq", tv, S.const(0, z.dtype)), S.const(0, z.dtype),
                           S.apply("mul", tv, S.apply("sub", S.apply("sub", xv, m), ls)))
            acc = local("acc", z.dtype)
            body += [Assign("acc", S.const(0, z.dtype)),
                     For("j", n, [Assign("acc", S.apply("add", acc, term), reduction=True)]),
                     Store(out.storage, r, S.apply("neg", acc))]
        self.emit("cross_entropy", [For("i0", nrows, body, parallel=True)], rows.size * 3,
                  [repr(z.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])

    def op_SoftmaxCrossEntropyWithGrad(self, node, op):
        """One kernel, parallel over rows; per row: the max, then ``e = exp(x - max)`` stored
        into the gradient row while summing, then the loss and ``(e / sum) * g`` in place (the
        row is still in cache), the one-hot term applied to the label's element alone."""
        z = self.view(node.inputs[0])
        rows, _ = self._rows(z, z.ndim - 1)
        nrows, n = rows.shape
        dt = z.dtype
        loss = self.out_view(node.outputs[0], (nrows,))
        dz = self.out_view(node.outputs[1], (nrows, n))
        r, j = var("i0"), var("j")
        xv, dv = rows.load([r, j]), dz.load([r, j])
        di = dz.index([r, j])
        g = self._row_values(self.view(node.inputs[2]), z.shape[:-1], r)
        mx, m, s, inv = (local(k, dt) for k in ("mx", "m", "s", "inv"))

        def c(v):
            return S.const(v, dt)
        pass1 = [Assign("mx", _row_max(mx, xv), reduction=True)]
        if not op.sparse:
            t = self.contiguous(self.view(node.inputs[1]).broadcast(z.shape)).reshape((nrows, n))
            tv = t.load([r, j])
            pass1.append(Assign("tot", S.apply("add", local("tot", dt), tv), reduction=True))
        e = S.apply("exp", S.apply("sub", xv, m))
        body = [Assign("mx", c(-math.inf))] + ([] if op.sparse else [Assign("tot", c(0))]) + [
                For("j", n, pass1),
                Assign("m", mx), Assign("s", c(0)),  # the plain max, see _row_stats
                For("j", n, [Store(dz.storage, di, e), Assign("s", S.apply("add", s, e), reduction=True)]),
                Assign("inv", S.apply("truediv", c(1), s)),
                Assign("ls", S.apply("log", s))]
        ls = local("ls", dt)  # loss = log(sum) - (x[label] - max): no cancellation at large max
        p = S.apply("mul", dv, inv)
        if op.sparse:
            # the label, read and checked once per row (an out-of-range one fails the call)
            body.append(Assign("lab", self._row_label(self.view(node.inputs[1]), nrows, r, n)))
            label = local("lab", "int64")
            if n == 0:  # no class: every label is out of range
                body.append(Store(loss.storage, r, c(math.nan)))
            else:
                li = dz.index([r, label])
                body += [Store(loss.storage, r, S.apply("sub", ls, S.apply("sub", rows.load([r, label]), m))),
                         Assign("el", load(dz.storage, li)),
                         For("j", n, [Store(dz.storage, di, S.apply("mul", p, g))]),
                         Store(dz.storage, li, S.apply("mul", S.apply("sub", S.apply(
                             "mul", local("el", dt), inv), c(1)), g))]
        else:
            term = S.apply("where", S.apply("eq", tv, c(0)), c(0),
                           S.apply("mul", tv, S.apply("sub", S.apply("sub", xv, m), ls)))
            grad = S.apply("mul", S.apply("sub", S.apply("mul", p, local("tot", dt)), tv), g)
            body += [Assign("acc", c(0)),
                     For("j", n, [Store(dz.storage, di, grad),
                                  Assign("acc", S.apply("add", local("acc", dt), term), reduction=True)]),
                     Store(loss.storage, r, S.apply("neg", local("acc", dt)))]
        self.emit("softmax_ce_grad", [For("i0", nrows, body, parallel=True)], rows.size * 3,
                  [repr(z.storage)], [repr(loss.storage), repr(dz.storage)])
        self.env[id(node.outputs[0])] = loss.reshape(self.shape_of[id(node.outputs[0])])
        self.env[id(node.outputs[1])] = dz.reshape(self.shape_of[id(node.outputs[1])])

    def _row_label(self, labels: View, nrows: int, r, n: int) -> S.SExpr:
        """The class label of row ``r``: the one place the fused cross-entropy reads a label,
        checked like the plain cross-entropy's (``IndexError`` unless in ``[0, n)``)."""
        t = self.contiguous(labels).reshape((nrows,))
        return self.check_index(S.cast(t.load([r]), "int64"), 0, n, kind="label")

    def _row_values(self, v: View, row_shape, r) -> S.SExpr:
        """Row ``r``'s value of ``v`` broadcast to ``row_shape`` (one load; no copy for a scalar)."""
        if not isinstance(v.size, SymInt) and v.size == 1:
            return load(v.storage, iconst(v.offset))
        b = self.contiguous(v.broadcast(tuple(row_shape)))
        return b.reshape((b.size,)).load([r])
