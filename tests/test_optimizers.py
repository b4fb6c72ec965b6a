"""Optimisers return update lists whose one-step results match hand-written NumPy updates."""

import numpy as np
import pytest

import symgraph as sg
from symgraph.nn import init

LR = 0.1


def _problem():
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((3, 2)).astype(np.float64)
    xs = rng.standard_normal((5, 3))
    ys = rng.standard_normal((5, 2))
    return w0, xs, ys


def _grad_np(w, xs, ys):
    # d/dw mean((xs @ w - ys)^2)
    return 2.0 * xs.T @ (xs @ w - ys) / ys.size


def _numpy_steps(name, w, g_fn, steps):
    state = {}
    for t in range(1, steps + 1):
        g = g_fn(w)
        if name == "sgd":
            w = w - LR * g
        elif name == "momentum":
            v = 0.9 * state.get("v", 0) - LR * g
            state["v"] = v
            w = w + v
        elif name == "nesterov":
            v = 0.9 * state.get("v", 0) - LR * g
            state["v"] = v
            w = w + 0.9 * v - LR * g
        elif name == "adagrad":
            acc = state.get("acc", 0) + g * g
            state["acc"] = acc
            w = w - LR * g / (np.sqrt(acc) + 1e-8)
        elif name == "rmsprop":
            acc = 0.9 * state.get("acc", 0) + 0.1 * g * g
            state["acc"] = acc
            w = w - LR * g / (np.sqrt(acc) + 1e-8)
        elif name == "adadelta":
            ag = 0.95 * state.get("ag", 0) + 0.05 * g * g
            delta = np.sqrt(state.get("ad", 0) + 1e-6) / np.sqrt(ag + 1e-6) * g
            state["ad"] = 0.95 * state.get("ad", 0) + 0.05 * delta * delta
            state["ag"] = ag
            w = w - LR * delta
        elif name == "adam":
            m = 0.9 * state.get("m", 0) + 0.1 * g
            v = 0.999 * state.get("v", 0) + 0.001 * g * g
            state["m"], state["v"] = m, v
            w = w - LR * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return w


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop",
                                  "adadelta", "adam"])
def test_optimizer_matches_numpy(name):
    w0, xs, ys = _problem()
    w = sg.shared(w0, name="w")
    x = sg.tensor("x", (None, 3), dtype="float64")
    y = sg.tensor("y", (None, 2), dtype="float64")
    loss = sg.nn.mse(x @ w, y)
    updates = getattr(sg.nn, name)(loss, [w], lr=LR)
    step = sg.compile([x, y], loss, updates=updates, backend="reference")
    for _ in range(3):
        step(xs, ys)
    expected = _numpy_steps(name, w0, lambda v: _grad_np(v, xs, ys), 3)
    np.testing.assert_allclose(w.get_value(), expected, rtol=1e-4, atol=1e-6)


def test_initialisers_shapes_and_scale():
    w = init.he_normal((400, 300), seed=3)
    assert w.shape == (400, 300) and w.dtype == "float32"
    assert abs(w.get_value().std() - np.sqrt(2 / 400)) < 0.01
    g = init.glorot_uniform((8, 1, 5, 5), seed=0)
    limit = np.sqrt(6 / (25 + 200))
    assert np.abs(g.get_value()).max() <= limit
    assert not init.zeros((3,)).get_value().any()
