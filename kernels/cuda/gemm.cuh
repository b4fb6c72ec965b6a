// symgraph CUDA helpers: a tiled shared-memory GEMM, batched, with an epilogue hook.
//
// One block of 256 threads computes a 64 x 64 tile of C = A (M x K) * B (K x N); each thread
// accumulates a 4 x 4 sub-tile spread 16 rows / columns apart, so stores are coalesced.
// Operands are read through strides, so transposed views cost nothing: element (i, k) of A
// is A[i * sam + k * sak] and element (k, j) of B is B[k * sbk + j * sbn].  The epilogue
// functor receives (row, col, accumulator) and does the store (bias, activation, casts...).
#pragma once

#define SG_GEMM_BM 64
#define SG_GEMM_BN 64
#define SG_GEMM_BK 16
#define SG_GEMM_THREADS 256

template <typename T, typename Acc, class Epi>
__device__ __forceinline__ void sg_gemm_tile(const T *__restrict__ A, const T *__restrict__ B,
                                             long long M, long long N, long long K,
                                             long long sam, long long sak, long long sbk, long long sbn,
                                             long long row0, Epi epi) {
    __shared__ Acc As[SG_GEMM_BK][SG_GEMM_BM + 1];
    __shared__ Acc Bs[SG_GEMM_BK][SG_GEMM_BN + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const long long col0 = (long long)blockIdx.x * SG_GEMM_BN;
    Acc acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = (Acc)0;
    for (long long k0 = 0; k0 < K; k0 += SG_GEMM_BK) {
        // fastest-varying thread index along the operand's unit stride: coalesced loads
        for (int e = threadIdx.x; e < SG_GEMM_BM * SG_GEMM_BK; e += SG_GEMM_THREADS) {
            int r, kk;
            if (sak == 1) { r = e / SG_GEMM_BK; kk = e % SG_GEMM_BK; } else { r = e % SG_GEMM_BM; kk = e / SG_GEMM_BM; }
            const long long gr = row0 + r, gk = k0 + kk;
            As[kk][r] = (gr < M && gk < K) ? (Acc)A[gr * sam + gk * sak] : (Acc)0;
        }
        for (int e = threadIdx.x; e < SG_GEMM_BK * SG_GEMM_BN; e += SG_GEMM_THREADS) {
            int c, kk;
            if (sbn == 1) { c = e % SG_GEMM_BN; kk = e / SG_GEMM_BN; } else { c = e / SG_GEMM_BK; kk = e % SG_GEMM_BK; }
            const long long gc = col0 + c, gk = k0 + kk;
            Bs[kk][c] = (gc < N && gk < K) ? (Acc)B[gk * sbk + gc * sbn] : (Acc)0;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < SG_GEMM_BK; ++kk) {
            Acc a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const long long r = row0 + ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const long long c = col0 + tx + 16 * j;
            if (r < M && c < N) epi(r, c, acc[i][j]);
        }
    }
}

// C = alpha * op(A) @ op(B) + beta * C on this block's 64 x 64 tiles (blockIdx.x: columns;
// blockIdx.y strides over row tiles, since gridDim.y is at most 65535); C is row-major with
// leading dimension ldc.  C is not read when beta == 0.
template <typename T, typename Acc>
__device__ __forceinline__ void sg_gemm(const T *__restrict__ A, const T *__restrict__ B, T *__restrict__ C,
                                        long long M, long long N, long long K, long long sam, long long sak,
                                        long long sbk, long long sbn, long long ldc, Acc alpha, Acc beta) {
    if ((long long)blockIdx.x * SG_GEMM_BN >= N) return;
    for (long long row0 = (long long)blockIdx.y * SG_GEMM_BM; row0 < M; row0 += (long long)gridDim.y * SG_GEMM_BM)
        sg_gemm_tile<T, Acc>(A, B, M, N, K, sam, sak, sbk, sbn, row0, [&](long long r, long long c, Acc acc) {
            T *p = C + r * ldc + c;
            *p = beta == (Acc)0 ? (T)(alpha * acc) : (T)(alpha * acc + beta * (Acc)*p);
        });
}

// op(A) @ op(B) on this block's tiles, each element handed to epi(row, col, acc), which stores
// it and may apply an elementwise epilogue to it.
template <typename T, typename Acc, class Epi>
__device__ __forceinline__ void sg_gemm_epi(const T *__restrict__ A, const T *__restrict__ B, long long M,
                                            long long N, long long K, long long sam, long long sak,
                                            long long sbk, long long sbn, Epi epi) {
    if ((long long)blockIdx.x * SG_GEMM_BN >= N) return;
    for (long long row0 = (long long)blockIdx.y * SG_GEMM_BM; row0 < M; row0 += (long long)gridDim.y * SG_GEMM_BM)
        sg_gemm_tile<T, Acc>(A, B, M, N, K, sam, sak, sbk, sbn, row0, epi);
}
