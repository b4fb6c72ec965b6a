"""XOR with a 2-2-1 network, and the decision boundary it learned.

Two tanh hidden units bend the plane so that one sigmoid output can separate (0,1), (1,0)
from (0,0), (1,1); the figure shows the output probability over the plane.
"""

from __future__ import annotations

import numpy as np
from common import figure, parser

import symgraph as sg

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
Y = np.array([0, 1, 1, 0], dtype=np.float32)


def main(argv=None) -> np.ndarray:
    args = parser(__doc__).parse_args(argv)
    sg.seed(4)
    net = sg.nn.Sequential(sg.nn.Dense(2, 2, "tanh", init_w="glorot_normal"), sg.nn.Dense(2, 1))
    x, y = sg.tensor("x", (None, 2)), sg.tensor("y", (None,))
    logit = net(x)[:, 0]
    loss = sg.nn.binary_cross_entropy(logit, y)
    step = sg.compile([x, y], loss, updates=sg.nn.sgd(loss, net.params, lr=2.0), backend=args.backend)
    prob = sg.compile([x], sg.sigmoid(logit), backend=args.backend)
    for _ in range(30 if args.quick else 500):
        step(X, Y)
    p = prob(X)
    print("probabilities for (0,0) (0,1) (1,0) (1,1):", np.round(p, 3))

    def draw(plt):
        g = np.linspace(-0.5, 1.5, 101, dtype=np.float32)
        gx, gy = np.meshgrid(g, g)
        z = prob(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
        plt.contourf(gx, gy, z, levels=20, cmap="RdBu_r")
        plt.colorbar(label="P(output = 1)")
        plt.contour(gx, gy, z, levels=[0.5], colors="k")
        plt.scatter(X[:, 0], X[:, 1], c=Y, cmap="RdBu_r", edgecolors="k", s=120)
        plt.title("XOR: the decision boundary of a 2-2-1 network")
    figure(args.plot, "xor_boundary", draw)
    return p


if __name__ == "__main__":
    main()
