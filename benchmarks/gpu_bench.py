"""GPU benchmarks of the cuda backend beside PyTorch (eager and torch.compile), JAX and CuPy.

Workloads (see the project's peer notes):

* W1f: GELU (tanh form) forward on 2^26 float32; GB/s counting 4N read + 4N written, compared
  with the device's own copy bandwidth (device-to-device memcpy of the same bytes);
* W1b: the gradient of ``sum(gelu(x))`` with respect to ``x`` (same 8N bytes);
* W6: softmax cross-entropy over (4096, 32000) logits with int labels: loss and d loss / d logits;
* W2: MLP 784-1024-1024-10, batch 4096, ReLU, softmax-CE, SGD on all six arrays: one step.

symgraph's time is the kernels' time (``profile=True`` per-kernel times, inputs already on the
GPU), and separately the whole call with NumPy in and out.  Every peer keeps its data on the
GPU and synchronises before the clock stops.  Needs an NVIDIA GPU; run:

    python benchmarks/gpu_bench.py [--repeat 20] [--only w1f,w6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import symgraph as sg

C = 0.7978845608028654

# JAX grabs 75 % of the GPU's memory when it starts unless told not to; the peers share one
# process (and one primary context) with symgraph, so let it allocate as it goes.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


def best_of(fn, repeat: int, sync=None) -> float:
    fn()
    if sync:
        sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def kernel_seconds(f, args, repeat: int) -> float:
    """Median over calls of the summed per-kernel times of a ``profile=True`` function."""
    f(*args)
    totals = []
    for _ in range(repeat):
        for k in f.kernels:
            k.stats["seconds"] = 0.0
        f(*args)
        totals.append(sum(k.stats["seconds"] for k in f.kernels))
    return statistics.median(totals)


def copy_bandwidth(nbytes: int, repeat: int) -> float:
    import pycuda.driver as drv

    from symgraph.backends.cuda_runtime import device
    dev = device()
    a, b = dev.alloc(nbytes), dev.alloc(nbytes)

    def run():
        drv.memcpy_dtod_async(b, a, nbytes, dev.stream)
    t = best_of(run, repeat, dev.stream.synchronize)
    return 2 * nbytes / t / 1e9


def gelu_sym(x):
    return 0.5 * x * (1 + sg.tanh(C * (x + 0.044715 * x * x * x)))


def w1(repeat: int, rows: list) -> None:
    import pycuda.gpuarray as gpuarray
    n = 1 << 26
    host = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    x = sg.vector("x")
    fwd = sg.compile([x], gelu_sym(x), backend="cuda", profile=True)
    bwd = sg.compile([x], sg.grad(gelu_sym(x).sum(), x), backend="cuda", profile=True)
    xd = gpuarray.to_gpu(host)
    copy = copy_bandwidth(4 * n, repeat)
    rows.append(("device copy bandwidth", f"{copy:.0f} GB/s", ""))
    for name, f in (("W1f", fwd), ("W1b", bwd)):
        t = kernel_seconds(f, [xd], repeat)
        gbs = 8 * n / t / 1e9
        rows.append((f"{name} symgraph kernels", f"{t * 1e3:.3f} ms",
                     f"{gbs:.0f} GB/s ({100 * gbs / copy:.0f} % of copy)"))
        t_call = best_of(lambda f=f: f(host), max(3, repeat // 4))
        rows.append((f"{name} symgraph call (NumPy in/out)", f"{t_call * 1e3:.2f} ms", ""))
    peers_w1(host, repeat, rows)


def peers_w1(host, repeat, rows) -> None:
    n = host.size
    try:
        import torch
        xt = torch.from_numpy(host).cuda().requires_grad_(True)

        def tg(v):
            return 0.5 * v * (1 + torch.tanh(C * (v + 0.044715 * v * v * v)))
        for label, fn in (("torch eager", tg), ("torch.compile", torch.compile(tg))):
            t = best_of(lambda fn=fn: fn(xt.detach()), repeat, torch.cuda.synchronize)
            rows.append((f"W1f {label}", f"{t * 1e3:.3f} ms", f"{8 * n / t / 1e9:.0f} GB/s"))

            def back(fn=fn):
                (g,) = torch.autograd.grad(fn(xt).sum(), xt)
                return g
            t = best_of(back, repeat, torch.cuda.synchronize)
            rows.append((f"W1b {label}", f"{t * 1e3:.3f} ms", f"{8 * n / t / 1e9:.0f} GB/s"))
    except Exception as e:  # noqa: BLE001 - a missing or CPU-only peer is reported, not fatal
        rows.append(("W1 torch", "unavailable", str(e)[:60]))
    try:
        import jax
        import jax.numpy as jnp
        xj = jax.device_put(host)

        def jg(v):
            return 0.5 * v * (1 + jnp.tanh(C * (v + 0.044715 * v * v * v)))
        f = jax.jit(jg)
        b = jax.jit(jax.grad(lambda v: jg(v).sum()))
        for label, fn in (("W1f JAX", f), ("W1b JAX", b)):
            t = best_of(lambda fn=fn: fn(xj).block_until_ready(), repeat)
            rows.append((label, f"{t * 1e3:.3f} ms", f"{8 * n / t / 1e9:.0f} GB/s"))
    except Exception as e:  # noqa: BLE001
        rows.append(("W1 JAX", "unavailable", str(e)[:60]))
    try:
        import cupy as cp
        xc = cp.asarray(host)
        k = cp.ElementwiseKernel("float32 x", "float32 y",
                                 f"y = 0.5f * x * (1.0f + tanhf({C}f * (x + 0.044715f * x * x * x)))", "gelu")
        t = best_of(lambda: k(xc), repeat, cp.cuda.Device().synchronize)
        rows.append(("W1f CuPy ElementwiseKernel", f"{t * 1e3:.3f} ms", f"{8 * n / t / 1e9:.0f} GB/s"))
    except Exception as e:  # noqa: BLE001
        rows.append(("W1 CuPy", "unavailable", str(e)[:60]))


def w6(repeat: int, rows: list) -> None:
    import pycuda.gpuarray as gpuarray
    b, c = 4096, 32000
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((b, c)).astype(np.float32)
    labels = rng.integers(0, c, b)
    z = sg.matrix("z")
    y = sg.vector("y", dtype="int64")
    loss = sg.nn.cross_entropy(z, y)
    f = sg.compile([z, y], [loss, sg.grad(loss, z)], backend="cuda", profile=True)
    t = kernel_seconds(f, [gpuarray.to_gpu(logits), gpuarray.to_gpu(labels)], repeat)
    nbytes = 2 * 4 * b * c
    rows.append(("W6 symgraph kernels", f"{t * 1e3:.3f} ms", f"{nbytes / t / 1e9:.0f} GB/s"))
    try:
        import torch
        zt = torch.from_numpy(logits).cuda().requires_grad_(True)
        yt = torch.from_numpy(labels).cuda()

        def step():
            out = torch.nn.functional.cross_entropy(zt, yt)
            (g,) = torch.autograd.grad(out, zt)
            return out, g
        te = best_of(step, repeat, torch.cuda.synchronize)
        rows.append(("W6 torch eager", f"{te * 1e3:.3f} ms", f"symgraph is {te / t:.2f}x faster"))
    except Exception as e:  # noqa: BLE001
        rows.append(("W6 torch", "unavailable", str(e)[:60]))


def w2(repeat: int, rows: list) -> None:
    import pycuda.gpuarray as gpuarray
    batch, sizes, lr = 4096, [784, 1024, 1024, 10], 0.01
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    ys = rng.integers(0, 10, batch)
    x = sg.tensor("x", (None, 784))
    y = sg.tensor("y", (None,), dtype="int64")
    params = []
    h = x
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = sg.nn.init.he_normal((a, b), seed=i, name=f"w{i}")
        bias = sg.nn.init.zeros((b,), name=f"b{i}")
        params += [w, bias]
        h = h @ w + bias
        if i < len(sizes) - 2:
            h = sg.relu(h)
    loss = sg.nn.cross_entropy(h, y)
    f = sg.compile([x, y], loss, updates=sg.nn.sgd(loss, params, lr=lr), backend="cuda", profile=True)
    t = kernel_seconds(f, [gpuarray.to_gpu(xs), gpuarray.to_gpu(ys)], repeat)
    flops = 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    rows.append(("W2 symgraph kernels", f"{t * 1e3:.3f} ms", f"{flops / t / 1e9:.0f} GFLOP/s"))
    try:
        import torch
        xt, yt = torch.from_numpy(xs).cuda(), torch.from_numpy(ys).cuda()
        ws = [torch.from_numpy(p.get_value()).cuda().requires_grad_(True) for p in params]

        def fwd(xv):
            hv = xv
            for i in range(0, len(ws), 2):
                hv = hv @ ws[i] + ws[i + 1]
                if i < len(ws) - 2:
                    hv = torch.relu(hv)
            return torch.nn.functional.cross_entropy(hv, yt)

        def make(fn):
            def step():
                out = fn(xt)
                gs = torch.autograd.grad(out, ws)
                with torch.no_grad():
                    for p, g in zip(ws, gs):
                        p -= lr * g
                return out
            return step
        for label, fn in (("torch eager", fwd), ("torch.compile", torch.compile(fwd))):
            tt = best_of(make(fn), repeat, torch.cuda.synchronize)
            rows.append((f"W2 {label}", f"{tt * 1e3:.3f} ms", f"symgraph / torch = {t / tt:.2f}"))
    except Exception as e:  # noqa: BLE001
        rows.append(("W2 torch", "unavailable", str(e)[:60]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--only", default="w1,w6,w2")
    parser.add_argument("--markdown", action="store_true", help="print a table for docs/benchmarks.md")
    args = parser.parse_args(argv)
    from symgraph.backends.cuda_runtime import device
    try:
        dev = device()
    except sg.CompileError as e:
        print(f"gpu_bench: no GPU to measure on: {e}", file=sys.stderr)
        return 2
    rows: list = [("device", dev.name, dev.arch)]
    for name in args.only.split(","):
        {"w1": w1, "w1f": w1, "w1b": w1, "w6": w6, "w2": w2}[name.strip()](args.repeat, rows)
    if args.markdown:
        print("| measurement | time / value | notes |\n| --- | --- | --- |")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
        return 0
    width = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:>14}  {r[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
