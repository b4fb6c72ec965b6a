"""llvmlite plumbing for the llvm backend: target machine, libraries, optimise, emit, load.

Everything here is process-wide and initialised once, lazily (``import symgraph`` stays light).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import re
import threading
import weakref

import numpy as np

_lock = threading.RLock()
_state: dict = {}
# loaded code with an ``sg_num_threads`` global (``Loaded`` / ``llvm_elf.Image``), so a forked
# child can make all of it single-threaded
_threaded_code: weakref.WeakSet = weakref.WeakSet()


def llvm():
    """``llvmlite.binding``, initialised for the host."""
    if "llvm" not in _state:
        with _lock:
            if "llvm" not in _state:
                import llvmlite.binding as binding
                binding.initialize_native_target()
                binding.initialize_native_asmprinter()
                binding.initialize_native_asmparser()
                _state["llvm"] = binding
    return _state["llvm"]


def openblas_path() -> str | None:
    """NumPy's bundled OpenBLAS (ILP64, ``scipy_cblas_*64_`` symbols)."""
    here = os.path.dirname(np.__file__)
    found = sorted(glob.glob(os.path.join(here, "..", "numpy.libs", "libscipy_openblas64_*.so*")))
    return os.path.realpath(found[0]) if found else None


def libraries() -> dict:
    """Load libm, libgomp and NumPy's OpenBLAS into the process (global scope) for generated
    code; returns what was found: ``gomp`` / ``blas`` (names or paths), ``blas_handle`` and
    ``handles`` (for symbol look-ups).  Needs no llvmlite."""
    if "libs" in _state:
        return _state["libs"]
    with _lock:
        if "libs" in _state:
            return _state["libs"]
        libs: dict = {"gomp": None, "blas": None, "blas_handle": None, "handles": [], "paths": []}

        def add(name, handle):
            libs["paths"].append(name)
            libs["handles"].append(handle)
            return handle

        found = _dlopen("m", "libm.so.6")
        if found:
            add(*found)
        if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
            # idle OpenMP workers spin for a short time only, so they do not steal the cores
            # OpenBLAS's own threads need during the GEMMs that follow (read when libgomp loads)
            os.environ["GOMP_SPINCOUNT"] = "20000"
        if os.environ.get("SYMGRAPH_NO_OPENMP") is None:
            found = _dlopen("gomp", "libgomp.so.1")
            if found:
                libs["gomp"] = found[0]
                add(*found)
                on_fork_in_child(_after_fork_in_child)
        blas = openblas_path()
        if blas:
            try:
                libs["blas_handle"] = add(blas, ctypes.CDLL(blas, mode=ctypes.RTLD_GLOBAL))
                libs["blas"] = blas
            except OSError:
                pass
        _state["libs"] = libs
        return libs


def _dlopen(name: str, soname: str):
    """``(what was loaded, handle)`` for a system library, by its usual soname first (a plain
    ``dlopen``), then through ``ctypes.util.find_library`` (which runs ``ldconfig``, slower);
    None if neither works."""
    try:
        return soname, ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass
    from ctypes.util import find_library
    path = find_library(name)
    if path:
        try:
            return path, ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass
    return None


def jit_libraries() -> dict:
    """``libraries()``, also registered with LLVM so MCJIT resolves their symbols."""
    libs = libraries()
    if "jit_libs" not in _state:
        with _lock:
            if "jit_libs" not in _state:
                binding = llvm()
                for path in libs["paths"]:
                    binding.load_library_permanently(path)
                _state["jit_libs"] = True
    return libs


def on_fork_in_child(hook) -> None:
    """Run ``hook()`` in the child after every fork made through Python (``os.fork``,
    ``multiprocessing``); nothing where there is no ``fork``."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=hook)


def _after_fork_in_child() -> None:
    """libgomp is not fork-safe: the forking thread's pool still lists the parent's workers,
    which do not exist in the child, so the next parallel region waits for them forever.
    From here on (and in this child's own children) generated code runs on one thread."""
    global _lock
    _lock = threading.RLock()  # another thread of the parent may have held it
    _state["forked"] = True
    for code in list(_threaded_code):
        code.set_threads(1)


def forked_child() -> bool:
    """Whether this process was forked from one that had libgomp loaded (see
    ``_after_fork_in_child``): compiled code then runs single-threaded."""
    return bool(_state.get("forked"))


def usable_threads(n: int) -> int:
    """The thread count generated code may use for a request of ``n``: 1 in a forked child."""
    return 1 if _state.get("forked") else int(n)


def track_threads(code) -> None:
    """Remember loaded code whose ``set_threads`` a fork has to reach."""
    if code.nthreads is not None:
        _threaded_code.add(code)


def set_blas_threads(n: int) -> None:
    """Match OpenBLAS's thread count to ours (process-wide)."""
    h = libraries()["blas_handle"]
    if h is None or _state.get("blas_threads") == n:
        return
    try:
        fn = h.scipy_openblas_set_num_threads64_
    except AttributeError:  # pragma: no cover - older wheels
        return
    fn.argtypes = [ctypes.c_int]
    fn(int(n))
    _state["blas_threads"] = n


def new_target_machine(aot: bool = False):
    """A host target machine (MCJIT defaults, or PIC / default code model for export)."""
    binding = llvm()
    target = binding.Target.from_triple(binding.get_process_triple())
    kw = dict(cpu=binding.get_host_cpu_name(), features=binding.get_host_cpu_features().flatten(),
              opt=3)
    if aot:
        kw.update(reloc="pic", codemodel="default")
    else:
        kw.update(jit=True)
    return target.create_target_machine(**kw)


def export_target_machine(triple: str, cpu: str, features: str):
    """A target machine for ahead-of-time code (export) for ``cpu`` + ``features`` on
    ``triple``: position-independent code, default code model; never the host's features
    unless the caller asked for them."""
    binding = llvm()
    target = binding.Target.from_triple(triple)
    return target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="pic",
                                        codemodel="default")


def target_machine(aot: bool = False):
    """The shared target machine used to optimise and emit (never handed to an engine,
    which would take ownership of it)."""
    key = "tm_aot" if aot else "tm"
    if key not in _state:
        _state[key] = new_target_machine(aot)
    return _state[key]


def target_id() -> str:
    binding = llvm()
    import llvmlite
    return "|".join([binding.get_process_triple(), binding.get_host_cpu_name(),
                     binding.get_host_cpu_features().flatten(), llvmlite.__version__])


def host_id() -> str:
    """The host CPU as the warm-start key needs it, read without llvmlite where possible
    (``/proc/cpuinfo``: vendor, family, model, stepping, flags), plus the llvmlite version."""
    if "host" not in _state:
        import platform
        fields = {}
        try:
            with open("/proc/cpuinfo") as fh:
                for line in fh:
                    if not line.strip():
                        break  # the first processor is enough
                    key, _, value = line.partition(":")
                    key = key.strip()
                    if key in ("vendor_id", "cpu family", "model", "model name", "stepping",
                               "flags", "CPU implementer", "CPU architecture", "CPU variant",
                               "CPU part", "CPU revision", "Features"):
                        fields[key] = " ".join(value.split())
        except OSError:
            pass
        if fields:
            from llvmlite import __version__ as llvmlite_version
            _state["host"] = "|".join([platform.machine(), llvmlite_version] +
                                      [f"{k}={v}" for k, v in sorted(fields.items())])
        else:
            _state["host"] = target_id()
    return _state["host"]


def streaming_stores() -> bool:
    """Whether generated code may use x86 non-temporal stores (and ``sfence``)."""
    if os.environ.get("SYMGRAPH_NO_STREAMING"):
        return False
    # the host's architecture, read without llvmlite (a warm start never imports it)
    import platform
    return ctypes.sizeof(ctypes.c_void_p) == 8 and platform.machine().lower() in ("x86_64", "amd64")


def math_module() -> tuple[str | None, set[str]]:
    """The text of ``kernels/llvm/math.ll`` (if shipped) and the functions it defines."""
    if "math" not in _state:
        text, names = None, set()
        try:
            from ..resources import kernels_dir
            path = kernels_dir() / "llvm" / "math.ll"
            if path.is_file():
                text = path.read_text()
                names = set(re.findall(r'define[^@\n]*@"?(sg_[A-Za-z0-9_]+)"?\s*\(', text))
        except FileNotFoundError:  # pragma: no cover
            pass
        _state["math"] = (text, names)
    return _state["math"]


def math_hash() -> str:
    text, _ = math_module()
    return hashlib.sha256((text or "").encode()).hexdigest()[:16]


def optimize(ir_text: str, aot: bool = False, tm=None):
    """Parse, link the math helpers, verify and run the O3 pipeline (for ``tm``, default the
    shared host target machine); returns a ModuleRef."""
    binding = llvm()
    tm = tm or target_machine(aot)
    ref = binding.parse_assembly(ir_text)
    text, _names = math_module()
    if text:
        ref.link_in(binding.parse_assembly(text))
    ref.triple = tm.triple
    ref.data_layout = str(tm.target_data)
    ref.verify()
    pto = binding.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = False  # full unrolling of static loops costs 5x compile time for little
    pb = binding.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(ref, pb)
    return ref


def emit_object(ref, aot: bool = False, tm=None) -> bytes:
    return bytes((tm or target_machine(aot)).emit_object(ref))


def emit_assembly(ref) -> str:
    return target_machine().emit_assembly(ref)


class Loaded:
    """Object code loaded into its own MCJIT engine; keeps the engine alive."""

    def __init__(self, obj: bytes, entry: str):
        binding = llvm()
        jit_libraries()
        # the engine owns its target machine, so it gets a fresh one
        self.engine = binding.create_mcjit_compiler(binding.parse_assembly(""), new_target_machine())
        self.engine.add_object_file(binding.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        self.address = self.engine.get_function_address(entry)
        if not self.address:
            raise RuntimeError(f"entry point {entry} missing from the object code")
        self.cfunc = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(self.address)
        addr = self.engine.get_global_value_address("sg_num_threads")
        self.nthreads = ctypes.c_int32.from_address(addr) if addr else None
        addr = self.engine.get_global_value_address("sg_profile")
        self.profile_addr = addr or None
        track_threads(self)

    def global_address(self, name: str) -> int:
        """The address of global ``name`` in the loaded code (0 when absent)."""
        return self.engine.get_global_value_address(name)

    def set_threads(self, n: int) -> None:
        if self.nthreads is not None:
            self.nthreads.value = usable_threads(n)


def object_args_supported() -> bool:
    """Whether a NumPy array's data pointer sits at ``OBJECT_DATA_OFFSET`` in the object, so
    generated code can take array objects (``id(arr)``) instead of extracted pointers."""
    if "objargs" not in _state:
        from ..codegen.numpy_abi import OBJECT_DATA_OFFSET, OBJECT_FLAGS_OFFSET
        ok = ctypes.sizeof(ctypes.c_void_p) == 8
        for a in (np.zeros(3), np.zeros((), np.float32), np.empty((2, 0)), np.arange(5)[1:],
                  np.zeros((3, 4))[:, ::2], np.zeros((3, 4)).T):
            ok = ok and ctypes.c_void_p.from_address(id(a) + OBJECT_DATA_OFFSET).value == \
                a.__array_interface__["data"][0]
            flags = ctypes.c_int32.from_address(id(a) + OBJECT_FLAGS_OFFSET).value
            ok = ok and bool(flags & 1) == bool(a.flags.c_contiguous)
        _state["objargs"] = bool(ok)
    return _state["objargs"]


def cycles_per_second() -> float:
    """Calibrate ``llvm.readcyclecounter`` against ``time.perf_counter`` (once)."""
    if "cps" not in _state:
        import time
        text = ("declare i64 @llvm.readcyclecounter()\n"
                "define i64 @sg_clock() {\n  %t = call i64 @llvm.readcyclecounter()\n  ret i64 %t\n}\n")
        ref = optimize(text)
        loaded = Loaded(emit_object(ref), "sg_clock")
        fn = ctypes.CFUNCTYPE(ctypes.c_int64)(loaded.address)
        t0, c0 = time.perf_counter(), fn()
        time.sleep(0.05)
        t1, c1 = time.perf_counter(), fn()
        _state["cps"] = (c1 - c0) / (t1 - t0)
        _state["clock_engine"] = loaded
    return _state["cps"]
