"""Time each convolution op (forward, weight gradient, input gradient) on both lowering paths
(im2col + GEMM, direct loops) for W4's two layers and a few common shapes, to check or re-tune
``symgraph.codegen.lower.conv``'s selection thresholds on a machine.

Usage: ``python benchmarks/conv_paths.py [--threads 1] [--repeats 5] [--shapes w4c1 w4c2 ...]``.
Times are the best of ``--repeats`` rounds of process CPU time per call (robust to other jobs
time-sharing the cores); prints a markdown table with direct / im2col and the path the
selection rule picks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import symgraph as sg  # noqa: E402
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = ap.parse_args()
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
