"""The cuda backend against the contracts of the real APIs it calls, without a GPU: pycuda's
per-thread context stack (a thread that ends with a context pushed aborts the process),
cuBLAS's column-major BLAS semantics and argument checks, the ctypes prototypes against the
installed headers, nvcc's CUBIN output, launch limits and device-array streams."""

from __future__ import annotations

import ctypes
import glob
import os
import re
import struct
import sys
import threading
import types

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import cuda_compiler, cuda_runtime
from symgraph.backends.cuda import CudaCodegen
from symgraph.compile import build_fgraph
from symgraph.errors import CompileError
from symgraph.rewrite import rewrite_graph

needs_nvcc = pytest.mark.skipif(cuda_compiler.find_nvcc() is None, reason="nvcc is not installed")


# --- pycuda's context stack -------------------------------------------------------------------

class _Stack(threading.local):
    def __init__(self):
        self.items: list = []


class FakePycuda:
    """``pycuda.driver`` as far as ``Device`` uses it, with pycuda's rules: the context stack
    is per thread, ``Context.pop`` pops the calling thread's top, and a thread must not end
    with contexts pushed (``leaked`` records those that did)."""

    def __init__(self, count=1, init_error=None):
        self.stack = _Stack()
        self.leaked: list = []
        self.count, self.init_error = count, init_error
        fake = self

        class Context:
            def push(self):
                fake.stack.items.append(self)

            @staticmethod
            def pop():
                if not fake.stack.items:
                    raise RuntimeError("cannot pop non-current context")
                fake.stack.items.pop()

        class Device:
            def __init__(self, ordinal):
                if ordinal >= fake.count:
                    raise RuntimeError("invalid device ordinal")

            @staticmethod
            def count():
                return fake.count

            def retain_primary_context(self):
                return Context()

            def compute_capability(self):
                return (9, 0)

            def name(self):
                return "fake H100"

        class Stream:
            handle = 1234

            def __init__(self, flags=0):
                fake.need_context("Stream")

        class DeviceMemoryPool:
            def __init__(self):
                fake.need_context("DeviceMemoryPool")

            def stop_holding(self):
                fake.need_context("stop_holding")

        self.driver = types.SimpleNamespace(Device=Device, Stream=Stream, init=self.init,
                                            get_driver_version=lambda: 12040)
        self.tools = types.SimpleNamespace(DeviceMemoryPool=DeviceMemoryPool)

    def init(self):
        if self.init_error is not None:
            raise self.init_error

    def need_context(self, what):
        assert self.stack.items, f"{what} needs a current context"

    def run_in_thread(self, fn):
        out = {}

        def body():
            try:
                out["value"] = fn()
            except Exception as e:  # noqa: BLE001 - handed back to the test
                out["error"] = e
            if self.stack.items:
                self.leaked.append(len(self.stack.items))
        t = threading.Thread(target=body)
        t.start()
        t.join()
        if "error" in out:
            raise out["error"]
        return out["value"]


@pytest.fixture
def fake_pycuda(monkeypatch):
    fake = FakePycuda()
    monkeypatch.setattr(cuda_runtime, "pycuda_driver", lambda: fake.driver)
    monkeypatch.setitem(sys.modules, "pycuda", types.ModuleType("pycuda"))
    monkeypatch.setitem(sys.modules, "pycuda.tools", fake.tools)
    monkeypatch.setattr(cuda_runtime.Cublas, "load", classmethod(lambda cls, stream: None))
    monkeypatch.setattr(cuda_runtime.atexit, "register", lambda fn: None)
    return fake


def test_device_made_on_a_worker_thread_leaves_its_stack_empty(fake_pycuda):
    dev = fake_pycuda.run_in_thread(lambda: cuda_runtime.Device(0))
    assert fake_pycuda.leaked == []  # pycuda would abort() here otherwise
    assert dev.arch == "sm_90" and dev.cc == (9, 0) and dev.driver_version == 12040

    def use():
        with dev.active():
            fake_pycuda.need_context("work")
        return len(fake_pycuda.stack.items)
    assert fake_pycuda.run_in_thread(use) == 0 and fake_pycuda.leaked == []
    dev.close()  # pushes for its own work; this (main) thread kept nothing
    assert fake_pycuda.stack.items == []


def test_device_made_on_the_main_thread_keeps_the_context_until_close(fake_pycuda):
    dev = cuda_runtime.Device(0)
    assert len(fake_pycuda.stack.items) == 1  # pycuda.gpuarray works right away
    dev.close()
    assert fake_pycuda.stack.items == []
    dev.close()  # a second close must not pop someone else's context
    assert fake_pycuda.stack.items == []


@pytest.mark.parametrize("setup, message", [
    (dict(init_error=RuntimeError("cuInit failed: CUDA_ERROR_NO_DEVICE")), "could not initialise"),
    (dict(count=0), "no GPU"),
])
def test_missing_gpu_is_a_compile_error(monkeypatch, fake_pycuda, setup, message):
    for k, v in setup.items():
        setattr(fake_pycuda, k, v)
    with pytest.raises(CompileError, match=message):
        cuda_runtime.Device(0)


def test_bad_device_ordinal_is_a_compile_error(fake_pycuda):
    with pytest.raises(CompileError, match="SYMGRAPH_CUDA_DEVICE=3"):
        cuda_runtime.Device(3)


# --- cuBLAS: column-major BLAS semantics ------------------------------------------------------

class ColumnMajorBlas:
    """A stand-in libcublas: ``cublas[SD]gemm_v2`` / ``...StridedBatched`` with BLAS's
    column-major meaning of every argument, returning CUBLAS_STATUS_INVALID_VALUE (7) where
    cuBLAS does (``ld < max(1, rows)``, negative sizes); pointers are host addresses."""

    def __init__(self):
        self.calls = []
        for name in cuda_runtime.CUBLAS_PROTOTYPES:
            setattr(self, name, self._make(name))

    def _make(self, name):
        def fn(*args):
            return getattr(self, "_" + re.sub(r"_v2$", "", name[6:]))(*args)
        return fn

    def _Create(self, handle_ref):
        return 0

    def _Destroy(self, handle):
        return 0

    def _SetStream(self, handle, stream):
        return 0

    def _Sgemm(self, *a):
        return self._gemm("float32", *a)

    def _Dgemm(self, *a):
        return self._gemm("float64", *a)

    def _SgemmStridedBatched(self, *a):
        return self._batched("float32", *a)

    def _DgemmStridedBatched(self, *a):
        return self._batched("float64", *a)

    def _gemm(self, dt, h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc):
        return self._batched(dt, h, ta, tb, m, n, k, al, A, lda, 0, B, ldb, 0, be, C, ldc, 0, 1)

    def _batched(self, dt, h, ta, tb, m, n, k, al, A, lda, sa, B, ldb, sb, be, C, ldc, sc, count):
        self.calls.append((ta, tb, m, n, k, lda, ldb, ldc, count))
        rows_a, rows_b = (k if ta else m), (n if tb else k)
        if min(m, n, k, count) < 0 or lda < max(1, rows_a) or ldb < max(1, rows_b) or ldc < max(1, m):
            return 7
        size = np.dtype(dt).itemsize
        alpha, beta = al._obj.value, be._obj.value
        for i in range(count):
            Am = _colmajor(A.value + i * sa * size, dt, (rows_a, m if ta else k), lda)
            Bm = _colmajor(B.value + i * sb * size, dt, (rows_b, k if tb else n), ldb)
            Cm = _colmajor(C.value + i * sc * size, dt, (m, n), ldc)
            prod = (Am.T if ta else Am) @ (Bm.T if tb else Bm)
            Cm[...] = alpha * prod + (beta * Cm if beta else 0)
        return 0


def _colmajor(ptr, dtype, shape, ld):
    rows, cols = shape
    count = (cols - 1) * ld + rows if rows and cols else 0
    raw = (ctypes.c_char * max(count * np.dtype(dtype).itemsize, 1)).from_address(ptr)
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    item = np.dtype(dtype).itemsize
    return np.lib.stride_tricks.as_strided(flat, shape, (item, ld * item))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n, k", [(3, 5, 4), (1, 6, 2), (4, 1, 3), (5, 3, 1), (1, 1, 7)])
def test_row_major_product_through_column_major_cublas(dtype, trans_a, trans_b, m, n, k):
    """``Cublas.gemm`` gives the row-major product through a BLAS with cuBLAS's argument
    checks, for every transpose and for the degenerate shapes whose leading dimensions the
    lowering writes as 1 (one-column operands)."""
    rng = np.random.default_rng(0)
    lib = ColumnMajorBlas()
    cb = cuda_runtime.Cublas(lib, types.SimpleNamespace(handle=0))
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = np.full((m, n), 2.0, dtype)
    want = 0.5 * ((a.T if trans_a else a) @ (b.T if trans_b else b)) + 3.0 * c
    # leading dimensions as a row-major lowering writes them (row strides; 1 for single rows)
    lda, ldb = (a.shape[1] if a.shape[0] > 1 else 1), (b.shape[1] if b.shape[0] > 1 else 1)
    cb.gemm(dtype, trans_a, trans_b, m, n, k, 0.5, a.ctypes.data, lda, b.ctypes.data, ldb, 3.0,
            c.ctypes.data, n)
    np.testing.assert_allclose(c, want, rtol=1e-5)


def test_strided_batched_product_through_column_major_cublas():
    rng = np.random.default_rng(1)
    lib = ColumnMajorBlas()
    cb = cuda_runtime.Cublas(lib, types.SimpleNamespace(handle=0))
    a = rng.standard_normal((4, 3, 5)).astype(np.float32)
    b = rng.standard_normal((4, 2, 5)).astype(np.float32)  # used transposed
    c = np.zeros((4, 3, 2), np.float32)
    cb.gemm("float32", False, True, 3, 2, 5, 1.0, a.ctypes.data, 5, b.ctypes.data, 5, 0.0,
            c.ctypes.data, 2, batch=4, sa=15, sb=10, sc=6)
    np.testing.assert_allclose(c, a @ b.transpose(0, 2, 1), rtol=1e-5)
    assert lib.calls[-1][-1] == 4


def test_a_real_layout_bug_is_refused_not_sent():
    with pytest.raises(CompileError, match="leading dimension 2 of A"):
        cuda_runtime.cublas_operands(False, False, 3, 4, 5, 2, 4, 4)


# --- ctypes prototypes against the installed headers ------------------------------------------

def _header(name: str) -> str | None:
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda",
             *sorted(glob.glob("/usr/local/cuda-*"))]
    paths = [os.path.join(r, "include", name) for r in roots if r]
    try:
        import nvidia
        paths += [p for root in nvidia.__path__ for p in glob.glob(os.path.join(root, "*", "include", name))]
    except ImportError:
        pass
    return next((p for p in paths if os.path.exists(p)), None)


def _prototype(text: str, fn: str) -> list[str]:
    code = re.sub(r"//[^\n]*", "", re.sub(r"/\*.*?\*/", "", text, flags=re.S))
    m = re.search(rf"\b{fn}\s*\(([^;{{]*?)\)\s*;", code)
    assert m, f"{fn} is not declared"
    return [p.strip() for p in m.group(1).split(",") if p.strip() and p.strip() != "void"]


def _ctype_kind(param: str) -> str:
    """The ctypes kind a C parameter needs: pointer, 64-bit int or 32-bit int."""
    param = re.sub(r"\b(const|restrict|__restrict__)\b", "", param).strip()
    if "*" in param or re.search(r"\b(cublasHandle_t|cudaStream_t|nvrtcProgram)\b", param):
        return "ptr"
    if re.search(r"long\s+long|int64_t", param):
        return "i64"
    return "i32"  # int, enums


def _kind(t) -> str:
    if t in (ctypes.c_void_p, ctypes.c_char_p) or hasattr(t, "contents"):
        return "ptr"
    return "i64" if ctypes.sizeof(t) == 8 else "i32"


@pytest.mark.parametrize("header, table", [
    ("cublas_api.h", cuda_runtime.CUBLAS_PROTOTYPES),
    ("nvrtc.h", cuda_compiler.NVRTC_PROTOTYPES),
])
def test_ctypes_prototypes_match_the_installed_header(header, table):
    path = _header(header)
    if path is None:
        pytest.skip(f"{header} is not installed here")
    text = open(path, errors="replace").read()
    for fn, argtypes in table.items():
        params = _prototype(text, fn)
        assert [_ctype_kind(p) for p in params] == [_kind(t) for t in argtypes], fn


def test_prototype_parser_reads_declarations():
    """The header check's parser on declarations written in cuBLAS's style."""
    text = ("// cublasXgemm(int) in a line comment\n/** ::cublasXgemm(void *p); */\n"
            "cublasStatus_t CUBLASWINAPI cublasXgemm(cublasHandle_t handle, /* c */ int m,\n"
            "    const float *alpha, long long int strideA, cudaStream_t s);")
    assert [_ctype_kind(p) for p in _prototype(text, "cublasXgemm")] == ["ptr", "i32", "ptr", "i64", "ptr"]


# --- nvcc's CUBIN, targets, PTX images ---------------------------------------------------------

def _elf_symbols(image: bytes) -> tuple[int, set[str]]:
    """(e_machine, names in .symtab) of an ELF64 little-endian file."""
    assert image[:4] == b"\x7fELF" and image[4] == 2 and image[5] == 1
    machine = struct.unpack_from("<H", image, 18)[0]
    shoff, = struct.unpack_from("<Q", image, 40)
    shentsize, shnum = struct.unpack_from("<HH", image, 58)
    sections = [struct.unpack_from("<IIQQQQIIQQ", image, shoff + i * shentsize) for i in range(shnum)]
    names = set()
    for sh in sections:
        if sh[1] == 2:  # SHT_SYMTAB
            strtab = sections[sh[6]]
            for off in range(sh[4], sh[4] + sh[5], sh[9]):
                name_off = struct.unpack_from("<I", image, off)[0]
                start = strtab[4] + name_off
                names.add(image[start:image.index(b"\0", start)].decode())
    return machine, names


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cubin_holds_every_kernel(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMGRAPH_CUDA_NVRTC", "0")
    x, w = sg.matrix("x"), sg.matrix("w")
    y = sg.vector("y", "int64")
    loss = sg.nn.cross_entropy(sg.relu(x @ w), y)
    fg, ins, shared, _, _, _ = build_fgraph([x, w, y], [loss, sg.grad(loss, w)])
    rewrite_graph(fg, backend="cuda")
    mod = CudaCodegen(fg, ins + shared).module([(8, 5), (5, 4), (8,)])
    image, kind = cuda_compiler.device_binary(mod.source, arch)
    assert kind == "cubin"
    machine, names = _elf_symbols(image)
    assert machine == 190  # EM_CUDA
    launched = {k.name for k in mod.kernels if k.grid[0] > 0}
    assert launched and launched <= names


def test_device_target_covers_newer_and_older_devices():
    known = (75, 80, 86, 89, 90, 100, 120)
    assert cuda_compiler.device_target("sm_90", known) == ("sm_90", "cubin")
    assert cuda_compiler.device_target("sm_121", known) == ("sm_120", "ptx")  # driver JITs it
    with pytest.raises(CompileError, match="sm_70 is older"):
        cuda_compiler.device_target("sm_70", known)


def test_ptx_images_are_nul_terminated(monkeypatch):
    monkeypatch.setattr(cuda_compiler, "nvrtc_available", lambda: False)
    monkeypatch.setattr(cuda_compiler, "nvcc_archs", lambda: (75, 80))
    monkeypatch.setattr(cuda_compiler, "compile_module", lambda src, arch, kind: f"{kind} {arch}".encode())
    image, kind = cuda_compiler.device_binary("", "sm_90")
    assert (image, kind) == (b"ptx sm_80\0", "ptx")


# --- launch limits, device-array streams -------------------------------------------------------

def test_gemm_with_many_rows_keeps_grid_y_in_range():
    """gridDim.y is at most 65535: 64-row tiles of a 5-million-row product stride over it."""
    x, w = sg.matrix("x"), sg.matrix("w")
    fg, ins, shared, _, _, _ = build_fgraph([x, w], [x @ w])
    rewrite_graph(fg, backend="cuda")
    mod = CudaCodegen(fg, ins + shared).module([(5_000_000, 3), (3, 2)])
    gemm = [k for k in mod.kernels if k.mode == "gemm"]
    assert gemm and all(k.grid[1] <= 65535 and k.grid[2] <= 65535 for k in gemm)
    assert "row0 += (long long)gridDim.y * SG_GEMM_BM" in mod.source  # the tiles beyond the grid


@pytest.mark.parametrize("stream, want", [(None, None), (1, None), (2, 2), (0x7f00, 0x7f00)])
def test_foreign_streams_that_need_a_wait(stream, want):
    arr = types.SimpleNamespace(__cuda_array_interface__={"shape": (1,), "typestr": "<f4",
                                                          "data": (0, False), "stream": stream})
    assert cuda_runtime.foreign_stream(arr) == want
