"""A stand-in cuda device for tests without a GPU: a fake driver whose "device memory" is host
memory and whose kernels are the generated CUDA C compiled for the host
(``tests/gpu/host_emulation.py``); cuBLAS is replaced by a NumPy GEMM honouring the same
row-major contract the runtime relies on.  ``install(monkeypatch)`` makes the cuda backend use
it."""

from __future__ import annotations

import ctypes

import numpy as np

from symgraph.backends import cuda_compiler, cuda_runtime
from tests.gpu.host_emulation import build_host_library, host_source


class FakeAlloc:
    def __init__(self, nbytes):
        self.buf = np.zeros(int(nbytes) + 64, np.uint8)

    def __int__(self):
        return int(self.buf.ctypes.data)


class FakeFunction:
    def __init__(self, fn):
        self.fn = fn

    def prepare(self, fmt):
        # pycuda's struct format: "P" a device pointer, "q" a long long by value (a run-time size)
        self.fn.argtypes = [{"P": ctypes.c_void_p, "q": ctypes.c_longlong}[c] for c in fmt]

    def prepared_async_call(self, grid, block, stream, *args):
        # pycuda takes Python tuples (boost.python py::tuple) of at most 3 unsigned ints, and
        # cuLaunchKernel's limits: block <= 1024 threads, grid x < 2^31, grid y and z <= 65535
        assert isinstance(grid, tuple) and isinstance(block, tuple) and len(grid) == 3 == len(block)
        assert all(isinstance(v, int) and v >= 1 for v in grid + block)
        assert block[0] * block[1] * block[2] <= 1024
        assert grid[0] <= 2 ** 31 - 1 and grid[1] <= 65535 and grid[2] <= 65535
        assert all(isinstance(a, int) for a in args)  # packed with the "P" format
        self.fn(*args)


class FakeModule:
    def __init__(self, source: str):
        kernels = source.split("// ---- generated kernels", 1)[1]
        self.lib = build_host_library(host_source([kernels]))

    def get_function(self, name):
        return FakeFunction(getattr(self.lib, name))


class FakeDriver:
    compiled: list = []

    @staticmethod
    def memcpy_htod(dst, src):
        ctypes.memmove(int(dst), np.ascontiguousarray(src).ctypes.data, src.nbytes)

    @staticmethod
    def memcpy_htod_async(dst, src, stream=None):
        FakeDriver.memcpy_htod(dst, src)

    @staticmethod
    def memcpy_dtoh(dst, src):
        ctypes.memmove(dst.ctypes.data, int(src), dst.nbytes)

    @staticmethod
    def memcpy_dtoh_async(dst, src, stream=None):
        FakeDriver.memcpy_dtoh(dst, src)

    @staticmethod
    def module_from_buffer(binary):
        FakeDriver.compiled.append(binary)
        return FakeModule(binary.decode())


class _Nothing:
    handle = 0

    def push(self):
        pass

    def pop(self):
        pass

    def synchronize(self):
        pass


def _host_array(ptr: int, dtype, count: int) -> np.ndarray:
    nbytes = count * np.dtype(dtype).itemsize
    raw = (ctypes.c_char * max(nbytes, 1)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count)


class NumpyCublas:
    """Row-major ``C = alpha op(A) op(B) + beta C`` on host pointers, like ``Cublas.gemm``."""

    def __init__(self):
        self.calls = 0

    def gemm(self, dtype, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch=1,
             sa=0, sb=0, sc=0):
        size = np.dtype(dtype).itemsize
        for i in range(batch):
            A = _mat(a + i * sa * size, dtype, (k, m) if trans_a else (m, k), lda)
            B = _mat(b + i * sb * size, dtype, (n, k) if trans_b else (k, n), ldb)
            C = _mat(c + i * sc * size, dtype, (m, n), ldc)
            prod = (A.T if trans_a else A) @ (B.T if trans_b else B)
            C[...] = alpha * prod + (beta * C if beta else 0)
            self.calls += 1


def _mat(ptr, dtype, shape, ld):
    rows, cols = shape
    flat = _host_array(ptr, dtype, (rows - 1) * ld + cols if rows else 0)
    return np.lib.stride_tricks.as_strided(flat, shape, (ld * flat.itemsize, flat.itemsize))


class FakeDevice:
    def __init__(self, cublas=None):
        self.drv = FakeDriver
        self.ctx = _Nothing()
        self.stream = _Nothing()
        self.arch = "sm_80"
        self.name = "fake"
        self.cublas = cublas
        self.live = 0
        self.synced: list = []

    def alloc(self, nbytes):
        return FakeAlloc(nbytes)

    def sync_foreign_stream(self, handle):
        self.synced.append(handle)


def install(monkeypatch) -> FakeDevice:
    """Route the cuda backend to a new ``FakeDevice`` for the rest of the test."""
    dev = FakeDevice()
    monkeypatch.setattr(cuda_runtime, "device", lambda: dev)
    real = cuda_compiler.compile_module

    def compile_module(src, arch, kind="cubin"):  # the fake driver "loads" the source itself
        return src.encode() if kind == "cubin" else real(src, arch, kind)
    monkeypatch.setattr(cuda_compiler, "compile_module", compile_module)
    monkeypatch.delenv("SYMGRAPH_CUDA_CODEGEN_ONLY", raising=False)
    return dev
