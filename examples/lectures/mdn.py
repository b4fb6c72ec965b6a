"""Euclidean loss versus a mixture density network on an inverse problem.

Data: ``x = y + 0.3 sin(2 pi y) + noise``, and we predict ``y`` from ``x``. For some ``x`` there
are three valid ``y``: the Euclidean (squared) loss learns their mean, which is none of them; a
mixture density network (Bishop) outputs a mixture of K Gaussians per ``x`` and learns all
branches. Both are plain graphs differentiated by ``sg.grad``.
"""

from __future__ import annotations

import numpy as np
from common import figure, parser

import symgraph as sg

K = 5


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 1, n)
    x = y + 0.3 * np.sin(2 * np.pi * y) + rng.uniform(-0.1, 0.1, n)
    return x.astype(np.float32)[:, None], y.astype(np.float32)


def main(argv=None) -> tuple[float, float]:
    args = parser(__doc__).parse_args(argv)
    xs, ys = data(1000)
    steps = 50 if args.quick else 3000
    sg.seed(0)
    x, y = sg.tensor("x", (None, 1)), sg.tensor("y", (None,))

    net = sg.nn.Sequential(sg.nn.Dense(1, 20, "tanh"), sg.nn.Dense(20, 1))
    euclid = sg.mean(sg.square(net(x)[:, 0] - y))
    step_e = sg.compile([x, y], euclid, updates=sg.nn.adam(euclid, net.params, lr=0.01), backend=args.backend)

    mdn = sg.nn.Sequential(sg.nn.Dense(1, 20, "tanh"), sg.nn.Dense(20, 3 * K))
    out = mdn(x)
    log_pi = sg.nn.log_softmax(out[:, :K])
    mu, log_sigma = out[:, K:2 * K], out[:, 2 * K:]
    z = (y[:, None] - mu) * sg.exp(-log_sigma)
    log_density = log_pi - log_sigma - 0.5 * z * z - 0.5 * np.log(2 * np.pi)
    nll = -sg.mean(sg.logsumexp(log_density, axis=1))
    step_m = sg.compile([x, y], nll, updates=sg.nn.adam(nll, mdn.params, lr=0.01), backend=args.backend)
    for _ in range(steps):
        le, lm = step_e(xs, ys), step_m(xs, ys)
    print(f"Euclidean loss {float(le):.4f}; mixture density network negative log-likelihood {float(lm):.3f}")

    grid = np.linspace(-0.1, 1.1, 200, dtype=np.float32)[:, None]
    mean_pred = sg.compile([x], net(x)[:, 0], backend=args.backend)(grid)
    pis, mus = sg.compile([x], [sg.exp(log_pi), mu], backend=args.backend)(grid)

    def draw(plt):
        plt.plot(xs[:, 0], ys, ".", color="0.75", markersize=3, label="data")
        plt.plot(grid[:, 0], mean_pred, "r-", label="Euclidean loss: the conditional mean")
        for k in range(K):
            keep = pis[:, k] > 0.1
            plt.plot(grid[keep, 0], mus[keep, k], "b.", markersize=3,
                     label="MDN component means (weight > 0.1)" if k == 0 else None)
        plt.xlabel("x")
        plt.ylabel("y")
        plt.legend(loc="upper left")
        plt.title("Inverse problem: mean vs mixture")
    figure(args.plot, "mdn", draw)
    return float(le), float(lm)


if __name__ == "__main__":
    main()
