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
import threading

import numpy as np

from ..errors import CompileError

_lock = threading.Lock()
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
        self.dev = drv.Device(ordinal)
        self.ctx = self.dev.retain_primary_context()
        self.ctx.push()
        major, minor = self.dev.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.name = self.dev.name()
        self.stream = drv.Stream()
        from pycuda.tools import DeviceMemoryPool
        self.pool = DeviceMemoryPool()
        self.cublas = Cublas.load(self.stream)
        atexit.register(self.close)

    def alloc(self, nbytes: int):
        return self.pool.allocate(max(int(nbytes), 1))

    def close(self) -> None:
        try:
            if self.cublas is not None:
                self.cublas.destroy()
            self.pool.stop_holding()
            self.ctx.pop()
        except Exception:  # pragma: no cover - interpreter shutdown order
            pass


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

@functools.cache
def _find_cublas() -> str | None:
    candidates = []
    try:
        import nvidia
        for root in getattr(nvidia, "__path__", []):
            candidates += sorted(glob.glob(os.path.join(root, "*", "lib", "libcublas.so*")), reverse=True)
    except ImportError:
        pass
    lib = ctypes.util.find_library("cublas")
    if lib:
        candidates.append(lib)
    candidates += sorted(glob.glob("/usr/local/cuda/lib64/libcublas.so*"), reverse=True)
    for name in candidates:
        if "Lt" in os.path.basename(name):
            continue
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def cublas_available() -> bool:
    return _find_cublas() is not None and os.environ.get("SYMGRAPH_CUDA_CUBLAS", "1") != "0"


class Cublas:
    """The few cuBLAS v2 entry points we need, on our stream and the current context."""

    OP_N, OP_T = 0, 1

    def __init__(self, lib, stream):
        self.lib = lib
        self.handle = ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream.handle)), "cublasSetStream")
        vp, i, ll = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
        for name in ("cublasSgemm_v2", "cublasDgemm_v2"):
            getattr(lib, name).argtypes = [vp, i, i, i, i, i, vp, vp, i, vp, i, vp, vp, i]
        for name in ("cublasSgemmStridedBatched", "cublasDgemmStridedBatched"):
            getattr(lib, name).argtypes = [vp, i, i, i, i, i, vp, vp, i, ll, vp, i, ll, vp, vp, i, ll, i]

    @classmethod
    def load(cls, stream):
        if not cublas_available():
            return None
        try:
            return cls(ctypes.CDLL(_find_cublas()), stream)
        except (OSError, CompileError, AttributeError):
            return None

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise CompileError(f"{what} failed with cuBLAS status {status}")

    def gemm(self, dtype: str, trans_a: bool, trans_b: bool, m: int, n: int, k: int, alpha: float,
             a: int, lda: int, b: int, ldb: int, beta: float, c: int, ldc: int, batch: int = 1,
             sa: int = 0, sb: int = 0, sc: int = 0) -> None:
        """Row-major ``C = alpha op(A) op(B) + beta C`` (pointers are device addresses, strides
        in elements), issued as the column-major product ``C^T = op(B)^T op(A)^T``."""
        ct = ctypes.c_float if dtype == "float32" else ctypes.c_double
        al, be = ct(alpha), ct(beta)
        ta = self.OP_T if trans_b else self.OP_N
        tb = self.OP_T if trans_a else self.OP_N
        p = ctypes.c_void_p
        prefix = "S" if dtype == "float32" else "D"
        if batch == 1:
            fn = getattr(self.lib, f"cublas{prefix}gemm_v2")
            self._check(fn(self.handle, ta, tb, n, m, k, ctypes.byref(al), p(b), ldb, p(a), lda,
                           ctypes.byref(be), p(c), ldc), "cublasGemm")
        else:
            fn = getattr(self.lib, f"cublas{prefix}gemmStridedBatched")
            self._check(fn(self.handle, ta, tb, n, m, k, ctypes.byref(al), p(b), ldb, sb, p(a), lda, sa,
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
