"""A digits convnet: training curves and the learned first-layer filters."""

from __future__ import annotations

import numpy as np
from common import digits, figure, parser

import symgraph as sg


def main(argv=None) -> float:
    args = parser(__doc__).parse_args(argv)
    (xt, yt), (xv, yv) = digits(images=True)
    sg.seed(0)
    conv = sg.nn.Conv2d(1, 8, 3, padding=1, activation="relu")
    model = sg.nn.Sequential(conv, sg.nn.MaxPool2d(2), sg.nn.Flatten(), sg.nn.Dense(128, 10))
    x, y = sg.tensor("x", (None, 1, 8, 8)), sg.tensor("y", (None,), dtype="int64")
    loss = sg.nn.cross_entropy(model(x), y)
    step = sg.compile([x, y], loss, updates=sg.nn.adam(loss, model.params, lr=3e-3), backend=args.backend)
    val_loss = sg.compile([x, y], loss, backend=args.backend)
    predict = sg.compile([x], model(x), backend=args.backend)
    train_curve, val_curve = [], []
    for _ in range(2 if args.quick else 15):
        train_curve.append(np.mean([step(xb, yb) for xb, yb in sg.nn.minibatches(xt, yt, batch_size=32)]))
        val_curve.append(float(val_loss(xv, yv)))
    acc = sg.nn.accuracy(predict(xv), yv)
    print(f"validation accuracy {acc:.3f}")

    def draw(plt):
        plt.subplot(1, 2, 1)
        plt.plot(train_curve, label="training")
        plt.plot(val_curve, label="validation")
        plt.xlabel("epoch")
        plt.ylabel("loss")
        plt.legend()
        filters = conv.w.get_value()[:, 0]
        for k in range(8):
            plt.subplot(4, 4, 4 * (k // 2) + 3 + k % 2)
            plt.imshow(filters[k], cmap="RdBu")
            plt.axis("off")
        plt.suptitle("Convnet on the digits: curves and 3x3 filters")
    figure(args.plot, "convnet_filters", draw)
    return acc


if __name__ == "__main__":
    main()
