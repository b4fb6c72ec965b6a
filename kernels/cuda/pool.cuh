// symgraph CUDA helpers: 2-D max / average pooling over the last two axes (no padding),
// forward and backward.  Tensors are contiguous (..., H, W); P counts the leading planes.
// The backward passes gather (one thread per input element), so no atomics are needed.
#pragma once

#define SG_GRID_STRIDE(i, total) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (long long)gridDim.x * blockDim.x)

// position (0 .. KH*KW-1) of the first maximum of the window at (oy, ox) of plane xp
template <typename T>
__device__ __forceinline__ int sg_window_argmax(const T *__restrict__ xp, int W, int oy, int ox,
                                                int KH, int KW, int SH, int SW) {
    const T *w = xp + (long long)(oy * SH) * W + ox * SW;
    T best = w[0];
    int arg = 0;
    for (int i = 0; i < KH; ++i)
        for (int j = 0; j < KW; ++j) {
            const T v = w[(long long)i * W + j];
            if (sg_arg_better<T, true>(v, i * KW + j, best, arg)) { best = v; arg = i * KW + j; }
        }
    return arg;
}

template <typename T, typename Acc, bool MAX>
__device__ __forceinline__ void sg_pool2d_fwd(const T *__restrict__ x, T *__restrict__ y, long long P,
                                              int H, int W, int OH, int OW, int KH, int KW, int SH, int SW) {
    SG_GRID_STRIDE(o, P * OH * OW) {
        const int ox = (int)(o % OW);
        const int oy = (int)((o / OW) % OH);
        const long long p = o / ((long long)OW * OH);
        const T *xp = x + p * H * W;
        if (MAX) {
            const int arg = sg_window_argmax(xp, W, oy, ox, KH, KW, SH, SW);
            y[o] = xp[(long long)(oy * SH + arg / KW) * W + ox * SW + arg % KW];
        } else {
            Acc s = 0;
            for (int i = 0; i < KH; ++i)
                for (int j = 0; j < KW; ++j) s += (Acc)xp[(long long)(oy * SH + i) * W + ox * SW + j];
            y[o] = (T)(s / (Acc)(KH * KW));
        }
    }
}

// range of window rows (or columns) that contain input row y: oy in [lo, hi]
__device__ __forceinline__ void sg_windows_covering(int y, int K, int S, int O, int &lo, int &hi) {
    lo = y - K + 1 <= 0 ? 0 : (y - K + 1 + S - 1) / S;
    hi = y / S;
    if (hi > O - 1) hi = O - 1;
}

// MAX: gradient routed to the first maximum of each window; else spread evenly over it.
template <typename T, typename Acc, bool MAX>
__device__ __forceinline__ void sg_pool2d_bwd(const T *__restrict__ x, const T *__restrict__ g,
                                              T *__restrict__ dx, long long P, int H, int W, int OH, int OW,
                                              int KH, int KW, int SH, int SW) {
    SG_GRID_STRIDE(e, P * H * W) {
        const int xx = (int)(e % W);
        const int yy = (int)((e / W) % H);
        const long long p = e / ((long long)W * H);
        int oy0, oy1, ox0, ox1;
        sg_windows_covering(yy, KH, SH, OH, oy0, oy1);
        sg_windows_covering(xx, KW, SW, OW, ox0, ox1);
        Acc acc = 0;
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox) {
                const Acc gv = (Acc)g[(p * OH + oy) * OW + ox];
                if (MAX) {
                    const int arg = sg_window_argmax(x + p * H * W, W, oy, ox, KH, KW, SH, SW);
                    if (arg == (yy - oy * SH) * KW + (xx - ox * SW)) acc += gv;
                } else {
                    acc += gv / (Acc)(KH * KW);
                }
            }
        dx[e] = (T)acc;
    }
}

// value of h at the first maximum of each window of x (max pooling's JVP / MaxPool2dGrad's VJP)
template <typename T>
__device__ __forceinline__ void sg_maxpool_select(const T *__restrict__ x, const T *__restrict__ h,
                                                  T *__restrict__ y, long long P, int H, int W, int OH,
                                                  int OW, int KH, int KW, int SH, int SW) {
    SG_GRID_STRIDE(o, P * OH * OW) {
        const int ox = (int)(o % OW);
        const int oy = (int)((o / OW) % OH);
        const long long p = o / ((long long)OW * OH);
        const int arg = sg_window_argmax(x + p * H * W, W, oy, ox, KH, KW, SH, SW);
        y[o] = h[p * H * W + (long long)(oy * SH + arg / KW) * W + ox * SW + arg % KW];
    }
}
