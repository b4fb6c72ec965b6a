"""The llvm backend: native CPU code through llvmlite, one native call per function call.

``build`` returns an ``LLVMProgram``.  On the first call with a new tuple of input shapes it
lowers the graph to kernel IR for those shapes, renders one LLVM module (every kernel plus an
entry point), optimises it for the host CPU, loads the object code (from the disk cache when
it is there) and keeps it in memory keyed by the shapes.  A call then fills one array of
pointers (inputs, fresh outputs, the scratch arena) and makes one ctypes call, which releases
the GIL.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import sys
import threading

import numpy as np

from ..errors import CompileError
from ..graph.fgraph import FunctionGraph
from . import KernelInfo, llvm_cache, llvm_elf, llvm_jit, llvm_warm

ENTRY = "symgraph_entry"
FORMAT_VERSION = "2"  # bump when the generated code changes for the same kernel IR
WARM_START = True  # ``build`` accepts a lazy graph and a ``graph_key`` (see llvm_warm)


def default_threads() -> int:
    env = os.environ.get("SYMGRAPH_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _references(items: list, j: int) -> int:
    return sys.getrefcount(items[j])


# what _references reports for an object held only by the list (measured, not assumed: the
# temporaries it counts differ between Python versions)
_SOLE_REFERENCE = _references([object()], 0)


class Specialization:
    """The native code and buffers for one tuple of input shapes."""

    def __init__(self, prog, loaded: llvm_jit.Loaded, key: str, builder_factory, object_args: bool):
        self.prog = prog
        self.object_args = object_args
        self.loaded = loaded
        self.key = key
        self._builder_factory = builder_factory
        self._text = None
        self._sources = None
        ni, no = len(prog.inputs), len(prog.outputs)
        self.ni, self.no = ni, no
        self.args = (ctypes.c_void_p * (ni + no + 1))()
        self.args_addr = ctypes.addressof(self.args)  # passing the int is faster than the array
        self.pack = struct.Struct(f"{ni + no}Q").pack_into  # fills the pointer slots in one call
        self.arena = np.empty(max(prog.arena_size, 1) + 64, dtype=np.uint8)
        base = self.arena.ctypes.data
        self.args[ni + no] = base + (-base) % 64
        self.out_specs = [(tuple(shape), np.dtype(st.dtype)) for shape, st in
                          zip(prog.output_shapes, prog.outputs)]
        self.output_map = list(prog.output_map)
        # the output arrays of the last call: one whose only reference is this list (the
        # caller dropped it, or a shared variable moved on to a newer value) is written
        # again instead of allocating, which for big outputs also saves the page faults
        # of fresh memory
        self.recycled: list = [None] * no
        self.cfunc = loaded.cfunc
        self._dups: dict[int, set[int]] = {}
        self.lock = threading.Lock()

    def native_only(self, values: list):
        """A zero-argument callable making just the native call on ``values`` and fixed output
        arrays (for measuring the Python overhead of a call)."""
        outs = [np.empty(s, d) for s, d in self.out_specs]
        keep = list(values) + outs
        args = (ctypes.c_void_p * len(self.args))()
        for i, v in enumerate(keep):
            args[i] = id(v) if self.object_args else v.ctypes.data
        args[len(keep)] = self.args[len(keep)]
        cfunc = self.cfunc

        addr = ctypes.addressof(args)

        def call():
            return cfunc(addr), keep, args
        return call

    def duplicated_updates(self, n_out: int) -> set[int]:
        """Updates whose result array is also returned elsewhere (they are installed as copies)."""
        dup = self._dups.get(n_out)
        if dup is None:
            counts: dict[int, int] = {}
            for m in self.output_map:
                counts[m] = counts.get(m, 0) + 1
            dup = {k for k, m in enumerate(self.output_map[n_out:]) if counts[m] > 1}
            self._dups[n_out] = dup
        return dup

    def run(self, values: list) -> list:
        """One native call.  ``values`` are ndarrays of the right dtypes and shapes; inputs
        that are not C-contiguous are copied (the native code refuses them, then Python
        retries with contiguous copies)."""
        args = self.args
        if self.object_args:  # the native code reads each array's data pointer itself
            with self.lock:  # the arena and the pointer array belong to this specialisation
                outs = self._outputs()
                self.pack(args, 0, *map(id, values), *map(id, outs))
                status = self.cfunc(self.args_addr)
                self.recycled = outs
            if status:
                return self.run([np.ascontiguousarray(v) for v in values])
        else:
            values = [np.ascontiguousarray(v) for v in values]
            with self.lock:
                outs = self._outputs()
                self.recycled = outs
                i = 0
                for v in values:
                    args[i] = v.ctypes.data
                    i += 1
                for o in outs:
                    args[i] = o.ctypes.data
                    i += 1
                self.cfunc(self.args_addr)
        return [outs[m] for m in self.output_map]

    def _outputs(self) -> list[np.ndarray]:
        """Arrays for this call's outputs (call with ``self.lock`` held)."""
        last, outs = self.recycled, []
        for j, (shape, dtype) in enumerate(self.out_specs):
            if last[j] is not None and _references(last, j) == _SOLE_REFERENCE:
                outs.append(last[j])
            else:
                outs.append(np.empty(shape, dtype))
        return outs

    # inspection (rendered again on demand when the code came from the disk cache)
    def _render(self):
        if self._text is None:
            mb = self._builder_factory(self.prog)
            mb.build()
            self._text, self._sources = mb.annotated_text()
        return self._text, self._sources

    def source(self) -> str:
        return self._render()[0]

    def kernels(self) -> list[KernelInfo]:
        from ..codegen.kernel_ir import kernel_text
        _, sources = self._render()
        infos = [KernelInfo(k.name, sources.get(k.name, ""), k.inputs, k.outputs, k.ops, kernel_text(k))
                 for k in self.prog.kernels]
        addr = self.loaded.profile_addr
        if addr:
            n = len(infos)
            counts = (ctypes.c_int64 * (2 * n)).from_address(addr)
            cps = llvm_jit.cycles_per_second()
            for i, info in enumerate(infos):
                info.stats = {"calls": int(counts[2 * i + 1]), "seconds": counts[2 * i] / cps}
        return infos

    def asm(self) -> str:
        ref = llvm_jit.optimize(self._render()[0])
        return llvm_jit.emit_assembly(ref)


class LLVMProgram:
    """The compiled function's native program: specialisations keyed by input shapes."""

    backend_name = "llvm"

    def __init__(self, fgraph, roots: list, options: dict):
        # ``fgraph`` may be a zero-argument callable returning the rewritten graph: with a
        # ``graph_key`` (fingerprint of the unrewritten graph) a warm-start hit needs neither
        self._fgraph = fgraph
        self.graph_key = options.get("graph_key")
        self.warm_hits = 0
        self.roots = roots
        self.threads = int(options.get("threads") or default_threads())
        self.profile = bool(options.get("profile"))
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        self.specs: dict[tuple, Specialization] = {}
        self.last: Specialization | None = None
        self._lock = threading.Lock()
        self.cache_hits = 0
        self.compiles = 0
        libs = llvm_jit.libraries()
        if libs["blas"] is None:
            raise CompileError("the llvm backend needs NumPy's bundled OpenBLAS (numpy.libs)")
        self.gomp = libs["gomp"] is not None
        self.object_args = llvm_jit.object_args_supported()
        llvm_jit.set_blas_threads(self.threads)
        static = [v.type.shape for v in roots]
        if all(d is not None for s in static for d in s):
            self.specialize([tuple(s) for s in static])

    @property
    def fgraph(self) -> FunctionGraph:
        if callable(self._fgraph):
            self._fgraph = self._fgraph()
        return self._fgraph

    # --- calling -----------------------------------------------------------------------------
    def __call__(self, values: list) -> list:
        values = [np.asarray(v) for v in values]
        key = tuple([v.shape for v in values])
        spec = self.specs.get(key) or self.specialize(list(key))
        return spec.run(values)

    def make_caller(self, cf):
        """The whole call path of ``CompiledFunction`` ``cf``: argument checks (unless
        ``trust_input``), one native call, updates (the fresh result arrays are installed
        without a copy), results."""
        shared, targets = cf.shared, cf.update_targets
        n_out, single, trust = cf.n_outputs, cf.single, cf.trust_input
        nspec = len(cf.specs)
        table = self.specs
        ndarray = np.ndarray
        shared_shapes = tuple(s.shape for s in shared)
        # per input: (dtype, ndim, static dims, full converter)
        checks = [(s.np_dtype, s.ndim, tuple((a, d) for a, d in enumerate(s.shape) if d is not None),
                   s.convert) for s in cf.specs]
        program = self

        def call(args):
            if len(args) != nspec:
                cf._convert(args)  # raises the TypeError naming the inputs
            values = []
            key = []
            if trust:
                for a in args:
                    if type(a) is not ndarray:
                        a = np.asarray(a)
                    values.append(a)
                    key.append(a.shape)
            else:
                for (dt, nd, static, convert), a in zip(checks, args):
                    if type(a) is not ndarray or a.dtype != dt or a.ndim != nd:
                        a = convert(a)
                    else:
                        shape = a.shape
                        for axis, dim in static:
                            if shape[axis] != dim:
                                a = convert(a)  # raises the ValueError naming the input
                                break
                    values.append(a)
                    key.append(a.shape)
            for s in shared:
                values.append(s._value)
            key = tuple(key)
            spec = table.get(key)
            if spec is None:
                spec = program.specialize(list(key) + list(shared_shapes))
                table[key] = spec
            results = spec.run(values)
            if targets:
                dup = spec.duplicated_updates(n_out)
                for k, (t, r) in enumerate(zip(targets, results[n_out:])):
                    if k in dup:
                        r = r.copy()
                    with t._lock:
                        t._value = r
                        t._version += 1
                        if t.device_state:
                            t.device_state.clear()
            return results[0] if single else results[:n_out]

        return call

    # --- building ----------------------------------------------------------------------------
    def _builder(self, prog):
        from ..codegen.llvm_render import ModuleBuilder
        if isinstance(prog, llvm_warm.WarmProgram):
            prog = prog.lowered()
        return ModuleBuilder(prog, ENTRY, gomp=self.gomp, math_functions=llvm_jit.math_module()[1],
                             object_args=self.object_args, profile=self.profile,
                             streaming=llvm_jit.streaming_stores())

    def _variant(self) -> str:
        return (f"gomp={self.gomp}|objargs={self.object_args}|profile={self.profile}|"
                f"stream={llvm_jit.streaming_stores()}")

    def _lower(self, key: tuple):
        from ..codegen.lower import lower
        return lower(self.fgraph, self.roots, list(key))

    def specialize(self, shapes: list[tuple]) -> Specialization:
        """Compile (or load from cache) the code for one tuple of input shapes."""
        with self._lock:
            key = tuple(tuple(s) for s in shapes)
            if key in self.specs:
                return self.specs[key]
            variant = self._variant()
            warm_key = None
            if self.graph_key is not None and llvm_cache.cache_dir() is not None \
                    and llvm_warm.usable():
                warm_key = llvm_warm.entry_key(self.graph_key, key, warm_context(variant))
                hit = llvm_warm.load(warm_key)
            else:
                hit = None
            text = sources = None
            if hit is not None:
                digest, summary, obj = hit
                prog = llvm_warm.WarmProgram(summary, digest, lambda: self._lower(key),
                                             lambda p: program_digest(p, variant), warm_key)
                self.cache_hits += 1
                self.warm_hits += 1
            else:
                prog = self._lower(key)
                digest = program_digest(prog, variant)
                obj = llvm_cache.load(digest)
                if obj is None:
                    mb = self._builder(prog)
                    mb.build()
                    text, sources = mb.annotated_text()
                    ref = llvm_jit.optimize(text)
                    obj = llvm_jit.emit_object(ref)
                    llvm_cache.store(digest, obj)
                    self.compiles += 1
                else:
                    self.cache_hits += 1
                if warm_key is not None:
                    llvm_warm.store(warm_key, digest, prog)
            loaded = llvm_elf.load(obj, ENTRY) or llvm_jit.Loaded(obj, ENTRY)
            loaded.set_threads(self.threads)
            spec = Specialization(prog, loaded, digest, self._builder, self.object_args)
            if text is not None:
                spec._text, spec._sources = text, sources
            self.specs[key] = spec
            self.last = spec
            return spec

    def set_threads(self, n: int) -> None:
        self.threads = int(n)
        llvm_jit.set_blas_threads(self.threads)
        for spec in self.specs.values():
            spec.loaded.set_threads(self.threads)

    # --- inspection ----------------------------------------------------------------------------
    def _current(self) -> Specialization:
        if self.last is None:
            raise CompileError("this function has inputs of unknown shape: call it once (or pass "
                               "example inputs) so the llvm backend can generate code")
        return self.last

    @property
    def kernels(self) -> list[KernelInfo]:
        return self._current().kernels() if self.last is not None else []

    def source(self) -> str:
        return self._current().source()

    def asm(self) -> str:
        return self._current().asm()

    def export(self, cf, path: str, kind: str = "shared", example_inputs=None, name: str | None = None):
        """Write ``path.so`` (or ``.o``) and ``path.h`` for the current specialisation."""
        from ..export import export_program
        spec = self.last
        if example_inputs is not None:
            shapes = [np.shape(v) for v in example_inputs] + [s.shape for s in cf.shared]
            spec = self.specialize(shapes)
        if spec is None:
            spec = self._current()
        return export_program(cf, spec, path, kind=kind, name=name)


def digest_context(variant: str) -> str:
    """What every cache key shares: format, versions, target (triple, CPU, features),
    math helpers and the code-generation flags in ``variant``."""
    from .. import __version__ as sg_version
    return f"{FORMAT_VERSION}|{sg_version}|{llvm_jit.target_id()}|{llvm_jit.math_hash()}|{variant}"


def warm_context(variant: str) -> str:
    """``digest_context`` for the warm-start key: the same, with the host CPU read without
    llvmlite (a warm process never imports it)."""
    from .. import __version__ as sg_version
    return f"{FORMAT_VERSION}|{sg_version}|{llvm_jit.host_id()}|{llvm_jit.math_hash()}|{variant}"


def program_digest(prog, variant: str) -> str:
    """Cache key: the kernel IR (a function of the rewritten graph, shapes and dtypes), the
    constants, the target (triple, CPU, features), math helpers and versions."""
    from ..codegen.kernel_ir import kernel_text
    h = hashlib.sha256()
    h.update(f"{digest_context(variant)}\n".encode())
    for st in prog.storages:
        h.update(f"{st.sid}:{st.kind}:{st.dtype}:{st.size}:{st.slot}\n".encode())
        if st.value is not None:
            h.update(np.ascontiguousarray(st.value).tobytes())
    for k in prog.kernels:
        h.update(kernel_text(k).encode())
        h.update(f"|{k.work}\n".encode())
    h.update(repr(sorted(prog.arena_offsets.items())).encode())
    h.update(repr(prog.output_map).encode())
    return h.hexdigest()[:40]


def build(fgraph: FunctionGraph, roots: list, options: dict) -> LLVMProgram:
    return LLVMProgram(fgraph, roots, options)
