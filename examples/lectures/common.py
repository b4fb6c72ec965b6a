"""What the lecture examples share: arguments, the digits data, small models, training, plots."""

from __future__ import annotations

import argparse
import os

import numpy as np

import symgraph as sg


def parser(doc: str) -> argparse.ArgumentParser:
    """``--backend``, ``--plot FOLDER`` (save PNG figures there) and ``--quick`` (a smoke run)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--backend", default="llvm", help="llvm, reference or cuda")
    p.add_argument("--plot", default=None, metavar="FOLDER", help="save the figures as PNG files here")
    p.add_argument("--quick", action="store_true", help="a few steps only (for tests)")
    return p


def digits(n_train: int = 1200, seed: int = 0, images: bool = False):
    """Scikit-learn digits scaled to [0, 1]: ``(x_train, y_train), (x_val, y_val)``."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    x = x[:, None] if images else x.reshape(len(x), -1)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], d.target[order].astype(np.int64)
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def classifier(model, backend: str, optimiser=sg.nn.sgd, extra_cost=None, n_in: int = 64, **opt_kw):
    """Compiled ``(step, loss_of, predict)`` of a model on flat digits."""
    x, y = sg.tensor("x", (None, n_in)), sg.tensor("y", (None,), dtype="int64")
    loss = sg.nn.cross_entropy(model(x, train=True), y)
    cost = loss if extra_cost is None else loss + extra_cost
    opt = optimiser(cost, model.params, **opt_kw)
    step = sg.compile([x, y], loss, updates=opt + sg.nn.state_updates(loss), backend=backend)
    eval_loss = sg.compile([x, y], sg.nn.cross_entropy(model(x), y), backend=backend)
    predict = sg.compile([x], model(x), backend=backend)
    return step, eval_loss, predict


def train(step, data, epochs: int, batch: int = 64, seed: int = 0) -> list[float]:
    """Minibatch epochs; returns the mean training loss of each epoch."""
    (xt, yt), _ = data
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        history.append(float(np.mean([step(xb, yb) for xb, yb in
                                      sg.nn.minibatches(xt, yt, batch_size=batch, seed=rng)])))
    return history


def figure(folder: str | None, name: str, draw) -> str | None:
    """Call ``draw(plt)`` and save the current figure as ``folder/name.png`` (nothing without a
    folder or without matplotlib)."""
    if folder is None:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install symgraph[examples]); no figure written")
        return None
    os.makedirs(folder, exist_ok=True)
    plt.figure(figsize=(6.4, 4.0))
    draw(plt)
    path = os.path.join(folder, f"{name}.png")
    plt.tight_layout()
    plt.savefig(path, dpi=80)
    plt.close("all")
    print(f"figure written to {path}")
    return path
