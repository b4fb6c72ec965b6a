"""Lowering of the row-wise neural-net ops: Softmax, LogSoftmax, SoftmaxCrossEntropy and the
fused SoftmaxCrossEntropyWithGrad, each one kernel parallel over rows."""

from __future__ import annotations

import math

import numpy as np

from ...graph.types import is_float
from .._scalar import S
from ..kernel_ir import Assign, For, Prefetch, Store, View, iadd, iconst, imul, load, local, var
from ..symdim import SymInt
from .helpers import combine

# the fused cross-entropy keeps exp(x - max) of a row in a per-thread scratch row up to this
# size (a few pages: in L1 beside the logits row on the CPU, shared memory of a GPU block)
CE_SCRATCH_MAX_BYTES = 16 << 10


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
        into a row buffer while summing, then the loss and the gradient ``(e / sum - onehot)
        * g`` from the buffer.  The buffer is a per-thread scratch row (in cache for every row)
        when the row is short enough, so memory sees the logits read once and the gradient
        written once, with streaming stores: never read, it need not be fetched first.
        Otherwise the buffer is the gradient row itself, rescaled in place."""
        z = self.view(node.inputs[0])
        rows, _ = self._rows(z, z.ndim - 1)
        nrows, n = rows.shape
        dt = z.dtype
        loss = self.out_view(node.outputs[0], (nrows,))
        dz = self.out_view(node.outputs[1], (nrows, n))
        r, j = var("i0"), var("j")
        xv = rows.load([r, j])
        di = dz.index([r, j])
        g = self._row_values(self.view(node.inputs[2]), z.shape[:-1], r)
        mx, m, s, inv = (local(k, dt) for k in ("mx", "m", "s", "inv"))
        import os
        V0 = os.environ.get("SG_CE_VARIANT", "where64")
        row = self._ce_row_buffer(dt, n) if not V0.startswith("old") else None
        buf, bi = (row, j) if row is not None else (dz.storage, di)
        stream = row is not None and not V0.endswith("plain")  # the gradient is written once, never read back

        def c(v):
            return S.const(v, dt)
        pass1 = [Assign("mx", _row_max(mx, xv), reduction=True)]
        if not op.sparse:
            t = self.contiguous(self.view(node.inputs[1]).broadcast(z.shape)).reshape((nrows, n))
            tv = t.load([r, j])
            pass1.append(Assign("tot", S.apply("add", local("tot", dt), tv), reduction=True))
        e = S.apply("exp", S.apply("sub", xv, m))
        body = [Assign("mx", c(-math.inf))] + ([] if op.sparse else [Assign("tot", c(0))]) + [
                For("j", n, pass1) if V0 != "old_nomax" else Assign("mx", c(0)),
                Assign("m", mx), Assign("s", c(0)),  # the plain max, see _row_stats
                ] + self._prefetch_next(rows, dz, r, n, V0) + [
                For("j", n, [Store(buf, bi, e), Assign("s", S.apply("add", s, e), reduction=True)]) if __import__("os").environ.get("SG_CE_VARIANT") not in ("exp_nt", "exp_plain") else
                For("j", n, [Store(dz.storage, di, e, stream=V0 == "exp_nt"), Assign("s", S.apply("add", s, e), reduction=True)]),
                Assign("inv", S.apply("truediv", c(1), s)),
                Assign("ls", S.apply("log", s))]
        ls = local("ls", dt)  # loss = log(sum) - (x[label] - max): no cancellation at large max
        p = S.apply("mul", load(buf, bi), inv)
        if op.sparse:
            # the label, read and checked once per row (an out-of-range one fails the call)
            body.append(Assign("lab", self._row_label(self.view(node.inputs[1]), nrows, r, n)))
            label = local("lab", "int64")
            if n == 0:  # no class: every label is out of range
                body.append(Store(loss.storage, r, c(math.nan)))
            else:
                import os
                V = os.environ.get("SG_CE_VARIANT", "where64")
                eq = S.apply("eq", j, label) if V == "where64" else S.apply("eq", S.cast(j, "int32"), S.cast(label, "int32"))
                grad = S.apply("where", eq, S.apply("mul", S.apply("sub", p, c(1)), g),
                               S.apply("mul", p, g))
                body += [Store(loss.storage, r, S.apply("sub", ls, S.apply("sub", rows.load([r, label]), m)))]
                if V in ("exp_nt", "exp_plain"):
                    pass
                elif "fixup" in V or V.startswith("old"):
                    li = dz.index([r, label])
                    body += [Assign("el", load(buf, label if row is not None else li)),
                             For("j", n, [Store(dz.storage, di, S.apply("mul", p, g), stream=stream)]),
                             Store(dz.storage, li, S.apply("mul", S.apply("sub", S.apply(
                             "mul", local("el", dt), inv), c(1)), g))]
                else:
                    body += [For("j", n, [Store(dz.storage, di, grad, stream=stream)])]
        else:
            term = S.apply("where", S.apply("eq", tv, c(0)), c(0),
                           S.apply("mul", tv, S.apply("sub", S.apply("sub", xv, m), ls)))
            grad = S.apply("mul", S.apply("sub", S.apply("mul", p, local("tot", dt)), tv), g)
            body += [Assign("acc", c(0)),
                     For("j", n, [Store(dz.storage, di, grad, stream=stream),
                                  Assign("acc", S.apply("add", local("acc", dt), term), reduction=True)]),
                     Store(loss.storage, r, S.apply("neg", local("acc", dt)))]
        self.emit("softmax_ce_grad", [For("i0", nrows, body, parallel=True)], rows.size * 3,
                  [repr(z.storage)], [repr(loss.storage), repr(dz.storage)])
        self.env[id(node.outputs[0])] = loss.reshape(self.shape_of[id(node.outputs[0])])
        self.env[id(node.outputs[1])] = dz.reshape(self.shape_of[id(node.outputs[1])])

    def _prefetch_next(self, rows, dz, r, n, V0):
        if "pf" not in V0 or isinstance(n, SymInt):
            return []
        per = 64 // np.dtype(rows.dtype).itemsize
        k = var("k")
        nxt = iadd(r, iconst(2 if "pf2" in V0 else 1))
        out = [For("k", -(-n // per), [Prefetch(rows.storage, rows.index([nxt, imul(k, iconst(per))]))])]
        if "pfw" in V0:
            out.append(For("k", -(-n // per), [Prefetch(dz.storage, dz.index([nxt, imul(k, iconst(per))]), write=True)]))
        return out

    def _ce_row_buffer(self, dtype: str, n):
        """A per-thread scratch row of ``n`` elements for the fused cross-entropy, or None
        when ``n`` is only known at run time or the row would crowd the L1 cache (or a GPU
        block's shared memory): then the gradient row itself holds ``exp(x - max)``."""
        if isinstance(n, SymInt) or n == 0 or n * np.dtype(dtype).itemsize > CE_SCRATCH_MAX_BYTES:
            return None
        return self.scratch(dtype, n)

    def _row_label(self, labels: View, nrows: int, r, n: int) -> S.SExpr:
        """The class label of row ``r``: the one place the fused cross-entropy reads a label,
        checked like the plain cross-entropy's (``IndexError`` unless in ``[0, n)``)."""
        t = self.contiguous(labels).reshape((nrows,))
        return self.check_index(S.cast(t.load([r]), "int64"), 0, n, kind="label")

    def _row_values(self, v: View, row_shape, r) -> S.SExpr:
        """Row ``r``'s value of ``v`` broadcast to ``row_shape`` (one load; no copy for a scalar)."""
        if v.size == 1:
            return load(v.storage, iconst(v.offset))
        b = self.contiguous(v.broadcast(tuple(row_shape)))
        return b.reshape((b.size,)).load([r])
