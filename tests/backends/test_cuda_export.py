"""The cuda export has the llvm export's C API (docs/deployment.md, "CUDA"): its header
compiles as C99 and C++11, nvcc compiles and links its host code into a shared library, one C
program builds against either export, and the libraries export the same symbols.  Without a
GPU the CUDA program is only linked (and, where no NVIDIA driver is installed, run to check
that it refuses cleanly); the ``gpu`` test runs it and compares it with the CPU export."""

from __future__ import annotations

import ctypes
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
    _sh(cuda_compiler.find_nvcc(), "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-arch=sm_80",
        "-Xcicc", "-O0", "-Xptxas", "-O0", "-o", tmp / "cuda" / "mlp.so", files["source"])
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
