"""W2, W4 and W6 compiled with the batch dim unknown (shape-generic code) beside the same
graphs with every dim static, timed alternately in one run; prints the ratio generic/static.

    python benchmarks/shape_generic.py [--threads 1] [--seconds 1] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import symgraph as sg  # noqa: E402
from benchmarks.peers import symgraph_peer as peer  # noqa: E402
from benchmarks.workloads import make_data, sizes  # noqa: E402


class _UnknownBatch:
    """``sg`` as the peer sees it, with ``tensor`` declaring the first dim unknown."""

    def __getattr__(self, name):
        if name == "tensor":
            return lambda label, shape, dtype="float32": sg.tensor(label, (None,) + tuple(shape)[1:],
                                                                   dtype=dtype)
        return getattr(sg, name)


def _convnet_loss(params, x, y):
    """The peer's convnet loss with the flatten written for an unknown batch dim."""
    w1, b1, w2, b2, w3, b3 = params
    h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(x, w1) + b1[None, :, None, None]), 2)
    h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(h, w2) + b2[None, :, None, None]), 2)
    h = h.reshape((sg.shape(h)[0], -1))
    return sg.nn.cross_entropy(h @ w3 + b3, y)


def _build(workload: str, data: dict, threads: int, generic: bool):
    peer.LOSSES["w4"] = _convnet_loss
    peer.sg = _UnknownBatch() if generic else sg
    try:
        f, _ = peer.build_step(workload, data, threads, "llvm")
    finally:
        peer.sg = sg
    if workload == "w6":
        args = (data["logits"], data["labels"])
    else:
        args = (data["x"], data["y"])
    return f, args


def _time(f, args, seconds: float) -> list[float]:
    out, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(out) < 5:
        t = time.perf_counter()
        f(*args)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--workloads", nargs="+", default=["w2", "w4", "w6"])
    a = ap.parse_args()
    s = sizes(a.tiny)
    print(f"{'workload':8} {'static ms':>10} {'generic ms':>11} {'generic/static':>15} generations")
    for w in a.workloads:
        data = make_data(w, s)
        fs, args = _build(w, data, a.threads, generic=False)
        fg, _ = _build(w, data, a.threads, generic=True)
        fs(*args), fg(*args)
        ts, tg = [], []
        for _ in range(a.rounds):  # alternate, so drift of a noisy machine hits both
            ts += _time(fs, args, a.seconds / a.rounds)
            tg += _time(fg, args, a.seconds / a.rounds)
        ms, mg = statistics.median(ts) * 1e3, statistics.median(tg) * 1e3
        print(f"{w:8} {ms:10.3f} {mg:11.3f} {mg / ms:15.3f} {fg.program.generations}")


if __name__ == "__main__":
    main()
