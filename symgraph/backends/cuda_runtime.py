"""The GPU side of the cuda backend: pycuda context, stream, memory, modules, cuBLAS.

Everything here needs an NVIDIA GPU, its driver and pycuda; ``device()`` raises a
``CompileError`` that says which one is missing.  One ``Device`` per process: the device's
primary context (shared with cuBLAS, which uses the runtime API on the same context), one
stream for every launch and copy, a pooled allocator, and cuBLAS loaded through ctypes when a
``libcublas`` can be found (the ``nvidia-cublas`` wheel or the system CUDA).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import functools
import glob
import os
import sys
import threading

import numpy as np

from ..errors import CompileError
from ..forksafe import renew_locks_after_fork

_lock = threading.Lock()
renew_locks_after_fork(sys.modules[__name__], "_lock")  # a fork while another thread holds it
_device = None


def pycuda_driver():
    """``pycuda.driver``, or a CompileError naming what is missing."""
    try:
        import pycuda.driver as drv
    except ImportError as e:
        if "libcuda" in str(e):
            raise CompileError("the cuda backend found pycuda but not the NVIDIA driver library "
                               f"(libcuda.so.1): {e}. Install the NVIDIA driver on a machine with a GPU."
                               ) from None
        if "undefined symbol" in str(e):
            raise CompileError("pycuda's extension does not match the NVIDIA driver library (built "
                               f"against a newer CUDA than the driver provides?): {e}. Rebuild pycuda "
                               "with a CUDA toolkit no newer than the driver (nvidia-smi shows its "
                               "CUDA version).") from None
        raise CompileError("the cuda backend needs pycuda: pip install 'symgraph[cuda]' (pycuda builds "
                           "from source against the CUDA toolkit; see docs/gpu.md for an offline "
                           f"install) [{e}]") from None
    return drv


class Device:
    """The process-wide GPU state (created on first use)."""

    def __init__(self, ordinal: int = 0):
        drv = pycuda_driver()
        self.drv = drv
        try:
            drv.init()
            count = drv.Device.count()
        except Exception as e:  # pycuda raises its own error types (RuntimeError, LogicError)
            raise CompileError(f"the cuda backend could not initialise the NVIDIA driver: {e} "
                               "(no GPU, or the driver is not loaded)") from None
        if count == 0:
            raise CompileError("the cuda backend found the NVIDIA driver but no GPU")
        if not 0 <= ordinal < count:
            raise CompileError(f"SYMGRAPH_CUDA_DEVICE={ordinal}, but there are only {count} GPU(s)")
        self.dev = drv.Device(ordinal)
        self.ctx = self.dev.retain_primary_context()
        # pycuda keeps a context stack per thread and aborts the process when a thread ends (or
        # the interpreter exits) with a context still pushed.  Only the main thread keeps the
        # context current after this (so pycuda.gpuarray works at once; popped at exit); every
        # other use pushes and pops around its work (``Device.active``).
        self.ctx.push()
        self._kept = threading.current_thread() is threading.main_thread()
        try:
            major, minor = self.dev.compute_capability()
            self.cc = (int(major), int(minor))
            self.arch = f"sm_{major}{minor}"
            self.name = self.dev.name()
            self.driver_version = int(drv.get_driver_version())  # e.g. 12040 for CUDA 12.4
            self.stream = drv.Stream()
            from pycuda.tools import DeviceMemoryPool
            self.pool = DeviceMemoryPool()  # frees in the context current at its creation
            self.cublas = Cublas.load(self.stream)
        finally:
            if not self._kept:
                self.ctx.pop()
        atexit.register(self.close)

    def active(self):
        """A context manager that makes the device's context current on this thread."""
        return _Active(self.ctx)

    def alloc(self, nbytes: int):
        return self.pool.allocate(max(int(nbytes), 1))

    def sync_foreign_stream(self, handle: int) -> None:
        """Wait for another library's stream (a device array's producer), current context."""
        status = _libcuda().cuStreamSynchronize(ctypes.c_void_p(handle))
        if status != 0:
            raise RuntimeError(f"cuStreamSynchronize on the array's stream failed (CUresult {status})")

    def close(self) -> None:
        """Release cuBLAS and the pooled memory, and pop the context this thread kept."""
        try:
            with self.active():
                if self.cublas is not None:
                    self.cublas.destroy()
                self.pool.stop_holding()
            if self._kept and threading.current_thread() is threading.main_thread():
                self._kept = False
                self.ctx.pop()
        except Exception:  # pragma: no cover - interpreter shutdown order
            pass


class _Active:
    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        self.ctx.push()
        return self

    def __exit__(self, *exc) -> None:
        self.ctx.pop()


def device() -> Device:
    """The shared ``Device`` (raises ``CompileError`` when no GPU can be used)."""
    global _device
    with _lock:
        if _device is None:
            _device = Device(int(os.environ.get("SYMGRAPH_CUDA_DEVICE", "0")))
        return _device


def gpu_available() -> bool:
    """True when pycuda, the driver and a GPU are all there (never raises)."""
    try:
        device()
        return True
    except CompileError:
        return False


# --- cuBLAS through ctypes -------------------------------------------------------------------

def _cublas_candidates() -> list[str]:
    """libcublas files to try, newest first: the pip wheels (``nvidia/cu13/lib`` for CUDA 13,
    ``nvidia/cublas/lib`` for CUDA 12), the loader's search path, then the system toolkit."""
    candidates = []
    try:
        import nvidia
        for root in getattr(nvidia, "__path__", []):
            candidates += sorted(glob.glob(os.path.join(root, "*", "lib", "libcublas.so*")), reverse=True)
    except ImportError:
        pass
    candidates += ["libcublas.so.13", "libcublas.so.12"]
    lib = ctypes.util.find_library("cublas")
    if lib:
        candidates.append(lib)
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "lib64", "libcublas.so*")), reverse=True)
    seen: list[str] = []
    for name in candidates:
        if "Lt" not in os.path.basename(name) and name not in seen:
            seen.append(name)
    return seen


@functools.cache
def _find_cublas() -> str | None:
    for name in _cublas_candidates():
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def cublas_available() -> bool:
    return _find_cublas() is not None and os.environ.get("SYMGRAPH_CUDA_CUBLAS", "1") != "0"


_VP, _INT, _I64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
# ctypes prototypes of the cuBLAS v2 entry points used (cublas_api.h; cublasStatus_t is an int
# enum, cublasOperation_t an int enum, strides are ``long long int``).  The test suite checks
# them against the installed header when there is one.
CUBLAS_PROTOTYPES: dict[str, list] = {
    "cublasCreate_v2": [ctypes.POINTER(_VP)],
    "cublasDestroy_v2": [_VP],
    "cublasSetStream_v2": [_VP, _VP],
    "cublasSgemm_v2": [_VP, _INT, _INT, _INT, _INT, _INT, _VP, _VP, _INT, _VP, _INT, _VP, _VP, _INT],
    "cublasDgemm_v2": [_VP, _INT, _INT, _INT, _INT, _INT, _VP, _VP, _INT, _VP, _INT, _VP, _VP, _INT],
    "cublasSgemmStridedBatched": [_VP, _INT, _INT, _INT, _INT, _INT, _VP, _VP, _INT, _I64, _VP, _INT,
                                  _I64, _VP, _VP, _INT, _I64, _INT],
    "cublasDgemmStridedBatched": [_VP, _INT, _INT, _INT, _INT, _INT, _VP, _VP, _INT, _I64, _VP, _INT,
                                  _I64, _VP, _VP, _INT, _I64, _INT],
}
_INT_MAX = 2 ** 31 - 1


def gemm_ld(ld: int, rows: int, cols: int, what: str) -> int:
    """A valid cuBLAS leading dimension for a column-major ``rows x cols`` operand: cuBLAS
    rejects ``ld < max(1, rows)`` even when the matrix has one column (where ``ld`` never
    moves an address), so that case is raised to ``rows``; anything else is a layout bug."""
    need = max(1, rows)
    if ld >= need:
        return int(ld)
    if cols <= 1:
        return need
    raise CompileError(f"cuBLAS GEMM: leading dimension {ld} of {what} is below its {rows} rows")


def cublas_operands(trans_a: bool, trans_b: bool, m: int, n: int, k: int, lda: int, ldb: int,
                    ldc: int) -> tuple:
    """The column-major call for the row-major ``C (m x n) = op(A) op(B)``: cuBLAS computes
    ``C^T (n x m) = op(B)^T op(A)^T``, reading each row-major buffer as its transpose.
    Returns ``(transa, transb, m', n', k, ld of B, ld of A, ldc)`` for cuBLAS's argument order."""
    ta = Cublas.OP_T if trans_b else Cublas.OP_N
    tb = Cublas.OP_T if trans_a else Cublas.OP_N
    # column-major shape of each stored buffer: B is (k x n) when transposed, else (n x k), ...
    ldb = gemm_ld(ldb, k if trans_b else n, n if trans_b else k, "B")
    lda = gemm_ld(lda, m if trans_a else k, k if trans_a else m, "A")
    ldc = gemm_ld(ldc, n, m, "C")
    for v in (m, n, k, lda, ldb, ldc):
        if v > _INT_MAX:
            raise CompileError(f"cuBLAS GEMM: dimension {v} does not fit cuBLAS's 32-bit int")
    return ta, tb, n, m, k, ldb, lda, ldc


class Cublas:
    """The few cuBLAS v2 entry points we need, on our stream and the current context."""

    OP_N, OP_T = 0, 1

    def __init__(self, lib, stream):
        self.lib = lib
        for name, argtypes in CUBLAS_PROTOTYPES.items():
            fn = getattr(lib, name)  # AttributeError: not a usable cuBLAS
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
        self.handle = ctypes.c_void_p()
        # the handle belongs to the context current now (the device's primary context)
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(int(stream.handle))),
                    "cublasSetStream")

    @classmethod
    def load(cls, stream):
        """The first candidate library that loads and creates a handle (a CUDA 13 cuBLAS fails
        ``cublasCreate`` on a CUDA 12 driver, so the next one is tried), or None."""
        if os.environ.get("SYMGRAPH_CUDA_CUBLAS", "1") == "0":
            return None
        for name in _cublas_candidates():
            try:
                return cls(ctypes.CDLL(name), stream)
            except (OSError, CompileError, AttributeError):
                continue
        return None

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CompileError(f"{what} failed with cuBLAS status {status}")

    def gemm(self, dtype: str, trans_a: bool, trans_b: bool, m: int, n: int, k: int, alpha: float,
             a: int, lda: int, b: int, ldb: int, beta: float, c: int, ldc: int, batch: int = 1,
             sa: int = 0, sb: int = 0, sc: int = 0) -> None:
        """Row-major ``C = alpha op(A) op(B) + beta C`` (pointers are device addresses, strides
        in elements), issued as the column-major product ``C^T = op(B)^T op(A)^T``; alpha and
        beta are host scalars (cuBLAS's default pointer mode)."""
        if m == 0 or n == 0:
            return
        ct = ctypes.c_float if dtype == "float32" else ctypes.c_double
        al, be = ct(alpha), ct(beta)
        ta, tb, m2, n2, k2, ldb, lda, ldc = cublas_operands(trans_a, trans_b, m, n, k, lda, ldb, ldc)
        p = ctypes.c_void_p
        prefix = "S" if dtype == "float32" else "D"
        if batch == 1:
            fn = getattr(self.lib, f"cublas{prefix}gemm_v2")
            self._check(fn(self.handle, ta, tb, m2, n2, k2, ctypes.byref(al), p(b), ldb, p(a), lda,
                           ctypes.byref(be), p(c), ldc), "cublasGemm")
        else:
            fn = getattr(self.lib, f"cublas{prefix}gemmStridedBatched")
            self._check(fn(self.handle, ta, tb, m2, n2, k2, ctypes.byref(al), p(b), ldb, sb, p(a), lda, sa,
                           ctypes.byref(be), p(c), ldc, sc, batch), "cublasGemmStridedBatched")

    def destroy(self) -> None:
        if self.handle:
            self.lib.cublasDestroy_v2(self.handle)
            self.handle = ctypes.c_void_p()


# --- device arrays passed in by the caller -----------------------------------------------------

def device_pointer(value) -> int | None:
    """The device address of a GPU array (``__cuda_array_interface__``: pycuda GPUArray, CuPy,
    PyTorch CUDA tensors), or None for host data."""
    iface = getattr(value, "__cuda_array_interface__", None)
    if iface is None:
        return None
    strides = iface.get("strides")
    if strides is not None:
        expect, acc = [], np.dtype(iface["typestr"]).itemsize
        for d in reversed(iface["shape"]):
            expect.append(acc)
            acc *= max(int(d), 1)
        if any(d != 1 and s != e for d, s, e in zip(iface["shape"], strides, reversed(expect))):
            raise ValueError("device arrays passed to a cuda function must be C-contiguous")
    return int(iface["data"][0])


def foreign_stream(value) -> int | None:
    """The stream named by a device array's ``__cuda_array_interface__`` (v3 ``"stream"``) that
    our stream does not already wait for: None for no stream and for the legacy default stream
    (1; our stream is a blocking one, so it waits for it), else the handle (2 is the per-thread
    default stream)."""
    s = value.__cuda_array_interface__.get("stream")
    if s is None or int(s) in (0, 1):
        return None
    return int(s)


@functools.cache
def _libcuda():
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
    lib.cuStreamSynchronize.restype = ctypes.c_int
    return lib
