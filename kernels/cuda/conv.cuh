// symgraph CUDA helpers: im2col / col2im for conv2d as GEMM (NCHW input, OIHW weights).
//
// col has shape (N, C*KH*KW, OH*OW): row (c, i, j) holds the input pixel that kernel tap
// (i, j) of channel c sees at each output position (zero outside the padded input).  Then
// conv2d is out[n] = W (O x CKK) @ col[n], its weight gradient dW = sum_n g[n] @ col[n]^T and
// its input gradient col2im(W^T @ g[n]).  col2im gathers (one thread per input pixel).
#pragma once

template <typename T>
__device__ __forceinline__ void sg_im2col(const T *__restrict__ x, T *__restrict__ col, long long N, int C,
                                          int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                                          int OH, int OW) {
    const long long L = (long long)OH * OW, R = (long long)C * KH * KW;
    SG_GRID_STRIDE(e, N * R * L) {
        const long long l = e % L;
        const long long r = (e / L) % R;
        const long long n = e / (L * R);
        const int j = (int)(r % KW), i = (int)((r / KW) % KH), c = (int)(r / ((long long)KW * KH));
        const int oy = (int)(l / OW), ox = (int)(l % OW);
        const int y = oy * SH + i - PH, xx = ox * SW + j - PW;
        col[e] = (y >= 0 && y < H && xx >= 0 && xx < W) ? x[((n * C + c) * H + y) * W + xx] : (T)0;
    }
}

template <typename T, typename Acc>
__device__ __forceinline__ void sg_col2im(const T *__restrict__ col, T *__restrict__ dx, long long N, int C,
                                          int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                                          int OH, int OW) {
    const long long L = (long long)OH * OW, R = (long long)C * KH * KW;
    SG_GRID_STRIDE(e, N * C * H * W) {
        const int xx = (int)(e % W), y = (int)((e / W) % H);
        const int c = (int)((e / ((long long)W * H)) % C);
        const long long n = e / ((long long)W * H * C);
        Acc acc = 0;
        for (int i = 0; i < KH; ++i) {
            const int ty = y + PH - i;
            if (ty < 0 || ty % SH) continue;
            const int oy = ty / SH;
            if (oy >= OH) continue;
            for (int j = 0; j < KW; ++j) {
                const int tx = xx + PW - j;
                if (tx < 0 || tx % SW) continue;
                const int ox = tx / SW;
                if (ox >= OW) continue;
                acc += (Acc)col[(n * R + ((long long)c * KH + i) * KW + j) * L + (long long)oy * OW + ox];
            }
        }
        dx[e] = (T)acc;
    }
}
