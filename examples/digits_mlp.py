"""The main demo: an MLP on the scikit-learn digits, differentiated and compiled by symgraph.

Builds a 64-128-10 ReLU network with a softmax cross-entropy loss, asks symgraph for the
gradients (graph nodes, symbol to symbol), compiles one training step (forward, backward and
SGD updates in one call) and an evaluation function, trains, and prints what was generated.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits

import symgraph as sg


def load_data(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(0.8 * len(x))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def build_model(n_in=64, n_hidden=128, n_out=10, seed=0):
    w1 = sg.nn.init.he_normal((n_in, n_hidden), seed=seed, name="w1")
    b1 = sg.nn.init.zeros((n_hidden,), name="b1")
    w2 = sg.nn.init.glorot_uniform((n_hidden, n_out), seed=seed + 1, name="w2")
    b2 = sg.nn.init.zeros((n_out,), name="b2")
    return [w1, b1, w2, b2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="llvm", help="llvm (default), reference or cuda")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_data()
    x = sg.tensor("x", (None, 64))
    y = sg.tensor("y", (None,), dtype="int64")
    w1, b1, w2, b2 = params = build_model()

    hidden = sg.relu(x @ w1 + b1)
    logits = hidden @ w2 + b2
    loss = sg.nn.cross_entropy(logits, y)
    grads = sg.grad(loss, params)                      # new graph nodes, not numbers
    updates = [(p, p - args.lr * g) for p, g in zip(params, grads)]

    t0 = time.perf_counter()
    train_step = sg.compile([x, y], loss, updates=updates, backend=args.backend)
    predict = sg.compile([x], sg.argmax(logits, axis=1), backend=args.backend)
    compile_s = time.perf_counter() - t0

    print("== the loss graph, as built ==")
    sg.debugprint(loss)
    print(f"\n== training ({args.backend} backend, compiled in {compile_s:.2f} s) ==")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        losses = [train_step(x_train[idx], y_train[idx])
                  for idx in np.array_split(order, len(order) // args.batch)]
        if epoch % 5 == 4 or epoch == args.epochs - 1:
            acc = float(np.mean(predict(x_test) == y_test))
            print(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}")
    train_s = time.perf_counter() - t0
    print(f"trained in {train_s:.2f} s")

    print(f"\n== the compiled training step: {len(train_step.fgraph.nodes)} nodes after "
          f"rewriting ({train_step.nodes_before_rewrite} before), {len(train_step.kernels)} kernels ==")
    kernel = max(train_step.kernels, key=lambda k: len(k.source))
    print(f"-- kernel {kernel.name} (from {', '.join(kernel.ops)}) --")
    print(kernel.source[:2000])
    try:
        asm = train_step.asm().splitlines()
    except sg.CompileError as e:
        print(f"(no machine code: {e})")
    else:
        # the printed kernel's own machine code, from its label on
        start = next((i for i, line in enumerate(asm) if line.startswith(f"{kernel.name}:")), 0)
        print("-- its machine code (excerpt of f.asm()) --")
        print("\n".join(asm[start:start + 40]))
    return acc


if __name__ == "__main__":
    main()
