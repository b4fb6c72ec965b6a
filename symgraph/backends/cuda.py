"""The cuda backend: the kernel IR rendered to CUDA C, compiled, and run through pycuda.

``build`` returns a ``CudaProgram``.  On the first call with a new tuple of input shapes it
lowers the graph to kernel IR (``symgraph.codegen.lower``, shared with the llvm backend),
renders one CUDA C module (``symgraph.codegen.cuda_render``), compiles it to a CUBIN for the
device's architecture (NVRTC or nvcc, cached on disk) and loads it.  A call uploads the
inputs, runs every kernel on one stream, and downloads the outputs; shared variables stay on
the GPU between calls (their update is a pointer swap) and are copied back only when read
from the host.

Inputs with dimensions unknown at build time get shape-generic code (``codegen/symdim.py``):
one module, its kernels taking the run-time sizes as arguments, serves every call whose sizes
pass its guards; each new tuple of input shapes only gets a ``Specialization`` (its sizes,
buffer layout and launch grids) of the loaded module.  Where the lowering cannot make
generic code, or ``SYMGRAPH_SHAPE_GENERIC=0``, a module is generated for exactly the call's
shapes, as for inputs declared with every dimension.

``SYMGRAPH_CUDA_CODEGEN_ONLY=1`` builds programs without a GPU: source, PTX and export work,
calling raises ``CompileError``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..codegen import symdim
from ..codegen.checks import initial_words, raise_index_error
from ..codegen.cuda_render import ERROR_PARAM
from ..codegen.specialize import dim_values, int_value_slots, lower_generic, shape_generic_allowed
from ..errors import CompileError
from ..graph.basic import SharedVariable
from ..graph.fgraph import FunctionGraph
from . import cuda_compiler, forget_old_instances
from .cuda_export import export_module

HOST_MODES = ("cublas", "mpi")  # kernels the runtime carries out with library calls from the host

# the renderer runs a MatMulEpilogue inside the generated GEMM's stores (after a cuBLAS call,
# as the next kernel) and a Conv2dEpilogue as the map over the im2col GEMM's result
REWRITE_CAPABILITIES = {"matmul_epilogue": True, "conv_epilogue": True}


@dataclass
class DeviceValue:
    """A shared variable's value on the GPU (kept in ``SharedVariable.device_state``)."""

    alloc: object
    nbytes: int
    device: object


class CudaCodegen:
    """Everything that needs no GPU: specialise, lower, render, compile to PTX / CUBIN."""

    def __init__(self, fgraph: FunctionGraph, roots: list, use_cublas: bool = False, name: str = "symgraph",
                 built_outputs: list | None = None, options: dict | None = None):
        self.fgraph = fgraph
        self.roots = roots
        self.built_outputs = built_outputs  # the graph as built: call-time errors in its terms
        self.use_cublas = use_cublas
        self.name = name
        self._modules: dict[tuple, object] = {}
        self.last = None
        self.last_shapes: tuple | None = None
        self.generic_allowed = shape_generic_allowed(options or {})
        self.shape_generic = self.generic_allowed and any(d is None for v in roots for d in v.type.shape)
        self.families: list = []  # shape-generic modules, each serving the sizes its guards allow
        self.generations = 0  # modules rendered (code generated)
        self.value_slots = int_value_slots(roots)
        self.uses_values = False

    def static_shapes(self) -> list[tuple] | None:
        shapes = []
        for v in self.roots:
            if not v.type.fully_static:
                return None
            shapes.append(tuple(v.type.shape))
        return shapes

    def module(self, shapes: list[tuple]):
        """The rendered module (``cuda_render.CudaModule``) for these input shapes."""
        key = tuple(tuple(int(d) for d in s) for s in shapes)
        mod = self._modules.get(key)
        if mod is None:
            from ..codegen.cuda_render import render_program
            from ..codegen.specialize import lower_for_call
            prog = lower_for_call(self.fgraph, self.roots, list(key), self.built_outputs, target="cuda")
            mod = render_program(prog, use_cublas=self.use_cublas, title=f"{self.name} CUDA module")
            self.generations += 1
            self._modules[key] = mod
        self.last, self.last_shapes = mod, key
        return mod

    def generic_module(self, shapes: list[tuple], ints: tuple | None = None):
        """``(module, sizes)``: the shape-generic module serving these input shapes (and, given
        ``ints``, these values of the int scalar inputs: code generic in them too) and the
        call's run-time sizes, generated on first need; None when no code can be generic
        (the caller then generates a module for exactly these shapes)."""
        key = tuple(tuple(int(d) for d in s) for s in shapes)
        by_value = ints is not None
        if not self.generic_allowed or not (self.shape_generic or by_value and self.value_slots):
            return None
        for mod in self.families:
            if any(axis < 0 for _, axis in mod.program.dims) and not by_value:
                continue
            values = dim_values(mod.program, key, self.value_slots, ints or ())
            if symdim.guards_hold(mod.program.guards, values):
                self.last, self.last_shapes = mod, key
                return mod, tuple(values)
        from ..codegen.cuda_render import render_program
        try:
            prog = lower_generic(self.fgraph, self.roots, key, self.value_slots if by_value else (),
                                 ints or (), target="cuda")
            with symdim.tracing() as guards:  # a renderer decision on a size narrows the guards
                mod = render_program(prog, use_cublas=self.use_cublas,
                                     title=f"{self.name} CUDA module (shape-generic)")
            prog.guards += guards
        except Exception:  # noqa: BLE001 - code for exactly these shapes may still work
            return None
        self.generations += 1
        self.families.append(mod)
        self.uses_values |= by_value
        self.last, self.last_shapes = mod, key
        return mod, tuple(dim_values(prog, key, self.value_slots, ints or ()))

    def exact(self):
        """The latest module, or when it is shape-generic the module for exactly the latest
        call's shapes (what ``export`` writes)."""
        mod = self.current()
        if mod.program.generic:
            last = self.last, self.last_shapes
            mod = self.module(list(self.last_shapes))
            self.last, self.last_shapes = last  # inspection keeps showing the code calls run
        return mod

    def current(self):
        if self.last is None:
            shapes = self.static_shapes()
            if shapes is None:
                raise CompileError("the cuda backend specialises on input shapes: call the function "
                                   "once (or declare every input dimension) before asking for its code")
            self.module(shapes)
        return self.last

    def ptx(self, arch="sm_80") -> str:
        return cuda_compiler.compile_module(self.current().source, arch, "ptx").decode(errors="replace")


class LoadedModule:
    """A rendered module loaded on the device: its kernels and its constants."""

    def __init__(self, mod, dev):
        self.mod = mod
        binary, kind = cuda_compiler.device_binary(mod.source, dev.arch)
        self.module = load_module(dev, binary, kind)
        self.funcs = {}
        for k in mod.kernels:
            if k.mode not in HOST_MODES:
                f = self.module.get_function(k.name)
                f.prepare("P" * len(k.params) + "q" * k.dims)  # run-time sizes by value
                self.funcs[k.name] = f
        if any(k.mode == "cublas" for k in mod.kernels) and dev.cublas is None:
            raise CompileError("this module was rendered for cuBLAS, which is not loadable")
        # constants live on the device for the life of the module
        self.consts = {}
        for st in mod.program.storages:
            if st.kind == "const":
                arr = np.ascontiguousarray(np.asarray(st.value, dtype=st.dtype))
                buf = dev.alloc(arr.nbytes)
                if arr.nbytes:
                    dev.drv.memcpy_htod(buf, arr)
                self.consts[st.sid] = buf


class Specialization:
    """A loaded module and what one tuple of input shapes needs of it: the run-time sizes of
    shape-generic code (``dim_values``), the buffer sizes and the launch grids."""

    def __init__(self, loaded: LoadedModule, dev, dim_values: tuple = ()):
        self.loaded = loaded
        self.mod = mod = loaded.mod
        self.dev = dev
        self.funcs, self.consts = loaded.funcs, loaded.consts
        prog = mod.program
        self.prog = prog
        self.dim_values = values = tuple(int(v) for v in dim_values)

        def size(x) -> int:
            return symdim.evaluate(x, values)
        self.arena_size = size(prog.arena_size)
        self.arena_offsets = {sid: size(off) for sid, off in prog.arena_offsets.items()}
        self.out_nbytes = [size(st.nbytes) for st in prog.outputs]
        self.out_specs = [(tuple(size(d) for d in shape), np.dtype(st.dtype)) for shape, st in
                          zip(prog.output_shapes, prog.outputs)]
        self.grids = [k.launch_grid(values) for k in mod.kernels]
        # bound-check error words (codegen/checks.py)
        self.errors_init = initial_words(prog.checks) if prog.checks else None

    def run(self, inputs: list, want_host: list[bool], profile_kernels=None) -> list:
        """Run with device pointers ``inputs`` (one per program input); returns, per program
        output storage, a host array (``want_host``) or the device allocation."""
        dev, drv, prog = self.dev, self.dev.drv, self.prog
        ptr: dict[int, int] = {}
        for st, p in zip(prog.inputs, inputs):
            ptr[st.sid] = int(p)
        outs = []
        for st, nbytes in zip(prog.outputs, self.out_nbytes):
            buf = dev.alloc(nbytes)
            outs.append(buf)
            ptr[st.sid] = int(buf)
        arena = dev.alloc(self.arena_size + 256) if self.arena_size else None
        if arena is not None:
            base = int(arena)
            base += (-base) % 256
            for sid, off in self.arena_offsets.items():
                ptr[sid] = base + off
        for sid, buf in self.consts.items():
            ptr[sid] = int(buf)
        errors = None
        if self.errors_init is not None:
            errors = dev.alloc(self.errors_init.nbytes)
            drv.memcpy_htod(errors, self.errors_init)
            ptr[ERROR_PARAM] = int(errors)
        stream = dev.stream
        reductions: dict = {}  # all-reduces in flight: requests storage -> (request, host buffer)
        for k, grid in zip(self.mod.kernels, self.grids):
            t0 = time.perf_counter() if profile_kernels is not None else 0.0
            if k.mode == "cublas":
                run_cublas(dev.cublas, k.ir, ptr, self.dim_values)
            elif k.mode == "mpi":
                run_collective(dev, k.ir.body[0], ptr, reductions)
            elif grid[0] > 0:
                args = [ptr[s] for s in k.params] + list(self.dim_values[:k.dims])
                self.funcs[k.name].prepared_async_call(grid, (k.block, 1, 1), stream, *args)
            if profile_kernels is not None:
                stream.synchronize()
                k.stats["calls"] += 1
                k.stats["seconds"] += time.perf_counter() - t0
        stream.synchronize()
        del arena  # back to the pool: the stream is done with it
        if errors is not None:
            seen = np.empty_like(self.errors_init)
            drv.memcpy_dtoh(seen, errors)
            if seen[0]:  # an index was out of bounds: no output (and so no update) survives
                raise_index_error(prog.checks, seen, self.dim_values)
        results = []
        for i, (buf, (shape, dt), host) in enumerate(zip(outs, self.out_specs, want_host)):
            if host:  # pageable NumPy memory: a plain (synchronous) copy
                arr = np.empty(shape, dtype=dt)
                if arr.nbytes:
                    drv.memcpy_dtoh(arr, buf)
                results.append(arr)
            else:
                results.append(DeviceValue(buf, self.out_nbytes[i], dev))
        return results


def load_module(dev, binary: bytes, kind: str):
    """``module_from_buffer`` with an error that says what to change when the driver refuses
    the image (typically a compiler newer than the driver)."""
    try:
        return dev.drv.module_from_buffer(binary)
    except Exception as e:  # pycuda.driver.Error subclasses
        drv_v = getattr(dev, "driver_version", 0)
        driver = f"{drv_v // 1000}.{drv_v % 1000 // 10}" if drv_v else "unknown"
        compiler = (cuda_compiler.nvrtc_version() if cuda_compiler.nvrtc_available()
                    else cuda_compiler.nvcc_version())
        raise CompileError(f"the NVIDIA driver could not load the compiled {kind} for {dev.arch} "
                           f"({e}). Driver CUDA version {driver}, compiler: {compiler}. A compiler "
                           "newer than the driver produces images it cannot load: update the driver, "
                           "or point SYMGRAPH_NVCC at an older toolkit (SYMGRAPH_CUDA_NVRTC=0 to skip "
                           "the NVRTC library)") from None


def run_collective(dev, c, ptr: dict, reductions: dict) -> None:
    """An all-reduce step through host memory (``sg.distributed``; NCCL on the device is the
    plan in docs/distributed.md): the start waits for the kernels before it, copies the
    bucket to the host and starts ``MPI_Iallreduce`` there; a test lets MPI progress; the wait
    finishes the reduction and copies the result back before the kernels after it run."""
    from ..distributed import _mpi
    if c.kind == "start":
        dev.stream.synchronize()
        send = np.empty(c.count, dtype=c.send.dtype)
        dev.drv.memcpy_dtoh(send, ptr[c.send.sid])
        recv = send if c.send.sid == c.recv.sid else np.empty_like(send)
        reductions[c.requests.sid] = (_mpi.start_allreduce(send, recv, c.op), recv)
    elif c.kind == "test":
        if c.requests.sid in reductions:
            reductions[c.requests.sid][0].Test()
    else:
        request, recv = reductions.pop(c.requests.sid)
        request.Wait()
        dev.drv.memcpy_htod(ptr[c.recv.sid], recv)


def run_cublas(cublas, kernel, ptr: dict, dims: tuple = ()) -> None:
    """Issue the cuBLAS calls of a GEMM kernel (``dims``: the run-time sizes of shape-generic
    code); a loop over independent products is one strided-batched call."""
    from ..codegen.cuda_render import eval_int as eval_at
    from ..codegen.kernel_ir import For, Gemm

    def eval_int(e, env):
        return eval_at(e, env, dims)

    def size_of(x) -> int:
        return symdim.evaluate(x, dims)

    def call(g, env, batch=1, strides=(0, 0, 0)):
        size = np.dtype(g.dtype).itemsize
        a = ptr[g.a.sid] + eval_int(g.a_off, env) * size
        b = ptr[g.b.sid] + eval_int(g.b_off, env) * size
        c = ptr[g.c.sid] + eval_int(g.c_off, env) * size
        m, n, k, lda, ldb, ldc = (size_of(x) for x in (g.m, g.n, g.k, g.lda, g.ldb, g.ldc))
        cublas.gemm(g.dtype, g.trans_a, g.trans_b, m, n, k, g.alpha, a, lda, b, ldb,
                    g.beta, c, ldc, batch, *strides)

    def run(body, env):
        for st in body:
            if isinstance(st, Gemm):
                call(st, env)
            elif isinstance(st, For):
                inner, extent = st.body, size_of(st.extent)
                if extent > 1 and len(inner) == 1 and isinstance(inner[0], Gemm):
                    g = inner[0]
                    e0, e1, el = ({**env, st.var: i} for i in (0, 1, extent - 1))
                    d = [eval_int(x, e1) - eval_int(x, e0) for x in (g.a_off, g.b_off, g.c_off)]
                    affine = all(eval_int(x, el) - eval_int(x, e0) == dd * (extent - 1)
                                 for x, dd in zip((g.a_off, g.b_off, g.c_off), d))
                    if affine and d[2] != 0 and g.beta == 0:
                        call(g, e0, extent, tuple(d))
                        continue
                for i in range(extent):
                    run(inner, {**env, st.var: i})
            else:
                raise CompileError(f"cuda: unexpected statement in GEMM kernel {kernel.name}")
    run(kernel.body, {})


class CudaProgram:
    """What ``build`` returns: ``program(values)`` plus inspection and export."""

    backend_name = "cuda"
    device_shared = True  # compile() passes SharedVariables and calls apply_updates

    def __init__(self, fgraph: FunctionGraph, roots: list, options: dict):
        self.fgraph = fgraph
        self.roots = roots
        self.profile = bool(options.get("profile", False))
        # graph outputs are the user outputs then the update values (see compile.build_fgraph)
        self._n_user = int(options.get("n_outputs", len(fgraph.outputs)))
        self.codegen_only = os.environ.get("SYMGRAPH_CUDA_CODEGEN_ONLY", "") not in ("", "0")
        self.dev = None
        use_cublas = options.get("cublas")
        if not self.codegen_only:
            from .cuda_runtime import device
            self.dev = device()  # CompileError naming what is missing
            if use_cublas is None:
                use_cublas = self.dev.cublas is not None
            elif use_cublas and self.dev.cublas is None:
                raise CompileError("cublas=True but no libcublas could be loaded "
                                   "(pip install nvidia-cublas, or a CUDA toolkit with cuBLAS)")
        self.built_outputs = options.get("built_outputs")  # the graph as built (export names outputs)
        self.codegen = CudaCodegen(fgraph, roots, bool(use_cublas), built_outputs=self.built_outputs,
                                   options=options)
        self._specs: dict[tuple, Specialization] = {}
        self._loaded: dict[int, LoadedModule] = {}  # id(module) -> the module on the device
        self._lock = threading.Lock()
        self.n_outputs = len(fgraph.outputs)
        static = self.codegen.static_shapes()
        if static is not None:
            self.codegen.module(static)  # render now: kernels and source are inspectable at once

    # --- calling -------------------------------------------------------------------------
    def _device_input(self, var, value):
        """Device pointer (and whatever keeps it alive) for one argument."""
        from .cuda_runtime import device_pointer, foreign_stream
        dev = self.dev
        if isinstance(var, SharedVariable):
            ds = var.device_state.get("cuda")
            if ds is None or ds.device is not dev:
                host = np.ascontiguousarray(var._value)
                buf = dev.alloc(host.nbytes)
                if host.nbytes:
                    dev.drv.memcpy_htod(buf, host)
                ds = DeviceValue(buf, host.nbytes, dev)
                var.device_state["cuda"] = ds
            return int(ds.alloc), ds
        p = device_pointer(value)
        if p is not None:
            producer = foreign_stream(value)
            if producer is not None:  # the producer may still be writing it on its own stream
                dev.sync_foreign_stream(producer)
            return p, value
        host = np.ascontiguousarray(value)
        buf = dev.alloc(host.nbytes)
        if host.nbytes:  # synchronous: the legacy default stream orders it before our launches
            dev.drv.memcpy_htod(buf, host)
        return int(buf), (buf, host)

    def __call__(self, values: list) -> list:
        if self.codegen_only:
            raise CompileError("this cuda function was built with SYMGRAPH_CUDA_CODEGEN_ONLY=1 "
                               "(no GPU): it can show and export its code but not run")
        shapes = []
        for var, v in zip(self.roots, values):
            if isinstance(var, SharedVariable):
                static = var.type.shape
                shapes.append(tuple(static) if None not in static else np.shape(var.get_value()))
            elif hasattr(v, "__cuda_array_interface__"):
                shapes.append(tuple(v.__cuda_array_interface__["shape"]))
            else:
                shapes.append(tuple(np.shape(v)))
        key = tuple(shapes)
        with self._lock:
            self.dev.ctx.push()  # this thread may not have the context current yet
            try:
                ints = self._int_values(values)
                spec = self._specs.get(key + (ints,) if self.codegen.uses_values else key)
                if spec is None:
                    spec = self._specialize(shapes, ints)
                    self._specs[key + (ints,) if self.codegen.uses_values else key] = spec
                    forget_old_instances(self._specs)
                else:
                    self.codegen.last, self.codegen.last_shapes = spec.mod, key
                keep, ptrs = [], []
                for var, v in zip(self.roots, values):
                    p, k = self._device_input(var, v)
                    ptrs.append(p)
                    keep.append(k)
                per_output = spec.run(ptrs, self._host_slots(spec),
                                      self.kernels if self.profile else None)
            finally:
                self.dev.ctx.pop()
        prog = spec.prog
        results, seen = [], set()
        for slot in prog.output_map:  # a variable returned twice comes back as two arrays
            value = per_output[slot]
            results.append(value.copy() if slot in seen and isinstance(value, np.ndarray) else value)
            seen.add(slot)
        return results

    def _int_values(self, values: list) -> tuple | None:
        """The values of the int scalar inputs given on the host (None when one is a device
        array: then no code generic in values serves the call)."""
        slots = self.codegen.value_slots
        if not slots or any(hasattr(values[i], "__cuda_array_interface__") for i in slots):
            return None
        return tuple(int(np.asarray(values[i])) for i in slots)

    def _specialize(self, shapes: list[tuple], ints: tuple | None = None) -> Specialization:
        """A new specialisation: of the shape-generic module serving these shapes when there
        is one, else of a module for exactly them, else (a size depends on an int input's
        value) of a module generic in the int inputs' values ``ints`` too."""
        found = self.codegen.generic_module(shapes, ints if self.codegen.uses_values else None)
        if found is None:
            try:
                found = self.codegen.module(shapes), ()
            except CompileError:
                found = self.codegen.generic_module(shapes, ints) if ints is not None else None
                if found is None:
                    raise
        mod, values = found
        loaded = self._loaded.get(id(mod))
        if loaded is None:
            loaded = self._loaded[id(mod)] = LoadedModule(mod, self.dev)
        return Specialization(loaded, self.dev, values)

    def _host_slots(self, spec) -> list[bool]:
        """Output storages that go back to the host: those of the user outputs (the update
        values after them stay on the GPU)."""
        host = [False] * len(spec.prog.outputs)
        for i, slot in enumerate(spec.prog.output_map):
            if i < self._n_user:
                host[slot] = True
        return host

    def apply_updates(self, targets: list, values: list) -> None:
        """Make each shared variable's device value the freshly computed buffer."""
        for target, value in zip(targets, values):
            if isinstance(value, DeviceValue):
                target._assign_device("cuda", value, _puller(value, target))
            else:
                target._assign(np.array(value, dtype=target.dtype, copy=True))

    # --- inspection ------------------------------------------------------------------------
    @property
    def kernels(self):
        """The kernels of the latest specialisation ([] before the first call when some input
        dimension is unknown)."""
        if self.codegen.last is None and self.codegen.static_shapes() is None:
            return []
        return self.codegen.current().kernels

    def source(self) -> str:
        return self.codegen.current().source

    def asm(self) -> str:
        arch = self.dev.arch if self.dev is not None else "sm_80"
        return self.codegen.ptx(arch)

    def export(self, cf, path: str, kind: str = "cuda", example_inputs=None, name: str | None = None,
               arch: str | None = None) -> dict:
        """``f.export(path)``: write ``path.cu``, ``path.h`` and ``path.ptx`` (see ``cuda_export``)
        with the llvm export's C API; ``name`` is the prefix of the C functions (default: the
        file name); ``kind`` is ignored (the cuda backend always writes source, PTX and header).
        Returns the paths (``source``, ``header``, ``ptx``)."""
        from ..export import refuse_collectives
        refuse_collectives(cf)
        if example_inputs is not None:
            shapes = [tuple(np.shape(v)) for v in example_inputs] + [tuple(s.shape) for s in
                                                                      self.roots[len(example_inputs):]]
            self.codegen.module(shapes)
        mod = self.codegen.exact()  # an exported library has fixed shapes
        if any(k.mode == "cublas" for k in mod.kernels):
            gen = CudaCodegen(self.fgraph, self.roots, use_cublas=False)
            key = next(k for k, m in self.codegen._modules.items() if m is mod)
            mod = gen.module(list(key))
        arch = arch or (self.dev.arch if self.dev is not None else "sm_80")
        return export_module(mod, cf, path, arch, name)


def _puller(value: DeviceValue, target: SharedVariable):
    def pull() -> np.ndarray:
        dev = value.device
        arr = np.empty(target.shape, dtype=target.dtype)
        dev.ctx.push()
        try:
            dev.stream.synchronize()
            if arr.nbytes:
                dev.drv.memcpy_dtoh(arr, value.alloc)
        finally:
            dev.ctx.pop()
        return arr
    return pull


def build(fgraph: FunctionGraph, roots: list, options: dict) -> CudaProgram:
    """The backend entry point used by ``sg.compile(..., backend="cuda")``."""
    return CudaProgram(fgraph, roots, options)


def generate(fgraph: FunctionGraph, roots: list, shapes: list[tuple], use_cublas: bool = False):
    """Render the CUDA module for ``shapes`` without any GPU (tests, inspection)."""
    return CudaCodegen(fgraph, roots, use_cublas).module(shapes)
