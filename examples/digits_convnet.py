"""A small convnet on the scikit-learn digits (8x8 images), trained with symgraph.

conv 3x3x8 (padding 1) + ReLU + 2x2 max-pool, conv 3x3x16 (padding 1) + ReLU + 2x2 max-pool,
dense 64 -> 10, softmax cross-entropy, momentum SGD from ``sg.nn.momentum``.  Every gradient
(through the convolutions and the pooling) is derived by ``sg.grad``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits

import symgraph as sg


def load_data(seed: int = 0):
    """Images as (N, 1, 8, 8) float32 in [0, 1] and int64 labels, split 80/20."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(0.8 * len(x))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def build_model(c1: int = 8, c2: int = 16, seed: int = 0):
    init = sg.nn.init
    return [init.he_normal((c1, 1, 3, 3), seed=seed, name="conv1_w"), init.zeros((c1,), name="conv1_b"),
            init.he_normal((c2, c1, 3, 3), seed=seed + 1, name="conv2_w"), init.zeros((c2,), name="conv2_b"),
            init.glorot_uniform((c2 * 2 * 2, 10), seed=seed + 2, name="dense_w"),
            init.zeros((10,), name="dense_b")]


def forward(params, x):
    """Logits of a batch of (N, 1, 8, 8) images."""
    w1, b1, w2, b2, w3, b3 = params
    h = sg.nn.conv2d(x, w1, padding=1) + b1[None, :, None, None]
    h = sg.nn.max_pool2d(sg.relu(h), 2)                       # (N, c1, 4, 4)
    h = sg.nn.conv2d(h, w2, padding=1) + b2[None, :, None, None]
    h = sg.nn.max_pool2d(sg.relu(h), 2)                       # (N, c2, 2, 2)
    return sg.flatten(h, 2) @ w3 + b3


def main(argv=None) -> float:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="llvm", help="llvm, reference or cuda")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-size", type=int, default=None, help="use only this many training images")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_data()
    if args.train_size:
        x_train, y_train = x_train[:args.train_size], y_train[:args.train_size]
    x = sg.tensor("images", (None, 1, 8, 8))
    y = sg.tensor("labels", (None,), dtype="int64")
    params = build_model()
    logits = forward(params, x)
    loss = sg.nn.cross_entropy(logits, y)
    updates = sg.nn.momentum(loss, params, lr=args.lr, mu=0.9)

    t0 = time.perf_counter()
    train = sg.compile([x, y], loss, updates=updates, backend=args.backend)
    predict = sg.compile([x], sg.argmax(logits, axis=1), backend=args.backend)
    print(f"compiled ({args.backend} backend) in {time.perf_counter() - t0:.2f} s: "
          f"{len(train.fgraph.nodes)} nodes in the training step")

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        losses = [train(x_train[idx], y_train[idx])
                  for idx in np.array_split(order, max(1, len(order) // args.batch))]
        acc = float(np.mean(predict(x_test) == y_test))
        print(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  test accuracy {acc:.3f}")
    print(f"trained in {time.perf_counter() - t0:.2f} s")
    return acc


if __name__ == "__main__":
    main()
