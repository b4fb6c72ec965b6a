"""Accuracy and throughput of the LLVM backend's math helpers (kernels/llvm/math.ll).

For every helper, float32 and float64: the maximum relative error against NumPy float64 over
10^6 points (the working range, all magnitudes from denormals to the largest finite value, and
the edges 0, -0, +-tiny, denormals, +-large, +-inf, nan), and the throughput of a JIT-compiled
loop against the NumPy (or SciPy) function on 2^18 elements, one thread, best of 25. Prints a Markdown table.

    PYTHONPATH=$PWD python benchmarks/math_accuracy.py [--points N] [--size N]
"""

from __future__ import annotations

import argparse
import math
import time
import zlib

import numpy as np

from symgraph.codegen.llvm_math import BINARY_FUNCTIONS, UNARY_FUNCTIONS, MathLoops

try:
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy is optional
    _erf = np.frompyfunc(math.erf, 1, 1)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


REFERENCE = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh,
    "sigmoid": _sigmoid, "erf": lambda x: np.asarray(_erf(x), dtype=x.dtype),
    "softplus": lambda x: np.logaddexp(np.zeros((), x.dtype), x), "sin": np.sin, "cos": np.cos,
    "pow": np.power,
}
NUMPY_USER = {**REFERENCE, "sigmoid": lambda x: 1 / (1 + np.exp(-x))}  # what a NumPy user writes
WORKING_RANGE = {  # the interval most points are drawn from
    "exp": (-100, 100), "log": (0, 100), "log1p": (-1, 10), "expm1": (-30, 30), "tanh": (-10, 10),
    "sigmoid": (-40, 40), "erf": (-6, 6), "softplus": (-40, 40), "sin": (-50, 50), "cos": (-50, 50),
}
THROUGHPUT_RANGE = {  # typical arguments (denormal results are slow on some CPUs, for NumPy too)
    "exp": (-10, 10), "log": (0.01, 100), "log1p": (-0.9, 10), "expm1": (-10, 10), "tanh": (-5, 5),
    "sigmoid": (-10, 10), "erf": (-3, 3), "softplus": (-10, 10), "sin": (-10, 10), "cos": (-10, 10),
    "pow": (0.1, 10),  # x; y is drawn from the same interval
}
SINCOS_LIMIT = {np.float32: 6.5e6, np.float64: 3.5e15}  # sg_sin/sg_cos answer nan beyond


def edges(dtype) -> np.ndarray:
    """0, -0, +-tiny, denormals, +-large, +-inf, nan and the values around 1."""
    fi = np.finfo(dtype)
    vals = [0.0, 1e-30, fi.tiny, fi.tiny / 3, fi.smallest_subnormal, 1e-8, 0.5, 1.0, 2.0, 10.0, 1e10,
            1e30, float(fi.max), np.inf]
    v = np.array(vals, dtype=dtype)
    return np.concatenate([v, -v, np.array([np.nan, -1.0 + fi.eps, -1.0 - fi.eps], dtype=dtype)])


def sample(fn: str, dtype, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points: 60% in the working range, 40% log-uniform magnitudes with random sign, edges."""
    fi = np.finfo(dtype)
    lo, hi = WORKING_RANGE[fn]
    top = math.log10(float(fi.max))
    bottom = math.log10(float(fi.smallest_subnormal))
    if fn in ("sin", "cos"):
        top = math.log10(SINCOS_LIMIT[dtype])
    k = int(n * 0.6)
    a = rng.uniform(lo, hi, k)
    mags = 10.0 ** rng.uniform(bottom, top, n - k - 40)
    b = mags * rng.choice([-1.0, 1.0], mags.size)
    x = np.concatenate([a, b]).astype(dtype)
    e = edges(dtype)
    if fn in ("sin", "cos"):
        e = e[~(np.abs(e) > SINCOS_LIMIT[dtype])]
    return np.concatenate([x, e])


def sample_pow(dtype, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positive x over many magnitudes with moderate y, negative x with integer y, and edges."""
    k = n // 2
    x1 = np.exp(rng.uniform(-20, 20, k))
    y1 = rng.uniform(-20, 20, k)
    x2 = -np.exp(rng.uniform(-5, 5, n - k))
    y2 = np.round(rng.uniform(-30, 30, n - k))
    e = edges(dtype)
    ex, ey = np.meshgrid(e, e)
    x = np.concatenate([x1, x2, ex.ravel()]).astype(dtype)
    y = np.concatenate([y1, y2, ey.ravel()]).astype(dtype)
    return x, y


def rel_error(got: np.ndarray, ref: np.ndarray, dtype) -> np.ndarray:
    """|got - ref| / max(|ref|, smallest normal); 0 where both agree on inf/nan; inf on mismatch.

    ``ref`` is a wider-precision result; where it overflows/underflows ``dtype`` the rounded
    value is what ``got`` must match."""
    got = got.astype(np.float64) if dtype == np.float32 else got.astype(np.longdouble)
    ref = ref.astype(got.dtype)
    rounded = ref.astype(dtype).astype(got.dtype)
    ref = np.where(np.isinf(rounded), rounded, ref)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)
    same = (got == ref) | (np.isnan(got) & np.isnan(ref))
    err[same] = 0
    err[np.isnan(err)] = np.inf
    return err


def best_time(f, repeat: int = 25) -> float:
    f()
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def measure(loops: MathLoops, points: int, size: int, seed: int = 0) -> list[dict]:
    timing_rng = np.random.default_rng(seed)
    rows = []
    has_ld = np.finfo(np.longdouble).nmant > 52
    for fn in UNARY_FUNCTIONS + BINARY_FUNCTIONS:
        row = {"fn": fn}
        for dtype, suffix in ((np.float32, "f"), (np.float64, "")):
            name = f"sg_{fn}{suffix}"
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # points depend on name only
            args = sample_pow(dtype, points, rng) if fn == "pow" else (sample(fn, dtype, points, rng),)
            got = loops(name, *args)
            with np.errstate(all="ignore"):
                ref = REFERENCE[fn](*[a.astype(np.float64) for a in args])
                row[f"err{suffix or 'd'}"] = float(np.max(rel_error(got, ref, dtype)))
                if dtype == np.float64 and has_ld and fn != "erf":
                    ref_ld = REFERENCE[fn](*[a.astype(np.longdouble) for a in args])
                    row["err_ld"] = float(np.max(rel_error(got, ref_ld, dtype)))
            lo, hi = THROUGHPUT_RANGE[fn]
            xs = [timing_rng.uniform(lo, hi, size).astype(dtype) for _ in range(len(args))]
            out = np.empty_like(xs[0])
            fun = loops._funcs[name]
            ptrs = [out.ctypes.data, *[x.ctypes.data for x in xs]]
            t_sg = best_time(lambda fun=fun, ptrs=ptrs: fun(*ptrs, size))
            npf = NUMPY_USER[fn]
            with np.errstate(all="ignore"):
                t_np = best_time(lambda npf=npf, xs=xs: npf(*xs))
            row[f"sg{suffix or 'd'}"] = size / t_sg / 1e9
            row[f"np{suffix or 'd'}"] = size / t_np / 1e9
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    e32, e64 = 2.0**-23, 2.0**-52
    head = ("| function | f32 max rel err (ulp) | f64 max rel err vs NumPy f64 (ulp) "
            "| f64 vs long double (ulp) | f32 Gelem/s sg / NumPy | f64 Gelem/s sg / NumPy |\n"
            "|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        ld = f"{r['err_ld'] / e64:.2f}" if "err_ld" in r else "n/a"
        lines.append(
            f"| {r['fn']} | {r['errf']:.2e} ({r['errf'] / e32:.2f}) "
            f"| {r['errd']:.2e} ({r['errd'] / e64:.2f}) "
            f"| {ld} | {r['sgf']:.2f} / {r['npf']:.2f} ({r['sgf'] / r['npf']:.1f}x) "
            f"| {r['sgd']:.2f} / {r['npd']:.2f} ({r['sgd'] / r['npd']:.1f}x) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10**6, help="accuracy points per function and dtype")
    ap.add_argument("--size", type=int, default=2**18, help="array size for the throughput runs")
    args = ap.parse_args()
    loops = MathLoops()
    print(markdown(measure(loops, args.points, args.size)))


if __name__ == "__main__":
    main()
