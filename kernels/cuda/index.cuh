// symgraph CUDA helpers: gather / scatter-add support for integer-array indexing.
#pragma once

// NumPy index semantics: negative indices count from the end; out of range stores the
// kernel's error code in *err (the runtime raises IndexError naming the op) and reads index 0.
__device__ __forceinline__ long long sg_wrap_index(long long i, long long dim, int *err, int code) {
    if (i < 0) i += dim;
    if (i < 0 || i >= dim) {
        atomicExch(err, code);
        return 0;
    }
    return i;
}

// accumulate with repeated indices adding up (np.add.at)
__device__ __forceinline__ void sg_atomic_add(float *p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(double *p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(int *p, int v) { atomicAdd(p, v); }
__device__ __forceinline__ void sg_atomic_add(long long *p, long long v) {
    atomicAdd(reinterpret_cast<unsigned long long *>(p), (unsigned long long)v);
}
