"""Adversarial examples (fast gradient sign method) as pictures.

Trains an MLP on the digits, takes the gradient of the loss with respect to the input images
(``sg.grad(loss, x)``: the input is just another ``wrt``), and shows digits before and after a
step of ``eps`` along its sign, with the network's predictions.
"""

from __future__ import annotations

import numpy as np
from common import classifier, digits, figure, parser, train

import symgraph as sg


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    data = digits()
    (_, _), (xv, yv) = data
    sg.seed(0)
    model = sg.nn.Sequential(sg.nn.Dense(64, 128, "relu"), sg.nn.Dense(128, 10))
    step, _, predict = classifier(model, args.backend, sg.nn.adam, lr=3e-3)
    train(step, data, 2 if args.quick else 20, batch=32)
    x, y, eps = sg.tensor("x", (None, 64)), sg.tensor("y", (None,), dtype="int64"), sg.scalar("eps")
    loss = sg.nn.cross_entropy(model(x), y)
    attack = sg.compile([x, y, eps], sg.clip(x + eps * sg.sign(sg.grad(loss, x)), 0.0, 1.0),
                        backend=args.backend)
    results = {}
    for e in (0.0, 0.05, 0.1, 0.2):
        results[e] = sg.nn.accuracy(predict(attack(xv, yv, np.float32(e))), yv)
        print(f"eps {e:.2f}: accuracy {results[e]:.3f}")

    def draw(plt):
        adv = attack(xv[:6], yv[:6], np.float32(0.2))
        for row, (images, title) in enumerate([(xv[:6], "clean"), (adv, "eps = 0.2")]):
            pred = predict(images).argmax(1)
            for k in range(6):
                plt.subplot(2, 6, row * 6 + k + 1)
                plt.imshow(images[k].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
                plt.title(f"{title}: {pred[k]}", fontsize=8)
                plt.axis("off")
        plt.suptitle("FGSM: the same digits, predicted labels")
    figure(args.plot, "fgsm", draw)
    return results


if __name__ == "__main__":
    main()
