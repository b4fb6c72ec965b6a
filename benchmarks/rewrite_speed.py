"""How long ``rewrite_graph`` takes on big graphs (about 10,000 apply nodes).

Run: ``PYTHONPATH=$PWD python benchmarks/rewrite_speed.py``.  Prints node counts before and
after, and the best of a few timings for each graph shape.
"""

from __future__ import annotations

import time

import numpy as np

import symgraph as sg
from symgraph.graph.fgraph import FunctionGraph
from symgraph.rewrite import rewrite_graph


def elementwise_chain(n: int):
    """One long chain of small elementwise nodes (x * 1 + 0 noise included)."""
    x = sg.vector("x")
    y = x
    for i in range(n // 4):
        y = sg.tanh(y * 1.0 + 0.001 * i) - 0.0
    return [x], [sg.sum(y)]


def deep_mlp(layers: int):
    """A deep tanh MLP with its gradient: matmuls, broadcasts, reductions, shape ops."""
    x = sg.tensor("x", (None, 16))
    y = sg.vector("y", dtype="int64")
    h = x
    params = []
    for i in range(layers):
        w = sg.shared(np.zeros((16, 16), np.float32), name=f"w{i}")
        b = sg.shared(np.zeros(16, np.float32), name=f"b{i}")
        params += [w, b]
        h = sg.tanh(h @ w + b)
    loss = sg.nn.cross_entropy(h, y)
    grads = sg.grad(loss, params)
    return [x, y], [loss] + [p - 0.1 * g for p, g in zip(params, grads)]


def wide_sums(n: int):
    """Many independent reductions of elementwise expressions, with repeated subexpressions."""
    x = sg.matrix("x")
    outs = []
    for i in range(n // 6):
        e = sg.exp(x - float(i % 7))
        outs.append(sg.sum(e * e, axis=1) + sg.max(x, axis=1))
    total = outs[0]
    for o in outs[1:]:
        total = total + o
    return [x], [total]


def measure(name: str, build, repeat: int = 3) -> None:
    best, n_before, n_after = float("inf"), 0, 0
    for _ in range(repeat):
        inputs, outputs = build()
        fg = FunctionGraph(inputs, outputs)
        n_before = len(fg.toposort())
        t0 = time.perf_counter()
        rewrite_graph(fg)
        best = min(best, time.perf_counter() - t0)
        n_after = len(fg.toposort())
    print(f"{name:<28} {n_before:>7} nodes -> {n_after:>6}   rewrite {best * 1e3:8.1f} ms "
          f"({best / n_before * 1e6:5.1f} us/node)")


def main() -> None:
    measure("elementwise chain", lambda: elementwise_chain(10_000))
    measure("deep MLP step (grad)", lambda: deep_mlp(200))
    measure("wide reductions", lambda: wide_sums(10_000))


if __name__ == "__main__":
    main()
