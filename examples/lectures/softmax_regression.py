"""Logistic and softmax regression on the digits: one linear layer, its weights as images.

A binary logistic regression (is it a 0?) with the cross-entropy written by hand, then a
10-class softmax regression; the learned weight vectors of the softmax model are drawn as 8x8
templates, one per digit.
"""

from __future__ import annotations

import numpy as np
from common import digits, figure, parser

import symgraph as sg


def main(argv=None) -> tuple[float, float]:
    args = parser(__doc__).parse_args(argv)
    data = digits()
    (xt, yt), (xv, yv) = data
    epochs = 3 if args.quick else 30
    x, y = sg.tensor("x", (None, 64)), sg.tensor("y", (None,))
    w, b = sg.shared(np.zeros(64, np.float32), "w"), sg.shared(np.float32(0.0), "b")
    p = sg.sigmoid(x @ w + b)
    nll = -sg.mean(y * sg.log(p) + (1 - y) * sg.log(1 - p))  # written as in the lectures
    step = sg.compile([x, y], nll, updates=sg.nn.sgd(nll, [w, b], lr=0.5), backend=args.backend)
    prob = sg.compile([x], p, backend=args.backend)
    for _ in range(epochs):
        for xb, yb in sg.nn.minibatches(xt, (yt == 0).astype(np.float32), batch_size=64, seed=0):
            step(xb, yb)
    binary_acc = float(np.mean((prob(xv) > 0.5) == (yv == 0)))
    print(f"logistic regression 'is it a 0?': validation accuracy {binary_acc:.3f}")

    model = sg.nn.Dense(64, 10, init_w=lambda s, seed, dtype: sg.nn.init.zeros(s, dtype=dtype))
    xm, ym = sg.tensor("xm", (None, 64)), sg.tensor("ym", (None,), dtype="int64")
    loss = sg.nn.cross_entropy(model(xm), ym)
    step10 = sg.compile([xm, ym], loss, updates=sg.nn.sgd(loss, model.params, lr=0.5), backend=args.backend)
    predict = sg.compile([xm], model(xm), backend=args.backend)
    curve = []
    for _ in range(epochs):
        curve.append(np.mean([step10(xb, yb) for xb, yb in sg.nn.minibatches(xt, yt, batch_size=64, seed=0)]))
    acc = sg.nn.accuracy(predict(xv), yv)
    print(f"softmax regression: validation accuracy {acc:.3f}")

    def draw(plt):
        weights = model.w.get_value()
        for k in range(10):
            plt.subplot(2, 5, k + 1)
            plt.imshow(weights[:, k].reshape(8, 8), cmap="RdBu")
            plt.title(str(k))
            plt.axis("off")
        plt.suptitle("softmax regression: one weight template per digit")
    figure(args.plot, "softmax_regression_weights", draw)
    return binary_acc, acc


if __name__ == "__main__":
    main()
