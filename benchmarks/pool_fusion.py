"""A convnet's training step with and without one of its fusions, compiled in one process and
timed alternately call by call: the fused max-pool + ReLU gradient
(``symgraph.rewrite.pool_grad``, the default), the bias and ReLU in the direct convolution's
stores (``--rewrite fuse_conv_epilogue``, ``symgraph.rewrite.fuse``) or the ReLU gradient's
mask read from the ReLU's output (``--rewrite relu_grad_from_output``, which lets the
convolution keep its epilogue in training when a ReLU feeds the next convolution directly).

``--model w4`` (default): W4, conv-ReLU-pool twice then dense.  ``--model stacked``: two 3x3
convolutions with ReLU back to back (16 channels, 32 x 32 images, batch 64), then a pool and a
dense layer, as in VGG-style stacks.

Usage: ``python benchmarks/pool_fusion.py [--rewrite NAME] [--model w4|stacked] [--threads 1]
[--rounds 60] [--kernels]``; prints the median wall and process CPU time per step of each
variant and their ratio, and the machine's load.  ``--kernels``: compiled with
``profile=True`` instead, the mean time per step of the kernels that the fusions change
(convolution forward, bias + ReLU, max pooling, its gradient, the ReLU gradient, the bias
gradient's sum) and of the whole step.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import alternating_medians  # noqa: E402
from symgraph.rewrite import engine, load_all  # noqa: E402

REWRITES = ("max_pool_relu_grad", "fuse_conv_epilogue", "relu_grad_from_output")
MODELS = ("w4", "stacked")


def stacked_data() -> dict:
    rng = np.random.default_rng(0)
    shapes = [(16, 3, 3, 3), (16,), (16, 16, 3, 3), (16,), (16 * 16 * 16, 10)]
    return {"x": rng.standard_normal((64, 3, 32, 32)).astype(np.float32),
            "y": rng.integers(0, 10, 64),
            "params": [(rng.standard_normal(sh) * 0.1).astype(np.float32) for sh in shapes]}


def stacked_step(data: dict, threads: int, profile: bool):
    """conv3x3-ReLU-conv3x3-ReLU-pool-dense, one SGD step."""
    import symgraph as sg
    x = sg.tensor("x", (None, 3, 32, 32))
    y = sg.tensor("y", (None,), dtype="int64")
    params = [sg.shared(p.copy(), f"p{i}") for i, p in enumerate(data["params"])]
    w1, b1, w2, b2, wd = params
    h = sg.relu(sg.nn.conv2d(x, w1, padding=1) + b1[None, :, None, None])
    h = sg.relu(sg.nn.conv2d(h, w2, padding=1) + b2[None, :, None, None])
    h = sg.nn.max_pool2d(h, 2).reshape((x.shape[0], -1))
    loss = sg.nn.cross_entropy(h @ wd, y)
    grads = sg.grad(loss, params)
    return sg.compile([x, y], loss, updates=[(p, p - 0.01 * g) for p, g in zip(params, grads)],
                      threads=threads, profile=profile)


def build(rewrite: str, fused: bool, threads: int, data: dict, profile: bool = False,
          model: str = "w4"):
    """The model's step compiled with the rewrite registered or not."""
    from benchmarks.peers.symgraph_peer import build_step
    load_all()
    with contextlib.nullcontext() if fused else engine.disabled(rewrite):
        if model == "stacked":
            f = stacked_step(data, threads, profile)
        else:
            f, _ = build_step("w4", data, threads, "llvm", profile=profile)
    assert any(r.rewrite == rewrite for r in f.rewrite_log) == fused
    return f


def _variants(rewrite: str, threads: int, profile: bool, model: str) -> tuple[dict, dict]:
    from benchmarks.workloads import make_data, sizes
    data = stacked_data() if model == "stacked" else make_data("w4", sizes(False))
    fns = {"separate": build(rewrite, False, threads, data, profile, model),
           "fused": build(rewrite, True, threads, data, profile, model)}
    for f in fns.values():
        for _ in range(3):
            f(data["x"], data["y"])
    return fns, data


def medians(rewrite: str, threads: int, rounds: int, model: str = "w4") -> dict:
    """Median (wall, CPU) seconds per step of each variant, timed alternately."""
    fns, data = _variants(rewrite, threads, False, model)
    return alternating_medians(fns, (data["x"], data["y"]), rounds)


def kernel_times(rewrite: str, threads: int, rounds: int, model: str = "w4") -> dict:
    """Mean seconds per step of each changed kernel and of the whole step, per variant."""
    fns, data = _variants(rewrite, threads, True, model)
    before = {name: {s["kernel"]: s["seconds"] for s in f.stats()} for name, f in fns.items()}
    for _ in range(rounds):
        for f in fns.values():
            f(data["x"], data["y"])
    out = {}
    for name, f in fns.items():
        spent = {s["kernel"]: (s["seconds"] - before[name].get(s["kernel"], 0.0)) / rounds
                 for s in f.stats()}
        changed = {k: sec for k, sec in spent.items()
                   if k.startswith(("max_pool", "fused_ge_where", "fused_sum", "sum_", "conv_direct_",
                                    "conv_epilogue", "conv_gemm", "fused_maximum"))}
        out[name] = (changed, sum(spent.values()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rewrite", choices=REWRITES, default=REWRITES[0])
    ap.add_argument("--model", choices=MODELS, default="w4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--kernels", action="store_true", help="per-kernel times (profile=True)")
    args = ap.parse_args()
    load = os.getloadavg()
    if args.kernels:
        times = kernel_times(args.rewrite, args.threads, args.rounds, args.model)
        for name, (changed, total) in times.items():
            print(f"{name}: step {total * 1e3:.2f} ms, changed kernels {sum(changed.values()) * 1e3:.2f} ms")
            for kernel, sec in sorted(changed.items(), key=lambda kv: -kv[1]):
                print(f"    {sec * 1e3:6.3f} ms  {kernel}")
        print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
        return
    res = medians(args.rewrite, args.threads, args.rounds, args.model)
    base = res["separate"]
    print(f"{args.model} step, threads {args.threads}, {args.rounds} alternating rounds, medians; "
          f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(f"| {args.rewrite} | wall ms | CPU ms | wall / separate | CPU / separate |")
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in res.items():
        print(f"| {name} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {wall / base[0]:.3f} | {cpu / base[1]:.3f} |")


if __name__ == "__main__":
    main()
