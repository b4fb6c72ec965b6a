"""CUDA C text for each kind of kernel the CUDA lowering produces.

Every function here returns the source of one ``extern "C" __global__`` kernel (a stable name
made of the op name and a short hash of the body, and a comment naming the graph nodes it
came from).  Sizes and strides are literals: kernels are specialised on the call's shapes.
Reading through views (strides, broadcasting) is ``cuda_index.offset_terms``; scalar bodies
are ``cuda_scalar.render``; block reductions, the tiled GEMM, row-wise softmax, pooling,
im2col and random bits are the hand-written helpers in ``kernels/cuda/*.cuh``.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Sequence

from .cuda_index import View, offset_terms, size_of
from .cuda_scalar import Emitter, c_type, literal, render

# the module, not ``symgraph.scalar`` the shorthand function that shadows it in the package
S = importlib.import_module("..scalar", __package__)

BLOCK = 256
HELPERS = ("scalar.cuh", "reduce.cuh", "gemm.cuh", "softmax.cuh", "pool.cuh", "conv.cuh",
           "index.cuh", "random.cuh")

ACC = {"float32": "float32", "float64": "float64", "int64": "int64", "int32": "int32",
       "int16": "int32", "int8": "int32", "uint8": "int32", "bool": "int32"}


def kernel_name(stem: str, body: str) -> str:
    stem = "".join(ch if ch.isalnum() else "_" for ch in stem.lower()).strip("_")[:40] or "k"
    return f"sg_{stem}_{hashlib.sha1(body.encode()).hexdigest()[:8]}"


def index_type(total: int) -> str:
    return "int" if total < 2 ** 31 - 1 else "long long"


def grid_for(total: int, block: int = BLOCK, cap: int = 65535 * 4) -> int:
    return max(1, min((total + block - 1) // block, cap))


class Params:
    """Kernel parameters: one pointer per storage touched (written ones are non-const)."""

    def __init__(self):
        self.order: list[int] = []
        self.dtypes: dict[int, str] = {}
        self.written: set[int] = set()

    def use(self, view_or_sid, dtype: str | None = None, write: bool = False) -> str:
        sid = view_or_sid.sid if isinstance(view_or_sid, View) else int(view_or_sid)
        dt = view_or_sid.dtype if isinstance(view_or_sid, View) else dtype
        if sid not in self.dtypes:
            self.order.append(sid)
            self.dtypes[sid] = dt
        if write:
            self.written.add(sid)
        return f"b{sid}"

    def signature(self) -> str:
        parts = []
        for sid in self.order:
            const = "" if sid in self.written else "const "
            parts.append(f"{const}{c_type(self.dtypes[sid])} *__restrict__ b{sid}")
        return ", ".join(parts)


def wrap(stem: str, comment: Sequence[str], params: Params, body: list[str],
         launch_bounds: int = BLOCK) -> tuple[str, str, list[int]]:
    """Assemble a kernel: returns ``(name, source, argument storage ids)``."""
    text = "\n".join(body)
    sig = params.signature()
    name = kernel_name(stem, sig + text)
    head = [f"// {c}" for c in comment]
    src = "\n".join(head + [f'extern "C" __global__ void __launch_bounds__({launch_bounds}) {name}({sig})',
                            "{", *("    " + ln if ln else "" for ln in body), "}", ""])
    return name, src, list(params.order)


def decompose(var: str, shape: Sequence[int], prefix: str, itype: str, needed: set[int] | None = None
              ) -> list[str]:
    """Statements that split linear index ``var`` into per-dimension indices ``{prefix}{d}``."""
    lines, inner = [], 1
    sizes = list(shape)
    for d in range(len(sizes) - 1, -1, -1):
        if needed is None or d in needed:
            if sizes[d] == 1:
                lines.append(f"const {itype} {prefix}{d} = 0;")
            elif d == 0:
                lines.append(f"const {itype} {prefix}{d} = {var} / {inner};" if inner > 1 else
                             f"const {itype} {prefix}{d} = {var};")
            else:
                div = f"{var} / {inner}" if inner > 1 else var
                lines.append(f"const {itype} {prefix}{d} = ({div}) % {sizes[d]};")
        inner *= sizes[d]
    lines.reverse()
    return lines


def _dims_used(views: Sequence[View], ndim: int) -> set[int]:
    used = set()
    for v in views:
        lead = ndim - len(v.shape)
        for d, (size, stride) in enumerate(zip(v.shape, v.strides)):
            if size != 1 and stride != 0:
                used.add(lead + d)
    return used


def _is_linear(view: View, shape) -> bool:
    return tuple(view.shape) == tuple(shape) and view.contiguous


class Operand:
    """An input of a generated body: a view in device memory or a scalar literal."""

    def __init__(self, view: View | None = None, value=None, dtype: str | None = None):
        self.view, self.value = view, value
        self.dtype = view.dtype if view is not None else dtype


def _read_all(operands: Sequence[Operand], params: Params, idx: list[str], shape, linear: str | None,
              em: Emitter, used: set[int] | None = None) -> list[str]:
    """Load each operand used by the body into a local (``linear`` indexes contiguous ones)."""
    reads = []
    for slot, op in enumerate(operands):
        if used is not None and slot not in used:
            reads.append("0")
            continue
        if op.view is None:
            reads.append(literal(op.value, op.dtype))
            continue
        p = params.use(op.view)
        if linear is not None and _is_linear(op.view, shape):
            off = f"{op.view.offset} + {linear}" if op.view.offset else linear
        else:
            off = offset_terms(op.view, idx)
        reads.append(em.local(op.dtype, f"{p}[{off}]"))
    return reads


def _used_slots(expr: S.SExpr) -> set[int]:
    return set(S.inputs_of(expr))


# --- elementwise ---------------------------------------------------------------------------

def elementwise(stem: str, comment, expr: S.SExpr, operands: Sequence[Operand], out: View):
    """``out[i] = expr(operands[i]...)`` over out's shape, grid-stride, broadcasting reads."""
    shape, total = out.shape, out.size
    it = index_type(total)
    params = Params()
    po = params.use(out, write=True)
    em = Emitter("v")
    used = _used_slots(expr)
    views = [o.view for k, o in enumerate(operands) if o.view is not None and k in used]
    need = _dims_used([v for v in views if not _is_linear(v, shape)] +
                      ([] if _is_linear(out, shape) else [out]), len(shape))
    idx = [f"i{d}" for d in range(len(shape))]
    reads = _read_all(operands, params, idx, shape, "i", em, used)
    lines, (res,) = render([expr], reads, em)
    linear_out = f"{out.offset} + i" if out.offset else "i"
    out_off = linear_out if _is_linear(out, shape) else offset_terms(out, idx)
    body = [f"for ({it} i = ({it})blockIdx.x * blockDim.x + threadIdx.x; i < {total}; "
            f"i += ({it})gridDim.x * blockDim.x) {{",
            *("    " + ln for ln in decompose("i", shape, "i", it, need)),
            *("    " + ln for ln in em.lines[:len(em.lines) - len(lines)]),
            *("    " + ln for ln in lines),
            f"    {po}[{out_off}] = {_store(res, expr.dtype, out.dtype)};", "}"]
    return wrap(stem, comment, params, body) + ((grid_for(total), BLOCK),)


def _store(text: str, src: str, dst: str) -> str:
    if src == dst:
        return text
    return f"({c_type(dst)})({text})" if dst != "bool" else f"({text} != 0)"


# --- reductions ----------------------------------------------------------------------------

_REDUCE_OP = {"sum": "SgAdd()", "prod": "SgMul()", "max": "SgMax()", "min": "SgMin()",
              "any": "SgOr()", "all": "SgAnd()"}


def reduce_identity(kind: str, acc: str) -> str:
    if kind in ("sum", "any"):
        return literal(0, acc)
    if kind in ("prod", "all"):
        return literal(1, acc)
    if acc.startswith("float"):
        return literal(float("-inf") if kind == "max" else float("inf"), acc)
    import numpy as np
    info = np.iinfo(acc)
    return literal(info.min if kind == "max" else info.max, acc)


def acc_dtype(kind: str, value_dtype: str, out_dtype: str) -> str:
    if kind in ("any", "all"):
        return "int32"
    if kind in ("sum", "prod"):
        return ACC[out_dtype]
    return ACC[value_dtype]


def reduction(stem: str, comment, kind: str, expr: S.SExpr, operands: Sequence[Operand],
              full_shape: tuple[int, ...], axes: tuple[int, ...], out: View, strategy: str,
              splits: int = 1, partial: View | None = None):
    """``out[o] = kind over r of expr(operands at (o, r))``; ``strategy`` is ``"thread"`` (one
    thread per output), ``"block"`` (one block per output, block reduction) or ``"split"``
    (``splits`` blocks per output writing ``partial``, finished by ``reduction_finish``)."""
    kept = [d for d in range(len(full_shape)) if d not in axes]
    kshape = [full_shape[d] for d in kept]
    rshape = [full_shape[d] for d in axes]
    M, K = size_of(kshape), size_of(rshape)
    acc = acc_dtype(kind, expr.dtype, out.dtype)
    ct = c_type(acc)
    it = "long long"
    params = Params()
    target = partial if strategy == "split" else out
    po = params.use(target, write=True)
    idx = [""] * len(full_shape)
    for j, d in enumerate(kept):
        idx[d] = f"o{j}"
    for j, d in enumerate(axes):
        idx[d] = f"r{j}"
    em = Emitter("v")
    used = _used_slots(expr)
    reads = _read_all(operands, params, idx, full_shape, None, em, used)
    need = _dims_used([o.view for k, o in enumerate(operands) if o.view is not None and k in used],
                      len(full_shape))
    kneed = {j for j, d in enumerate(kept) if d in need}
    rneed = {j for j, d in enumerate(axes) if d in need}
    pre = list(em.lines)
    lines, (res,) = render([expr], reads, em)
    value = _store(res, expr.dtype, acc)
    if kind in ("any", "all"):
        value = f"(({ct})({res} != 0))"
    step = [*decompose("r", rshape, "r", it, rneed), *pre, *lines,
            f"acc = {_REDUCE_OP[kind]}(acc, {value});"]
    ident = reduce_identity(kind, acc)
    store = _store("acc", acc, out.dtype) if strategy != "split" else "acc"
    out_off = "o" if target.contiguous and target.offset == 0 else f"{target.offset} + o"
    if strategy == "thread":
        body = [f"for ({it} o = ({it})blockIdx.x * blockDim.x + threadIdx.x; o < {M}; "
                f"o += ({it})gridDim.x * blockDim.x) {{",
                *("    " + ln for ln in decompose("o", kshape, "o", it, kneed)),
                f"    {ct} acc = {ident};",
                f"    for ({it} r = 0; r < {K}; ++r) {{",
                *("        " + ln for ln in step), "    }",
                f"    {po}[{out_off}] = {store};", "}"]
        return wrap(stem, comment, params, body) + ((grid_for(M), BLOCK),)
    if strategy == "block":
        body = [f"for ({it} o = blockIdx.x; o < {M}; o += gridDim.x) {{",
                *("    " + ln for ln in decompose("o", kshape, "o", it, kneed)),
                f"    {ct} acc = {ident};",
                f"    for ({it} r = threadIdx.x; r < {K}; r += blockDim.x) {{",
                *("        " + ln for ln in step), "    }",
                f"    acc = sg_block_reduce(acc, {_REDUCE_OP[kind]}, ({ct}){ident});",
                f"    if (threadIdx.x == 0) {po}[{out_off}] = {store};", "}"]
        return wrap(stem, comment, params, body) + ((min(M, 65535 * 4), BLOCK),)
    chunk = (K + splits - 1) // splits
    body = [f"for ({it} bs = blockIdx.x; bs < {M * splits}; bs += gridDim.x) {{",
            f"    const {it} o = bs / {splits}, s = bs % {splits};",
            *("    " + ln for ln in decompose("o", kshape, "o", it, kneed)),
            f"    {ct} acc = {ident};",
            f"    const {it} r_end = (s + 1) * {chunk} < {K} ? (s + 1) * {chunk} : {K};",
            f"    for ({it} r = s * {chunk} + threadIdx.x; r < r_end; r += blockDim.x) {{",
            *("        " + ln for ln in step), "    }",
            f"    acc = sg_block_reduce(acc, {_REDUCE_OP[kind]}, ({ct}){ident});",
            f"    if (threadIdx.x == 0) {po}[bs] = acc;", "}"]
    return wrap(stem, comment, params, body) + ((min(M * splits, 65535 * 4), BLOCK),)


def reduction_finish(stem: str, comment, kind: str, partial: View, splits: int, out: View):
    """Second pass of a split reduction: combine ``splits`` partials per output."""
    acc = partial.dtype
    ct = c_type(acc)
    M = out.size
    params = Params()
    po = params.use(out, write=True)
    pp = params.use(partial)
    ident = reduce_identity(kind, acc)
    out_off = "o" if out.offset == 0 else f"{out.offset} + o"
    body = [f"for (long long o = blockIdx.x; o < {M}; o += gridDim.x) {{",
            f"    {ct} acc = {ident};",
            f"    for (long long r = threadIdx.x; r < {splits}; r += blockDim.x) "
            f"acc = {_REDUCE_OP[kind]}(acc, {pp}[o * {splits} + r]);",
            f"    acc = sg_block_reduce(acc, {_REDUCE_OP[kind]}, ({ct}){ident});",
            f"    if (threadIdx.x == 0) {po}[{out_off}] = {_store('acc', acc, out.dtype)};", "}"]
    return wrap(stem, comment, params, body) + ((min(M, 65535 * 4), BLOCK),)


def argreduce(stem: str, comment, maximum: bool, x: View, axis: int | None, out: View, strategy: str):
    """argmax / argmin along ``axis`` (of the flattened tensor when None), first index wins."""
    if axis is None:
        kshape, rshape = [], list(x.shape)
        kept, axes = [], list(range(len(x.shape)))
    else:
        axes = [axis]
        kept = [d for d in range(len(x.shape)) if d != axis]
        kshape, rshape = [x.shape[d] for d in kept], [x.shape[axis]]
    M, K = size_of(kshape), size_of(rshape)
    vt = x.dtype if x.dtype in ("float32", "float64", "int64", "int32") else "int32"
    ct = c_type(vt)
    params = Params()
    po = params.use(out, write=True)
    px = params.use(x)
    idx = [""] * len(x.shape)
    for j, d in enumerate(kept):
        idx[d] = f"o{j}"
    for j, d in enumerate(axes):
        idx[d] = f"r{j}"
    load = [*decompose("r", rshape, "r", "long long"),
            f"const {ct} v = ({ct}){px}[{offset_terms(x, idx)}];",
            f"if (sg_arg_better<{ct}, {'true' if maximum else 'false'}>(v, r, best, arg)) "
            "{ best = v; arg = r; }"]
    init = [f"{ct} best = ({ct}){px}[{offset_terms(x, [i if i.startswith('o') else '0' for i in idx])}];",
            "long long arg = 0;"]
    if strategy == "thread":
        body = [f"for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < {M}; "
                "o += (long long)gridDim.x * blockDim.x) {",
                *("    " + ln for ln in decompose("o", kshape, "o", "long long")),
                *("    " + ln for ln in init),
                f"    for (long long r = 1; r < {K}; ++r) {{", *("        " + ln for ln in load), "    }",
                f"    {po}[o] = arg;", "}"]
        return wrap(stem, comment, params, body) + ((grid_for(M), BLOCK),)
    body = [f"for (long long o = blockIdx.x; o < {M}; o += gridDim.x) {{",
            *("    " + ln for ln in decompose("o", kshape, "o", "long long")),
            *("    " + ln for ln in init),
            f"    for (long long r = threadIdx.x; r < {K}; r += blockDim.x) {{",
            *("        " + ln for ln in load), "    }",
            f"    sg_block_argreduce<{ct}, {'true' if maximum else 'false'}>(best, arg);",
            f"    if (threadIdx.x == 0) {po}[o] = arg;", "}"]
    return wrap(stem, comment, params, body) + ((min(M, 65535 * 4), BLOCK),)


# --- GEMM ----------------------------------------------------------------------------------

def gemm(stem: str, comment, a: View, b: View, out: View, expr: S.SExpr, extras: Sequence[Operand],
         acc: str):
    """Batched ``out = expr(a @ b, extras...)`` with the tiled GEMM helper; ``a`` is
    (batch..., M, K), ``b`` (batch..., K, N), ``out`` (batch..., M, N) contiguous.  The
    epilogue (slot 0 = the product) runs on each accumulator before the store."""
    bshape = out.shape[:-2]
    M, N = out.shape[-2], out.shape[-1]
    K = a.shape[-1]
    batch = size_of(bshape)
    nb = len(bshape)
    params = Params()
    po = params.use(out, write=True)
    pa, pb = params.use(a), params.use(b)
    zidx = [f"z{d}" for d in range(nb)]
    a_batch = View(a.sid, a.dtype, a.shape[:-2], a.strides[:-2], a.offset)
    b_batch = View(b.sid, b.dtype, b.shape[:-2], b.strides[:-2], b.offset)
    em = Emitter("e")
    idx = zidx + ["r", "c"]
    used = {k - 1 for k in _used_slots(expr) if k > 0}
    reads = [None] + _read_all(extras, params, idx, out.shape, None, em, used)
    reads[0] = "acc"
    pre = list(em.lines)
    # the product slot has the matmul dtype; the accumulator may be wider
    prod_dtype = out.dtype if expr is None else _slot_dtype(expr, 0, a.dtype)
    reads[0] = f"({c_type(prod_dtype)})acc" if prod_dtype != acc else "acc"
    lines, (res,) = render([expr], reads, em)
    at = c_type(a.dtype)
    ct = c_type(acc)
    out_off = f"{out.offset} + " if out.offset else ""
    body = [f"for (long long z = blockIdx.z; z < {batch}; z += gridDim.z) {{",
            *("    " + ln for ln in decompose("z", bshape, "z", "long long")),
            f"    const {at} *A = {pa} + ({offset_terms(a_batch, zidx)});",
            f"    const {at} *B = {pb} + ({offset_terms(b_batch, zidx)});",
            f"    {c_type(out.dtype)} *C = {po} + {out_off}z * {M * N}LL;",
            f"    sg_gemm_tile<{at}, {ct}>(A, B, {M}LL, {N}LL, {K}LL, {a.strides[-2]}LL, {a.strides[-1]}LL, "
            f"{b.strides[-2]}LL, {b.strides[-1]}LL,",
            f"        [&](long long r, long long c, {ct} acc) {{",
            *("            " + ln for ln in pre + lines),
            f"            C[r * {N} + c] = {_store(res, expr.dtype, out.dtype)};",
            "        });", "}"]
    grid = ((N + 63) // 64, (M + 63) // 64, max(1, min(batch, 65535)))
    return wrap(stem, comment, params, body) + ((grid, BLOCK),)


def _slot_dtype(expr: S.SExpr, slot: int, default: str) -> str:
    for n in S.topo([expr]):
        if n.op == "input" and n.value == slot:
            return n.dtype
    return default


# --- row-wise softmax family -----------------------------------------------------------------

def _row_setup(x: View, axis: int, prefix: str = "q"):
    other = [d for d in range(len(x.shape)) if d != axis]
    rshape = [x.shape[d] for d in other]
    idx = [""] * len(x.shape)
    for j, d in enumerate(other):
        idx[d] = f"{prefix}{j}"
    idx[axis] = "0"
    base = View(x.sid, x.dtype, x.shape, x.strides, x.offset)
    return rshape, offset_terms(base, idx), x.strides[axis]


def row_block(n: int) -> int:
    return 256 if n >= 256 else max(32, (n + 31) // 32 * 32)


def softmax(stem: str, comment, x: View, out: View, axis: int, log: bool):
    """One block per row: ``out = (log_)softmax(x)`` along ``axis``."""
    n = x.shape[axis]
    acc = "float64" if x.dtype == "float64" else "float32"
    params = Params()
    po, px = params.use(out, write=True), params.use(x)
    rshape, xbase, xs = _row_setup(x, axis)
    _, obase, os_ = _row_setup(out, axis)
    rows = size_of(rshape)
    T, A = c_type(x.dtype), c_type(acc)
    body = [f"for (long long row = blockIdx.x; row < {rows}; row += gridDim.x) {{",
            *("    " + ln for ln in decompose("row", rshape, "q", "long long")),
            f"    const {T} *xr = {px} + ({xbase});",
            f"    {c_type(out.dtype)} *yr = {po} + ({obase});",
            f"    auto x = [&](long long i) {{ return xr[i * {xs}]; }};",
            f"    auto y = [&](long long i, {A} v) {{ yr[i * {os_}] = ({c_type(out.dtype)})v; }};",
            f"    sg_softmax_row<{A}, {'true' if log else 'false'}>(x, y, {n}LL);", "}"]
    blk = row_block(n)
    return wrap(stem, comment, params, body, 256) + ((min(rows, 65535 * 4), blk),)


def cross_entropy(stem: str, comment, z: View, t: View, out: View, sparse: bool, err_sid: int, code: int):
    """One block per row: per-row softmax cross-entropy (integer labels or probabilities)."""
    axis = len(z.shape) - 1
    n = z.shape[axis]
    acc = "float64" if z.dtype == "float64" else "float32"
    params = Params()
    po, pz = params.use(out, write=True), params.use(z)
    rshape, zbase, zs = _row_setup(z, axis)
    rows = size_of(rshape)
    T, A = c_type(z.dtype), c_type(acc)
    qidx = [f"q{j}" for j in range(len(rshape))]
    out_off = offset_terms(out, qidx)
    pt = params.use(t)
    lines = [f"for (long long row = blockIdx.x; row < {rows}; row += gridDim.x) {{",
             *("    " + ln for ln in decompose("row", rshape, "q", "long long")),
             f"    const {T} *zr = {pz} + ({zbase});",
             f"    auto x = [&](long long i) {{ return zr[i * {zs}]; }};"]
    if sparse:
        perr = params.use(err_sid, "int32", write=True)
        lines += [f"    const long long label = (long long){pt}[{offset_terms(t, qidx)}];",
                  f"    const {A} loss = sg_xent_sparse_row<{A}>(x, {n}LL, label, (int *){perr}, {code});"]
    else:
        _, tbase, ts = _row_setup(t, axis)
        lines += [f"    const {c_type(t.dtype)} *tr = {pt} + ({tbase});",
                  f"    auto t = [&](long long i) {{ return tr[i * {ts}]; }};",
                  f"    const {A} loss = sg_xent_dense_row<{A}>(x, t, {n}LL);"]
    lines += [f"    if (threadIdx.x == 0) {po}[{out_off}] = ({c_type(out.dtype)})loss;", "}"]
    return wrap(stem, comment, params, lines, 256) + ((min(rows, 65535 * 4), row_block(n)),)


# --- convolution, pooling, random, indexing ---------------------------------------------------

def call_helper(stem: str, comment, call: str, views_in: Sequence[View], views_out: Sequence[View],
                total: int):
    """A kernel whose body is one grid-stride helper call on contiguous buffers."""
    params = Params()
    names = {}
    for v in views_out:
        names[v.sid] = params.use(v, write=True)
    for v in views_in:
        names[v.sid] = params.use(v)

    def ptr(v: View) -> str:
        return f"({names[v.sid]} + {v.offset})" if v.offset else names[v.sid]
    body = [call.format(*[ptr(v) for v in views_out], *[ptr(v) for v in views_in]) + ";"]
    return wrap(stem, comment, params, body) + ((grid_for(total), BLOCK),)


def random_draw(stem: str, comment, dist: str, draw_id: int, state: View, out: View):
    """Counter-based draws: element i uses the words ``i`` (uniform) or ``2i, 2i+1`` (normal)."""
    total = out.size
    params = Params()
    po, ps = params.use(out, write=True), params.use(state)
    T = c_type(out.dtype)
    st = f"{ps} + {state.offset}" if state.offset else ps
    if dist == "uniform":
        gen = ("sg_uniform_f64(sg_splitmix64(base + (unsigned long long)i))" if out.dtype == "float64"
               else "sg_uniform_f32(sg_splitmix64(base + (unsigned long long)i))")
    else:
        gen = "sg_normal_f64(base, i)"
    body = [f"const unsigned long long base = sg_random_base({st}, {draw_id}ULL);",
            f"for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < {total}; "
            "i += (long long)gridDim.x * blockDim.x) {",
            f"    {po}[i] = ({T}){gen};", "}"]
    return wrap(stem, comment, params, body) + ((grid_for(total), BLOCK),)


def gather_scatter(stem: str, comment, imap, x: View, arrays: Sequence[View], other: View | None,
                   out: View | None, scatter: bool, err_sid: int, code: int):
    """Gather ``out = x[key]`` or scatter-add ``x[key] += other`` (``x`` written in place, with
    atomics when integer-array indices may repeat)."""
    shape = imap.out_shape
    total = size_of(shape)
    params = Params()
    px = params.use(x, write=scatter)
    pout = params.use(out, write=True) if out is not None else None
    perr = params.use(err_sid, "int32", write=True)
    names = [params.use(a) for a in arrays]
    oidx = [f"i{d}" for d in range(len(shape))]
    adv = [f"i{imap.adv_pos + d}" for d in range(len(imap.adv_shape))]
    lines = decompose("i", shape, "i", "long long")
    terms = [str(x.offset)] if x.offset else []
    axis = 0
    for a in imap.axes:
        stride = x.strides[axis]
        if a[0] == "fixed":
            terms.append(f"{a[1] * stride}LL")
        elif a[0] == "slice":
            terms.append(f"({a[2]}LL + i{a[1]} * {a[3]}LL) * {stride}LL")
        else:
            av = arrays[a[1]]
            off = offset_terms(av, adv)
            lines.append(f"const long long j{axis} = sg_wrap_index((long long){names[a[1]]}[{off}], "
                         f"{x.shape[axis]}LL, (int *){perr}, {code});")
            terms.append(f"j{axis} * {stride}LL")
        axis += 1
    xoff = " + ".join(terms) if terms else "0"
    if scatter:
        po = params.use(other)
        val = f"{po}[{offset_terms(other, oidx)}]"
        if imap.adv_shape:
            lines.append(f"sg_atomic_add(&{px}[{xoff}], ({c_type(x.dtype)}){val});")
        else:
            lines.append(f"{px}[{xoff}] += ({c_type(x.dtype)}){val};")
    else:
        lines.append(f"{pout}[{out.offset} + i] = {px}[{xoff}];" if out.offset else
                     f"{pout}[i] = {px}[{xoff}];")
    body = [f"for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < {total}; "
            "i += (long long)gridDim.x * blockDim.x) {", *("    " + ln for ln in lines), "}"]
    return wrap(stem, comment, params, body) + ((grid_for(total), BLOCK),)
