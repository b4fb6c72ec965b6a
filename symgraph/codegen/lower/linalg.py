"""Lowering of matrix products: MatMul and MatMulEpilogue (a product followed by an
elementwise map), through ``matmul_into``: generated loops for small or integer products, a
BLAS ``Gemm`` otherwise."""

from __future__ import annotations

from ...graph.types import broadcast_shapes, is_float
from .._scalar import S
from ..kernel_ir import Gemm, View, iadd, iconst, imul
from ..symdim import hint, known_equal
from .helpers import _expr_name, _idx, _loops

# products this small (m*n*k), or matrix-vector products up to SMALL_GEMV, are generated
# loops (vectorised dot products / axpys) instead of a BLAS call
SMALL_GEMM = 1 << 14
SMALL_GEMV = 1 << 22


class LinalgLowering:
    """``op_*`` methods of ``Lowerer`` for symgraph.ops.linalg and the fused MatMulEpilogue."""

    def matmul_into(self, a: View, b: View, out: View) -> None:
        """``out = a @ b`` (rank >= 2, batch broadcast); BLAS for floats."""
        m, k = a.shape[-2], a.shape[-1]
        n = b.shape[-1]
        batch = out.shape[:-2]
        dtype = out.dtype
        # loops or BLAS computes the same product: a choice made on the sizes of the call
        # that generates the code (hints), not a guard, so shape-generic code stays generic
        hm, hn, hk = hint(m), hint(n), hint(k)
        small = hm * hn * hk <= SMALL_GEMM or ((hm == 1 or hn == 1) and hm * hn * hk <= SMALL_GEMV)
        if not is_float(dtype) or dtype not in ("float32", "float64") or small:
            nb = len(batch)
            expr = S.apply("mul", S.inp(0, a.dtype), S.inp(1, b.dtype))
            if hn > 1 and known_equal(b.strides[-1], 1):
                # out[m, :] += a[m, k] * b[k, :]: vectorised over n
                full = tuple(batch) + (m, k, n)
                av = View(a.storage, full, _bstrides(a, batch) + (a.strides[-2], a.strides[-1], 0), a.offset)
                bv = View(b.storage, full, _bstrides(b, batch) + (0, b.strides[-2], b.strides[-1]), b.offset)
                self.reduce_kernel("matmul_loops", "sum", out, full, (nb + 1,), expr, [av, bv])
            else:
                # dot products over k
                full = tuple(batch) + (m, n, k)
                av = View(a.storage, full, _bstrides(a, batch) + (a.strides[-2], 0, a.strides[-1]), a.offset)
                bv = View(b.storage, full, _bstrides(b, batch) + (0, b.strides[-1], b.strides[-2]), b.offset)
                self.reduce_kernel("matmul_loops", "sum", out, full, (nb + 2,), expr, [av, bv])
            return
        # (reached for float32/float64 products big enough for BLAS)
        if k == 0:
            self.map_kernel("zeros", out, S.const(0, dtype), [])
            return
        la = _blas_layout(m, k, a.strides[-2], a.strides[-1])
        if la is None:
            a = self.contiguous(a)
            la = _blas_layout(m, k, a.strides[-2], a.strides[-1])
        lb = _blas_layout(k, n, b.strides[-2], b.strides[-1])
        if lb is None:
            b = self.contiguous(b)
            lb = _blas_layout(k, n, b.strides[-2], b.strides[-1])
        idx = _idx(len(batch), "b")
        abs_, bbs = _bstrides(a, batch), _bstrides(b, batch)
        a_off, b_off, c_off = iconst(a.offset), iconst(b.offset), iconst(out.offset)
        for i, (sa, sb) in enumerate(zip(abs_, bbs)):
            a_off = iadd(a_off, imul(idx[i], iconst(sa)))
            b_off = iadd(b_off, imul(idx[i], iconst(sb)))
        cst = out.strides
        for i in range(len(batch)):
            c_off = iadd(c_off, imul(idx[i], iconst(cst[i])))
        g = Gemm(dtype, la[0], lb[0], m, n, k, a.storage, a_off, la[1], b.storage, b_off, lb[1],
                 out.storage, c_off, n)
        body = _loops(batch, [g], parallel=False, prefix="b")
        self.emit("gemm", body, m * n * k, [repr(a.storage), repr(b.storage)], [repr(out.storage)])

    def op_MatMul(self, node, op):
        out = self.out_view(node.outputs[0])
        self.matmul_into(self.view(node.inputs[0]), self.view(node.inputs[1]), out)
        self.env[id(node.outputs[0])] = out

    def op_MatMulEpilogue(self, node, op):
        a, b = self.view(node.inputs[0]), self.view(node.inputs[1])
        out_shape = self.shape_of[id(node.outputs[0])]
        prod_shape = broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        out = self.out_view(node.outputs[0])
        prod_dtype = node.inputs[0].dtype
        if tuple(prod_shape) == tuple(out_shape) and prod_dtype == out.dtype:
            prod = out
        else:
            prod = self.temp(prod_dtype, prod_shape)
        self.matmul_into(a, b, prod)
        self.map_kernel("epilogue_" + _expr_name(op), out, op.expr,
                        [prod] + [self.view(v) for v in node.inputs[2:]])
        self.env[id(node.outputs[0])] = out


def _bstrides(v: View, batch) -> tuple:
    lead = len(batch) - (v.ndim - 2)
    st = [0] * lead + list(v.strides[:-2])
    dims = [1] * lead + list(v.shape[:-2])
    return tuple(0 if d == 1 else s for d, s in zip(dims, st))


def _blas_layout(rows, cols, srow, scol):
    """``(transposed, leading dimension)`` for BLAS, or None when a copy is needed."""
    if cols == 1:
        scol = 1
    if rows == 1:
        srow = max(cols, 1)
    if scol == 1 and srow >= max(cols, 1):
        return (False, srow)
    if srow == 1 and scol >= max(rows, 1):
        return (True, scol)
    return None
