"""Adversarial digits: the fast gradient sign method against a small MLP.

Trains a 64-128-10 ReLU network on the scikit-learn digits, then asks symgraph for the
gradient of the loss with respect to the *input images* (the same ``sg.grad``, just another
``wrt``) and moves every pixel by ``eps`` in the direction of that gradient's sign:
``x_adv = clip(x + eps * sign(d loss / d x), 0, 1)``.  Accuracy falls as ``eps`` grows.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.datasets import load_digits

import symgraph as sg


def load_data(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = int(0.8 * len(x))
    x, y = x[order], y[order]
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="llvm", help="llvm, reference or cuda")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2, 0.3])
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_data()
    x = sg.tensor("x", (None, 64))
    y = sg.tensor("y", (None,), dtype="int64")
    eps = sg.scalar("eps")
    w1 = sg.nn.init.he_normal((64, 128), seed=0, name="w1")
    b1 = sg.nn.init.zeros((128,), name="b1")
    w2 = sg.nn.init.glorot_uniform((128, 10), seed=1, name="w2")
    b2 = sg.nn.init.zeros((10,), name="b2")
    params = [w1, b1, w2, b2]
    logits = sg.relu(x @ w1 + b1) @ w2 + b2
    loss = sg.nn.cross_entropy(logits, y)

    train = sg.compile([x, y], loss, updates=sg.nn.sgd(loss, params, lr=0.1), backend=args.backend)
    predict = sg.compile([x], sg.argmax(logits, axis=1), backend=args.backend)
    # the attack: one more gradient, with respect to the input this time
    x_adv = sg.clip(x + eps * sg.sign(sg.grad(loss, x)), 0.0, 1.0)
    attack = sg.compile([x, y, eps], x_adv, backend=args.backend)

    rng = np.random.default_rng(0)
    for _ in range(args.epochs):
        order = rng.permutation(len(x_train))
        for idx in np.array_split(order, len(order) // 64):
            train(x_train[idx], y_train[idx])

    results = {}
    for e in args.eps:
        adv = attack(x_test, y_test, e)
        acc = float(np.mean(predict(adv) == y_test))
        results[e] = acc
        print(f"eps {e:4.2f}  max pixel change {np.abs(adv - x_test).max():.2f}  test accuracy {acc:.3f}")
    return results


if __name__ == "__main__":
    main()
