"""Run generated CUDA C on the CPU: the kernels behind a prelude that maps CUDA to C++, one
thread in one block (every kernel is a grid- or block-stride loop, so one thread covers every
iteration).  The helpers that need many cooperating threads are replaced by host versions with
the same contract: a block reduction of one thread's partial result is that result, the tiled
GEMM is a triple loop.  Used by the host-emulation tests and the fake-device runtime tests.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile

import numpy as np

from symgraph.resources import read_kernel

CXX = shutil.which("g++") or shutil.which("c++")

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


def host_source(kernel_sources) -> str:
    """A C++ translation unit for these kernel sources."""
    scalar = read_kernel("cuda/scalar.cuh").replace("#pragma once\n", "")
    return "\n".join([PRELUDE, scalar, HOST_HELPERS, *kernel_sources])


def build_host_library(src: str, tmpdir=None):
    """Compile ``src`` (from ``host_source``) into a shared library and load it."""
    from pathlib import Path
    tmp = Path(tmpdir or tempfile.mkdtemp(prefix="sg-host-emu-"))
    tag = hashlib.sha1(src.encode()).hexdigest()[:10]
    cpp, so = tmp / f"m{tag}.cpp", tmp / f"m{tag}.so"
    cpp.write_text(src)
    proc = subprocess.run([CXX, "-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o", str(so), str(cpp)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(so))


def run_on_host(mod, values, tmp_path=None):
    """Execute the rendered module's kernels in order on NumPy buffers; returns per graph output."""
    lib = build_host_library(host_source(k.source for k in mod.kernels), tmp_path)
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
