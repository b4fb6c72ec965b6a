"""Quick llvm-backend figures against NumPy (not the full harness): W1f, W3, W2.

Run: ``PYTHONPATH=. python benchmarks/llvm_backend_quick.py [--threads N]``.
Prints the best-of-N time per call of each workload and the ratio symgraph / NumPy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import symgraph as sg


def best(fn, reps=5, inner=1, clock=time.perf_counter):
    fn()
    t_best = 1e9
    for _ in range(reps):
        t = clock()
        for _ in range(inner):
            fn()
        t_best = min(t_best, (clock() - t) / inner)
    return t_best


def w1f(threads):
    x = sg.vector("x")
    f = sg.compile([x], sg.gelu(x), threads=threads)
    v = np.random.default_rng(0).uniform(-5, 5, 1 << 24).astype("float32")

    def ref():
        return 0.5 * v * (1 + np.tanh(np.float32(0.7978845608) * (v + np.float32(0.044715) * v * v * v)))
    np.testing.assert_allclose(f(v), ref(), rtol=1e-4, atol=1e-5)
    return best(lambda: f(v)), best(ref)


def w3(threads):
    rng = np.random.default_rng(0)
    X, y = sg.matrix("X"), sg.vector("y")
    w = sg.shared(np.zeros(64, "float32"), "w")
    b = sg.shared(np.float32(0.0), "b")
    p = sg.sigmoid(X @ w + b)
    loss = -(y * sg.log(p) + (1 - y) * sg.log(1 - p)).mean()
    gw, gb = sg.grad(loss, [w, b])
    upd = [(w, w - 0.1 * gw), (b, b - 0.1 * gb)]
    Xv = rng.standard_normal((32, 64)).astype("float32")
    yv = (rng.random(32) > 0.5).astype("float32")
    f = sg.compile([X, y], loss, updates=upd, threads=threads)
    ft = sg.compile([X, y], loss, updates=upd, threads=threads, trust_input=True)
    ft(Xv, yv)
    spec = ft.program.last
    wv, bv = np.zeros(64, "float32"), np.float32(0)

    def ref():
        z = Xv @ wv + bv
        pr = 1 / (1 + np.exp(-z))
        lo = -(yv * np.log(pr) + (1 - yv) * np.log(1 - pr)).mean()
        g = (pr - yv) / 32
        return lo, wv - np.float32(0.1) * (Xv.T @ g), bv - np.float32(0.1) * g.sum()
    # W3 is all overhead: process CPU time is far less noisy than wall time on a busy machine
    cpu = time.process_time
    native = best(spec.native_only([Xv, yv, w.get_value(), b.get_value()]), inner=2000, clock=cpu)
    return best(lambda: f(Xv, yv), inner=2000, clock=cpu), best(lambda: ft(Xv, yv), inner=2000, clock=cpu), \
        native, best(ref, inner=2000, clock=cpu)


def w2(threads):
    rng = np.random.default_rng(0)
    sizes = [784, 1024, 1024, 10]
    ws = [sg.shared((rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype("float32"), f"w{i}")
          for i, (a, b) in enumerate(zip(sizes, sizes[1:]))]
    bs = [sg.shared(np.zeros(b, "float32"), f"b{i}") for i, b in enumerate(sizes[1:])]
    x, t = sg.matrix("x"), sg.vector("t", dtype="int64")
    h = x
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = h @ w + b
        if i < len(ws) - 1:
            h = sg.relu(h)
    loss = sg.nn.cross_entropy(h, t)
    params = ws + bs
    grads = sg.grad(loss, params)
    f = sg.compile([x, t], loss, updates=[(p, p - 0.01 * g) for p, g in zip(params, grads)],
                   threads=threads, trust_input=True)
    xv = rng.standard_normal((512, 784)).astype("float32")
    tv = rng.integers(0, 10, 512)
    W = [w.get_value() for w in ws]
    B = [b.get_value() for b in bs]

    def ref():
        acts = [xv]
        hh = xv
        for i in range(3):
            hh = hh @ W[i] + B[i]
            if i < 2:
                hh = np.maximum(hh, 0)
            acts.append(hh)
        m = hh.max(axis=1, keepdims=True)
        e = np.exp(hh - m)
        s = e.sum(axis=1, keepdims=True)
        lo = (np.log(s[:, 0]) + m[:, 0] - hh[np.arange(512), tv]).mean()
        g = e / s
        g[np.arange(512), tv] -= 1
        g /= 512
        for i in (2, 1, 0):
            gw = acts[i].T @ g
            gb = g.sum(axis=0)
            if i:
                g = (g @ W[i].T) * (acts[i] > 0)
            W[i] - 0.01 * gw, B[i] - 0.01 * gb
        return lo
    return best(lambda: f(xv, tv), reps=5), best(ref, reps=5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    sg_t, np_t = w1f(a.threads)
    print(f"W1f GELU fwd 2^24 f32: symgraph {sg_t * 1e3:.2f} ms, numpy {np_t * 1e3:.2f} ms, "
          f"speed-up {np_t / sg_t:.2f}x")
    full, trust, native, ref = w3(a.threads)
    print(f"W3 logreg step b=32: symgraph {full * 1e6:.2f} us (trust_input {trust * 1e6:.2f} us, native "
          f"{native * 1e6:.2f} us => Python overhead {(full - native) * 1e6:.2f} / "
          f"{(trust - native) * 1e6:.2f} us), numpy {ref * 1e6:.2f} us, ratio {full / ref:.2f}")
    sg_t, np_t = w2(a.threads)
    print(f"W2 MLP step b=512: symgraph {sg_t * 1e3:.2f} ms, numpy {np_t * 1e3:.2f} ms, "
          f"ratio {sg_t / np_t:.2f}")


if __name__ == "__main__":
    main()
