"""Kernel IR -> LLVM IR (``llvmlite.ir``): one module, one exported entry point per program.

Layout of the module:

* one ``internal noinline`` function per kernel, ``void @<kernel>(ptr noalias %s<sid>...,
  i64 %lo, i64 %hi)``; a parallel kernel runs iterations ``[lo, hi)`` of its outer loop;
* for parallel kernels a trampoline ``@<kernel>.omp(ptr %ctx)`` that libgomp's
  ``GOMP_parallel`` runs on every thread (each takes one contiguous chunk);
* the entry ``i32 @<entry>(ptr %args)``: ``args`` holds the input pointers, then the output
  pointers, then the scratch arena; it calls the kernels in order and returns a status
  (``checks.STATUS_*``: 0 ok, 1 a non-contiguous input array object, 2 a bound check
  failed).  ``@sg_num_threads`` (a global the runtime sets) picks the thread count at run
  time;
* when the program has bound checks, ``@sg_error``, the error words of ``checks.py``.  A
  kernel keeps, per check site, the largest ``index - lo`` seen as unsigned in a local (an
  unsigned max reduction, which vectorises beside the load; label sites also keep min and
  max), clamps the index it uses, and on exit merges its locals into ``@sg_error`` with
  atomic max / min (threads of one call run chunks of the same kernel) and sets the site's
  and the global flag when a value left its range.  The entry resets the words on every call
  and returns 2 after the first kernel whose check failed.

Floating-point ops carry no fast-math flag, so an expression is evaluated as NumPy evaluates
it (no FMA contraction, no regrouping); only reduction updates carry ``contract reassoc nsz``,
so LLVM vectorises them with partial sums (NumPy's own sums are pairwise, not sequential).
``sg.compile(..., fast_math=True)`` adds ``contract`` to elementwise float ops (FMAs).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..errors import CompileError
from ..graph.types import is_float
from ._scalar import S
from .checks import (
    BAD,
    INT64_MAX,
    INT64_MIN,
    MAX,
    MIN,
    STATUS_INDEX_ERROR,
    STATUS_NONCONTIGUOUS,
    STATUS_OK,
    UMAX,
    WORDS_PER_SITE,
    initial_words,
)
from .kernel_ir import (
    Assign,
    Collective,
    For,
    Gemm,
    If,
    Kernel,
    Program,
    Store,
    checked_sites,
    kernel_text,
    walk,
)
from .numpy_abi import OBJECT_DATA_OFFSET, OBJECT_FLAGS_OFFSET
from .symdim import SymInt, hint, known_equal, to_expr

F32, F64 = ir.FloatType(), ir.DoubleType()
I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
PTR = ir.PointerType()
VOID = ir.VoidType()

_REG = {"float32": F32, "float64": F64, "int64": I64, "int32": I32, "int16": I16, "int8": I8,
        "uint8": I8, "bool": I1}
_MEM = dict(_REG, bool=I8)
_UNSIGNED = {"uint8", "bool"}
PARALLEL_MIN_WORK = 1 << 15  # elements; smaller kernels run on the calling thread
# an elementwise kernel writing at least this much uses non-temporal (streaming) stores: the
# output would not stay in cache anyway, and streaming skips the read-for-ownership of every
# destination line (about 1.5-2x less memory traffic for a pure write stream)
STREAM_MIN_BYTES = 32 << 20
STREAM_ALIGN = 32  # bytes: the widest vector store the loop vectoriser emits (AVX)

# math functions: name -> (float32 libm name, float64 libm name) used until kernels/llvm/math.ll
_LIBM = {"log1p": ("log1pf", "log1p"), "expm1": ("expm1f", "expm1"), "tanh": ("tanhf", "tanh"),
         "erf": ("erff", "erf")}
_INTRINSIC = {"exp", "log", "sin", "cos", "sqrt", "floor", "ceil", "fabs", "pow"}
MATH_FUNCS = ("exp", "log", "log1p", "expm1", "tanh", "sigmoid", "erf", "softplus", "sin", "cos", "pow")


def reg_type(dtype: str) -> ir.Type:
    try:
        return _REG[dtype]
    except KeyError:
        raise _unsupported(dtype) from None


def mem_type(dtype: str) -> ir.Type:
    try:
        return _MEM[dtype]
    except KeyError:
        raise _unsupported(dtype) from None


def _unsupported(dtype: str) -> CompileError:
    return CompileError(f"the llvm backend does not support {dtype} (it supports "
                        f"{', '.join(sorted(_MEM))}); cast with .astype('float32') or use "
                        "another backend")


def _signed_const(dtype: str, value) -> ir.Constant:
    t = _REG[dtype]
    if dtype == "bool":
        return ir.Constant(I1, int(bool(value)))
    if is_float(dtype):
        return ir.Constant(t, float(value))
    bits = t.width
    v = int(value) % (1 << bits)
    if v >= 1 << (bits - 1):
        v -= 1 << bits
    return ir.Constant(t, v)


GEMM_NB, GEMM_KB = 256, 128  # column and depth block of the generated GEMM loops (export)
GEMM_VECTOR_BYTES = 32  # one accumulator of a GEMM register tile (two per row, four rows)


def size_value(b: ir.IRBuilder, x, dims: list) -> ir.Value:
    """An i64 value for a size: a constant, or computed from the run-time sizes ``dims``."""
    if not isinstance(x, SymInt):
        return ir.Constant(I64, int(x))
    memo: dict[int, ir.Value] = {}
    root = to_expr(x)
    for n in S.topo([root]):
        a = [memo[id(c)] for c in n.args]
        if n.op == "const":
            v = ir.Constant(I64, int(n.value))
        elif n.op == "dim":
            v = dims[n.value]
        elif n.op in ("add", "sub", "mul"):
            v = getattr(b, n.op)(a[0], a[1])
        elif n.op in ("maximum", "minimum"):
            v = b.select(b.icmp_signed(">" if n.op == "maximum" else "<", a[0], a[1]), a[0], a[1])
        else:  # floordiv / mod with Python's signs (0 for a zero divisor, as symdim.evaluate)
            zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
            den = b.select(b.icmp_signed("==", a[1], zero), one, a[1])
            q, r = b.sdiv(a[0], den), b.srem(a[0], den)
            fix = b.and_(b.icmp_signed("!=", r, zero),
                         b.icmp_signed("!=", b.icmp_signed("<", r, zero), b.icmp_signed("<", den, zero)))
            v = b.select(fix, b.sub(q, one), q) if n.op == "floordiv" else b.select(fix, b.add(r, den), r)
            v = b.select(b.icmp_signed("==", a[1], zero), zero, v)
        memo[id(n)] = v
    return memo[id(root)]


class ModuleBuilder:
    """Renders one ``Program`` into an LLVM module with entry point ``entry_name``."""

    def __init__(self, prog: Program, entry_name: str = "symgraph_entry", gomp: bool = True,
                 math_functions: set[str] | None = None, object_args: bool = False,
                 profile: bool = False, streaming: bool = False, fast_math: bool = False,
                 blas: bool = True, error_arg: bool = False):
        self.prog = prog
        # blas=False (export): ``Gemm`` statements become generated loops, so the code needs
        # no OpenBLAS at run time
        self.blas = blas
        # error_arg (export): the check words are not the global @sg_error but memory the
        # caller passes after the arena (one block per export context, so threads do not
        # share it); kernels with check sites take its address as an extra pointer argument
        self.error_arg = error_arg and bool(prog.checks)
        # fast_math: elementwise float ops may be contracted into FMAs (``sg.compile(fast_math=)``)
        self.fast_math = fast_math
        # streaming: big elementwise outputs use non-temporal stores (x86-64 hosts)
        self.streaming = streaming
        # profile: count calls and cycles (llvm.readcyclecounter) per kernel in @sg_profile
        self.profile = profile
        # object_args: the input/output entries of ``args`` are NumPy array objects whose data
        # pointer sits at OBJECT_DATA_OFFSET (the runtime checks this layout at start-up)
        self.object_args = object_args
        self.entry_name = entry_name
        self.gomp = gomp
        self.math_functions = math_functions or set()  # names provided by kernels/llvm/math.ll
        self.module = ir.Module(name="symgraph")
        self.nthreads = ir.GlobalVariable(self.module, I32, "sg_num_threads")
        self.nthreads.initializer = ir.Constant(I32, 1)
        self._decls: dict[str, ir.Function] = {}
        self.const_globals: dict[int, ir.GlobalVariable] = {}
        self.kernel_fns: list[tuple[Kernel, ir.Function, list]] = []
        self.error_word = None
        self.error_type = ir.ArrayType(I64, 1 + WORDS_PER_SITE * len(prog.checks))
        self.error_base: ir.Value | None = None  # the entry's error block (error_arg)
        if prog.checks and not self.error_arg:  # [flag, then bad, umax, min, max per site]
            ety = self.error_type
            self.error_word = ir.GlobalVariable(self.module, ety, "sg_error")
            self.error_word.initializer = ir.Constant(ety, None)
            self.error_word.align = 64

    @property
    def has_checks(self) -> bool:
        return self.error_word is not None or self.error_arg

    def error_slot(self, b: ir.IRBuilder, i: int, base: ir.Value | None = None) -> ir.Value:
        """Pointer to word ``i`` of ``@sg_error`` or of ``base`` (error_arg; 0: the flag)."""
        idx = [ir.Constant(I32, 0), ir.Constant(I32, i)]
        if base is None and self.error_word is not None:
            return b.gep(self.error_word, idx)
        return b.gep(base if base is not None else self.error_base, idx, source_etype=self.error_type)

    def site_slot(self, b: ir.IRBuilder, site: int, word: int, base: ir.Value | None = None) -> ir.Value:
        """Pointer to word ``word`` (``checks.BAD``, ``UMAX``, ``MIN``, ``MAX``) of a site."""
        return self.error_slot(b, 1 + WORDS_PER_SITE * site + word, base)

    # --- declarations ----------------------------------------------------------------------
    def declare(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self._decls.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name=name)
            self._decls[name] = fn
        return fn

    def intrinsic(self, name: str, types: list[ir.Type]) -> ir.Function:
        """``llvm.<name>.<type>`` taking one argument (two for maximum, minimum, maxnum, pow)."""
        t = types[0]
        key = f"{name}.{t}"
        fn = self._decls.get(key)
        if fn is None:
            two = ("maximum", "minimum", "maxnum", "minnum", "pow", "copysign",
                   "smin", "smax", "umin", "umax")
            nargs = 3 if name == "llvm.fma" else 2 if name.split(".")[-1] in two else 1
            fn = self.module.declare_intrinsic(name, types, fnty=ir.FunctionType(t, [t] * nargs))
            self._decls[key] = fn
        return fn

    def const_global(self, st) -> ir.GlobalVariable:
        g = self.const_globals.get(st.sid)
        if g is None:
            data = np.ascontiguousarray(st.value, dtype=st.dtype).tobytes() or b"\0"
            ty = ir.ArrayType(I8, len(data))
            g = ir.GlobalVariable(self.module, ty, f"sg_const_{st.sid}")
            g.initializer = ir.Constant(ty, bytearray(data))
            g.global_constant = True
            g.linkage = "internal"
            g.align = 64
            self.const_globals[st.sid] = g
        return g

    # --- the module ------------------------------------------------------------------------
    def build(self) -> ir.Module:
        for k in self.prog.kernels:
            params = k.storages(self.prog.storages)
            fn = self._kernel_function(k, params)
            self.kernel_fns.append((k, fn, params))
        self._entry()
        return self.module

    def kernel_pointers(self, k: Kernel, params) -> int:
        """Pointer arguments of kernel ``k``: its storages, plus the error block (error_arg),
        plus the dims table (shape-generic programs)."""
        return (len(params) + (1 if self.error_arg and checked_sites(k.body) else 0)
                + (1 if self.prog.generic else 0))

    def _kernel_function(self, k: Kernel, params) -> ir.Function:
        fnty = ir.FunctionType(VOID, [PTR] * self.kernel_pointers(k, params) + [I64, I64])
        fn = ir.Function(self.module, fnty, name=k.name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        for a, st in zip(fn.args, params):
            a.name = f"s{st.sid}"
            a.add_attribute("noalias")
        fn.args[-2].name, fn.args[-1].name = "lo", "hi"
        em = KernelEmitter(self, k, fn, {st.sid: a for st, a in zip(params, fn.args)})
        extra = len(params)
        if self.error_arg and checked_sites(k.body):
            em.error_base = fn.args[extra]
            em.error_base.name = "errors"
            extra += 1
        if self.prog.generic:
            fn.args[extra].name = "dims"
            em.load_dims(fn.args[extra])
        em.run()
        return fn

    def _omp_trampoline(self, k: Kernel, fn: ir.Function, nparams: int) -> ir.Function:
        """The function GOMP_parallel runs on each thread: its share of the parallel loop.
        ``ctx`` holds the kernel's pointer arguments, then the loop extent (as a pointer-sized
        integer) when it is a run-time size."""
        tr = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name=k.name + ".omp")
        tr.linkage = "internal"
        b = ir.IRBuilder(tr.append_basic_block("entry"))
        tid = b.sext(b.call(self.declare("omp_get_thread_num", I32, []), []), I64)
        nt = b.sext(b.call(self.declare("omp_get_num_threads", I32, []), []), I64)
        if isinstance(k.body[0].extent, SymInt):
            extent = b.ptrtoint(b.load(b.gep(tr.args[0], [ir.Constant(I64, nparams)], source_etype=PTR),
                                       typ=PTR), I64)
        else:
            extent = ir.Constant(I64, k.body[0].extent)
        chunk = b.sdiv(b.add(extent, b.sub(nt, ir.Constant(I64, 1))), nt)
        lo = b.mul(tid, chunk)
        hi = b.add(lo, chunk)
        hi = b.select(b.icmp_signed("<", hi, extent), hi, extent)
        with b.if_then(b.icmp_signed("<", lo, hi)):
            ptrs = [b.load(b.gep(tr.args[0], [ir.Constant(I64, i)], source_etype=PTR), typ=PTR)
                    for i in range(nparams)]
            b.call(fn, ptrs + [lo, hi])
        b.ret_void()
        return tr

    def _entry(self) -> None:
        prog = self.prog
        fn = ir.Function(self.module, ir.FunctionType(I32, [PTR]), name=self.entry_name)
        fn.args[0].name = "args"
        entry = fn.append_basic_block("entry")
        b = ir.IRBuilder(entry)
        ni, no = len(prog.inputs), len(prog.outputs)
        if self.object_args:  # refuse (return 1) unless every input array is C-contiguous
            ok = ir.Constant(I32, 1)
            for st in prog.inputs:
                obj = b.load(b.gep(fn.args[0], [ir.Constant(I64, st.slot)], source_etype=PTR), typ=PTR)
                flags = b.load(b.gep(obj, [ir.Constant(I64, OBJECT_FLAGS_OFFSET)], source_etype=I8), typ=I32)
                ok = b.and_(ok, flags)
            bad = b.icmp_unsigned("==", b.and_(ok, ir.Constant(I32, 1)), ir.Constant(I32, 0))
            with b.if_then(bad, likely=False):
                b.ret(ir.Constant(I32, STATUS_NONCONTIGUOUS))
        if self.error_arg:  # the caller's error block follows the arena in ``args``
            self.error_base = b.load(b.gep(fn.args[0], [ir.Constant(I64, ni + no + 1)], source_etype=PTR),
                                     typ=PTR)
        if self.has_checks:
            for i, w in enumerate(initial_words(prog.checks).tolist()):
                b.store(ir.Constant(I64, w), self.error_slot(b, i))

        def arg(i):
            return b.load(b.gep(fn.args[0], [ir.Constant(I64, i)], source_etype=PTR), typ=PTR)

        def array_arg(i):
            p = arg(i)
            if not self.object_args:
                return p
            return b.load(b.gep(p, [ir.Constant(I64, OBJECT_DATA_OFFSET)], source_etype=I8), typ=PTR)

        ptr: dict[int, ir.Value] = {}
        for st in prog.inputs:
            ptr[st.sid] = array_arg(st.slot)
        for st in prog.outputs:
            ptr[st.sid] = array_arg(ni + st.slot)
        arena = arg(ni + no)
        # shape-generic programs: the run-time sizes head the arena (the caller writes them)
        dims = [b.load(b.gep(arena, [ir.Constant(I64, i)], source_etype=I64), typ=I64, name=f"d{i}")
                for i in range(len(prog.dims))]
        for st in prog.storages:
            if st.kind == "temp":
                off = size_value(b, prog.arena_offsets.get(st.sid, 0), dims)
                ptr[st.sid] = b.gep(arena, [off], source_etype=I8)
            elif st.kind == "const":
                ptr[st.sid] = self.const_global(st)
        nthreads = b.load(self.nthreads, typ=I32)
        counters = None
        if self.profile:
            cty = ir.ArrayType(I64, 2 * max(len(self.kernel_fns), 1))
            counters = ir.GlobalVariable(self.module, cty, "sg_profile")
            counters.initializer = ir.Constant(cty, None)
            clock = self.declare("llvm.readcyclecounter", I64, [])
        for kidx, (k, kfn, params) in enumerate(self.kernel_fns):
            if counters is not None:
                t0 = b.call(clock, [])
            args = [ptr[st.sid] for st in params]
            if self.error_arg and checked_sites(k.body):
                args.append(self.error_base)
            if prog.generic:
                args.append(arena)
            extent = k.body[0].extent if k.parallel else 0
            extent_value = size_value(b, extent, dims)
            full = args + [ir.Constant(I64, 0), extent_value]
            parallel = self._parallel_condition(b, k, extent, extent_value, nthreads, dims)
            if parallel is not None:
                tr = self._omp_trampoline(k, kfn, len(args))
                with b.goto_entry_block():
                    ctx = b.alloca(PTR, size=ir.Constant(I64, len(args) + 1), name=f"ctx.{k.name}")
                with b.if_else(parallel) as (par, ser):
                    with par:
                        for i, a in enumerate(args):
                            b.store(a, b.gep(ctx, [ir.Constant(I64, i)], source_etype=PTR))
                        if isinstance(extent, SymInt):  # the trampoline reads it after the pointers
                            b.store(b.inttoptr(extent_value, PTR),
                                    b.gep(ctx, [ir.Constant(I64, len(args))], source_etype=PTR))
                        gp = self.declare("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
                        b.call(gp, [tr, ctx, nthreads, ir.Constant(I32, 0)])
                    with ser:
                        b.call(kfn, full)
            else:
                b.call(kfn, full)
            if counters is not None:
                dt = b.sub(b.call(clock, []), t0)
                for slot, inc in ((2 * kidx, dt), (2 * kidx + 1, ir.Constant(I64, 1))):
                    cp = b.gep(counters, [ir.Constant(I32, 0), ir.Constant(I32, slot)])
                    b.store(b.add(b.load(cp, typ=I64), inc), cp)
            if self.has_checks and checked_sites(k.body):
                failed = b.icmp_unsigned("!=", b.load(self.error_slot(b, 0), typ=I64), ir.Constant(I64, 0))
                with b.if_then(failed, likely=False):
                    b.ret(ir.Constant(I32, STATUS_INDEX_ERROR))
        b.ret(ir.Constant(I32, STATUS_OK))

    def _parallel_condition(self, b, k: Kernel, extent, extent_value, nthreads, dims):
        """The i1 value saying whether kernel ``k`` runs on the thread team, or None when it
        never does.  Decided here for static sizes, at run time for symbolic ones."""
        if not (k.parallel and self.gomp):
            return None
        work = k.work
        if not isinstance(work, SymInt) and work < PARALLEL_MIN_WORK:
            return None
        if not isinstance(extent, SymInt) and extent <= 1:
            return None
        cond = b.icmp_signed(">", nthreads, ir.Constant(I32, 1))
        if isinstance(work, SymInt):
            cond = b.and_(cond, b.icmp_signed(">=", size_value(b, work, dims),
                                              ir.Constant(I64, PARALLEL_MIN_WORK)))
        if isinstance(extent, SymInt):
            cond = b.and_(cond, b.icmp_signed(">", extent_value, ir.Constant(I64, 1)))
        return cond

    # --- text with comments ----------------------------------------------------------------
    def annotated_text(self) -> tuple[str, dict[str, str]]:
        """The module text with a comment above each kernel, and each kernel's own text."""
        return annotate(str(self.module), [k for k, _fn, _params in self.kernel_fns])


def annotate(text: str, kernels) -> tuple[str, dict[str, str]]:
    """``text`` (a rendered module) with a comment above each of ``kernels`` naming its graph
    nodes and showing its kernel IR, and each kernel's own commented text."""
    sources = {}
    pieces, last = [], 0
    found = []
    for k in kernels:
        head = f'define internal void @"{k.name}"('
        pos = text.find(head)
        if pos >= 0:
            found.append((pos, k))
    for pos, k in sorted(found, key=lambda item: item[0]):
        comment = f"; kernel {k.name}: from nodes {'; '.join(k.ops)}\n"
        comment += "".join(f";   {line}\n" for line in kernel_text(k).splitlines()[1:])
        end = text.find("\n}\n", pos) + 3
        sources[k.name] = comment + text[pos:end]
        pieces += [text[last:pos], comment]
        last = pos
    pieces.append(text[last:])
    return "".join(pieces), sources


class KernelEmitter:
    """Emits one kernel's statements into its LLVM function."""

    def __init__(self, mb: ModuleBuilder, k: Kernel, fn: ir.Function, params: dict):
        self.mb, self.k, self.fn, self.params = mb, k, fn, params
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(self.entry)
        self.vars: dict[str, ir.Value] = {}
        self.scopes: list[dict[int, ir.Value]] = [{}]
        self.locals: dict[str, tuple[ir.Value, str]] = {}
        self._pure_memo: dict[int, bool] = {}
        self.streaming = False  # stores are non-temporal (see _streaming_loop)
        self.error_base: ir.Value | None = None  # this kernel's error block argument (error_arg)
        self.dims: list[ir.Value] = []  # the run-time sizes (shape-generic programs)
        for st in walk(k.body):
            if isinstance(st, Assign) and st.local not in self.locals:
                self.locals[st.local] = (self.b.alloca(reg_type(st.value.dtype), name=st.local),
                                         st.value.dtype)
        # per check site: the largest index - lo seen (unsigned); label sites: min and max
        self.seen: dict[int, dict[int, ir.Value]] = {}
        for site in checked_sites(k.body):
            info = mb.prog.checks[site]
            words = {UMAX: 0}
            if info.extremes:
                words.update({MIN: INT64_MAX, MAX: INT64_MIN})
            self.seen[site] = {}
            for word, init in words.items():
                slot = self.b.alloca(I64, name=f"check{site}.{word}")
                self.b.store(ir.Constant(I64, init), slot)
                self.seen[site][word] = slot

    def load_dims(self, table: ir.Value) -> None:
        """Read the run-time sizes once, at the top of the kernel (loop-invariant values)."""
        self.dims = [self.b.load(self.b.gep(table, [ir.Constant(I64, i)], source_etype=I64), typ=I64,
                                 name=f"d{i}") for i in range(len(self.mb.prog.dims))]

    def size(self, x) -> ir.Value:
        """An i64 value for a size (a constant, or computed from the run-time sizes)."""
        return size_value(self.b, x, self.dims)

    def run(self) -> None:
        body = self.k.body
        if self.k.parallel:
            top = body[0]
            stream = self._streaming_store()
            if stream is not None:
                self._streaming_loop(top, stream)
            else:
                self.loop(top.var, self.fn.args[-2], self.fn.args[-1], top.body, dynamic=True)
        else:
            self.block(body)
        self.publish_checks()
        self.b.ret_void()

    def _streaming_store(self) -> Store | None:
        """The store of a big contiguous elementwise kernel (``out[i] = f(...)`` over a whole
        float storage of at least ``STREAM_MIN_BYTES``), or None."""
        top = self.k.body[0]
        if not self.mb.streaming or len(self.k.body) != 1 or not isinstance(top, For) or len(top.body) != 1:
            return None
        st = top.body[0]
        if (not isinstance(st, Store) or st.accumulate or st.index.op != "var"
                or st.index.value != top.var or st.storage.dtype not in ("float32", "float64")
                or st.storage.kind not in ("output", "temp")
                or not known_equal(top.extent, st.storage.size)
                or hint(st.storage.nbytes) < STREAM_MIN_BYTES):
            return None
        return st

    def _streaming_loop(self, top: For, st: Store) -> None:
        """Iterations ``[lo, hi)`` as a plain loop up to the first ``STREAM_ALIGN``-aligned
        output element, then a loop with non-temporal stores that the vectoriser turns into
        aligned streaming vector stores, then a fence so later kernels and threads see them.

        The streaming loop's scalar store claims ``STREAM_ALIGN`` alignment: true for every
        vector store the vectoriser makes of it (each starts at the aligned element plus a
        multiple of the vector width), and harmless for the scalar remainder iterations
        (scalar stores have no alignment requirement on x86).  Without the claim LLVM would
        not vectorise a non-temporal store at all."""
        b = self.b
        lo, hi = self.fn.args[-2], self.fn.args[-1]
        item = st.storage.itemsize
        base = b.ptrtoint(self.address(st.storage, lo), I64)
        skip = b.udiv(b.and_(b.sub(ir.Constant(I64, 0), base), ir.Constant(I64, STREAM_ALIGN - 1)),
                      ir.Constant(I64, item))
        mid = b.add(lo, skip)
        mid = b.select(b.icmp_signed("<", mid, hi), mid, hi, name="aligned")
        self.loop(top.var, lo, mid, top.body, dynamic=True)
        self.streaming = True
        self.loop(top.var, mid, hi, top.body, dynamic=True)
        self.streaming = False
        # non-temporal stores are weakly ordered: an sfence makes them visible before the
        # kernel returns (to the next kernel, and to the other threads past GOMP's barrier)
        b.call(self.mb.declare("llvm.x86.sse.sfence", VOID, []), [])

    def publish_checks(self) -> None:
        """Merge this chunk's locals into ``@sg_error``; flag the sites whose values left
        their range."""
        b = self.b
        for site, slots in self.seen.items():
            info = self.mb.prog.checks[site]
            vals = {word: b.load(slot, typ=I64) for word, slot in slots.items()}
            for word, op in ((UMAX, "umax"), (MIN, "min"), (MAX, "max")):
                if word in vals:
                    b.atomic_rmw(op, self.mb.site_slot(b, site, word, self.error_base), vals[word],
                                 "monotonic")
            if isinstance(info.hi, SymInt):  # a run-time bound (extremes are kept)
                span = b.sub(self.size(info.hi), ir.Constant(I64, info.lo))
                bad = b.select(b.icmp_signed(">", span, ir.Constant(I64, 0)),
                               b.icmp_unsigned(">=", vals[UMAX], span),
                               b.icmp_signed("<=", vals[MIN], vals[MAX]))
            elif info.hi > info.lo:
                bad = b.icmp_unsigned(">=", vals[UMAX], ir.Constant(I64, info.hi - info.lo))
            else:  # an empty range: any value seen is bad
                bad = b.icmp_signed("<=", vals[MIN], vals[MAX])
            with b.if_then(bad, likely=False):
                b.atomic_rmw("or", self.mb.site_slot(b, site, BAD, self.error_base), ir.Constant(I64, 1),
                             "monotonic")
                b.atomic_rmw("or", self.mb.error_slot(b, 0, self.error_base), ir.Constant(I64, 1),
                             "monotonic")

    # --- statements ------------------------------------------------------------------------
    def block(self, body: list) -> None:
        for st in body:
            self.stmt(st)

    def loop(self, name, start, stop, body, dynamic=False) -> None:
        b = self.b
        pre = b.block
        header = self.fn.append_basic_block(f"{name}.loop")
        exit_ = self.fn.append_basic_block(f"{name}.exit")
        if dynamic:
            b.cbranch(b.icmp_signed("<", start, stop), header, exit_)
        else:
            b.branch(header)
        b.position_at_end(header)
        phi = b.phi(I64, name=name)
        phi.add_incoming(start, pre)
        saved = self.vars.get(name)
        self.vars[name] = phi
        self.scopes.append({})
        self.block(body)
        self.scopes.pop()
        nxt = b.add(phi, ir.Constant(I64, 1), name=f"{name}.next")
        nxt.flags.extend(["nuw", "nsw"])
        phi.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, stop), header, exit_)
        b.position_at_end(exit_)
        if saved is not None:
            self.vars[name] = saved

    def stmt(self, st) -> None:
        b = self.b
        if isinstance(st, For):
            if isinstance(st.extent, SymInt):
                self.loop(st.var, ir.Constant(I64, 0), self.size(st.extent), st.body, dynamic=True)
            elif st.extent > 0:
                self.loop(st.var, ir.Constant(I64, 0), ir.Constant(I64, st.extent), st.body)
        elif isinstance(st, Assign):
            slot, dtype = self.locals[st.local]
            val = self.expr(st.value, {}, reduction_root=st.value if st.reduction else None)
            b.store(self.cast(val, st.value.dtype, dtype), slot)
        elif isinstance(st, Store):
            memo: dict[int, ir.Value] = {}
            dtype = st.storage.dtype
            ptr = self.address(st.storage, self.expr(st.index, memo))
            val = self.cast(self.expr(st.value, memo), st.value.dtype, dtype)
            if st.accumulate == "add":
                old = self.load_mem(ptr, dtype)
                val = self.prim("add", [old, val], [dtype, dtype], dtype)
            self.store_mem(val, ptr, dtype)
        elif isinstance(st, If):
            cond = self.to_bool(self.expr(st.cond, {}), st.cond.dtype)
            with b.if_then(cond):
                self.scopes.append({})
                self.block(st.body)
                self.scopes.pop()
        elif isinstance(st, Gemm):
            self.gemm(st)
        elif isinstance(st, Collective):
            self.collective(st)
        else:  # pragma: no cover
            raise TypeError(f"unknown statement {st!r}")

    def gemm(self, g: Gemm) -> None:
        if not self.mb.blas:
            self.gemm_loops(g)
            return
        b = self.b
        ft = reg_type(g.dtype)
        name = "scipy_cblas_sgemm64_" if g.dtype == "float32" else "scipy_cblas_dgemm64_"
        fn = self.mb.declare(name, VOID, [I32, I32, I32, I64, I64, I64, ft, PTR, I64, PTR, I64, ft, PTR, I64])
        memo: dict[int, ir.Value] = {}
        a = self.address(g.a, self.expr(g.a_off, memo))
        bb = self.address(g.b, self.expr(g.b_off, memo))
        c = self.address(g.c, self.expr(g.c_off, memo))

        def i32(v):
            return ir.Constant(I32, v)

        def ld(v):  # BLAS wants a leading dimension >= 1 even for empty matrices
            if not isinstance(v, SymInt):
                return ir.Constant(I64, max(v, 1))
            x = self.size(v)
            return b.select(b.icmp_signed(">", x, ir.Constant(I64, 1)), x, ir.Constant(I64, 1))

        b.call(fn, [i32(101), i32(112 if g.trans_a else 111), i32(112 if g.trans_b else 111),
                    self.size(g.m), self.size(g.n), self.size(g.k), ir.Constant(ft, g.alpha), a, ld(g.lda),
                    bb, ld(g.ldb), ir.Constant(ft, g.beta), c, ld(g.ldc)])

    def collective(self, c: Collective) -> None:
        """``MPI_Iallreduce`` / ``MPI_Test`` / ``MPI_Wait`` (MPICH ABI: handles and requests are
        32-bit ints, ``MPI_STATUS_IGNORE`` is the address 1, ``MPI_IN_PLACE`` the address -1),
        resolved in the MPI library that ``sg.distributed.init`` loaded into the process's
        global scope."""
        b = self.b
        req = self.address(c.requests, ir.Constant(I64, c.slot))
        status_ignore = ir.Constant(I64, 1).inttoptr(PTR)
        if c.kind == "start":
            fn = self.mb.declare("MPI_Iallreduce", I32, [PTR, PTR, I32, I32, I32, I32, PTR])
            send = (ir.Constant(I64, -1).inttoptr(PTR) if c.send.sid == c.recv.sid
                    else self.params[c.send.sid])
            b.call(fn, [send, self.params[c.recv.sid], ir.Constant(I32, c.count),
                        ir.Constant(I32, c.datatype), ir.Constant(I32, c.op), ir.Constant(I32, c.comm), req])
        elif c.kind == "test":
            fn = self.mb.declare("MPI_Test", I32, [PTR, PTR, PTR])
            flag = self.address(c.requests, ir.Constant(I64, c.slot + 1))
            b.call(fn, [req, flag, status_ignore])
        else:
            fn = self.mb.declare("MPI_Wait", I32, [PTR, PTR])
            b.call(fn, [req, status_ignore])

    def _count(self, name: str, start, stop, step: int, body) -> None:
        """``for (v = start; v < stop; v += step) body(v)`` (``start``/``stop``: i64 values)."""
        b = self.b
        pre = b.block
        header = self.fn.append_basic_block(f"{name}.loop")
        exit_ = self.fn.append_basic_block(f"{name}.exit")
        b.cbranch(b.icmp_signed("<", start, stop), header, exit_)
        b.position_at_end(header)
        phi = b.phi(I64, name=name)
        phi.add_incoming(start, pre)
        body(phi)
        nxt = b.add(phi, ir.Constant(I64, step), name=f"{name}.next")
        phi.add_incoming(nxt, b.block)
        b.cbranch(b.icmp_signed("<", nxt, stop), header, exit_)
        b.position_at_end(exit_)

    def gemm_loops(self, g: Gemm) -> None:
        """``Gemm`` as generated loops (export: no BLAS library at run time).

        C is scaled by beta first; then, per block of ``GEMM_NB`` columns and ``GEMM_KB``
        depth (a block of B stays in L2), four rows of C at a time are updated with
        ``C[i+r, j] += alpha*A[i+r, p] * B[p, j]``: the innermost loop runs along a row of C
        and is vectorised, each loaded element of B serves four rows."""
        b = self.b
        ft = reg_type(g.dtype)
        memo: dict[int, ir.Value] = {}
        a_off, b_off, c_off = (self.expr(e, memo) for e in (g.a_off, g.b_off, g.c_off))

        def c64(v):
            return ir.Constant(I64, v)

        size = self.size  # sizes (m, n, k, leading dims) may be run-time values

        def elem(storage, off, row, col, ld, trans):
            idx = b.add(b.mul(col, size(ld)), row) if trans else b.add(b.mul(row, size(ld)), col)
            return self.address(storage, b.add(off, idx))

        def c_at(i, j):
            return elem(g.c, c_off, i, j, g.ldc, False)

        def fma(x, y, acc):
            prod = b.fmul(x, y, flags=["contract"])
            return b.fadd(acc, prod, flags=["contract"])

        def scale_c(i):
            def row(j):
                ptr = c_at(i, j)
                val = ir.Constant(ft, 0.0) if g.beta == 0 else b.fmul(b.load(ptr, typ=ft),
                                                                      ir.Constant(ft, g.beta))
                b.store(val, ptr)
            self._count("gemm.j0", c64(0), size(g.n), 1, row)

        self._count("gemm.i0", c64(0), size(g.m), 1, scale_c)
        if (not isinstance(g.k, SymInt) and g.k == 0) or g.alpha == 0:
            return  # (a run-time k of 0 runs no depth loop)
        m4 = b.sub(size(g.m), b.srem(size(g.m), c64(4)))

        def rows(i, nrows, j0, j1, p0, p1):
            def depth(p):
                coef = [b.fmul(b.load(elem(g.a, a_off, b.add(i, c64(r)), p, g.lda, g.trans_a), typ=ft),
                               ir.Constant(ft, g.alpha)) for r in range(nrows)]

                def col(j):
                    bv = b.load(elem(g.b, b_off, p, j, g.ldb, g.trans_b), typ=ft)
                    for r in range(nrows):
                        ptr = c_at(b.add(i, c64(r)), j)
                        b.store(fma(coef[r], bv, b.load(ptr, typ=ft)), ptr)
                self._count("gemm.j", j0, j1, 1, col)
            self._count("gemm.p", p0, p1, 1, depth)

        vec = ir.VectorType(ft, GEMM_VECTOR_BYTES // np.dtype(g.dtype).itemsize)
        tile = 2 * vec.count
        with b.goto_entry_block():
            acc = [[b.alloca(vec, name=f"acc{r}.{v}") for v in range(2)] for r in range(4)]

        def col_block(j0):
            j1 = b.select(b.icmp_signed("<", b.add(j0, c64(GEMM_NB)), size(g.n)), b.add(j0, c64(GEMM_NB)),
                          size(g.n))

            def depth_block(p0):
                p1 = b.select(b.icmp_signed("<", b.add(p0, c64(GEMM_KB)), size(g.k)),
                              b.add(p0, c64(GEMM_KB)), size(g.k))
                if g.trans_b:  # B's rows are strided: the scalar 4-row loops
                    self._count("gemm.i4", c64(0), m4, 4, lambda i: rows(i, 4, j0, j1, p0, p1))
                else:  # 4 x TILE register tiles, then the columns left over
                    jt = b.add(j0, b.mul(b.sdiv(b.sub(j1, j0), c64(tile)), c64(tile)))

                    def four_rows(i):
                        self._count("gemm.jt", j0, jt, tile, lambda j: self._gemm_tile(g, i, j, p0, p1, acc))
                        rows(i, 4, jt, j1, p0, p1)
                    self._count("gemm.i4", c64(0), m4, 4, four_rows)
                self._count("gemm.i1", m4, size(g.m), 1, lambda i: rows(i, 1, j0, j1, p0, p1))
            self._count("gemm.pb", c64(0), size(g.k), GEMM_KB, depth_block)
        self._count("gemm.jb", c64(0), size(g.n), GEMM_NB, col_block)

    def _gemm_tile(self, g: Gemm, i, j, p0, p1, acc) -> None:
        """``C[i:i+4, j:j+TILE] += alpha * A[i:i+4, p0:p1] @ B[p0:p1, j:j+TILE]`` with the
        4 x 2 vector accumulators ``acc`` held in registers over the depth loop (B row-major)."""
        b = self.b
        vec = acc[0][0].allocated_type
        ft, width = vec.element, vec.count
        memo: dict[int, ir.Value] = {}
        a_off, b_off, c_off = (self.expr(e, memo) for e in (g.a_off, g.b_off, g.c_off))
        align = np.dtype(g.dtype).itemsize

        def c64(v):
            return ir.Constant(I64, v)

        def c_ptr(r, v):
            row = b.mul(b.add(i, c64(r)), self.size(g.ldc))
            return self.address(g.c, b.add(c_off, b.add(row, b.add(j, c64(v * width)))))

        for r in range(4):
            for v in range(2):
                b.store(b.load(c_ptr(r, v), typ=vec, align=align), acc[r][v])
        zeros = ir.Constant(ir.VectorType(I32, width), [0] * width)

        def depth(p):
            brow = b.mul(p, self.size(g.ldb))
            bv = [b.load(self.address(g.b, b.add(b_off, b.add(brow, b.add(j, c64(v * width))))),
                         typ=vec, align=align) for v in range(2)]
            for r in range(4):
                row = b.add(i, c64(r))
                lda = self.size(g.lda)
                idx = b.add(b.mul(p, lda), row) if g.trans_a else b.add(b.mul(row, lda), p)
                a = b.fmul(b.load(self.address(g.a, b.add(a_off, idx)), typ=ft), ir.Constant(ft, g.alpha))
                undef = ir.Constant(vec, ir.Undefined)
                av = b.shuffle_vector(b.insert_element(undef, a, ir.Constant(I32, 0)), undef, zeros)
                for v in range(2):
                    prod = b.fmul(av, bv[v], flags=["contract"])
                    b.store(b.fadd(b.load(acc[r][v], typ=vec), prod, flags=["contract"]), acc[r][v])
        self._count("gemm.pt", p0, p1, 1, depth)
        for r in range(4):
            for v in range(2):
                b.store(b.load(acc[r][v], typ=vec), c_ptr(r, v), align=align)

    # --- memory ----------------------------------------------------------------------------
    def address(self, storage, index: ir.Value) -> ir.Value:
        return self.b.gep(self.params[storage.sid], [index], inbounds=True,
                          source_etype=mem_type(storage.dtype))

    def load_mem(self, ptr, dtype):
        v = self.b.load(ptr, typ=mem_type(dtype), align=np.dtype(dtype).itemsize)
        if dtype == "bool":
            v = self.b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
        return v

    def store_mem(self, val, ptr, dtype):
        if dtype == "bool":
            val = self.b.zext(val, I8)
        if self.streaming:
            inst = self.b.store(val, ptr, align=STREAM_ALIGN)
            inst.set_metadata("nontemporal", self.mb.module.add_metadata([ir.Constant(I32, 1)]))
            return
        self.b.store(val, ptr, align=np.dtype(dtype).itemsize)

    # --- expressions -----------------------------------------------------------------------
    def expr(self, e: S.SExpr, memo: dict, reduction_root=None) -> ir.Value:
        """Render ``e``; pure subexpressions (no load / local) are shared per loop scope."""
        for node in S.topo([e]):
            key = id(node)
            if key in memo:
                continue
            pure = self._pure(node)
            if pure:
                hit = None
                for scope in reversed(self.scopes):
                    if key in scope:
                        hit = scope[key]
                        break
                if hit is not None:
                    memo[key] = hit
                    continue
            val = self.node(node, memo, fast=node is reduction_root)
            memo[key] = val
            if pure:
                self.scopes[-1][key] = val
        return memo[id(e)]

    def _pure(self, node) -> bool:
        """No load or local below ``node`` (its value only depends on loop variables)."""
        hit = self._pure_memo.get(id(node))
        if hit is None:
            hit = node.op not in ("load", "local", "checked") and all(self._pure(a) for a in node.args)
            self._pure_memo[id(node)] = hit
        return hit

    def node(self, n: S.SExpr, memo: dict, fast: bool = False) -> ir.Value:
        op = n.op
        if op == "const":
            return _signed_const(n.dtype, n.value)
        if op == "var":
            return self.vars[n.value]
        if op == "dim":
            return self.dims[n.value]
        if op == "local":
            slot, dtype = self.locals[n.value]
            return self.cast(self.b.load(slot, typ=reg_type(dtype)), dtype, n.dtype)
        if op == "load":
            st = self.mb.prog.storages[n.value]
            return self.load_mem(self.address(st, memo[id(n.args[0])]), st.dtype)
        if op == "cast":
            a = n.args[0]
            return self.cast(memo[id(a)], a.dtype, n.dtype)
        if op == "checked":
            return self.checked(memo[id(n.args[0])], *n.value)
        args = [memo[id(a)] for a in n.args]
        dts = [a.dtype for a in n.args]
        if op in ("xor", "shr", "shl"):
            x, y = args
            return {"xor": self.b.xor, "shr": self.b.lshr, "shl": self.b.shl}[op](x, y)
        return self.prim(op, args, dts, n.dtype, fast)

    def checked(self, v: ir.Value, site: int, lo: int, hi: int, extremes: bool) -> ir.Value:
        """Record ``v`` in the site's locals; return it clamped into ``[lo, hi - 1]``."""
        b = self.b
        slots = self.seen[site]

        def update(word, op, x):
            b.store(b.call(self.mb.intrinsic(f"llvm.{op}", [I64]), [b.load(slots[word], typ=I64), x]),
                    slots[word])

        d = b.sub(v, ir.Constant(I64, lo)) if lo else v
        update(UMAX, "umax", d)
        if extremes:
            update(MIN, "smin", v)
            update(MAX, "smax", v)
        if isinstance(hi, SymInt):  # a run-time bound: an empty range clamps to lo
            span = b.sub(self.size(hi), ir.Constant(I64, lo))
            last = b.sub(span, ir.Constant(I64, 1))
            safe = b.call(self.mb.intrinsic("llvm.umin", [I64]), [d, last])
            safe = b.select(b.icmp_signed(">", span, ir.Constant(I64, 0)), safe, ir.Constant(I64, 0))
            return b.add(safe, ir.Constant(I64, lo)) if lo else safe
        if hi <= lo:
            return ir.Constant(I64, lo)
        safe = b.call(self.mb.intrinsic("llvm.umin", [I64]), [d, ir.Constant(I64, hi - lo - 1)])
        return b.add(safe, ir.Constant(I64, lo)) if lo else safe

    # --- conversions -----------------------------------------------------------------------
    def to_bool(self, v, dtype):
        return self.cast(v, dtype, "bool")

    def cast(self, v, src: str, dst: str):
        if src == dst:
            return v
        b = self.b
        if dst == "bool":
            if is_float(src):
                return b.fcmp_unordered("!=", v, ir.Constant(reg_type(src), 0.0))
            return b.icmp_unsigned("!=", v, ir.Constant(reg_type(src), 0))
        st, dt = reg_type(src), reg_type(dst)
        if src == "bool":
            return b.uitofp(v, dt) if is_float(dst) else b.zext(v, dt)
        if is_float(src) and is_float(dst):
            return b.fpext(v, dt) if dt.intrinsic_name == "f64" else b.fptrunc(v, dt)
        if is_float(dst):
            return b.uitofp(v, dt) if src in _UNSIGNED else b.sitofp(v, dt)
        if is_float(src):
            return b.fptoui(v, dt) if dst in _UNSIGNED else b.fptosi(v, dt)
        if st.width == dt.width:
            return v
        if st.width > dt.width:
            return b.trunc(v, dt)
        return b.zext(v, dt) if src in _UNSIGNED else b.sext(v, dt)

    # --- primitives ------------------------------------------------------------------------
    def _flags(self, inst, fast=False):
        if fast:  # a reduction update
            inst.flags.extend(["contract", "reassoc", "nsz"])
        elif self.mb.fast_math:
            inst.flags.append("contract")
        return inst

    def prim(self, op: str, args, dts, out: str, fast: bool = False):
        b = self.b
        if op in ("and", "or", "not"):
            bs = [self.to_bool(a, d) for a, d in zip(args, dts)]
            if op == "not":
                return b.not_(bs[0])
            return b.and_(*bs) if op == "and" else b.or_(*bs)
        if op == "where":
            c = self.to_bool(args[0], dts[0])
            return b.select(c, self.cast(args[1], dts[1], out), self.cast(args[2], dts[2], out))
        if op in ("lt", "le", "gt", "ge", "eq", "ne"):
            ct = S.result_dtype("add", tuple(dts)) if dts[0] != dts[1] else dts[0]
            if ct == "bool" and dts[0] != dts[1]:
                ct = "int8"
            x, y = (self.cast(a, d, ct) for a, d in zip(args, dts))
            sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[op]
            if is_float(ct):
                return b.fcmp_unordered(sym, x, y) if op == "ne" else b.fcmp_ordered(sym, x, y)
            if ct in _UNSIGNED:
                return b.icmp_unsigned(sym, x, y)
            return b.icmp_signed(sym, x, y)
        # arithmetic: compute in the result dtype
        xs = [self.cast(a, d, out) for a, d in zip(args, dts)]
        if out == "bool":
            return self._bool_arith(op, xs)
        if is_float(out):
            return self._float_prim(op, xs, out, fast)
        return self._int_prim(op, xs, out)

    def _bool_arith(self, op, xs):
        b = self.b
        if op in ("add", "maximum", "or"):
            return b.or_(*xs)
        if op in ("mul", "minimum", "and"):
            return b.and_(*xs)
        if op in ("abs", "floor", "ceil"):  # NumPy: floor(bool) is the bool itself
            return xs[0]
        raise NotImplementedError(f"{op} on bool")

    def _float_prim(self, op, xs, dtype, fast):
        b = self.b
        t = reg_type(dtype)
        one, zero = ir.Constant(t, 1.0), ir.Constant(t, 0.0)
        if op in ("add", "sub", "mul", "truediv"):
            fn = {"add": b.fadd, "sub": b.fsub, "mul": b.fmul, "truediv": b.fdiv}[op]
            return self._flags(fn(*xs), fast and op in ("add", "mul"))
        if op == "neg":
            return b.fneg(xs[0])
        if op == "square":
            return self._flags(b.fmul(xs[0], xs[0]))
        if op in ("maximum", "minimum"):
            return b.call(self.mb.intrinsic(f"llvm.{op}", [t]), xs)
        if op == "abs":
            return b.call(self.mb.intrinsic("llvm.fabs", [t]), xs)
        if op in ("sqrt", "floor", "ceil"):
            return b.call(self.mb.intrinsic(f"llvm.{op}", [t]), xs)
        if op == "sign":
            x = xs[0]
            # NumPy: +0.0 for both zeros, NaN for NaN (x + 0.0 is +0.0 for -0.0, NaN for NaN)
            pos = b.select(b.fcmp_ordered(">", x, zero), one, b.fadd(x, zero))
            return b.select(b.fcmp_ordered("<", x, zero), ir.Constant(t, -1.0), pos)
        if op in ("floordiv", "mod"):
            div, mod = self._float_divmod(*xs, t)
            return div if op == "floordiv" else mod
        if op == "pow":
            return self.math("pow", xs, dtype)
        if op in MATH_FUNCS:
            return self.math(op, xs, dtype)
        raise NotImplementedError(f"float {op}")

    def _float_divmod(self, a, b_, t):
        """NumPy's ``npy_divmod``, branch-free: ``(a // b, a % b)`` with ``a == (a // b) * b +
        a % b`` as in NumPy (``fmod``-based, so ``1.0 // 0.1`` is 9, not ``floor(10.0)``).
        No fast-math flags: the rounding steps must happen as written."""
        b = self.b
        zero, one, half = (ir.Constant(t, v) for v in (0.0, 1.0, 0.5))
        copysign = self.mb.intrinsic("llvm.copysign", [t])
        floor = self.mb.intrinsic("llvm.floor", [t])
        quot = b.fdiv(a, b_)
        mod = raw = self._fmod(a, b_, quot, t)
        div = b.fdiv(b.fsub(a, mod), b_)
        # remainder with the divisor's sign (C's ``if (mod)`` is true for NaN: une)
        mod_nz = b.fcmp_unordered("!=", mod, zero)
        adjust = b.and_(mod_nz, b.xor(b.fcmp_ordered("<", b_, zero), b.fcmp_ordered("<", mod, zero)))
        mod = b.select(adjust, b.fadd(mod, b_), mod)
        div = b.select(adjust, b.fsub(div, one), div)
        mod = b.select(mod_nz, mod, b.call(copysign, [zero, b_]))
        # snap the quotient to the nearest integer; a zero quotient takes the sign of a / b
        fl = b.call(floor, [div])
        fl = b.select(b.fcmp_ordered(">", b.fsub(div, fl), half), b.fadd(fl, one), fl)
        div = b.select(b.fcmp_unordered("!=", div, zero), fl, b.call(copysign, [zero, quot]))
        # b == 0: a / b and fmod(a, 0) (inf or NaN)
        bz = b.fcmp_ordered("==", b_, zero)
        return b.select(bz, quot, div), b.select(bz, raw, mod)

    def _fmod(self, a, b_, quot, t):
        """C's ``fmod(a, b)``, exact.  ``frem`` is a libm call per element (75 ns here), so
        while ``|a / b| < 2**(p - 2)`` it is ``a - q * b`` with ``q`` the truncated quotient,
        one ``fma`` (exact: the result is representable).  ``trunc(a / b)`` rounded can be one
        too large in magnitude, never too small; then the first remainder has the wrong sign,
        and ``q`` moves one toward 0.  Other elements (huge quotients, infinite ``b``, NaN,
        ``b == 0``) take ``frem`` in a branch."""
        b = self.b
        zero, one = ir.Constant(t, 0.0), ir.Constant(t, 1.0)
        fabs = self.mb.intrinsic("llvm.fabs", [t])
        fma = self.mb.intrinsic("llvm.fma", [t])
        copysign = self.mb.intrinsic("llvm.copysign", [t])
        limit = ir.Constant(t, 2.0 ** (22 if t == F32 else 51))
        fast = b.and_(b.fcmp_ordered("<", b.call(fabs, [quot]), limit),
                      b.fcmp_ordered("<", b.call(fabs, [b_]), ir.Constant(t, float("inf"))))
        q = b.call(self.mb.intrinsic("llvm.trunc", [t]), [quot])
        r = b.call(fma, [b.fneg(q), b_, a])
        over = b.and_(b.fcmp_ordered("!=", r, zero),
                      b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", a, zero)))
        q = b.select(over, b.fsub(q, b.call(copysign, [one, q])), q)
        r = b.call(fma, [b.fneg(q), b_, a])
        r = b.select(b.fcmp_ordered("==", r, zero), b.call(copysign, [zero, a]), r)
        here = b.block
        with b.if_then(b.not_(fast)):
            # a libm call, not ``frem``: the vectoriser would speculate ``frem`` on every lane
            fmod = self.mb.declare("fmodf" if t == F32 else "fmod", t, [t, t])
            slow = b.call(fmod, [a, b_])
            slow_block = b.block
        out = b.phi(t)
        out.add_incoming(r, here)
        out.add_incoming(slow, slow_block)
        return out

    def math(self, name: str, xs, dtype):
        """exp, tanh, ... : ``kernels/llvm/math.ll`` when it has the function, else LLVM/libm."""
        b = self.b
        t = reg_type(dtype)
        fname = f"sg_{name}f" if dtype == "float32" else f"sg_{name}"
        if fname in self.mb.math_functions:
            return b.call(self.mb.declare(fname, t, [t] * len(xs)), xs)
        if name == "sigmoid":
            e = self.math("exp", [b.fneg(xs[0])], dtype)
            return b.fdiv(ir.Constant(t, 1.0), b.fadd(ir.Constant(t, 1.0), e))
        if name == "softplus":
            x = xs[0]
            ax = b.call(self.mb.intrinsic("llvm.fabs", [t]), [x])
            tail = self.math("log1p", [self.math("exp", [b.fneg(ax)], dtype)], dtype)
            return b.fadd(b.call(self.mb.intrinsic("llvm.maxnum", [t]), [x, ir.Constant(t, 0.0)]), tail)
        if name in _INTRINSIC:
            return b.call(self.mb.intrinsic(f"llvm.{name}", [t]), xs)
        lib = _LIBM[name][0 if dtype == "float32" else 1]
        return b.call(self.mb.declare(lib, t, [t]), xs)

    def _int_prim(self, op, xs, dtype):
        b = self.b
        t = reg_type(dtype)
        unsigned = dtype in _UNSIGNED
        zero, one = ir.Constant(t, 0), ir.Constant(t, 1)
        if op in ("add", "sub", "mul"):
            return {"add": b.add, "sub": b.sub, "mul": b.mul}[op](*xs)
        if op == "neg":
            return b.neg(xs[0])
        if op == "square":
            return b.mul(xs[0], xs[0])
        if op in ("maximum", "minimum"):
            x, y = xs
            cmp = b.icmp_unsigned if unsigned else b.icmp_signed
            return b.select(cmp(">" if op == "maximum" else "<", x, y), x, y)
        if op == "abs":
            return xs[0] if unsigned else b.select(b.icmp_signed("<", xs[0], zero), b.neg(xs[0]), xs[0])
        if op == "sign":
            x = xs[0]
            if unsigned:
                return b.zext(b.icmp_unsigned("!=", x, zero), t)
            pos = b.zext(b.icmp_signed(">", x, zero), t)
            return b.select(b.icmp_signed("<", x, zero), ir.Constant(t, -1), pos)
        if op in ("floor", "ceil"):
            return xs[0]
        if op in ("floordiv", "mod"):
            x, y = xs
            isz = b.icmp_signed("==", y, zero)
            # x / 0 and INT_MIN / -1 trap in hardware: divide by 1 instead (INT_MIN / 1 is
            # INT_MIN, NumPy's wrapped quotient, with remainder 0), then give x // 0 = 0
            unsafe = isz if unsigned else b.or_(isz, b.and_(
                b.icmp_signed("==", y, ir.Constant(t, -1)),
                b.icmp_signed("==", x, ir.Constant(t, -(1 << (t.width - 1))))))
            ys = b.select(unsafe, one, y)
            if unsigned:
                q, r = b.udiv(x, ys), b.urem(x, ys)
            else:
                q, r = b.sdiv(x, ys), b.srem(x, ys)
                adjust = b.and_(b.icmp_signed("!=", r, zero),
                                b.xor(b.icmp_signed("<", r, zero), b.icmp_signed("<", ys, zero)))
                q = b.select(adjust, b.sub(q, one), q)
                r = b.select(adjust, b.add(r, ys), r)
            return b.select(isz, zero, q if op == "floordiv" else r)
        if op == "pow":
            return self._int_pow(*xs, t, unsigned)
        raise NotImplementedError(f"integer {op}")

    def _int_pow(self, x, y, t, unsigned: bool):
        """``x ** y`` by squaring in the integer type, wrapping like NumPy (the float ``pow``
        it replaces lost the wrap-around and the bits past 2**53).  As the cuda helper
        ``sg_pow``: a negative exponent gives 0, except for the bases 1 and -1."""
        b = self.b
        zero, one = ir.Constant(t, 0), ir.Constant(t, 1)
        r, base = one, x
        for k in range(t.width):  # branch-free: one step per exponent bit
            bit = b.trunc(b.lshr(y, ir.Constant(t, k)), ir.IntType(1))
            r = b.select(bit, b.mul(r, base), r)
            base = b.mul(base, base)
        if unsigned:
            return r
        minus_one = ir.Constant(t, -1)
        odd = b.trunc(y, ir.IntType(1))
        neg = b.select(b.icmp_signed("==", x, one), one,
                       b.select(b.icmp_signed("==", x, minus_one),
                                b.select(odd, minus_one, one), zero))
        return b.select(b.icmp_signed("<", y, zero), neg, r)

