"""Compile-time scaling: chains of elementwise ops and deep MLP training steps.

    python benchmarks/compile_time.py [--backend llvm] [--chains 100 1000 5000] [--layers 5 20 50]

For each graph it reports the nodes before and after rewriting, the seconds spent in
``sg.compile`` and in the first call (code generation happens there for backends that
specialise on shapes), and seconds per node; linear growth shows as a flat seconds-per-node
column.  The on-disk cache is switched off so every compile does the full work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

UNARY = ["tanh", "sin", "scale", "shift", "sigmoid", "cos"]


def chain_graph(sg, n_ops: int):
    """``n_ops`` elementwise ops applied one after another to a vector."""
    x = sg.tensor("x", (None,))
    h = x
    for i in range(n_ops):
        kind = UNARY[i % len(UNARY)]
        if kind == "tanh":
            h = sg.tanh(h)
        elif kind == "sin":
            h = sg.sin(h)
        elif kind == "scale":
            h = h * 1.5
        elif kind == "shift":
            h = h + 0.25
        elif kind == "sigmoid":
            h = sg.sigmoid(h)
        else:
            h = sg.cos(h)
    return [x], h, None, [np.linspace(-1, 1, 1000, dtype=np.float32)]


def mlp_graph(sg, n_layers: int, width: int = 64, batch: int = 32):
    """A training step (loss, gradients, SGD updates) of an ``n_layers`` ReLU MLP."""
    rng = np.random.default_rng(0)
    x = sg.tensor("x", (None, width))
    y = sg.tensor("y", (None,), dtype="int64")
    params, h = [], x
    for i in range(n_layers):
        w = sg.shared((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        b = sg.shared(np.zeros(width, np.float32), f"b{i}")
        params += [w, b]
        h = h @ w + b
        if i < n_layers - 1:
            h = sg.relu(h)
    loss = sg.nn.cross_entropy(h, y)
    grads = sg.grad(loss, params)
    updates = [(p, p - 0.01 * g) for p, g in zip(params, grads)]
    args = [rng.standard_normal((batch, width)).astype(np.float32),
            rng.integers(0, width, batch).astype(np.int64)]
    return [x, y], loss, updates, args


def measure(sg, name: str, builder, size: int, backend: str) -> dict:
    t0 = time.perf_counter()
    inputs, outputs, updates, args = builder(sg, size)
    t1 = time.perf_counter()
    f = sg.compile(inputs, outputs, updates=updates, backend=backend)
    t2 = time.perf_counter()
    f(*args)
    t3 = time.perf_counter()
    nodes = f.nodes_before_rewrite
    return {"graph": f"{name} {size}", "nodes": nodes, "nodes_after": len(f.fgraph.nodes),
            "build_s": t1 - t0, "compile_s": t2 - t1, "first_call_s": t3 - t2,
            "compile_per_node_us": (t2 - t1) / max(nodes, 1) * 1e6,
            "per_node_us": (t3 - t1) / max(nodes, 1) * 1e6}


def table(rows: list[dict]) -> str:
    lines = ["| graph | nodes (before → after rewrite) | build graph + grad (s) | sg.compile (s) | "
             "first call (s) | sg.compile per node (µs) | (compile + first call) per node (µs) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['graph']} | {r['nodes']} → {r['nodes_after']} | {r['build_s']:.3f} | "
                     f"{r['compile_s']:.3f} | {r['first_call_s']:.3f} | {r['compile_per_node_us']:.0f} | "
                     f"{r['per_node_us']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="llvm")
    ap.add_argument("--chains", type=int, nargs="*", default=[100, 1000, 5000])
    ap.add_argument("--layers", type=int, nargs="*", default=[5, 20, 50])
    ap.add_argument("--append", metavar="PATH", help="append the table as a Markdown section to PATH")
    args = ap.parse_args(argv)
    os.environ["SYMGRAPH_CACHE_DIR"] = "off"
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    from benchmarks.run import resolve_backend
    backend = resolve_backend(args.backend)
    import symgraph as sg
    rows = [measure(sg, "chain", chain_graph, n, backend) for n in args.chains]
    rows += [measure(sg, "MLP layers", mlp_graph, n, backend) for n in args.layers]
    text = (f"Command: `python benchmarks/compile_time.py {' '.join(sys.argv[1:])}`; symgraph backend: "
            f"**{backend}**; on-disk cache off.\n\n{table(rows)}\n")
    print(text)
    if args.append:
        with open(args.append, "a") as fh:
            fh.write("\n## Compile time\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
