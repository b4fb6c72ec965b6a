"""Vanishing gradients: per-layer gradient norms of a deep MLP with sigmoid, tanh and ReLU
units at initialisation, and how fast each trains (tanh vs sigmoid, the lecture's question).

The sigmoid's derivative is at most 1/4, so each layer shrinks the backward message; with
tanh (derivative up to 1) or ReLU the first layers still receive a gradient.
"""

from __future__ import annotations

import numpy as np
from common import digits, figure, parser, train

import symgraph as sg

DEPTH, WIDTH = 8, 64


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    data = digits()
    (xt, yt), _ = data
    epochs = 2 if args.quick else 15
    norms, curves = {}, {}
    for act in ("sigmoid", "tanh", "relu"):
        sg.seed(0)
        init = "he_normal" if act == "relu" else "glorot_uniform"
        sizes = [64] + [WIDTH] * DEPTH
        model = sg.nn.Sequential(*[sg.nn.Dense(a, b, act, init_w=init) for a, b in zip(sizes, sizes[1:])],
                                 sg.nn.Dense(WIDTH, 10))
        x, y = sg.tensor("x", (None, 64)), sg.tensor("y", (None,), dtype="int64")
        loss = sg.nn.cross_entropy(model(x), y)
        weights = [layer.w for layer in model.layers]
        grad_norms = sg.compile([x, y], [sg.sqrt(sg.sum(sg.square(g))) for g in sg.grad(loss, weights)],
                                backend=args.backend)
        norms[act] = [float(n) for n in grad_norms(xt[:256], yt[:256])]
        step = sg.compile([x, y], loss, updates=sg.nn.sgd(loss, model.params, lr=0.1), backend=args.backend)
        curves[act] = train(step, data, epochs, batch=32)
        print(f"{act:8s} gradient norm layer 1 / layer {DEPTH}: {norms[act][0]:.2e} / "
              f"{norms[act][DEPTH - 1]:.2e}; training loss after {epochs} epochs {curves[act][-1]:.3f}")

    def draw(plt):
        plt.subplot(1, 2, 1)
        for act, n in norms.items():
            plt.semilogy(range(1, len(n) + 1), n, "o-", label=act)
        plt.xlabel("layer")
        plt.ylabel("|d loss / d W|")
        plt.legend()
        plt.title("Gradient norm per layer")
        plt.subplot(1, 2, 2)
        for act, c in curves.items():
            plt.plot(range(1, len(c) + 1), c, label=act)
        plt.xlabel("epoch")
        plt.ylabel("training loss")
        plt.title(f"{DEPTH} hidden layers, SGD")
        plt.legend()
    figure(args.plot, "vanishing_gradients", draw)
    return {act: np.asarray(n) for act, n in norms.items()}


if __name__ == "__main__":
    main()
