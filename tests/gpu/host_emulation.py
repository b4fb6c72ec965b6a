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

from symgraph.codegen.checks import initial_words, raise_index_error
from symgraph.codegen.cuda_render import ERROR_PARAM
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
static inline void __threadfence() {}
template <typename T> static T atomicAdd(T *p, T v) { T old = *p; *p += v; return old; }
template <typename T> static T atomicMin(T *p, T v) { T old = *p; if (v < old) *p = v; return old; }
template <typename T> static T atomicMax(T *p, T v) { T old = *p; if (v > old) *p = v; return old; }
template <typename T> static T atomicOr(T *p, T v) { T old = *p; *p |= v; return old; }
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
template <typename T, typename Acc, class Epi>
void sg_gemm_epi(const T *A, const T *B, long long M, long long N, long long K, long long sam,
                 long long sak, long long sbk, long long sbn, Epi epi) {
    for (long long r = 0; r < M; ++r)
        for (long long c = 0; c < N; ++c) {
            Acc acc = 0;
            for (long long k = 0; k < K; ++k)
                acc += (Acc)A[r * sam + k * sak] * (Acc)B[k * sbk + c * sbn];
            epi(r, c, acc);
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
    proc = subprocess.run([CXX, "-std=c++17", "-O0", "-shared", "-fPIC", "-w", "-o", str(so), str(cpp)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(so))


def symbol(k) -> str:
    """A name unique to the kernel's source: modules can reuse a name for another body."""
    return f"{k.name}__{hashlib.sha1(k.source.encode()).hexdigest()[:8]}"


def renamed_source(k) -> str:
    return k.source.replace(k.name, symbol(k))  # the kernel and its module-level scratch


def host_library(mods):
    """One host library holding the kernels of several rendered modules."""
    sources = {}
    for mod in mods:
        for k in mod.kernels:
            sources.setdefault(symbol(k), renamed_source(k))
    return build_host_library(host_source(sources.values()))


def run_on_host(mod, values, lib=None):
    """Execute the rendered module's kernels in order on NumPy buffers; returns per graph output
    (``lib`` from ``host_library`` when several modules share one compilation)."""
    lib = lib or host_library([mod])
    bufs = _buffers(mod.program, values)
    for k in mod.kernels:
        assert k.mode != "cublas"
        if k.grid[0] == 0:
            continue
        fn = getattr(lib, symbol(k))
        fn.argtypes = [ctypes.c_void_p] * len(k.params)
        fn(*[bufs[s].ctypes.data for s in k.params])
    _check_errors(mod.program, bufs)
    return _outputs(mod.program, bufs)


def _check_errors(prog, bufs) -> None:
    """Raise the runtime's IndexError when a bound check recorded a bad index."""
    words = bufs.get(ERROR_PARAM)
    if words is not None and words[0]:
        raise_index_error(prog.checks, words)


def _buffers(prog, values) -> dict:
    """Host buffers for every storage: inputs, outputs (garbage-filled), the arena, constants."""
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
    if prog.checks:
        bufs[ERROR_PARAM] = initial_words(prog.checks)
    return bufs


def _outputs(prog, bufs) -> list:
    outs = []
    for slot in prog.output_map:
        st = prog.outputs[slot]
        outs.append(bufs[st.sid][:st.size].reshape(prog.output_shapes[slot]))
    return outs


def _garbage(st):
    """Output buffers start as NaN / a large value, so a kernel that misses an element shows."""
    if st.dtype.startswith("float"):
        return np.full(max(st.size, 1), np.nan, dtype=st.dtype)
    return np.full(max(st.size, 1), 123, dtype=st.dtype)


# --- threaded emulation: the real block-level helpers, with one OS thread per CUDA thread -----

THREADED_PRELUDE = r"""
#include <cmath>
#include <cstring>
#include <cstdint>
#include <algorithm>
#include <atomic>
#include <barrier>
#include <thread>
#include <vector>
using std::isfinite; using std::isnan;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(n)
#define __shared__ static   /* one block runs at a time: statics are the block's shared memory */
struct sg_dim3 { unsigned x, y, z; };
static thread_local sg_dim3 threadIdx = {0, 0, 0};
static sg_dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static std::barrier<> *sg_block_barrier = nullptr;
static std::barrier<> *sg_warp_barrier[32];
static unsigned long long sg_exchange[32][32];
static inline void __syncthreads() { sg_block_barrier->arrive_and_wait(); }
template <typename T> static T __shfl_down_sync(unsigned, T v, int off) {
    static_assert(sizeof(T) <= 8, "shuffle of a wide type");
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    sg_exchange[warp][lane] = bits;
    sg_warp_barrier[warp]->arrive_and_wait();
    T r = v;
    if (lane + off < 32) std::memcpy(&r, &sg_exchange[warp][lane + off], sizeof(T));
    sg_warp_barrier[warp]->arrive_and_wait();
    return r;
}
template <typename T> static T atomicAdd(T *p, T v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <typename T> static T atomicOr(T *p, T v) { return std::atomic_ref<T>(*p).fetch_or(v); }
template <typename T> static T atomicMin(T *p, T v) {
    std::atomic_ref<T> r(*p);
    T old = r.load();
    while (v < old && !r.compare_exchange_weak(old, v)) {}
    return old;
}
template <typename T> static T atomicMax(T *p, T v) {
    std::atomic_ref<T> r(*p);
    T old = r.load();
    while (v > old && !r.compare_exchange_weak(old, v)) {}
    return old;
}
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline float __int_as_float(unsigned int b) { float f; std::memcpy(&f, &b, 4); return f; }
static inline double __longlong_as_double(unsigned long long b) {
    double d; std::memcpy(&d, &b, 8); return d;
}
template <class F> static void sg_run_grid(sg_dim3 grid, unsigned block, F kernel) {
    gridDim = grid;
    blockDim = {block, 1, 1};
    std::barrier<> bar(block);
    sg_block_barrier = &bar;
    std::vector<std::barrier<> *> warps;
    for (unsigned w = 0; w < (block + 31) / 32; ++w) {
        warps.push_back(new std::barrier<>(std::min(32u, block - 32 * w)));
        sg_warp_barrier[w] = warps.back();
    }
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                blockIdx = {x, y, z};
                std::vector<std::thread> threads;
                for (unsigned t = 0; t < block; ++t)
                    threads.emplace_back([t, &kernel] { threadIdx = {t, 0, 0}; kernel(); });
                for (auto &th : threads) th.join();
            }
    for (auto *w : warps) delete w;
}
"""


def threaded_source(mods) -> str:
    """The modules' kernels with the real helpers, plus one host launcher per kernel:
    ``launch_<name>(gx, gy, gz, block, void **args)``."""
    from symgraph.codegen.cuda_scalar import c_type
    helpers = [read_kernel(f"cuda/{h}").replace("#pragma once\n", "")
               for h in ("scalar.cuh", "reduce.cuh", "gemm.cuh")]
    launchers, kernels = [], {}
    for mod in mods:
        for k in mod.kernels:
            kernels.setdefault(symbol(k), (k, mod.program.storages))
    for name, (k, table) in kernels.items():
        args = ", ".join(f"({'long long' if s == ERROR_PARAM else c_type(table[s].dtype)} *)args[{i}]"
                         for i, s in enumerate(k.params))
        launchers.append(f'extern "C" void launch_{name}(unsigned gx, unsigned gy, unsigned gz, '
                         f'unsigned block, void **args) {{ sg_run_grid({{gx, gy, gz}}, block, '
                         f'[&] {{ {name}({args}); }}); }}')
    return "\n".join([THREADED_PRELUDE, *helpers, *(renamed_source(k) for k, _ in kernels.values()),
                      *launchers])


def threaded_library(mods):
    src = threaded_source(mods)
    tmp = tempfile.mkdtemp(prefix="sg-host-emu-")
    from pathlib import Path
    tag = hashlib.sha1(src.encode()).hexdigest()[:10]
    cpp, so = Path(tmp) / f"t{tag}.cpp", Path(tmp) / f"t{tag}.so"
    cpp.write_text(src)
    proc = subprocess.run([CXX, "-std=c++20", "-O0", "-pthread", "-shared", "-fPIC", "-w", "-o", str(so),
                           str(cpp)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return ctypes.CDLL(str(so))


def run_threaded(mod, values, lib=None, max_blocks: int = 4):
    """Like ``run_on_host`` but with the real launch geometry and helpers.  Grid-, block- and
    promoted-mode kernels stride over their grid, so their grids are capped at ``max_blocks``
    blocks (fewer thread spawns); GEMM grids (one block per output tile) run in full."""
    lib = lib or threaded_library([mod])
    prog = mod.program
    bufs = _buffers(prog, values)
    for k in mod.kernels:
        if k.grid[0] == 0:
            continue
        fn = getattr(lib, f"launch_{symbol(k)}")
        arr = (ctypes.c_void_p * max(len(k.params), 1))(*[bufs[s].ctypes.data for s in k.params])
        g = list(k.grid) if k.mode == "gemm" else [min(k.grid[0], max_blocks), 1, 1]
        fn(ctypes.c_uint(g[0]), ctypes.c_uint(g[1]), ctypes.c_uint(g[2]), ctypes.c_uint(k.block), arr)
    _check_errors(prog, bufs)
    return _outputs(prog, bufs)
