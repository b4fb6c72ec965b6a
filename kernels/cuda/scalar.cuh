// symgraph CUDA helpers: scalar functions with NumPy semantics (included in every module).
#pragma once

template <typename T> __device__ __forceinline__ T sg_max(T a, T b) { return a >= b ? a : b; }
template <typename T> __device__ __forceinline__ T sg_min(T a, T b) { return a <= b ? a : b; }
// NumPy's maximum/minimum propagate NaN from either side
template <> __device__ __forceinline__ float sg_max(float a, float b) { return (a != a || a >= b) ? a : b; }
template <> __device__ __forceinline__ double sg_max(double a, double b) { return (a != a || a >= b) ? a : b; }
template <> __device__ __forceinline__ float sg_min(float a, float b) { return (a != a || a <= b) ? a : b; }
template <> __device__ __forceinline__ double sg_min(double a, double b) { return (a != a || a <= b) ? a : b; }

template <typename T> __device__ __forceinline__ T sg_abs(T a) { return a < 0 ? (T)(-a) : a; }
template <> __device__ __forceinline__ float sg_abs(float a) { return fabsf(a); }
template <> __device__ __forceinline__ double sg_abs(double a) { return fabs(a); }

template <typename T> __device__ __forceinline__ T sg_sign(T a) { return (T)((a > 0) - (a < 0)); }
template <> __device__ __forceinline__ float sg_sign(float a) { return a != a ? a : (float)((a > 0.0f) - (a < 0.0f)); }
template <> __device__ __forceinline__ double sg_sign(double a) { return a != a ? a : (double)((a > 0.0) - (a < 0.0)); }

// sigmoid without overflow: exp of a non-positive argument only
__device__ __forceinline__ float sg_sigmoid(float x) {
    float e = expf(-fabsf(x));
    return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
__device__ __forceinline__ double sg_sigmoid(double x) {
    double e = exp(-fabs(x));
    return x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
}
// softplus = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))  (NumPy's logaddexp(0, x))
__device__ __forceinline__ float sg_softplus(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ double sg_softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }

// Python/NumPy floor division and modulo: the remainder takes the sign of the divisor.
// a / 0 and INT_MIN / -1 are undefined in C (and trap on a CPU): NumPy gives 0 for both
// results of a division by 0, and for b == -1 the wrapped -a and 0.
template <typename T> __device__ __forceinline__ bool sg_minus_one(T b) {
    return (T)-1 < (T)0 && b == (T)-1;  // false for unsigned types
}
template <typename T> __device__ __forceinline__ T sg_floordiv(T a, T b) {
    if (b == 0) return 0;
    if (sg_minus_one(b)) return (T)(0ULL - (unsigned long long)a);
    T q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
}
template <typename T> __device__ __forceinline__ T sg_mod(T a, T b) {
    if (b == 0 || sg_minus_one(b)) return 0;
    T r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
}
template <> __device__ __forceinline__ bool sg_floordiv(bool a, bool b) { return b ? a : false; }
template <> __device__ __forceinline__ bool sg_mod(bool a, bool b) { return false; }
#define SG_FLOAT_DIVMOD(T, FMOD, FLOOR, COPYSIGN)                                  \
    template <> __device__ __forceinline__ T sg_mod(T a, T b) {                   \
        if (b == 0) return FMOD(a, b);                                             \
        T m = FMOD(a, b);                                                          \
        if (m != 0) { if ((b < 0) != (m < 0)) m += b; }                            \
        else m = COPYSIGN((T)0, b);                                                \
        return m;                                                                  \
    }                                                                              \
    template <> __device__ __forceinline__ T sg_floordiv(T a, T b) {              \
        if (b == 0) return a / b;                                                  \
        T m = FMOD(a, b);                                                          \
        T d = (a - m) / b;                                                         \
        if (m != 0 && ((b < 0) != (m < 0))) d -= 1;                                \
        if (d == 0) return COPYSIGN((T)0, a / b);                                  \
        T f = FLOOR(d);                                                            \
        if (d - f > (T)0.5) f += 1;                                                \
        return f;                                                                  \
    }
SG_FLOAT_DIVMOD(float, fmodf, floorf, copysignf)
SG_FLOAT_DIVMOD(double, fmod, floor, copysign)

// integer power by squaring (negative exponents give 0 except for bases 1 and -1)
template <typename T> __device__ __forceinline__ T sg_pow(T a, T b) {
    if (b < 0) return a == 1 ? (T)1 : (a == (T)-1 ? ((b & 1) ? (T)-1 : (T)1) : (T)0);
    T r = 1;
    while (b) { if (b & 1) r *= a; a *= a; b >>= 1; }
    return r;
}
template <> __device__ __forceinline__ float sg_pow(float a, float b) { return powf(a, b); }
template <> __device__ __forceinline__ double sg_pow(double a, double b) { return pow(a, b); }
template <> __device__ __forceinline__ bool sg_pow(bool a, bool b) { return b ? a : true; }

// overloads used by the templates (float32 / float64 accumulators)
__device__ __forceinline__ float sg_exp(float x) { return expf(x); }
__device__ __forceinline__ double sg_exp(double x) { return exp(x); }
__device__ __forceinline__ float sg_log(float x) { return logf(x); }
__device__ __forceinline__ double sg_log(double x) { return log(x); }
__device__ __forceinline__ bool sg_isfinite(float x) { return isfinite(x); }
__device__ __forceinline__ bool sg_isfinite(double x) { return isfinite(x); }
template <typename T> __device__ __forceinline__ T sg_neg_inf();
template <> __device__ __forceinline__ float sg_neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double sg_neg_inf<double>() { return __longlong_as_double(0xfff0000000000000LL); }

// A checked index (symgraph bound checks, codegen/checks.py): a value outside [lo, hi) is
// recorded in the error words (err[0] the flag; per site, from err + 1 + 4 site: bad,
// the largest value - lo as unsigned, min, max) and comes back clamped, so the access that
// uses it stays in bounds.
__device__ __forceinline__ long long sg_check(long long v, long long lo, long long hi,
                                              long long *err, int site) {
    const unsigned long long d = (unsigned long long)v - (unsigned long long)lo;
    if (d >= (unsigned long long)(hi - lo)) {
        long long *w = err + 1 + 4 * site;
        atomicMax((unsigned long long *)(w + 1), d);
        atomicMin(w + 2, v);
        atomicMax(w + 3, v);
        atomicOr((unsigned long long *)w, 1ULL);
        atomicOr((unsigned long long *)err, 1ULL);
        v = v >= hi ? hi - 1 : v;
        v = v < lo ? lo : v;
    }
    return v;
}
