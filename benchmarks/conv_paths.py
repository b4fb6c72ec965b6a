"""Time each convolution op (forward, weight gradient, input gradient) on both lowering paths
(im2col + GEMM, direct loops) for W4's two layers and a few common shapes, to check or re-tune
``symgraph.codegen.lower.conv``'s selection thresholds on a machine.

Usage: ``python benchmarks/conv_paths.py [--threads 1] [--repeats 5] [--shapes w4c1 w4c2 ...]``.
Times are the best of ``--repeats`` rounds of process CPU time per call (robust to other jobs
time-sharing the cores); prints a markdown table with direct / im2col and the path the
selection rule picks.

``--step``: the whole W4 training step instead, compiled three times (every convolution on
im2col, every one direct, the per-shape selection) and timed alternately call by call in one
process for ``--rounds`` rounds; prints the median wall and process CPU time per step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import symgraph as sg  # noqa: E402
from benchmarks.timing import alternating_medians  # noqa: E402
from symgraph.codegen.lower import conv as conv_lowering  # noqa: E402

# name: (input NCHW, weights OIHW, padding)
SHAPES = {
    "w4c1": ((64, 1, 28, 28), (32, 1, 5, 5), 0),
    "w4c2": ((64, 32, 12, 12), (64, 32, 5, 5), 0),
    "rgb3x3": ((32, 3, 32, 32), (16, 3, 3, 3), 1),
    "c16": ((32, 16, 16, 16), (32, 16, 3, 3), 1),
    "c64": ((16, 64, 16, 16), (64, 64, 3, 3), 1),
    "c128": ((8, 128, 8, 8), (128, 128, 3, 3), 1),
}
KINDS = ("forward", "grad_weight", "grad_input")


def build(shape: str, kind: str, path: str | None, threads: int):
    """The compiled function computing one op, and its input values."""
    conv_lowering.FORCE_PATH = path
    try:
        xs, ws, pad = SHAPES[shape]
        x, w = sg.tensor("x", xs), sg.tensor("w", ws)
        y = sg.nn.conv2d(x, w, padding=pad)
        ins = [x, w]
        if kind == "forward":
            out = y
        else:
            g = sg.tensor("g", y.type.shape)
            ins.append(g)
            gx, gw = sg.grad(sg.sum(y * g), [x, w])
            out = gx if kind == "grad_input" else gw
        f = sg.compile(ins, out, backend="llvm", threads=threads)
    finally:
        conv_lowering.FORCE_PATH = None
    rng = np.random.default_rng(0)
    return f, [rng.standard_normal(v.type.shape).astype(np.float32) for v in ins]


def best_cpu_seconds(f, vals, repeats: int, calls: int = 3) -> float:
    for _ in range(2):
        f(*vals)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(calls):
            f(*vals)
        best = min(best, (time.process_time() - start) / calls)
    return best


def step_medians(threads: int, rounds: int) -> dict:
    """Median (wall, CPU) seconds of W4's step per path setting, timed alternately."""
    from benchmarks.peers.symgraph_peer import build_step
    from benchmarks.workloads import make_data, sizes
    data = make_data("w4", sizes(False))
    fns = {}
    for name, path in (("im2col", "im2col"), ("direct", "direct"), ("selection", None)):
        conv_lowering.FORCE_PATH = path
        try:
            fns[name], _ = build_step("w4", data, threads, "llvm")
        finally:
            conv_lowering.FORCE_PATH = None
        for _ in range(3):
            fns[name](data["x"], data["y"])
    return alternating_medians(fns, (data["x"], data["y"]), rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--step", action="store_true", help="time W4's whole step per path setting")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    if args.step:
        res = step_medians(args.threads, args.rounds)
        base = res["im2col"]
        print(f"W4 step, threads {args.threads}, {args.rounds} alternating rounds, medians\n")
        print("| convolutions | wall ms | CPU ms | wall / im2col | CPU / im2col |")
        print("|---|---|---|---|---|")
        for name, (wall, cpu) in res.items():
            print(f"| {name} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {wall / base[0]:.2f} "
                  f"| {cpu / base[1]:.2f} |")
        return
    print(f"threads {args.threads}; best of {args.repeats} rounds, process CPU ms per call\n")
    print("| shape | op | im2col ms | direct ms | direct / im2col | rule picks |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes:
        (n, c, h, wd), (o, _, kh, kw), pad = SHAPES[shape]
        oh, ow = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
        for kind in KINDS:
            if kind == "grad_input" and c == 1 and shape == "w4c1":
                continue  # W4 never needs the input gradient of its first layer
            ms = [best_cpu_seconds(*build(shape, kind, path, args.threads), args.repeats) * 1e3
                  for path in ("im2col", "direct")]
            pick = conv_lowering.conv_path(kind, c, o, kh, kw, (h, wd, oh, ow))
            print(f"| {shape} | {kind} | {ms[0]:.2f} | {ms[1]:.2f} | {ms[1] / ms[0]:.2f} | {pick} |",
                  flush=True)


if __name__ == "__main__":
    main()
