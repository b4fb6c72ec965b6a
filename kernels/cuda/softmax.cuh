// symgraph CUDA helpers: row-wise softmax, log_softmax and softmax cross-entropy, one block per
// row.  Rows are read and written through functors (x(i) loads element i of the block's row),
// so the generated kernel decides the layout (any axis, any strides).  Accumulation is in Acc
// (float for float32 rows), the max is shifted out first, and an infinite max is treated as 0
// exactly as the NumPy reference does.
#pragma once

template <typename Acc, class In>
__device__ __forceinline__ Acc sg_row_max(In x, long long n) {
    Acc m = sg_neg_inf<Acc>();
    for (long long i = threadIdx.x; i < n; i += blockDim.x) m = sg_max(m, (Acc)x(i));
    m = sg_block_reduce(m, SgMax(), sg_neg_inf<Acc>());
    return sg_isfinite(m) ? m : (Acc)0;
}

template <typename Acc, class In>
__device__ __forceinline__ Acc sg_row_sumexp(In x, long long n, Acc m) {
    Acc s = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) s += sg_exp((Acc)x(i) - m);
    return sg_block_reduce(s, SgAdd(), (Acc)0);
}

// y(i, value) stores the result for element i
template <typename Acc, bool LOG, class In, class Out>
__device__ __forceinline__ void sg_softmax_row(In x, Out y, long long n) {
    const Acc m = sg_row_max<Acc>(x, n);
    const Acc s = sg_row_sumexp<Acc>(x, n, m);
    if (LOG) {
        const Acc shift = m + sg_log(s);
        for (long long i = threadIdx.x; i < n; i += blockDim.x) y(i, (Acc)x(i) - shift);
    } else {
        const Acc inv = (Acc)1 / s;
        for (long long i = threadIdx.x; i < n; i += blockDim.x) y(i, sg_exp((Acc)x(i) - m) * inv);
    }
}

// cross-entropy of one row against an integer label; returns the loss (valid in every thread).
// An out-of-range label stores the kernel's error code in *err and gives NaN.
template <typename Acc, class In>
__device__ __forceinline__ Acc sg_xent_sparse_row(In x, long long n, long long label, int *err, int code) {
    const Acc m = sg_row_max<Acc>(x, n);
    const Acc s = sg_row_sumexp<Acc>(x, n, m);
    if (label < 0 || label >= n) {
        if (threadIdx.x == 0) atomicExch(err, code);
        return (Acc)NAN;
    }
    return m + sg_log(s) - (Acc)x(label);
}

// cross-entropy against probabilities t(i): -sum(t * log_softmax(x)), terms with t == 0 skipped.
template <typename Acc, class In, class Tgt>
__device__ __forceinline__ Acc sg_xent_dense_row(In x, Tgt t, long long n) {
    const Acc m = sg_row_max<Acc>(x, n);
    const Acc shift = m + sg_log(sg_row_sumexp<Acc>(x, n, m));
    Acc acc = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const Acc ti = (Acc)t(i);
        if (ti != (Acc)0) acc -= ti * ((Acc)x(i) - shift);
    }
    return sg_block_reduce(acc, SgAdd(), (Acc)0);
}

// gradient of the sparse cross-entropy w.r.t. the logits: (softmax(x) - onehot(label)) * g
template <typename Acc, class In, class Out>
__device__ __forceinline__ void sg_xent_sparse_bwd_row(In x, Out dx, long long n, long long label, Acc g) {
    const Acc m = sg_row_max<Acc>(x, n);
    const Acc inv = (Acc)1 / sg_row_sumexp<Acc>(x, n, m);
    for (long long i = threadIdx.x; i < n; i += blockDim.x)
        dx(i, (sg_exp((Acc)x(i) - m) * inv - (Acc)(i == label)) * g);
}

// gradient of the dense cross-entropy w.r.t. the logits: (softmax(x) * sum(t) - t) * g
template <typename Acc, class In, class Tgt, class Out>
__device__ __forceinline__ void sg_xent_dense_bwd_row(In x, Tgt t, Out dx, long long n, Acc g) {
    const Acc m = sg_row_max<Acc>(x, n);
    const Acc inv = (Acc)1 / sg_row_sumexp<Acc>(x, n, m);
    Acc tsum = 0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) tsum += (Acc)t(i);
    tsum = sg_block_reduce(tsum, SgAdd(), (Acc)0);
    for (long long i = threadIdx.x; i < n; i += blockDim.x)
        dx(i, (sg_exp((Acc)x(i) - m) * inv * tsum - (Acc)t(i)) * g);
}
