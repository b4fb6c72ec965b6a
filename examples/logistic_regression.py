"""Logistic regression on the breast-cancer data set, the Theano tutorial way.

The loss is written out literally, ``-mean(y log p + (1 - y) log(1 - p))``; symgraph derives
the gradients symbol to symbol, checks them against finite differences with ``verify_grad``,
and compiles one SGD step (forward, backward and update in one call).
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_breast_cancer

import symgraph as sg


def load_data(seed: int = 0):
    """Standardised features (float32) and 0/1 labels, split 80/20."""
    data = load_breast_cancer()
    x = data.data.astype(np.float64)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    y = data.target.astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(0.8 * len(x))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def bce(p, y):
    """Binary cross-entropy written literally (symgraph keeps it stable through its rewrites)."""
    return -sg.mean(y * sg.log(p) + (1 - y) * sg.log(1 - p))


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="llvm", help="llvm, reference or cuda")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=1e-3, help="weight decay")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_data()
    n_features = x_train.shape[1]
    x = sg.tensor("x", (None, n_features))
    y = sg.tensor("y", (None,))
    w = sg.shared(np.zeros(n_features, np.float32), name="w")
    b = sg.shared(np.float32(0.0), name="b")

    p = sg.sigmoid(x @ w + b)                         # P(y = 1 | x)
    loss = bce(p, y) + args.l2 * sg.sum(w ** 2)
    gw, gb = sg.grad(loss, [w, b])                    # graph nodes, not numbers

    # the symbolic gradient agrees with finite differences (float64 copy of the loss)
    xs, ys = x_train[:16].astype(np.float64), y_train[:16].astype(np.float64)
    sg.verify_grad(lambda wv, bv: bce(sg.sigmoid(sg.constant(xs) @ wv + bv), sg.constant(ys)),
                   [np.full(n_features, 0.1), np.array(0.2)])

    train = sg.compile([x, y], loss, updates=[(w, w - args.lr * gw), (b, b - args.lr * gb)],
                       backend=args.backend)
    predict = sg.compile([x], p > 0.5, backend=args.backend)

    rng = np.random.default_rng(0)
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        losses = [train(x_train[idx], y_train[idx])
                  for idx in np.array_split(order, max(1, len(order) // args.batch))]
        if epoch % 10 == 9 or epoch == args.epochs - 1:
            acc = float(np.mean(predict(x_test) == (y_test > 0.5)))
            print(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}")
    return acc


if __name__ == "__main__":
    main()
