"""Lowering: a specialised, rewritten graph -> a kernel-IR ``Program``.

Written once for every backend.  Each graph op maps to zero kernels (views: transpose,
broadcast, reshape of contiguous data, basic slicing, split), one loop kernel (elementwise,
reductions, row-wise softmax / cross-entropy, pooling, gather / scatter, random draws,
copies) or a short sequence of them around BLAS ``Gemm`` calls (matmul + epilogue, conv2d
via im2col, its gradients via col2im).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ..errors import CompileError
from ..graph.basic import Apply, Constant
from ..graph.fgraph import FunctionGraph
from ..graph.types import is_float
from ._scalar import S
from .checks import CheckSite, input_names
from .kernel_ir import (
    Assign,
    For,
    Gemm,
    If,
    Kernel,
    Program,
    Storage,
    Store,
    View,
    bitop,
    body_text,
    checked,
    iadd,
    iconst,
    imul,
    load,
    local,
    var,
)
from .specialize import specialize

_INIT = {"sum": 0, "prod": 1, "any": False, "all": True}
# products this small (m*n*k), or matrix-vector products up to SMALL_GEMV, are generated
# loops (vectorised dot products / axpys) instead of a BLAS call
SMALL_GEMM = 1 << 14
SMALL_GEMV = 1 << 22


def _init_value(kind: str, dtype: str):
    if kind in _INIT:
        return _INIT[kind]
    if is_float(dtype):
        return -math.inf if kind == "max" else math.inf
    if dtype == "bool":
        return kind == "min"
    info = np.iinfo(dtype)
    return int(info.min) if kind == "max" else int(info.max)


def combine(kind: str, acc: S.SExpr, val: S.SExpr) -> S.SExpr:
    """``acc (op) val`` for a reduction kind; max/min propagate NaN like NumPy."""
    if kind == "sum":
        return S.apply("add", acc, val)
    if kind == "prod":
        return S.apply("mul", acc, val)
    if kind == "any":
        return S.apply("or", acc, val)
    if kind == "all":
        return S.apply("and", acc, val)
    if is_float(val.dtype):  # NaN-propagating, and vectorised by the renderers
        return S.apply("maximum" if kind == "max" else "minimum", acc, val)
    take = S.apply("gt" if kind == "max" else "lt", val, acc)
    return S.apply("where", take, val, acc)


def collapse(shape, stride_lists):
    """Drop size-1 axes and merge neighbouring axes that are contiguous in every view."""
    keep = [a for a, d in enumerate(shape) if d != 1]
    shape = [shape[a] for a in keep]
    strides = [[st[a] for a in keep] for st in stride_lists]
    a = len(shape) - 2
    while a >= 0:
        if all(st[a] == st[a + 1] * shape[a + 1] for st in strides):
            shape[a] *= shape[a + 1]
            del shape[a + 1]
            for st in strides:
                st[a] = st[a + 1]
                del st[a + 1]
        a -= 1
    return shape, strides


def _loops(extents, body, parallel=True, prefix="i"):
    """Nest ``body`` in loops over ``extents`` (variables ``prefix0, prefix1...``)."""
    for a in reversed(range(len(extents))):
        body = [For(f"{prefix}{a}", int(extents[a]), body, parallel=parallel and a == 0)]
    return body


def _idx(n, prefix="i"):
    return [var(f"{prefix}{a}") for a in range(n)]


def _row_max(acc: S.SExpr, val: S.SExpr) -> S.SExpr:
    """The running row max of the softmax-like kernels: ``maximum`` (NaN-propagating like
    NumPy's max, and a reduction LLVM vectorises, unlike the compare-and-select form)."""
    if not is_float(val.dtype):
        return combine("max", acc, val)
    return S.apply("maximum", acc, val)


def _clamp(e: S.SExpr, hi: int) -> S.SExpr:
    return S.apply("maximum", S.apply("minimum", e, iconst(hi)), iconst(0))


class Lowerer:
    """Builds a ``Program`` for one shape signature."""

    def __init__(self, fgraph: FunctionGraph, roots: list, shapes: list[tuple]):
        self.fgraph = fgraph
        self.nodes, self.shape_of, self.value_of = specialize(fgraph, roots, shapes)
        if any(getattr(n.op, "overlaps", False) for n in self.nodes):
            self.nodes = overlap_schedule(self.nodes)
        self.storages: list[Storage] = []
        self.kernels: list[Kernel] = []
        self.env: dict[int, View] = {}
        self.inputs = []
        for i, v in enumerate(roots):
            st = self.new_storage("input", v.dtype, self.shape_of[id(v)], name=v.label())
            st.slot = i
            self.inputs.append(st)
            self.env[id(v)] = View.full(st, self.shape_of[id(v)])
        # one output storage per distinct graph output variable
        self.outputs: list[Storage] = []
        self.out_storage: dict[int, Storage] = {}
        self.output_map = []
        for v in fgraph.outputs:
            if id(v) not in self.out_storage:
                if isinstance(v, Constant):
                    self.shape_of[id(v)] = v.value.shape
                shp = self.shape_of[id(v)]
                st = self.new_storage("output", v.dtype, shp, name=v.label())
                st.slot = len(self.outputs)
                self.outputs.append(st)
                self.out_storage[id(v)] = st
            self.output_map.append(self.out_storage[id(v)].slot)
        self.current: Apply | None = None
        self._names: set[str] = set()
        self.checks: list[CheckSite] = []
        self.deferred: dict[int, list] = {}  # variable id -> kernels to emit before its first use

    # --- storages and kernels ------------------------------------------------------------
    def new_storage(self, kind, dtype, shape, name="", value=None) -> Storage:
        size = int(np.prod(shape, dtype=np.int64))
        st = Storage(len(self.storages), kind, dtype, size, value=value, name=name,
                     shape=tuple(int(d) for d in shape))
        self.storages.append(st)
        return st

    def out_view(self, v, shape=None, dtype=None) -> View:
        """A fresh contiguous view for variable ``v``: its output storage if it is one."""
        shape = tuple(self.shape_of[id(v)] if shape is None else shape)
        st = self.out_storage.get(id(v))
        if st is not None and dtype in (None, v.dtype) and st.size == int(np.prod(shape, dtype=np.int64)):
            return View.full(st, shape)
        return View.full(self.new_storage("temp", dtype or v.dtype, shape), shape)

    def temp(self, dtype, shape) -> View:
        return View.full(self.new_storage("temp", dtype, shape), shape)

    def check_index(self, index: S.SExpr, lo: int, hi: int, kind: str = "index",
                    axis: int = 0, wrapped: bool = False) -> S.SExpr:
        """``index`` (read from run-time data) checked to lie in ``[lo, hi)`` for the node
        being lowered; the call fails with an ``IndexError`` naming that node otherwise.

        This is the one hook every lowering that reads an index or a label from an array
        uses: wrap the int64 value right after the load, e.g. ``label = self.check_index(
        S.cast(t.load([r]), "int64"), 0, n, kind="label")``.  ``kind`` picks the message
        (``"index"``: NumPy's ``index .. is out of bounds for axis ..``; ``"label"``:
        cross-entropy's ``labels must be in [0, n), got values in [min, max]``).  For NumPy
        indices, wrap negative values first (``k + n`` for ``k < 0``) and check against
        ``[0, n)`` with ``wrapped=True``: the renderers then need a single unsigned compare.
        The result is always a safe index in ``[lo, hi - 1]``.
        """
        node = self.current
        site = CheckSite(len(self.checks), kind, int(lo), int(hi),
                         _op_label(node) if node is not None else "gather", int(axis),
                         tuple(tuple(self.shape_of.get(id(v), getattr(v.type, "shape", ())))
                               for v in node.inputs) if node is not None else (),
                         node.trace if node is not None else None, wrapped,
                         input_names(node.inputs) if node is not None else ())
        self.checks.append(site)
        return checked(index, site.site, lo, hi, site.extremes)

    def defer(self, variables, emit) -> None:
        """Run ``emit()`` (which emits kernels) just before the first kernel that reads one of
        ``variables``, or at the end of the program: a non-blocking collective's wait goes
        as late as possible, so the reduction overlaps the kernels in between."""
        pending = [emit]
        for v in variables:
            self.deferred[id(v)] = pending

    def finish_deferred(self, key: int | None = None) -> None:
        """Emit the deferred kernels of variable id ``key`` (all of them for None)."""
        lists = [self.deferred.get(key)] if key is not None else list(self.deferred.values())
        for pending in lists:
            while pending:
                pending.pop()()
        if key is None:
            self.deferred.clear()

    def view(self, v) -> View:
        if self.deferred and id(v) in self.deferred:
            self.finish_deferred(id(v))
        if id(v) in self.env:
            return self.env[id(v)]
        if id(v) not in self.value_of and isinstance(v, Constant):
            self.value_of[id(v)] = v.value
            self.shape_of[id(v)] = v.value.shape
        if id(v) in self.value_of:
            val = np.asarray(self.value_of[id(v)], order="C")  # keeps 0-d values 0-d
            st = self.new_storage("const", v.dtype, val.shape, value=val, name=v.label())
            self.env[id(v)] = View.full(st, val.shape)
            return self.env[id(v)]
        raise CompileError(f"internal error: no value for {v}")  # pragma: no cover

    def emit(self, base: str, body: list, work: int, inputs=(), outputs=()) -> Kernel:
        text = body_text(body)
        digest = hashlib.sha1(f"{base}\n{text}".encode()).hexdigest()[:6]
        node = self.current
        ops = [f"{_op_label(node)} -> {', '.join(o.label() for o in node.outputs)}"] if node else ["copy"]
        name = f"{base}_{digest}"
        n = 2
        while name in self._names:
            name = f"{base}_{digest}_{n}"
            n += 1
        self._names.add(name)
        k = Kernel(name, body, ops, list(inputs), list(outputs), int(work))
        self.kernels.append(k)
        return k

    # --- generic kernels -------------------------------------------------------------------
    def map_kernel(self, base: str, out: View, expr: S.SExpr, ins: list[View]) -> None:
        """``out[i] = expr(ins[0][i], ins[1][i], ...)`` with broadcasting."""
        shape = out.shape
        views = [out] + [v.broadcast(shape) for v in ins]
        cshape, cstrides = collapse(list(shape), [list(v.strides) for v in views])
        cviews = [View(v.storage, tuple(cshape), tuple(st), v.offset) for v, st in zip(views, cstrides)]
        idx = _idx(len(cshape))
        mapping = {i: cv.load(idx) for i, cv in enumerate(cviews[1:])}
        (value,) = S.substitute([expr], mapping)
        value = S.cast(value, out.dtype)
        body = _loops(cshape, [Store(out.storage, cviews[0].index(idx), value)])
        self.emit(base, body, out.size, [repr(v.storage) for v in ins], [repr(out.storage)])

    def copy(self, src: View, dst: View) -> None:
        self.map_kernel("copy", dst, S.inp(0, src.dtype), [src])

    def contiguous(self, v: View) -> View:
        if v.is_contiguous:
            return v
        out = self.temp(v.dtype, v.shape)
        self.copy(v, out)
        return out

    def reduce_kernel(self, base, kind, out: View, full_shape, red_axes, expr, ins: list[View]):
        """``out = kind over red_axes of expr(ins...)``; ``out`` has the kept axes, contiguous."""
        full_shape = tuple(full_shape)
        views = [v.broadcast(full_shape) for v in ins]
        kept = [a for a in range(len(full_shape)) if a not in red_axes]
        out_full = View(out.storage, full_shape,
                        tuple(0 if a in red_axes else s for a, s in
                              zip(range(len(full_shape)), _expand_strides(out, full_shape, kept))),
                        out.offset)
        # collapse axes of equal kind, dropping size-1 axes
        shape = list(full_shape)
        is_red = [a in red_axes for a in range(len(shape))]
        keep = [a for a, d in enumerate(shape) if d != 1]
        shape = [shape[a] for a in keep]
        is_red = [is_red[a] for a in keep]
        strides = [[v.strides[a] for a in keep] for v in [out_full] + views]
        a = len(shape) - 2
        while a >= 0:
            if is_red[a] == is_red[a + 1] and all(st[a] == st[a + 1] * shape[a + 1] for st in strides):
                shape[a] *= shape[a + 1]
                del shape[a + 1], is_red[a + 1]
                for st in strides:
                    st[a] = st[a + 1]
                    del st[a + 1]
            a -= 1
        cviews = [View(v.storage, tuple(shape), tuple(st), v.offset)
                  for v, st in zip([out_full] + views, strides)]
        n = len(shape)
        idx = _idx(n)
        (value,) = S.substitute([expr], {i: cv.load(idx) for i, cv in enumerate(cviews[1:])})
        value = S.cast(value, out.dtype)
        init = S.const(_init_value(kind, out.dtype), out.dtype)
        kept_axes = [a for a in range(n) if not is_red[a]]
        red = [a for a in range(n) if is_red[a]]
        work = int(np.prod(full_shape, dtype=np.int64))
        out_index = cviews[0].index(idx)
        if not red:  # nothing to reduce (size-1 axes): a map
            body = _loops(shape, [Store(out.storage, out_index, value)])
        elif is_red[-1]:
            # accumulate in a local; the reduced axes are the inner loops
            acc = local("acc", out.dtype)
            inner = [Assign("acc", init)]
            inner += _loops_sub(shape, red, [Assign("acc", combine(kind, acc, value), reduction=True)],
                                parallel=False)
            inner.append(Store(out.storage, out_index, acc))
            body = _loops_sub(shape, kept_axes, inner, parallel=True) if kept_axes else inner
        else:
            # the innermost axis is kept: accumulate into the output (vectorises over it)
            outer = []
            for a in range(n):
                if is_red[a]:
                    break
                outer.append(a)
            rest = list(range(len(outer), n))
            rest_kept = [a for a in rest if not is_red[a]]
            acc_val = combine(kind, load(out.storage, out_index), value)
            inner = _loops_sub(shape, rest_kept, [Store(out.storage, out_index, init)], parallel=False)
            inner += _loops_sub(shape, rest, [Store(out.storage, out_index, acc_val)], parallel=False)
            body = _loops_sub(shape, outer, inner, parallel=True) if outer else inner
        self.emit(base, body, work, [repr(v.storage) for v in ins], [repr(out.storage)])

    # --- driver ----------------------------------------------------------------------------
    def run(self) -> Program:
        for v in self.fgraph.outputs:  # outputs that are inputs or constants
            if v.owner is None:
                self._publish(v)
        for node in self.nodes:
            self.current = node
            if all(id(o) in self.value_of for o in node.outputs):
                for o in node.outputs:
                    if id(o) in self.out_storage:
                        self._publish(o)
                continue
            method = getattr(self, "op_" + type(node.op).__name__, None)
            if method is None and hasattr(node.op, "lower"):  # ops outside this module (distributed)
                method = _own_lowering(self)
            if method is None:
                raise CompileError(f"the llvm backend cannot lower {node.op} "
                                   f"({type(node.op).__name__})")
            method(node, node.op)
            for o in node.outputs:
                if id(o) in self.out_storage:
                    self._publish(o)
        self.current = None
        self.finish_deferred()
        shapes = [self.shape_of[id(self._first_out(st))] for st in self.outputs]
        return Program(self.storages, self.kernels, self.inputs, self.outputs, shapes,
                       self.output_map, checks=self.checks)

    def _first_out(self, st):
        for v in self.fgraph.outputs:
            if self.out_storage[id(v)] is st:
                return v

    def _publish(self, v) -> None:
        """Make sure the output storage of ``v`` holds its value."""
        st = self.out_storage[id(v)]
        src = self.view(v)
        if src.storage is st:
            return
        self.copy(src, View.full(st, self.shape_of[id(v)]))

    # --- ops: views ------------------------------------------------------------------------
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

    def op_Subtensor(self, node, op):
        x = self.view(node.inputs[0])
        out_shape = self.shape_of[id(node.outputs[0])]
        plan = _index_plan(op.spec, x, [self.shape_of[id(v)] for v in node.inputs[1:]], out_shape,
                           self.check_index)
        if not op.advanced:
            self.env[id(node.outputs[0])] = View(x.storage, tuple(out_shape), plan.strides, plan.offset)
            return
        out = self.out_view(node.outputs[0])
        arrays = [self.view(v) for v in node.inputs[1:]]
        idx = _idx(len(out_shape))
        body = _loops(out_shape, [Store(out.storage, out.index(idx),
                                        load(x.storage, plan.source_index(idx, arrays)))])
        self.env[id(node.outputs[0])] = out
        self.emit("gather", body, out.size, [repr(x.storage)], [repr(out.storage)])

    # --- ops: elementwise and reductions -------------------------------------------------
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
        full = np.broadcast_shapes(*[self.shape_of[id(v)] for v in node.inputs])
        out = self.out_view(node.outputs[0], _drop(full, op.axes))
        self.reduce_kernel(f"fused_{op.kind}_{_expr_name(op)}", op.kind, out, full, op.axes, op.expr,
                           [self.view(v) for v in node.inputs])
        self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])

    def op_SumToShape(self, node, op):
        g = self.view(node.inputs[0])
        target = self.shape_of[id(node.outputs[0])]
        lead = g.ndim - len(target)
        axes = tuple(range(lead)) + tuple(lead + a for a, (d, t) in
                                          enumerate(zip(g.shape[lead:], target)) if t == 1 and d != 1)
        if not any(g.shape[a] != 1 for a in axes):  # nothing to sum: a view
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

    # --- ops: linear algebra -------------------------------------------------------------
    def matmul_into(self, a: View, b: View, out: View) -> None:
        """``out = a @ b`` (rank >= 2, batch broadcast); BLAS for floats."""
        m, k = a.shape[-2], a.shape[-1]
        n = b.shape[-1]
        batch = out.shape[:-2]
        dtype = out.dtype
        small = m * n * k <= SMALL_GEMM or ((m == 1 or n == 1) and m * n * k <= SMALL_GEMV)
        if not is_float(dtype) or dtype not in ("float32", "float64") or small:
            nb = len(batch)
            expr = S.apply("mul", S.inp(0, a.dtype), S.inp(1, b.dtype))
            if n > 1 and b.strides[-1] == 1:
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
        prod_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
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

    # --- ops: joining and indexing -------------------------------------------------------
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

    def op_IndexAdd(self, node, op):
        self._scatter(node, op, "add")

    def op_IndexSet(self, node, op):
        self._scatter(node, op, None)

    def _scatter(self, node, op, accumulate: str | None) -> None:
        """``out = x; out[key] (+)= y`` in index order (one thread: repeated indices add up,
        or the last write wins, as in NumPy)."""
        x, y = self.view(node.inputs[0]), self.view(node.inputs[1])
        out = self.out_view(node.outputs[0])
        self.copy(x, out)
        arrays = [self.view(v) for v in node.inputs[2:]]
        sub_shape = _subtensor_shape(op.spec, out, [v.shape for v in arrays])
        plan = _index_plan(op.spec, out, [v.shape for v in arrays], sub_shape, self.check_index)
        yb = y.broadcast(sub_shape)
        idx = _idx(len(sub_shape))
        body = _loops(sub_shape, [Store(out.storage, plan.source_index(idx, arrays), yb.load(idx),
                                        accumulate=accumulate)], parallel=False)
        self.emit("scatter_add" if accumulate else "scatter", body, yb.size, [repr(y.storage)],
                  [repr(out.storage)])
        self.env[id(node.outputs[0])] = out

    # --- ops: neural-net row-wise ----------------------------------------------------------
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
        if v.size == 1:
            return load(v.storage, iconst(v.offset))
        b = self.contiguous(v.broadcast(tuple(row_shape)))
        return b.reshape((b.size,)).load([r])

    # --- ops: pooling ----------------------------------------------------------------------
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
        if tuple(op.size) == tuple(op.stride):
            self._max_pool_grad_tiled(x, g, out, op.size)
            self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])
            return
        b, oy, ox, y, xx = var("i0"), var("oy"), var("ox"), var("y"), var("x")
        target = out.index([b, iadd(imul(oy, iconst(sh)), local("bi", "int64")),
                            iadd(imul(ox, iconst(sw)), local("bj", "int64"))])
        inner = self._window_argmax(x, b, oy, ox, op.size, op.stride)
        inner.append(Store(out.storage, target, g.load([b, oy, ox]), accumulate="add"))
        zero = [For("y", x.shape[1], [For("x", x.shape[2], [
            Store(out.storage, out.index([b, y, xx]), S.const(0, out.dtype))])])]
        body = [For("i0", x.shape[0], zero + [For("oy", g.shape[1], [For("ox", g.shape[2], inner)])],
                    parallel=True)]
        self.emit("max_pool_grad", body, x.size, [repr(x.storage), repr(g.storage)], [repr(out.storage)])
        self.env[id(node.outputs[0])] = out.reshape(self.shape_of[id(node.outputs[0])])

    def _max_pool_grad_tiled(self, x: View, g: View, out: View, size) -> None:
        """The max-pool gradient when windows tile the input (stride == size): every input
        element belongs to at most one window, so each window writes its own ``kh*kw``
        elements (``g`` where the element is the window's first maximum, NaN counting as the
        largest and the first NaN winning, as ``np.argmax``; else 0), with no scatter and no
        zeroing pass.  The loop over windows along a row vectorises (interleaved accesses)."""
        (kh, kw) = size
        planes, h, w = x.shape
        oh, ow = g.shape[1], g.shape[2]
        b, oy, ox = var("i0"), var("oy"), var("ox")

        def at(k):
            return [b, iadd(imul(oy, iconst(kh)), iconst(k // kw)),
                    iadd(imul(ox, iconst(kw)), iconst(k % kw))]

        vals = [x.load(at(k)) for k in range(kh * kw)]
        grad = S.cast(g.load([b, oy, ox]), out.dtype)
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
        self.emit("max_pool_grad", body, x.size, [repr(x.storage), repr(g.storage)], [repr(out.storage)])

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

    # --- ops: convolution ------------------------------------------------------------------
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
        x = self.contiguous(self.view(node.inputs[0]))
        w = self.contiguous(self.view(node.inputs[1]))
        n, o, oh, ow = self.shape_of[id(node.outputs[0])]
        c, kh, kw = w.shape[1], w.shape[2], w.shape[3]
        col = self._im2col(x, kh, kw, op.stride, op.padding, oh, ow)
        ckk, np_ = c * kh * kw, n * oh * ow
        # one GEMM for the batch: (o, ckk) @ (ckk, n*p) -> (o, n, oh, ow); the graph value is
        # that array seen through a transposed view, copied only when it is a program output
        prod = self.temp(node.outputs[0].dtype, (o, n, oh, ow))
        g = Gemm(prod.dtype, False, False, o, np_, ckk, w.storage, iconst(w.offset), ckk,
                 col.storage, iconst(0), np_, prod.storage, iconst(0), np_)
        self.emit("conv_gemm", [g], o * np_ * ckk, [repr(col.storage)], [repr(prod.storage)])
        result = prod.permute((1, 0, 2, 3))
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

    # --- ops: random -----------------------------------------------------------------------
    def op_RandomDraw(self, node, op):
        from ..ops.random import _GOLDEN, _M1, _M2
        state = self.view(node.inputs[0])
        out = self.out_view(node.outputs[0])
        n = out.size
        u64 = "int64"  # wrapping 64-bit arithmetic; ``shr`` is a logical shift

        def c64(v):
            v = int(v) % (1 << 64)
            return S.const(v - (1 << 64) if v >= 1 << 63 else v, u64)

        def mix(x):
            x = S.apply("add", x, c64(_GOLDEN))
            x = S.apply("mul", bitop("xor", x, bitop("shr", x, c64(30))), c64(_M1))
            x = S.apply("mul", bitop("xor", x, bitop("shr", x, c64(27))), c64(_M2))
            return bitop("xor", x, bitop("shr", x, c64(31)))

        seed = S.cast(state.load([iconst(0)]), u64)
        counter = S.cast(state.load([iconst(1)]), u64)
        base = mix(bitop("xor", seed, c64(int(op.draw_id) * int(_M1))))
        base = mix(bitop("xor", base, S.apply("mul", counter, c64(_M2))))
        i = var("i0")
        base_l = local("base", u64)

        def bits(k):
            return mix(S.apply("add", base_l, S.cast(k, u64)))

        def unit(bw, dtype):
            if dtype == "float64":
                return S.apply("mul", S.cast(bitop("shr", bw, c64(11)), "float64"),
                               S.const(2.0 ** -53, "float64"))
            return S.cast(S.apply("mul", S.cast(bitop("shr", bw, c64(40)), "float32"),
                                  S.const(2.0 ** -24, "float32")), dtype)

        if op.dist == "uniform":
            value = unit(bits(i), op.dtype)
        else:
            u1 = S.apply("sub", S.const(1.0, "float64"), unit(bits(imul(i, iconst(2))), "float64"))
            u2 = unit(bits(iadd(imul(i, iconst(2)), iconst(1))), "float64")
            r = S.apply("sqrt", S.apply("mul", S.const(-2.0, "float64"), S.apply("log", u1)))
            value = S.apply("mul", r, S.apply("cos", S.apply("mul", S.const(2 * math.pi, "float64"), u2)))
        body = [Assign("base", base), For("i0", n, [Store(out.storage, iadd(iconst(out.offset), i),
                                                         S.cast(value, out.dtype))])]
        self.emit(f"random_{op.dist}", body, n, [repr(state.storage)], [repr(out.storage)])
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


# --- helpers -------------------------------------------------------------------------------

def _op_label(node) -> str:
    try:
        return str(node.op)
    except Exception:  # an op whose __str__ fails must not stop code generation
        return type(node.op).__name__


def _loops_sub(shape, axes, body, parallel):
    """Loops over the given axes of ``shape`` (variables ``i<axis>``), outermost first."""
    for n, a in enumerate(reversed(axes)):
        first = n == len(axes) - 1
        body = [For(f"i{a}", int(shape[a]), body, parallel=parallel and first)]
    return body


def _expand_strides(out: View, full_shape, kept):
    """Strides of ``out`` (shape = kept axes) placed at the kept positions of ``full_shape``."""
    strides = [0] * len(full_shape)
    for pos, a in enumerate(kept):
        strides[a] = out.strides[pos] if pos < len(out.strides) else 0
    return strides


def _drop(shape, axes):
    return tuple(d for a, d in enumerate(shape) if a not in axes)


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


def _expr_name(op) -> str:
    name = getattr(op, "name", None)
    expr = op.expr
    prims = []
    for n in S.topo([expr]):
        if n.op not in ("input", "const", "cast") and n.op not in prims:
            prims.append(n.op)
    if name and name not in prims and S.count_ops([expr]) <= 1 and name.isidentifier():
        return name
    if len(prims) <= 1 and name and name.isidentifier():
        return name
    core = [p for p in prims if p not in ("add", "mul", "sub")] or prims
    return "fused_" + "_".join(core[:3]) if core else "identity"


class _IndexPlan:
    """How an output multi-index of ``x[spec]`` maps to an element of ``x``."""

    def __init__(self, offset, strides, terms, adv_pos, adv_ndim, adv_shape, adv_entries, x,
                 check):
        self.offset, self.strides, self.terms = offset, tuple(strides), terms
        self.adv_pos, self.adv_ndim, self.adv_shape = adv_pos, adv_ndim, adv_shape
        self.adv_entries, self.x = adv_entries, x
        self.check = check  # Lowerer.check_index

    def source_index(self, idx, arrays: list[View]) -> S.SExpr:
        expr = iconst(self.offset)
        for pos, st in self.terms:
            expr = iadd(expr, imul(idx[pos], iconst(st)))
        if self.adv_entries:
            aidx = idx[self.adv_pos:self.adv_pos + self.adv_ndim]
            for j, axis, axis_len, st in self.adv_entries:
                arr = arrays[j].broadcast(self.adv_shape)
                # NumPy: -len <= k < len, negative indices count from the end
                k = S.cast(arr.load(aidx), "int64")
                k = S.apply("where", S.apply("lt", k, iconst(0)), S.apply("add", k, iconst(axis_len)), k)
                if not _known_within(arrays[j], -axis_len, axis_len):
                    k = self.check(k, 0, axis_len, axis=axis, wrapped=True)
                expr = iadd(expr, imul(k, iconst(st)))
        return expr


def _known_within(v: View, lo: int, hi: int) -> bool:
    """A constant index array whose values all lie in ``[lo, hi)`` needs no run-time check."""
    st = v.storage
    if st.kind != "const" or st.value is None:
        return False
    vals = np.asarray(st.value)
    return vals.size == 0 or (int(vals.min()) >= lo and int(vals.max()) < hi)


def _index_plan(spec, x: View, idx_shapes, out_shape, check) -> _IndexPlan:
    spec = list(spec)
    consumed = sum(1 for e in spec if e[0] != "n")
    spec += [("s", None, None, None)] * (x.ndim - consumed)
    advanced = any(e[0] == "a" for e in spec)
    adv_shape = tuple(np.broadcast_shapes(*idx_shapes)) if advanced else ()
    adv_positions = [p for p, e in enumerate(spec) if e[0] == "a" or (advanced and e[0] == "i")]
    adjacent = bool(adv_positions) and adv_positions == list(range(adv_positions[0], adv_positions[-1] + 1))
    offset = x.offset
    strides, terms, adv_entries = [], [], []
    out_axis = 0
    axis = 0
    adv_pos = 0
    if advanced and not adjacent:
        out_axis = len(adv_shape)
        strides += [0] * len(adv_shape)
    placed = not advanced or not adjacent
    for e in spec:
        if e[0] == "n":
            strides.append(0)
            out_axis += 1
            continue
        d, st = x.shape[axis], x.strides[axis]
        if e[0] in ("i", "a") and advanced and not placed:
            adv_pos = out_axis
            strides += [0] * len(adv_shape)
            out_axis += len(adv_shape)
            placed = True
        if e[0] == "i":
            k = e[1] + d if e[1] < 0 else e[1]
            offset += k * st
        elif e[0] == "s":
            start, _stop, step = slice(e[1], e[2], e[3]).indices(d)
            offset += start * st
            strides.append(st * step)
            terms.append((out_axis, st * step))
            out_axis += 1
        else:
            adv_entries.append((e[1], axis, d, st))
        axis += 1
    if len(strides) != len(out_shape):  # pragma: no cover - shape inference disagrees
        raise CompileError(f"internal error: index plan for {spec} has rank {len(strides)}, "
                           f"expected {len(out_shape)}")
    return _IndexPlan(offset, strides, terms, adv_pos, len(adv_shape), adv_shape, adv_entries, x,
                      check)


def _subtensor_shape(spec, x: View, idx_shapes) -> tuple:
    from ..ops.indexing import _infer_shape
    return tuple(_infer_shape(spec, x.shape, idx_shapes))


def overlap_schedule(nodes: list[Apply]) -> list[Apply]:
    """``nodes`` (a topological order) with every node that reads the result of an
    ``overlaps`` op (a non-blocking collective) moved after all the nodes that do not: the
    collectives start as soon as their inputs are ready and run while the rest of the work (the
    backward pass) is computed; what consumes their results (the optimiser's updates) comes
    last.  Relative order is kept within both groups, so the order stays topological."""
    waiting: set[int] = set()
    early, late = [], []
    for node in nodes:
        after = any(id(v) in waiting for v in node.inputs)
        if after or getattr(node.op, "overlaps", False):
            waiting.update(id(o) for o in node.outputs)
        (late if after else early).append(node)
    return early + late


def _own_lowering(lowerer: Lowerer):
    """The lowering of an op that carries its own (``op.lower(lowerer, node)``)."""
    return lambda node, op: op.lower(lowerer, node)


def lower(fgraph: FunctionGraph, roots: list, shapes: list[tuple]) -> Program:
    """Lower ``fgraph`` for inputs of the given shapes into a kernel-IR program."""
    prog = Lowerer(fgraph, roots, shapes).run()
    plan_memory(prog)
    return prog


def plan_memory(prog: Program, align: int = 64) -> None:
    """Place temp storages in one arena; storages whose live ranges do not overlap share bytes."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for k, kern in enumerate(prog.kernels):
        for st in kern.storages(prog.storages):
            if st.kind == "temp":
                first.setdefault(st.sid, k)
                last[st.sid] = k
    placed: list[tuple[int, int, int, int]] = []  # (start, end, offset, nbytes)
    size = 0
    for st in prog.storages:
        if st.kind != "temp" or st.sid not in first:
            continue
        lo, hi = first[st.sid], last[st.sid]
        nbytes = max((st.nbytes + align - 1) // align * align, align)
        busy = sorted((off, off + nb) for s, e, off, nb in placed if not (e < lo or s > hi))
        off = 0
        for b0, b1 in busy:
            if off + nbytes <= b0:
                break
            off = max(off, b1)
        placed.append((lo, hi, off, nbytes))
        prog.arena_offsets[st.sid] = off
        size = max(size, off + nbytes)
    prog.arena_size = size


# --- symbolic slices (ops/slicing.py) --------------------------------------------------------
# A slice's parts (first, step, length) are int64 scalars of the graph.  Here they must have
# been folded from the input shapes (``specialize``): a length that depends on an input's
# value leaves the output shape unknown, which ``specialize`` already refuses.

def _slice_parts_of(lowerer: Lowerer, node) -> tuple[int, int, int]:
    """The folded ``(first, step, length)`` of a ``DynSlice*`` node (its last three inputs)."""
    vals = [lowerer.value_of.get(id(v)) for v in node.inputs[-3:]]
    if any(v is None for v in vals):
        raise CompileError(f"{_op_label(node)}: the slice start or step depends on run-time "
                           f"values; native backends need slice bounds "
                           "that follow from input shapes (use backend='reference')")
    first, step, length = (int(v) for v in vals)
    if step == 0:  # pragma: no cover - folding ran the op, which raised
        raise CompileError(f"{_op_label(node)}: slice step cannot be zero")
    return first, step, max(length, 0)


def _axis_slice(v: View, axis: int, first: int, step: int, length: int) -> View:
    """The view of ``v`` with ``axis`` cut to ``length`` elements from ``first`` by ``step``."""
    shape, strides = list(v.shape), list(v.strides)
    shape[axis], strides[axis] = length, strides[axis] * step
    offset = v.offset + (first * v.strides[axis] if length else 0)
    return View(v.storage, tuple(shape), tuple(strides), offset)


def _op_dyn_slice(self: Lowerer, node, op) -> None:
    """A view: no kernel."""
    x = self.view(node.inputs[0])
    self.env[id(node.outputs[0])] = _axis_slice(x, op.axis, *_slice_parts_of(self, node))


def _dyn_slice_write(self: Lowerer, node, op, accumulate: bool) -> None:
    """``out = x``, then ``y`` written (or added) into the slice of ``out``."""
    x, y = self.view(node.inputs[0]), self.view(node.inputs[1])
    out = self.out_view(node.outputs[0])
    self.copy(x, out)
    dst = _axis_slice(out, op.axis, *_slice_parts_of(self, node))
    if dst.size == 0:
        self.env[id(node.outputs[0])] = out
        return
    if accumulate:  # each element is read and written at the same index
        expr = S.apply("add", S.inp(0, dst.dtype), S.inp(1, dst.dtype))
        self.map_kernel("slice_add", dst, expr, [dst, y])
    else:
        self.map_kernel("slice_set", dst, S.inp(0, dst.dtype), [y])
    self.env[id(node.outputs[0])] = out


Lowerer.op_DynSlice = _op_dyn_slice
Lowerer.op_DynSliceSet = lambda self, node, op: _dyn_slice_write(self, node, op, False)
Lowerer.op_DynSliceInc = lambda self, node, op: _dyn_slice_write(self, node, op, True)
