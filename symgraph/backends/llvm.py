"""The llvm backend: native CPU code through llvmlite, one native call per function call.

``build`` returns an ``LLVMProgram``.  On the first call with a new tuple of input shapes it
lowers the graph to kernel IR for those shapes, renders one LLVM module (every kernel plus an
entry point), optimises it for the host CPU, loads the object code (from the disk cache when
it is there) and keeps it in memory keyed by the shapes.  A call then fills one array of
pointers (inputs, fresh outputs, the scratch arena) and makes one native call without the GIL.

Two call paths do that: the C extension ``symgraph._fastcall`` (when it was built and
``SYMGRAPH_NO_FASTCALL`` is not set) handles every call whose arguments are exact
ndarrays of the expected dtypes and already-seen shapes; everything else goes to the Python
path (``make_caller``'s closure), which converts arguments, raises the argument errors,
compiles new specialisations and registers them with the C caller.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import sys
import threading

import numpy as np

from ..codegen import symdim
from ..codegen.checks import STATUS_INDEX_ERROR, WORDS_PER_SITE, raise_index_error
from ..codegen.specialize import dim_values, int_value_slots, lower_generic, shape_generic_allowed
from ..codegen.symdim import evaluate
from ..compile import update_shape_error
from ..errors import CompileError
from ..fastcall import fastcall_module
from ..forksafe import renew_locks_after_fork
from ..graph.basic import SharedVariable
from ..graph.fgraph import FunctionGraph
from . import (
    KernelInfo,
    blas_threads,
    cache_store,
    forget_old_instances,
    llvm_elf,
    llvm_jit,
    llvm_warm,
)

ENTRY = "symgraph_entry"
# fused ops this backend runs (rewrite/engine.py): the bias and activation after a convolution
# go into the direct convolution's stores
REWRITE_CAPABILITIES = {"conv_epilogue": True}
FORMAT_VERSION = "3"  # bump when the generated code changes for the same kernel IR
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


def copied_results(output_map: list[int]) -> list[bool]:
    """Per result: True when an earlier result is the same native output (it gets a copy, so
    no two results, returned or installed, share memory)."""
    seen: set[int] = set()
    flags = []
    for m in output_map:
        flags.append(m in seen)
        seen.add(m)
    return flags


class Specialization:
    """The native code and buffers for one tuple of input shapes."""

    def __init__(self, prog, loaded: llvm_jit.Loaded, key: str, builder_factory, object_args: bool,
                 dim_values: tuple = ()):
        self.prog = prog
        # a shape-generic program's sizes for this instance (``prog.dims`` order): its arena
        # and output shapes are computed from them, and its arena starts with them
        self.dim_values = tuple(int(d) for d in dim_values)
        self.shapes: tuple = ()  # the input shapes it serves (set by LLVMProgram.specialize)
        self.object_args = object_args
        self.loaded = loaded
        self.key = key
        self._builder_factory = builder_factory
        self._text = None
        self._sources = None
        self._plain_text = None  # a fresh compile's module text, annotated on inspection
        ni, no = len(prog.inputs), len(prog.outputs)
        self.ni, self.no = ni, no
        self.args = (ctypes.c_void_p * (ni + no + 1))()
        self.args_addr = ctypes.addressof(self.args)  # passing the int is faster than the array
        self.pack = struct.Struct(f"{ni + no}Q").pack_into  # fills the pointer slots in one call
        values = self.dim_values
        self.arena = np.empty(max(evaluate(prog.arena_size, values), 1) + 64, dtype=np.uint8)
        base = self.arena.ctypes.data
        self.args[ni + no] = base + (-base) % 64
        if values:
            start = (-base) % 64
            self.arena[start:start + 8 * len(values)].view(np.int64)[:] = values
        self.out_specs = [(tuple(evaluate(d, values) for d in shape), np.dtype(st.dtype))
                          for shape, st in zip(prog.output_shapes, prog.outputs)]
        self.output_map = list(prog.output_map)
        # per output, the arrays of the last two calls: one whose only reference is this
        # table (the caller dropped it, or a shared variable moved on to a newer value) is
        # written again instead of allocating, which for big outputs also saves the page
        # faults of fresh memory.  Two, so that ``y = f(x)`` in a loop (the previous result
        # still held during the call) recycles too.
        self.recycled: list[list] = [[] for _ in range(no)]
        self.cfunc = loaded.cfunc
        # bound checks: @sg_error holds the error words (codegen/checks.py)
        self.errors = None
        if prog.checks:
            addr = loaded.global_address("sg_error")
            if not addr:
                raise RuntimeError("the bound-check error words (sg_error) are missing from the object code")
            self.errors = (ctypes.c_int64 * (1 + WORDS_PER_SITE * len(prog.checks))).from_address(addr)
        # the C and the Python call path take the same lock around the arena
        fast = fastcall_module()
        self.lock = fast.ArenaLock() if fast is not None else threading.Lock()

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

    def run(self, values: list) -> list:
        """One native call.  ``values`` are ndarrays of the right dtypes and shapes; inputs
        that are not C-contiguous are copied (the native code refuses them, then Python
        retries with contiguous copies).  An index out of bounds raises ``IndexError`` (the
        outputs are dropped, so no update is installed)."""
        args = self.args
        if self.object_args:  # the native code reads each array's data pointer itself
            with self.lock:  # the arena and the pointer array belong to this specialisation
                outs = self._outputs()
                self.pack(args, 0, *map(id, values), *map(id, outs))
                status = self.cfunc(self.args_addr)
                if status == STATUS_INDEX_ERROR:
                    self._raise_index_error()
                self._keep(outs)
            if status:
                return self.run([np.ascontiguousarray(v) for v in values])
        else:
            values = [np.ascontiguousarray(v) for v in values]
            with self.lock:
                outs = self._outputs()
                i = 0
                for v in values:
                    args[i] = v.ctypes.data
                    i += 1
                for o in outs:
                    args[i] = o.ctypes.data
                    i += 1
                if self.cfunc(self.args_addr) == STATUS_INDEX_ERROR:
                    self._raise_index_error()
                self._keep(outs)
        return [outs[m] for m in self.output_map]

    def _outputs(self) -> list[np.ndarray]:
        """Arrays for this call's outputs (call with ``self.lock`` held)."""
        outs = []
        for pool, (shape, dtype) in zip(self.recycled, self.out_specs):
            for q in range(len(pool)):
                if _references(pool, q) == _SOLE_REFERENCE:
                    outs.append(pool[q])
                    break
            else:
                outs.append(np.empty(shape, dtype))
        return outs

    def _keep(self, outs: list[np.ndarray]) -> None:
        """Remember this call's outputs (the newest two per output)."""
        for pool, out in zip(self.recycled, outs):
            pool[:] = [out] + [a for a in pool if a is not out][:1]

    def _raise_index_error(self) -> None:
        """Raise the IndexError for the failed bound check (call with ``self.lock`` held:
        the error words belong to this specialisation and the next call resets them)."""
        raise_index_error(self.prog.checks, self.errors, self.dim_values)

    # inspection (rendered again on demand when the code came from the disk cache)
    def _render(self):
        if self._text is None:
            if self._plain_text is not None:
                from ..codegen.llvm_render import annotate
                self._text, self._sources = annotate(self._plain_text, self.prog.kernels)
                self._plain_text = None
            else:  # the code came from a cache: render it again
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


def _sizes_fit(prog, values: list) -> bool:
    """Whether every buffer of shape-generic ``prog`` fits in memory an array can address for
    these sizes (when one does not, code for exactly these shapes reports the error)."""
    from ..graph.types import MAX_BYTES
    sizes = [evaluate(st.size, values) * st.itemsize for st in prog.storages]
    return all(0 <= n <= MAX_BYTES for n in sizes + [evaluate(prog.arena_size, values)])


class GenericFamily:
    """A shape-generic program and its loaded code; each tuple of sizes it serves gets its
    own ``Specialization`` (arena, output shapes, lock) sharing the code."""

    def __init__(self, prog, loaded, digest: str, text: str | None):
        self.prog, self.loaded, self.digest, self.text = prog, loaded, digest, text


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
        self.built_outputs = options.get("built_outputs")
        self.threads = int(options.get("threads") or default_threads())
        self.profile = bool(options.get("profile"))
        self.fast_math = bool(options.get("fast_math"))
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        self.specs: dict[tuple, Specialization] = {}
        self.last: Specialization | None = None
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")
        self.cache_hits = 0
        self.compiles = 0
        self.generations = 0  # programs lowered (code generated, whatever the cache held)
        # shape-generic code: one program serves every call whose sizes pass its guards
        self.generic_allowed = shape_generic_allowed(options)
        self.shape_generic = self.generic_allowed and any(d is None for v in roots for d in v.type.shape)
        self.families: list[GenericFamily] = []
        self.value_slots = int_value_slots(roots)
        self.uses_values = False
        libs = llvm_jit.libraries()
        if libs["blas"] is None:
            raise CompileError("the llvm backend needs NumPy's bundled OpenBLAS (numpy.libs)")
        self.gomp = libs["gomp"] is not None
        if self.gomp:
            blas_threads.install()  # OpenBLAS's parallel sections run on libgomp's threads
        self.object_args = llvm_jit.object_args_supported()
        llvm_jit.set_blas_threads(self.threads)
        static = [v.type.shape for v in roots]
        if all(d is not None for s in static for d in s):
            try:
                self.specialize([tuple(s) for s in static])
            except CompileError:
                if not self._values_may_help(self.value_slots):
                    raise  # else sizes depend on int inputs' values: generated at the first call

    @property
    def fgraph(self) -> FunctionGraph:
        if callable(self._fgraph):
            self._fgraph = self._fgraph()
        return self._fgraph

    # --- calling -----------------------------------------------------------------------------
    def __call__(self, values: list) -> list:
        values = [np.asarray(v) for v in values]
        key = tuple([v.shape for v in values])
        ints = tuple(int(values[i]) for i in self.value_slots)
        spec = self.specs.get(key + (ints,) if self.uses_values else key) or self.specialize(list(key), ints)
        return spec.run(values)

    def make_caller(self, cf):
        """The whole call path of ``CompiledFunction`` ``cf``: argument checks (whatever
        ``trust_input`` says: they keep the native code in bounds), update shapes (once per
        specialisation, before its first native call), one native call, updates (the fresh
        result arrays are installed without a copy, all or none), results.  Returns the C
        caller when the extension is available (it falls back to the Python closure built
        here), else the closure itself."""
        shared, targets, install = cf.shared, cf.update_targets, cf.install
        n_out, single = cf.n_outputs, cf.single
        nspec = len(cf.specs)
        table = self.specs
        ndarray = np.ndarray
        shared_shapes = tuple(s.type.shape for s in shared)  # static: see compile.py
        # per input: (dtype, ndim, static dims, full converter)
        checks = [(s.np_dtype, s.ndim, tuple((a, d) for a, d in enumerate(s.shape) if d is not None),
                   s.convert) for s in cf.specs]
        program = self
        output_map, out_types = self._native_outputs()
        copies = [k for k, c in enumerate(copied_results(output_map)) if c]
        module = self._fast_module(cf, out_types, output_map)
        # calls of a function with updates are serialised (else two calls could read the same
        # old value and one update would be lost); the C caller takes the same lock
        fn_lock = None
        if targets:
            fn_lock = module.ArenaLock() if module is not None else threading.Lock()
        self.update_lock = fn_lock  # visible for inspection (fork tests hold it)
        fast = None  # the C caller, once made (below)
        checked: set[tuple] = set()  # input shapes whose updates fit
        registered: set[tuple] = set()  # input shapes `fast` holds, as of `replaced_seen`
        replaced_seen = 0  # `fast.replaced` when `registered` was last valid
        value_slots = self.value_slots

        def call(args):
            nonlocal replaced_seen
            if len(args) != nspec:
                cf._convert(args)  # raises the TypeError naming the inputs
            values = []
            key = []
            # whatever trust_input says: the native code reads and writes the buffers as the
            # declared dtypes, ranks and shapes, so anything else is converted or refused
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
            key = tuple(key)
            # code whose sizes depend on the values of int inputs (``x[i*bs:(i+1)*bs]``) is
            # looked up by those values too, on this path only (the C caller keys by shapes)
            ints = tuple(int(values[i]) for i in value_slots) if value_slots else ()
            lookup = key + (ints,) if program.uses_values else key
            spec = table.get(lookup)
            if spec is None:
                spec = program.specialize(list(key) + list(shared_shapes), ints)
                lookup = key + (ints,) if program.uses_values else key
                table[lookup] = spec
            if lookup not in checked:  # before the native call: nothing runs, nothing changes
                program._check_update_shapes(spec, targets, n_out, cf.compiled_at)
                checked.add(lookup)
            if fast is not None and not program.uses_values:
                if fast.replaced != replaced_seen:  # the C table dropped entries for newer shapes
                    replaced_seen = fast.replaced
                    registered.clear()
                if lookup not in registered and \
                        program._register(module, fast, spec, key, targets, n_out, output_map):
                    registered.add(lookup)
            if not targets:
                values.extend([s._value for s in shared])
                results = spec.run(values)
                for k in copies:
                    results[k] = results[k].copy()
                return results[0] if single else results[:n_out]
            with fn_lock:  # reading the shared values, the call and the updates are one step
                values.extend([s._value for s in shared])
                results = spec.run(values)
                for k in copies:
                    results[k] = results[k].copy()
                install(results[n_out:])  # all or nothing
            return results[0] if single else results[:n_out]

        if module is None:
            return call
        fast = module.Caller(call, self.object_args, single, [s.np_dtype.num for s in cf.specs],
                             [s.ndim for s in cf.specs], shared, [np.dtype(s.dtype).num for s in shared],
                             list(shared_shapes), [num for num, _ in out_types],
                             [nd for _, nd in out_types], output_map, n_out, targets, fn_lock)
        return fast

    def _native_outputs(self) -> tuple[list[int], list[tuple[int, int]]]:
        """``output_map`` (graph output -> native output, one native output per distinct graph
        output, as ``lower`` numbers them) and each native output's (dtype number, rank).
        Read from a specialisation when there is one, so a warm start need not rewrite."""
        if self.last is not None:
            spec = self.last
            return list(spec.output_map), [(d.num, len(shape)) for shape, d in spec.out_specs]
        natives: dict[int, int] = {}
        types = []
        for v in self.fgraph.outputs:
            if id(v) not in natives:
                natives[id(v)] = len(types)
                types.append((np.dtype(v.dtype).num, v.ndim))
        return [natives[id(v)] for v in self.fgraph.outputs], types

    def _fast_module(self, cf, out_types: list, output_map: list[int]):
        """The C call path module when this function can use it (else None)."""
        module = fastcall_module()
        if module is None:
            return None
        n_arrays = len(cf.specs) + len(cf.shared) + len(out_types)
        if n_arrays > module.MAX_ARRAYS or len(output_map) >= module.MAX_ARRAYS:
            return None
        # the C caller reads and writes the attributes behind SharedVariable._value itself
        plain = SharedVariable.__dict__["_value"]
        if any(getattr(type(s), "_value", None) is not plain
               for s in list(cf.shared) + list(cf.update_targets)):
            return None
        return module

    @staticmethod
    def _check_update_shapes(spec: Specialization, targets: list, n_out: int, trace) -> None:
        """Raise, before the native call, when ``spec`` computes an update whose shape is not
        its shared variable's (the message is the reference backend's)."""
        for t, m in zip(targets, spec.output_map[n_out:]):
            shape = spec.out_specs[m][0]
            if shape != tuple(t.type.shape):
                raise update_shape_error(t, shape, trace)

    @staticmethod
    def _register(module, fast, spec: Specialization, key: tuple, targets: list, n_out: int,
                  output_map: list[int]) -> bool:
        """Let the C caller run ``spec`` for input shapes ``key`` when its outputs are numbered
        as the caller expects and every update has its target's shape (else calls with those
        shapes stay on the Python path).  False when it did not take them (now)."""
        if list(spec.output_map) != output_map or not isinstance(spec.lock, module.ArenaLock):
            return False
        shapes = [s for s, _ in spec.out_specs]
        for t, m in zip(targets, spec.output_map[n_out:]):
            if shapes[m] != tuple(t.type.shape):
                return False
        return fast.add(key, shapes, spec.loaded.address, spec.args[spec.ni + spec.no], spec.lock, spec)

    # --- building ----------------------------------------------------------------------------
    def _builder(self, prog):
        from ..codegen.llvm_render import ModuleBuilder
        if isinstance(prog, llvm_warm.WarmProgram):
            prog = prog.lowered()
        return ModuleBuilder(prog, ENTRY, gomp=self.gomp, math_functions=llvm_jit.math_module()[1],
                             object_args=self.object_args, profile=self.profile,
                             streaming=llvm_jit.streaming_stores(), fast_math=self.fast_math)

    def _variant(self) -> str:
        from ..codegen.lower import conv  # its path switch changes the code, not the graph
        return (f"gomp={self.gomp}|objargs={self.object_args}|profile={self.profile}|"
                f"stream={llvm_jit.streaming_stores()}|fastmath={self.fast_math}|"
                f"convpath={conv.FORCE_PATH}")

    def _lower(self, key: tuple, dim_values: tuple = ()):
        """The program for shapes ``key``: concrete, or shape-generic when ``dim_values`` (a
        warm entry of a generic program is checked against that)."""
        if dim_values:
            return self._lower_generic(key)
        from ..codegen.specialize import lower_for_call
        return lower_for_call(self.fgraph, self.roots, list(key), self.built_outputs)

    def specialize(self, shapes: list[tuple], values: tuple = ()) -> Specialization:
        """The code for one tuple of input shapes: an instance of a shape-generic program
        whose guards these shapes pass, else newly generated code (shape-generic when the
        inputs have dims unknown at build time and the lowering allows, else for exactly
        these shapes), from the disk cache when it is there."""
        with self._lock:
            key = tuple(tuple(s) for s in shapes)
            values = tuple(int(v) for v in values)
            lookup = key + (values,) if self.uses_values else key
            if lookup in self.specs:
                return self.specs[lookup]
            variant = self._variant()
            warm_key = None
            if self.graph_key is not None and cache_store.root() is not None \
                    and llvm_warm.usable() and not self.uses_values:
                warm_key = llvm_warm.entry_key(self.graph_key, key, warm_context(variant))
            spec = self._instance(key, values)
            if spec is not None and warm_key is not None:  # a later process starts warm here too
                llvm_warm.store(warm_key, spec.key, spec.prog, spec.dim_values)
            if spec is None and warm_key is not None:
                spec = self._warm_start(key, warm_key, variant)
            if spec is None and self.shape_generic:
                spec = self._generate_generic(key, warm_key, values)
            if spec is None:
                try:
                    spec = self._generate(key, warm_key, variant)
                except CompileError:  # a size depends on an int input's value
                    spec = self._generate_generic(key, None, values) if self._values_may_help(values) \
                        else None
                    if spec is None:
                        raise
            spec.shapes = key
            self.specs[key + (values,) if self.uses_values else key] = spec
            self.last = spec
            if spec.dim_values:
                forget_old_instances(self.specs)
            return spec

    def exact(self, spec: Specialization) -> Specialization:
        """``spec`` itself, or when it runs shape-generic code, code for exactly its shapes
        (what ``export`` writes: its libraries have fixed shapes)."""
        if not spec.dim_values:
            return spec
        with self._lock:
            return self._generate(spec.shapes, None, self._variant())

    def _warm_start(self, key: tuple, warm_key: str, variant: str) -> Specialization | None:
        """The code for ``key`` found by the warm-start cache (no rewriting, no lowering)."""
        hit = llvm_warm.load(warm_key)
        if hit is None:
            return None
        digest, summary, obj = hit
        values = tuple(summary.get("dim_values", ()))
        prog = llvm_warm.WarmProgram(summary, digest, lambda: self._lower(key, values),
                                     lambda p: program_digest(p, variant), warm_key)
        self.cache_hits += 1
        self.warm_hits += 1
        return Specialization(prog, self._load(obj), digest, self._builder, self.object_args, values)

    def _generate(self, key: tuple, warm_key: str | None, variant: str) -> Specialization:
        """Code for exactly the shapes ``key`` (from the disk cache when it is there)."""
        prog = self._lower(key)
        self.generations += 1
        digest = program_digest(prog, variant)
        obj, text = self._object_code(prog, digest)
        if warm_key is not None:
            llvm_warm.store(warm_key, digest, prog)
        spec = Specialization(prog, self._load(obj), digest, self._builder, self.object_args)
        spec._plain_text = text
        return spec

    def _object_code(self, prog, digest: str, text: str | None = None) -> tuple[bytes, str | None]:
        """``prog``'s object code from the disk cache, or rendered (``text``, when already
        rendered), optimised and compiled; returns it with the module text (None from cache)."""
        obj = cache_store.load(digest, ".o")
        if obj is not None:
            self.cache_hits += 1
            return obj, None
        if text is None:
            mb = self._builder(prog)
            mb.build()
            # the annotated text (kernel comments) is made on inspection only
            text = str(mb.module)
        obj = llvm_jit.emit_object(llvm_jit.optimize(text))
        cache_store.store(digest, obj, ".o")
        self.compiles += 1
        return obj, text

    def _load(self, obj: bytes):
        loaded = llvm_elf.load(obj, ENTRY) or llvm_jit.Loaded(obj, ENTRY)
        loaded.set_threads(self.threads)
        return loaded

    # --- shape-generic code ------------------------------------------------------------------
    def _instance(self, key: tuple, ints: tuple = ()) -> Specialization | None:
        """A new instance (buffers for these sizes) of a generic program that serves input
        shapes ``key`` (and values ``ints`` of the int scalar inputs)."""
        for fam in self.families:
            if any(axis < 0 for _, axis in fam.prog.dims) and len(ints) != len(self.value_slots):
                continue
            values = dim_values(fam.prog, key, self.value_slots, ints)
            if symdim.guards_hold(fam.prog.guards, values) and _sizes_fit(fam.prog, values):
                spec = Specialization(fam.prog, fam.loaded, fam.digest, self._builder,
                                      self.object_args, values)
                spec._plain_text = fam.text
                return spec
        return None

    def _lower_generic(self, key: tuple, ints: tuple = ()):
        """The shape-generic program for calls like ``key`` (generic in the int inputs'
        values too, given ``ints``); raises when the lowering cannot make one."""
        return lower_generic(self.fgraph, self.roots, key, self.value_slots, ints)

    def _values_may_help(self, ints: tuple) -> bool:
        return self.generic_allowed and bool(ints) and not self.shape_generic

    def _generic_program(self, key: tuple, ints: tuple):
        """Code generic in the unknown dims, or when that cannot be (a size depends on an int
        input's value), generic in the int inputs' values as well."""
        if self.shape_generic:
            try:
                return self._lower_generic(key)
            except Exception:
                if not ints:
                    raise
        return self._lower_generic(key, ints)

    def _generate_generic(self, key: tuple, warm_key: str | None, ints: tuple = ()) -> Specialization | None:
        """Generate code generic in the inputs' unknown dims (``codegen/symdim.py``), or None
        when the lowering cannot (the caller then generates code for exactly ``key``, which
        also reports the user's shape errors)."""
        variant = self._variant()
        try:
            prog = self._generic_program(key, ints)
            digest = program_digest(prog, variant)
            text = None
            if cache_store.load(digest, ".o") is None:
                with symdim.tracing() as guards:
                    mb = self._builder(prog)
                    mb.build()
                if guards:  # rendering must not decide on symbolic sizes
                    raise symdim.NotGeneric("the renderer made a decision on a symbolic size")
                text = str(mb.module)
        except Exception:  # noqa: BLE001 - generating code for exactly these shapes still works
            return None
        self.generations += 1
        obj, text = self._object_code(prog, digest, text)
        self.families.append(GenericFamily(prog, self._load(obj), digest, text))
        if any(axis < 0 for _, axis in prog.dims):
            self.uses_values = True
            warm_key = None  # its instances depend on values the warm key does not see
        spec = self._instance(key, ints)
        if warm_key is not None:
            llvm_warm.store(warm_key, digest, prog, spec.dim_values)
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

    def export(self, cf, path: str, kind: str = "shared", example_inputs=None, name: str | None = None,
               target="x86-64-v3", threads: int = 1, dynamic: bool | None = None):
        """Write ``path.so`` (``.a``, ``.o``) and ``path.h``: a self-contained C library of the
        specialisation for ``example_inputs`` (or the current one); see ``symgraph.export``."""
        from ..export import export_function
        return export_function(cf, path, kind=kind, example_inputs=example_inputs, name=name,
                               target=target, threads=threads, dynamic=dynamic)


def digest_context(variant: str) -> str:
    """What every cache key shares: format, versions, symgraph's own code (an edited renderer
    must not reuse stale object code), target (triple, CPU, features), math helpers and the
    code-generation flags in ``variant``."""
    from .. import __version__ as sg_version
    return (f"{FORMAT_VERSION}|{sg_version}|{cache_store.code_fingerprint()}|"
            f"{llvm_jit.target_id()}|{llvm_jit.math_hash()}|{variant}")


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
