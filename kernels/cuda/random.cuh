// symgraph CUDA helpers: the counter-based random generator of symgraph/ops/random.py.
//
// bits(i) = splitmix64(base + i) with base = splitmix64(splitmix64(seed ^ draw*M1) ^ counter*M2),
// all in wrapping 64-bit arithmetic, so every element is independent of the launch shape and
// the GPU draws exactly the numbers the NumPy reference draws.
#pragma once

#define SG_GOLDEN 0x9E3779B97F4A7C15ULL
#define SG_M1 0xBF58476D1CE4E5B9ULL
#define SG_M2 0x94D049BB133111EBULL

__device__ __forceinline__ unsigned long long sg_splitmix64(unsigned long long x) {
    x += SG_GOLDEN;
    x = (x ^ (x >> 30)) * SG_M1;
    x = (x ^ (x >> 27)) * SG_M2;
    return x ^ (x >> 31);
}

// state = [seed, counter] (int64), the shared state of a RandomStream
__device__ __forceinline__ unsigned long long sg_random_base(const long long *__restrict__ state,
                                                             unsigned long long draw_id) {
    unsigned long long base = sg_splitmix64((unsigned long long)state[0] ^ (draw_id * SG_M1));
    return sg_splitmix64(base ^ ((unsigned long long)state[1] * SG_M2));
}

// uniform in [0, 1) from the top 24 (float32) or 53 (float64) bits
__device__ __forceinline__ float sg_uniform_f32(unsigned long long bits) {
    return (float)(bits >> 40) * 5.9604644775390625e-08f;
}
__device__ __forceinline__ double sg_uniform_f64(unsigned long long bits) {
    return (double)(bits >> 11) * 1.1102230246251565e-16;
}

// standard normal by Box-Muller on the pair of words (2i, 2i + 1), computed in float64
__device__ __forceinline__ double sg_normal_f64(unsigned long long base, long long i) {
    const double u1 = 1.0 - sg_uniform_f64(sg_splitmix64(base + 2ULL * (unsigned long long)i));
    const double u2 = sg_uniform_f64(sg_splitmix64(base + 2ULL * (unsigned long long)i + 1ULL));
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
