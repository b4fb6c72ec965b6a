"""Backpropagation as message passing: the gradient is a graph, and so is its derivative.

Builds ``loss = (tanh(w * x + b) - t)²``, asks ``sg.grad`` for d loss / d w, prints the
gradient graph (each node is a message sent backwards along an edge of the forward graph),
writes it as Graphviz DOT, and differentiates the gradient again: the first and second
derivatives of tanh are compared with finite differences and drawn.
"""

from __future__ import annotations

import os

import numpy as np
from common import figure, parser

import symgraph as sg


def main(argv=None) -> float:
    args = parser(__doc__).parse_args(argv)
    x, t = sg.scalar("x", "float64"), sg.scalar("t", "float64")
    w, b = sg.scalar("w", "float64"), sg.scalar("b", "float64")
    loss = sg.square(sg.tanh(w * x + b) - t)
    dw = sg.grad(loss, w)
    print("the gradient d loss / d w, as graph nodes:")
    sg.debugprint(dw)
    if args.plot:
        os.makedirs(args.plot, exist_ok=True)
        with open(os.path.join(args.plot, "backprop_graph.dot"), "w") as fh:
            fh.write(sg.to_dot(dw))

    z = sg.vector("z", "float64")
    y = sg.tanh(z)
    d1 = sg.grad(y.sum(), z)           # tanh' = 1 - tanh², as graph nodes
    d2 = sg.grad(d1.sum(), z)          # and differentiated again
    f = sg.compile([z], [y, d1, d2], backend=args.backend)
    zs = np.linspace(-4, 4, 201)
    v, g1, g2 = f(zs)
    h = 1e-4
    fd2 = (np.tanh(zs + h) - 2 * np.tanh(zs) + np.tanh(zs - h)) / h ** 2
    err = float(np.max(np.abs(g2 - fd2)))
    print(f"second derivative of tanh vs finite differences: max abs difference {err:.2e}")

    def draw(plt):
        plt.plot(zs, v, label="tanh")
        plt.plot(zs, g1, label="first derivative (sg.grad)")
        plt.plot(zs, g2, label="second derivative (sg.grad of sg.grad)")
        plt.plot(zs[::10], fd2[::10], "k.", label="finite differences")
        plt.legend()
        plt.title("Derivatives are graphs too")
    figure(args.plot, "backprop_second_derivative", draw)
    return err


if __name__ == "__main__":
    main()
