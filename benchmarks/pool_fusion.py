"""W4's training step with and without one of its fusions, compiled in one process and timed
alternately call by call: the fused max-pool + ReLU gradient (``symgraph.rewrite.pool_grad``,
the default) or the bias and ReLU in the direct convolution's stores
(``--rewrite fuse_conv_epilogue``, ``symgraph.rewrite.fuse``).

Usage: ``python benchmarks/pool_fusion.py [--rewrite NAME] [--threads 1] [--rounds 60]
[--kernels]``; prints the median wall and process CPU time per step of each variant and their
ratio, and the machine's load.  ``--kernels``: compiled with ``profile=True`` instead, the mean
time per step of the kernels that the fusions change (convolution forward, bias + ReLU, max
pooling, its gradient, the ReLU gradient, the bias gradient's sum) and of the whole step.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import alternating_medians  # noqa: E402
from symgraph.rewrite import engine, load_all  # noqa: E402

REWRITES = ("max_pool_relu_grad", "fuse_conv_epilogue")


def build(rewrite: str, fused: bool, threads: int, data: dict, profile: bool = False):
    """W4's step compiled with the rewrite registered or not."""
    from benchmarks.peers.symgraph_peer import build_step
    load_all()
    table = engine.LOCAL if rewrite in engine.LOCAL else engine.GLOBAL
    saved = table.pop(rewrite) if not fused else None
    try:
        f, _ = build_step("w4", data, threads, "llvm", profile=profile)
    finally:
        if saved is not None:
            table[rewrite] = saved
    assert any(r.rewrite == rewrite for r in f.rewrite_log) == fused
    return f


def _variants(rewrite: str, threads: int, profile: bool) -> tuple[dict, dict]:
    from benchmarks.workloads import make_data, sizes
    data = make_data("w4", sizes(False))
    fns = {"separate": build(rewrite, False, threads, data, profile),
           "fused": build(rewrite, True, threads, data, profile)}
    for f in fns.values():
        for _ in range(3):
            f(data["x"], data["y"])
    return fns, data


def medians(rewrite: str, threads: int, rounds: int) -> dict:
    """Median (wall, CPU) seconds per step of each variant, timed alternately."""
    fns, data = _variants(rewrite, threads, False)
    return alternating_medians(fns, (data["x"], data["y"]), rounds)


def kernel_times(rewrite: str, threads: int, rounds: int) -> dict:
    """Mean seconds per step of each changed kernel and of the whole step, per variant."""
    fns, data = _variants(rewrite, threads, True)
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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--kernels", action="store_true", help="per-kernel times (profile=True)")
    args = ap.parse_args()
    load = os.getloadavg()
    if args.kernels:
        for name, (changed, total) in kernel_times(args.rewrite, args.threads, args.rounds).items():
            print(f"{name}: step {total * 1e3:.2f} ms, changed kernels {sum(changed.values()) * 1e3:.2f} ms")
            for kernel, sec in sorted(changed.items(), key=lambda kv: -kv[1]):
                print(f"    {sec * 1e3:6.3f} ms  {kernel}")
        print(f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
        return
    res = medians(args.rewrite, args.threads, args.rounds)
    base = res["separate"]
    print(f"W4 step, threads {args.threads}, {args.rounds} alternating rounds, medians; "
          f"load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(f"| {args.rewrite} | wall ms | CPU ms | wall / separate | CPU / separate |")
    print("|---|---|---|---|---|")
    for name, (wall, cpu) in res.items():
        print(f"| {name} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {wall / base[0]:.3f} | {cpu / base[1]:.3f} |")


if __name__ == "__main__":
    main()
