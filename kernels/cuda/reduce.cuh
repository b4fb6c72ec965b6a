// symgraph CUDA helpers: warp and block reductions (warp shuffles + one shared slot per warp).
#pragma once

struct SgAdd { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; } };
struct SgMul { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a * b; } };
struct SgMax { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return sg_max(a, b); } };
struct SgMin { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return sg_min(a, b); } };
struct SgAnd { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return (T)(a && b); } };
struct SgOr  { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return (T)(a || b); } };

// Sum (or any associative op) over the 32 lanes of a warp; lane 0 holds the result.
template <typename T, class Op>
__device__ __forceinline__ T sg_warp_reduce(T v, Op op) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, off));
    return v;
}

// Reduce over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result.  Safe to call several times in a row in one kernel.
template <typename T, class Op>
__device__ __forceinline__ T sg_block_reduce(T v, Op op, T identity) {
    __shared__ T slots[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = sg_warp_reduce(v, op);
    __syncthreads();  // the slots may still be read from a previous call
    if (lane == 0) slots[warp] = v;
    __syncthreads();
    const int nwarps = (blockDim.x + 31) >> 5;
    v = lane < nwarps ? slots[lane] : identity;
    if (warp == 0) v = sg_warp_reduce(v, op);
    if (threadIdx.x == 0) slots[0] = v;
    __syncthreads();
    return slots[0];
}

// (value, index) reduction for argmax / argmin: the first index wins ties, NaN wins like NumPy.
template <typename T, bool MAX>
__device__ __forceinline__ bool sg_arg_better(T a, long long ia, T b, long long ib) {
    if (a != a) return !(b != b) || ia < ib;   // NaN beats everything, first NaN wins
    if (b != b) return false;
    if (MAX ? (a > b) : (a < b)) return true;
    return a == b && ia < ib;
}

template <typename T, bool MAX>
__device__ __forceinline__ void sg_block_argreduce(T &v, long long &idx) {
    __shared__ T vals[32];
    __shared__ long long idxs[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        T ov = __shfl_down_sync(0xffffffffu, v, off);
        long long oi = __shfl_down_sync(0xffffffffu, idx, off);
        if (sg_arg_better<T, MAX>(ov, oi, v, idx)) { v = ov; idx = oi; }
    }
    __syncthreads();
    if (lane == 0) { vals[warp] = v; idxs[warp] = idx; }
    __syncthreads();
    const int nwarps = (blockDim.x + 31) >> 5;
    if (warp == 0) {
        v = lane < nwarps ? vals[lane] : vals[0];
        idx = lane < nwarps ? idxs[lane] : idxs[0];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            T ov = __shfl_down_sync(0xffffffffu, v, off);
            long long oi = __shfl_down_sync(0xffffffffu, idx, off);
            if (sg_arg_better<T, MAX>(ov, oi, v, idx)) { v = ov; idx = oi; }
        }
        if (lane == 0) { vals[0] = v; idxs[0] = idx; }
    }
    __syncthreads();
    v = vals[0];
    idx = idxs[0];
}

// accumulating stores whose indices may repeat (scatter-add, np.add.at)
__device__ __forceinline__ void sg_atomic_add(float *p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(double *p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(int *p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(long long *p, long long v) {
    atomicAdd(reinterpret_cast<unsigned long long *>(p), (unsigned long long)v);
}
