"""The cuda export has the llvm export's C API (docs/deployment.md, "CUDA"): its header
compiles as C99 and C++11, nvcc compiles and links its host code into a shared library, one C
program builds against either export, and the libraries export the same symbols.  Without a
GPU the nvcc-built program is only linked (and, where no NVIDIA driver is installed, run to
check that it refuses cleanly); the same .cu then runs on an emulated device (a stand-in CUDA
runtime over host memory, the kernels compiled for the CPU) and must give the CPU export's
output.  The ``gpu`` test runs the nvcc-built program and compares it with the CPU export."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import cuda_compiler
from tests.gpu.cases import mlp_step

pytestmark = pytest.mark.skipif(cuda_compiler.find_nvcc() is None or shutil.which("gcc") is None
                                or shutil.which("g++") is None, reason="needs nvcc, gcc and g++")

# One program for both exports: every function of the C API, a training step that updates
# the context's parameters, an out-of-range label (ERR_INDEX, parameters kept).
PROGRAM = r"""
#include <stdio.h>
#include <string.h>
#include "mlp.h"
int main(int argc, char **argv) {
    static float x[MLP_X_SIZE], w1[MLP_PARAM_W1_SIZE], kept[MLP_PARAM_W1_SIZE];
    static int64_t y[MLP_Y_SIZE];
    float loss = 0;
    FILE *fh = argc > 1 ? fopen(argv[1], "rb") : NULL;
    if (fh == NULL || fread(x, sizeof x, 1, fh) != 1 || fread(y, sizeof y, 1, fh) != 1) return 3;
    fclose(fh);
    printf("abi %d %d cpu %d\n", (int)mlp_abi_version(), MLP_ABI_VERSION, mlp_cpu_missing() == NULL);
    mlp_set_num_threads(1);
    mlp_ctx *ctx = NULL;
    int32_t st = mlp_create(&ctx);
    if (st != MLP_OK) { printf("create %d %s\n", (int)st, mlp_strerror(st)); return 0; }
    for (int it = 0; it < 3; it++) {
        if (mlp_run(ctx, x, y, &loss) != MLP_OK) { printf("run %s\n", mlp_last_error(ctx)); return 4; }
        printf("loss %.9g\n", loss);
    }
    printf("null %d %s\n", (int)mlp_run(ctx, NULL, y, &loss), mlp_last_error(ctx));
    printf("size %d %s\n", (int)mlp_get_w1(ctx, w1, 2), mlp_strerror(MLP_ERR_SIZE));
    if (mlp_get_w1(ctx, w1, MLP_PARAM_W1_SIZE) != MLP_OK) return 5;
    printf("w1");
    for (int i = 0; i < MLP_PARAM_W1_SIZE; i++) printf(" %.9g", w1[i]);
    printf("\n");
    y[0] = 1000;
    st = mlp_run(ctx, x, y, &loss);
    if (mlp_get_w1(ctx, kept, MLP_PARAM_W1_SIZE) != MLP_OK) return 6;
    printf("index %d kept %d\n", (int)st, memcmp(w1, kept, sizeof w1) == 0);
    for (int i = 0; i < mlp_num_tensors(); i++) {
        const mlp_tensor_info *t = mlp_tensor(i);
        printf("tensor %s %d %s %d %lld\n", t->name, (int)t->role, t->dtype, (int)t->ndim,
               (long long)t->size);
    }
    printf("find %lld %d\n", (long long)mlp_find_tensor(NULL, "w2")->size,
           mlp_find_tensor("", "nope") == NULL);
    mlp_destroy(ctx);
    mlp_destroy(NULL);
    return 0;
}
"""


def _case():
    case = mlp_step(batch=8, n_in=6, hidden=5, n_out=3)
    case.outputs[0].name = "loss"
    return case


def _sh(*cmd, cwd=None) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> tuple[Path, Path, object]:
    """``cpu/mlp.{h,so}`` (llvm) and ``cuda/mlp.{h,cu,so}`` (nvcc) of one training step."""
    tmp = tmp_path_factory.mktemp("exports")
    case = _case()
    f = sg.compile(case.inputs, case.outputs, updates=case.updates)
    (tmp / "cpu").mkdir()
    f.export(str(tmp / "cpu" / "mlp"), example_inputs=case.values)
    case = _case()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
        g = sg.compile(case.inputs, case.outputs, updates=case.updates, backend="cuda")
        files = g.export(str(tmp / "cuda" / "mlp"), example_inputs=case.values)
    assert sorted(files) == ["header", "ptx", "source"]
    _sh(cuda_compiler.find_nvcc(), "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-Xlinker",
        "-soname=mlp.so", "-arch=sm_80", "-Xcicc", "-O0", "-Xptxas", "-O0", "-o", tmp / "cuda" / "mlp.so",
        files["source"])
    return tmp / "cpu", tmp / "cuda", case


def build_program(d: Path) -> Path:
    """PROGRAM as strict C99, linked against ``d/mlp.so``."""
    (d / "main.c").write_text(textwrap.dedent(PROGRAM))
    _sh("gcc", "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror", "-o", d / "main", d / "main.c",
        f"-I{d}", d / "mlp.so", f"-Wl,-rpath,{d}")
    return d / "main"


def write_data(d: Path, case) -> Path:
    x, y = case.values
    (d / "data.bin").write_bytes(np.ascontiguousarray(x, np.float32).tobytes()
                                 + np.ascontiguousarray(y, np.int64).tobytes())
    return d / "data.bin"


def _symbols(so: Path) -> set[str]:
    return set(_sh("nm", "-D", "--defined-only", so).split()[2::3])


def _enum(header: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"^\s+(MLP_\w+) = (\d+),", header, re.M)}


def test_cuda_header_is_c99_and_cxx11_and_matches_the_cpu_export(tmp_path, exports):
    cpu, cuda, _ = exports
    for compiler, std in (("gcc", "c99"), ("g++", "c++11")):
        probe = tmp_path / ("probe.c" if compiler == "gcc" else "probe.cpp")
        probe.write_text('#include "mlp.h"\nint probe(void) { return MLP_X_SIZE + (int)MLP_ERR_CUDA; }\n')
        _sh(compiler, f"-std={std}", "-pedantic", "-Wall", "-Wextra", "-Werror", f"-I{cuda}", "-c",
            "-o", tmp_path / "probe.o", probe)
    h_cpu, h_cuda = [(d / "mlp.h").read_text() for d in (cpu, cuda)]
    # the same size macros, the same error codes (and two of the cuda export's own)
    macros = [re.findall(r"^#define MLP_\w+_(?:SIZE|NDIM|DIM\d) \d+$", h, re.M) for h in (h_cpu, h_cuda)]
    assert macros[0] == macros[1] and "#define MLP_PARAM_W1_SIZE 30" in macros[0]
    assert _enum(h_cuda) == {**_enum(h_cpu), "MLP_ERR_DEVICE": 8, "MLP_ERR_CUDA": 9}
    decl = "int32_t mlp_run(mlp_ctx *ctx, const float *x, const int64_t *y, float *loss);"
    assert decl in h_cpu and decl in h_cuda
    # the same exported symbols (nm), plus the cuda export's device check; nothing of the CUDA
    # runtime (linked statically) leaks out
    assert _symbols(cuda / "mlp.so") == _symbols(cpu / "mlp.so") | {"mlp_device_missing"}
    assert "Library soname: [mlp.so]" in _sh("readelf", "-d", cuda / "mlp.so")  # the documented build
    assert {"mlp_create", "mlp_run", "mlp_get_b2", "mlp_set_w1"} <= _symbols(cpu / "mlp.so")


def test_one_c_program_builds_against_both_exports(tmp_path, exports):
    cpu, cuda, case = exports
    data = write_data(tmp_path, case)
    out = _sh(build_program(cpu), data).splitlines()
    fresh = _case()  # the same seeds: the exported parameters' values, the program's inputs
    f = sg.compile(fresh.inputs, fresh.outputs, updates=fresh.updates)
    want = [float(f(*case.values)[0]) for _ in range(3)]
    np.testing.assert_allclose([float(v.split()[1]) for v in out[1:4]], want, rtol=1e-5)
    assert out[4] == "null 1 mlp_run: input x is NULL"
    assert out[5] == "size 3 a buffer has the wrong number of elements"
    trained_w1 = fresh.updates[0][0].get_value().ravel()
    np.testing.assert_allclose([float(v) for v in out[6].split()[1:]], trained_w1, rtol=1e-5, atol=1e-6)
    assert out[7] == "index 2 kept 1"
    assert out[8:] == ["tensor x 0 float32 2 48", "tensor y 0 int64 1 8", "tensor loss 1 float32 0 1",
                       "tensor w1 2 float32 2 30", "tensor b1 2 float32 1 5", "tensor w2 2 float32 2 15",
                       "tensor b2 2 float32 1 3", "find 15 1"]
    exe = build_program(cuda)  # links against the nvcc-built library
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:  # no NVIDIA driver at all: create must refuse cleanly
        got = _sh(exe, data).splitlines()
        assert got == ["abi 1 1 cpu 1", "create 8 no CUDA device, or one older than the library's "
                       "architecture (see mlp_device_missing)"]


# --- the host side on an emulated device ----------------------------------------------------
# The CUDA runtime calls the export makes, over host memory: "device memory" is what
# cudaMalloc returned (so pointer queries tell it apart), every copy checks that its declared
# kind matches where its pointers live, and the device count, compute capability and current
# device can be set from the test.
FAKE_RUNTIME = r"""
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorNoDevice = 100 };
typedef struct sg_fake_stream *cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost,
                      cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaMemoryType { cudaMemoryTypeUnregistered, cudaMemoryTypeHost, cudaMemoryTypeDevice,
                      cudaMemoryTypeManaged };
struct cudaPointerAttributes { cudaMemoryType type; int device; void *devicePointer; void *hostPointer; };
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMinor };
#define cudaStreamNonBlocking 1
static std::map<const char *, size_t> sg_blocks;
static int sg_count = 1, sg_major = 9, sg_minor = 0, sg_current = 0, sg_live = 0, sg_bad_copies = 0;
#define SG_FAKE extern "C" __attribute__((visibility("default")))
SG_FAKE void sg_fake_device(int count, int major, int minor, int current) {
    sg_count = count; sg_major = major; sg_minor = minor; sg_current = current;
}
SG_FAKE int sg_fake_bad_copies(void) { return sg_bad_copies; }  /* copies of the wrong kind */
/* with SG_FAKE_REPORT set, a program says at exit what it left allocated and copied wrongly */
__attribute__((destructor)) static void sg_fake_report(void) {
    if (getenv("SG_FAKE_REPORT")) fprintf(stderr, "fake-runtime: live=%d bad=%d\n", sg_live, sg_bad_copies);
}
static bool sg_is_device(const void *p) {
    auto it = sg_blocks.upper_bound((const char *)p);
    if (it == sg_blocks.begin()) return false;
    --it;
    return (const char *)p < it->first + it->second;
}
static cudaError_t cudaMalloc(void **p, size_t n) {
    *p = calloc(1, n ? n : 1);
    if (*p == NULL) return cudaErrorMemoryAllocation;
    sg_blocks[(const char *)*p] = n;
    sg_live++;
    return cudaSuccess;
}
SG_FAKE void *sg_fake_malloc(size_t n) { void *p; return cudaMalloc(&p, n) == cudaSuccess ? p : NULL; }
static cudaError_t cudaFree(void *p) {
    if (p == NULL) return cudaSuccess;
    if (!sg_blocks.erase((const char *)p)) return cudaErrorInvalidValue;
    sg_live--;
    free(p);
    return cudaSuccess;
}
static cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t) {
    bool dd = sg_is_device(d), sd = sg_is_device(s);
    bool ok = k == cudaMemcpyDefault || (k == cudaMemcpyHostToDevice && dd && !sd)
        || (k == cudaMemcpyDeviceToHost && !dd && sd) || (k == cudaMemcpyDeviceToDevice && dd && sd);
    if (!ok) { sg_bad_copies++; return cudaErrorInvalidValue; }
    memcpy(d, s, n);
    return cudaSuccess;
}
static cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) {
    if (!sg_is_device(d)) return cudaErrorInvalidValue;
    memset(d, v, n);
    return cudaSuccess;
}
static cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
    *s = (cudaStream_t)malloc(1); sg_live++; return cudaSuccess;
}
static cudaError_t cudaStreamDestroy(cudaStream_t s) { free(s); sg_live--; return cudaSuccess; }
static cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "fake error"; }
static cudaError_t cudaGetDeviceCount(int *n) {
    *n = sg_count; return sg_count ? cudaSuccess : cudaErrorNoDevice;
}
static cudaError_t cudaGetDevice(int *d) {
    *d = sg_current; return sg_count ? cudaSuccess : cudaErrorNoDevice;
}
static cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    *v = a == cudaDevAttrComputeCapabilityMajor ? sg_major : sg_minor; return cudaSuccess;
}
static cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p) {
    memset(a, 0, sizeof *a);
    a->type = sg_is_device(p) ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
    return cudaSuccess;
}
"""


def emulated_library(cuda: Path, kernels, tmp: Path, name: str = "mlp") -> Path:
    """``cuda/<name>.cu`` compiled for the host: FAKE_RUNTIME for <cuda_runtime.h>, the kernels
    as host functions (``tests/gpu/host_emulation.py``: one thread covers a grid-stride loop),
    launches as plain calls.  ``tmp/<name>.so`` next to a copy of the header."""
    from tests.gpu.host_emulation import host_source
    cu = (cuda / f"{name}.cu").read_text()
    device, host = cu.split("// ---- host side", 1)
    head = device[:device.index("// symgraph CUDA module")]  # includes and kernel renames
    host = re.sub(r"(\w+)<<<[^>]*>>>\(", r"\1(", "// ---- host side" + host)
    kernel_code = host_source([k.source for k in kernels])
    src = head.replace("#include <cuda_runtime.h>", FAKE_RUNTIME) + kernel_code + host
    (tmp / f"{name}.cpp").write_text(src)
    if cuda != tmp:
        shutil.copy(cuda / f"{name}.h", tmp / f"{name}.h")
    _sh("g++", "-std=c++17", "-O0", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall", "-Werror",
        "-Wno-unused-function", "-o", tmp / f"{name}.so", tmp / f"{name}.cpp")
    return tmp / f"{name}.so"


@pytest.fixture(scope="module")
def emulated(exports, tmp_path_factory):
    """The C program's output on the CPU export and on the emulated cuda export, the library."""
    cpu, cuda, case = exports
    tmp = tmp_path_factory.mktemp("emulated")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
        fresh = _case()
        g = sg.compile(fresh.inputs, fresh.outputs, updates=fresh.updates, backend="cuda")
        kernels = g.program.codegen.module([np.shape(v) for v in fresh.values]
                                           + [s.shape for s in g.shared]).kernels
    so = emulated_library(cuda, kernels, tmp)
    data = write_data(tmp, case)
    run = subprocess.run([build_program(tmp), data], capture_output=True, text=True,
                         env={**os.environ, "SG_FAKE_REPORT": "1"})
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == "fake-runtime: live=0 bad=0"  # all freed, every copy of the right kind
    return _sh(build_program(cpu), data).splitlines(), run.stdout.splitlines(), so


def test_emulated_cuda_export_gives_the_cpu_export_results(emulated):
    want, got, _ = emulated
    assert len(got) == len(want) and got[0] == want[0]
    num = lambda line: np.array(line.split()[1:], dtype=np.float64)  # noqa: E731
    for g, w in zip(got[1:4] + got[6:7], want[1:4] + want[6:7]):  # losses, trained w1
        np.testing.assert_allclose(num(g), num(w), rtol=1e-5, atol=1e-6)
    assert got[4:6] + got[7:] == want[4:6] + want[7:]  # NULL, size, index error, metadata


def test_emulated_cuda_export_takes_device_pointers_and_checks_the_device(emulated, exports):
    _, _, case = exports
    lib = ctypes.CDLL(str(emulated[2]))
    lib.sg_fake_malloc.restype = ctypes.c_void_p
    lib.mlp_device_missing.restype = ctypes.c_char_p
    lib.mlp_last_error.restype = ctypes.c_char_p
    lib.sg_fake_device(1, 9, 0, 0)
    ctx, p = ctypes.c_void_p(), ctypes.c_void_p
    assert lib.mlp_create(ctypes.byref(ctx)) == 0
    x, y = (np.ascontiguousarray(v, dt) for v, dt in zip(case.values, (np.float32, np.int64)))
    dev = {}
    for key, arr in (("x", x), ("y", y), ("loss", np.zeros((), np.float32))):
        dev[key] = lib.sg_fake_malloc(ctypes.c_size_t(arr.nbytes))
        ctypes.memmove(dev[key], arr.ctypes.data, arr.nbytes)
    host_loss = np.zeros((), np.float32)
    assert lib.mlp_run(ctx, p(dev["x"]), p(y.ctypes.data), p(host_loss.ctypes.data)) == 0  # a mix
    assert lib.mlp_run(ctx, p(dev["x"]), p(dev["y"]), p(dev["loss"])) == 0  # all on the device
    loss = np.zeros((), np.float32)
    ctypes.memmove(loss.ctypes.data, dev["loss"], 4)
    fresh = _case()
    f = sg.compile(fresh.inputs, fresh.outputs, updates=fresh.updates)
    want = [float(f(*case.values)[0]) for _ in range(2)]
    np.testing.assert_allclose([float(host_loss), float(loss)], want, rtol=1e-5)
    w1 = lib.sg_fake_malloc(ctypes.c_size_t(30 * 4))  # a getter into device memory
    assert lib.mlp_get_w1(ctx, p(w1), ctypes.c_int64(30)) == 0
    got = np.zeros(30, np.float32)
    ctypes.memmove(got.ctypes.data, w1, got.nbytes)
    np.testing.assert_allclose(got, fresh.updates[0][0].get_value().ravel(), rtol=1e-5, atol=1e-6)
    lib.sg_fake_device(2, 9, 0, 1)  # another device is current
    assert lib.mlp_run(ctx, p(dev["x"]), p(dev["y"]), p(dev["loss"])) == 8
    assert b"lives on CUDA device 0 but the current device is 1" in lib.mlp_last_error(ctx)
    lib.sg_fake_device(1, 9, 0, 0)
    lib.mlp_destroy(ctx)
    assert lib.sg_fake_bad_copies() == 0
    lib.sg_fake_device(1, 7, 5, 0)  # too old for sm_80
    assert lib.mlp_device_missing() == b"sm_80" and lib.mlp_create(ctypes.byref(ctx)) == 8
    lib.sg_fake_device(0, 0, 0, 0)  # none at all
    assert lib.mlp_device_missing() == b"cuda-device" and lib.mlp_create(ctypes.byref(ctx)) == 8
    assert ctx.value is None
    lib.sg_fake_device(1, 9, 0, 0)


def _repeated():
    """One output twice, and an update whose new value is also an output."""
    x = sg.tensor("x", (3,))
    w = sg.shared(np.arange(3, dtype=np.float32), "w")
    y = sg.tanh(x) * w
    y.name = "y"
    nw = w + x
    return [x], [y, y, nw], [(w, nw)], [np.array([0.5, -1, 2], np.float32)]


def _no_inputs():
    c = sg.shared(np.array([3, -4], np.int64), "c")
    y = c * 2 + 1
    y.name = "y"
    return [], [y], [], []


@pytest.mark.parametrize("make,name,decl", [
    (_repeated, "twice",
     "int32_t twice_run(twice_ctx *ctx, const float *x, float *y, float *y_out, float *out2);"),
    (_no_inputs, "noin", "int32_t noin_run(noin_ctx *ctx, int64_t *y);"),
])
def test_emulated_cuda_export_repeated_outputs_and_no_inputs(tmp_path, monkeypatch, make, name, decl):
    ins, outs, ups, vals = make()
    f = sg.compile(ins, outs, updates=ups)
    want = [np.asarray(v) for v in f(*vals)]
    ins, outs, ups, vals = make()
    monkeypatch.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
    g = sg.compile(ins, outs, updates=ups, backend="cuda")
    g.export(str(tmp_path / name), example_inputs=vals)
    assert decl in (tmp_path / f"{name}.h").read_text()
    lib = ctypes.CDLL(str(emulated_library(tmp_path, g.program.codegen.current().kernels, tmp_path, name)))
    ctx, p = ctypes.c_void_p(), lambda a: ctypes.c_void_p(a.ctypes.data)  # noqa: E731
    assert getattr(lib, f"{name}_create")(ctypes.byref(ctx)) == 0
    got = [np.zeros_like(w) for w in want]
    args = [np.ascontiguousarray(v) for v in vals]
    assert getattr(lib, f"{name}_run")(ctx, *map(p, args + got)) == 0
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    for s_var, py in zip(g.shared, f.shared):  # the context's parameters were updated like Python's
        value = np.zeros_like(py.get_value())
        assert getattr(lib, f"{name}_get_{s_var.name}")(ctx, p(value), ctypes.c_int64(value.size)) == 0
        np.testing.assert_array_equal(value, py.get_value())
    getattr(lib, f"{name}_destroy")(ctx)
    assert lib.sg_fake_bad_copies() == 0


@pytest.mark.gpu
def test_cuda_program_matches_the_cpu_program_on_a_gpu(tmp_path, exports):
    from symgraph.backends.cuda_runtime import gpu_available
    if not gpu_available():
        pytest.skip("needs pycuda, the NVIDIA driver and a GPU")
    cpu, cuda, case = exports
    data = write_data(tmp_path, case)
    want = _sh(build_program(cpu), data).splitlines()
    got = _sh(build_program(cuda), data).splitlines()
    assert len(got) == len(want) and got[0] == want[0]
    num = lambda line: np.array(line.split()[1:], dtype=np.float64)  # noqa: E731
    for g, w in zip(got[1:4] + got[6:7], want[1:4] + want[6:7]):  # losses, trained w1
        np.testing.assert_allclose(num(g), num(w), rtol=1e-4, atol=1e-6)
    assert got[4:6] + got[7:] == want[4:6] + want[7:]
