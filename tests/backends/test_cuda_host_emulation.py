"""Run the generated CUDA C on the CPU, against the reference backend (no GPU needed).

The kernels are compiled with the host C++ compiler behind a small prelude that maps the CUDA
keywords to C++ and runs each kernel with a single thread in a single block (every kernel is
a grid-stride or block-stride loop, so one thread covers all iterations).  The two helpers
that depend on many cooperating threads are replaced by host versions with the same contract:
the block reduction of one thread's partial result is that result, and the tiled GEMM is a
plain triple loop.  So this checks the renderer (index arithmetic, loop mapping, casts,
literals, NumPy semantics of every scalar op, the random generator, atomics as plain adds);
the tiled GEMM and the shuffles themselves are checked by the GPU tests.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends.cuda import CudaCodegen
from symgraph.compile import build_fgraph
from symgraph.resources import read_kernel
from symgraph.rewrite import rewrite_graph
from tests.gpu.cases import CASES, convnet_step, mlp_step

CXX = shutil.which("g++") or shutil.which("c++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")

PRELUDE = r"""
#include <cmath>
#include <cstring>
#include <cstdint>
#include <algorithm>
using std::isfinite; using std::isnan;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__ static
struct sg_dim3 { unsigned x, y, z; };
static sg_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static inline void __syncthreads() {}
static inline float __int_as_float(unsigned int b) { float f; std::memcpy(&f, &b, 4); return f; }
static inline double __longlong_as_double(unsigned long long b) {
    double d; std::memcpy(&d, &b, 8); return d;
}
"""

HOST_HELPERS = r"""
struct SgAdd { template <typename T> T operator()(T a, T b) const { return a + b; } };
struct SgMul { template <typename T> T operator()(T a, T b) const { return a * b; } };
struct SgMax { template <typename T> T operator()(T a, T b) const { return sg_max(a, b); } };
struct SgMin { template <typename T> T operator()(T a, T b) const { return sg_min(a, b); } };
struct SgAnd { template <typename T> T operator()(T a, T b) const { return (T)(a && b); } };
struct SgOr  { template <typename T> T operator()(T a, T b) const { return (T)(a || b); } };
// one thread per block: the block's reduction is the thread's own partial result
template <typename T, class Op> T sg_block_reduce(T v, Op, T) { return v; }
template <typename T> void sg_atomic_add(T *p, T v) { *p += v; }
template <typename T, typename Acc>
void sg_gemm(const T *A, const T *B, T *C, long long M, long long N, long long K, long long sam,
             long long sak, long long sbk, long long sbn, long long ldc, Acc alpha, Acc beta) {
    for (long long r = 0; r < M; ++r)
        for (long long c = 0; c < N; ++c) {
            Acc acc = 0;
            for (long long k = 0; k < K; ++k)
                acc += (Acc)A[r * sam + k * sak] * (Acc)B[k * sbk + c * sbn];
            T *p = C + r * ldc + c;
            *p = beta == (Acc)0 ? (T)(alpha * acc) : (T)(alpha * acc + beta * (Acc)*p);
        }
}
"""


def _host_source(mod) -> str:
    scalar = read_kernel("cuda/scalar.cuh").replace("#pragma once\n", "")
    return "\n".join([PRELUDE, scalar, HOST_HELPERS, *(k.source for k in mod.kernels)])


def _build(mod, tmp_path):
    src = _host_source(mod)
    tag = hashlib.sha1(src.encode()).hexdigest()[:10]
    cpp, so = tmp_path / f"m{tag}.cpp", tmp_path / f"m{tag}.so"
    cpp.write_text(src)
    proc = subprocess.run([CXX, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o", str(so), str(cpp)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(so))


def run_on_host(mod, values, tmp_path):
    """Execute the rendered module's kernels in order on NumPy buffers; returns per graph output."""
    lib = _build(mod, tmp_path)
    prog = mod.program
    bufs: dict[int, np.ndarray] = {}
    for st, v in zip(prog.inputs, values):
        bufs[st.sid] = np.ascontiguousarray(np.asarray(v, dtype=st.dtype)).reshape(-1).copy()
    for st in prog.outputs:
        bufs[st.sid] = _garbage(st)
    arena = np.zeros(prog.arena_size + 64, dtype=np.uint8)
    for sid, off in prog.arena_offsets.items():
        st = prog.storages[sid]
        bufs[sid] = arena[off:off + st.nbytes].view(st.dtype)
    for st in prog.storages:
        if st.kind == "const":
            bufs[st.sid] = np.ascontiguousarray(np.asarray(st.value, dtype=st.dtype)).reshape(-1).copy()
    for k in mod.kernels:
        assert k.mode != "cublas"
        if k.grid[0] == 0:
            continue
        fn = getattr(lib, k.name)
        fn.argtypes = [ctypes.c_void_p] * len(k.params)
        fn(*[bufs[s].ctypes.data for s in k.params])
    outs = []
    for i in range(len(prog.output_map)):
        st = prog.outputs[prog.output_map[i]]
        outs.append(bufs[st.sid][:st.size].reshape(prog.output_shapes[prog.output_map[i]]))
    return outs


def _garbage(st):
    """Output buffers start as NaN / a large value, so a kernel that misses an element shows."""
    if st.dtype.startswith("float"):
        return np.full(max(st.size, 1), np.nan, dtype=st.dtype)
    return np.full(max(st.size, 1), 123, dtype=st.dtype)


def _render_and_reference(case, shapes_from_values=True):
    fg, ins, shared, _, _, _ = build_fgraph(case.inputs, case.outputs, case.updates)
    rewrite_graph(fg, backend="cuda")
    roots = ins + shared
    values = list(case.values) + [s.get_value() for s in shared]
    mod = CudaCodegen(fg, roots).module([np.shape(v) for v in values])
    from symgraph.backends.reference import ReferenceProgram
    expected = ReferenceProgram(fg, roots)(values)
    return mod, values, expected


def _compare(got, expected, rtol, names):
    names = list(names) + ["state update"] * (len(expected) - len(names))
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        assert g.shape == e.shape, (names[i], g.shape, e.shape)
        if e.dtype.kind == "f":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol, err_msg=f"output {i}: {names[i]}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"output {i}: {names[i]}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_matches_the_reference_on_the_host(name, tmp_path):
    case = CASES[name]()
    mod, values, expected = _render_and_reference(case)
    got = run_on_host(mod, values, tmp_path)
    names = [str(o.owner.op) if o.owner else o.label() for o in case.outputs] + ["update"] * len(case.updates)
    _compare(got, expected, case.rtol, names)


@pytest.mark.parametrize("make", [mlp_step, convnet_step])
def test_training_steps_match_the_reference_on_the_host(make, tmp_path):
    case = make()
    mod, values, expected = _render_and_reference(case)
    got = run_on_host(mod, values, tmp_path)
    _compare(got, expected, 1e-4, ["loss"] + [f"update of {t.name}" for t, _ in case.updates])


def test_random_draws_match_numpy_bit_for_bit(tmp_path):
    rng = sg.RandomStream(123)
    u = rng.uniform((1000,))
    n = rng.normal((500,), dtype="float64")
    case = type("C", (), {})()
    case.inputs, case.outputs, case.updates, case.values = [], [u, n], [], []
    fg, ins, shared, _, _, _ = build_fgraph([], [u, n], None)
    values = [s.get_value() for s in shared]
    mod = CudaCodegen(fg, shared).module([np.shape(v) for v in values])
    got = run_on_host(mod, values, tmp_path)
    from symgraph.backends.reference import ReferenceProgram
    expected = ReferenceProgram(fg, shared)(values)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)
