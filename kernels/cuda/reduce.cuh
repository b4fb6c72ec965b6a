// symgraph CUDA helpers: warp and block reductions (warp shuffles + one shared slot per warp).
#pragma once

struct SgAdd { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a + b; } };
struct SgMul { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return a * b; } };
struct SgMax { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return sg_max(a, b); } };
struct SgMin { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return sg_min(a, b); } };
struct SgAnd { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return (T)(a && b); } };
struct SgOr  { template <typename T> __device__ __forceinline__ T operator()(T a, T b) const { return (T)(a || b); } };

// __shfl_down_sync has no 1- or 2-byte overloads: those travel as int
template <typename T> __device__ __forceinline__ T sg_shfl_down(T v, int off) {
    return __shfl_down_sync(0xffffffffu, v, off);
}
template <> __device__ __forceinline__ bool sg_shfl_down(bool v, int off) {
    return (bool)__shfl_down_sync(0xffffffffu, (int)v, off);
}
template <> __device__ __forceinline__ signed char sg_shfl_down(signed char v, int off) {
    return (signed char)__shfl_down_sync(0xffffffffu, (int)v, off);
}
template <> __device__ __forceinline__ unsigned char sg_shfl_down(unsigned char v, int off) {
    return (unsigned char)__shfl_down_sync(0xffffffffu, (int)v, off);
}
template <> __device__ __forceinline__ short sg_shfl_down(short v, int off) {
    return (short)__shfl_down_sync(0xffffffffu, (int)v, off);
}

// Sum (or any associative op) over the 32 lanes of a warp; lane 0 holds the result.
template <typename T, class Op>
__device__ __forceinline__ T sg_warp_reduce(T v, Op op) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, sg_shfl_down(v, off));
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

// accumulating stores whose indices may repeat (scatter-add, np.add.at)
__device__ __forceinline__ void sg_atomic_add(float *p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(double *p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(int *p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(long long *p, long long v) {
    atomicAdd(reinterpret_cast<unsigned long long *>(p), (unsigned long long)v);
}
