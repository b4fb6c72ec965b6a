"""End-to-end smoke test: build, differentiate, compile and train on the reference backend."""

import numpy as np

import symgraph as sg


def test_logistic_regression_learns():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((200, 3)).astype(np.float32)
    ys = (xs @ np.array([1.0, -2.0, 0.5]) > 0).astype(np.int64)
    x = sg.matrix("x")
    y = sg.vector("y", dtype="int64")
    w = sg.shared(np.zeros((3, 2), np.float32), name="w")
    loss = sg.nn.cross_entropy(x @ w, y)
    step = sg.compile([x, y], loss, updates=[(w, w - 0.5 * sg.grad(loss, w))], backend="reference")
    first = step(xs, ys)
    for _ in range(50):
        last = step(xs, ys)
    assert last < 0.5 * first
    predict = sg.compile([x], sg.argmax(x @ w, axis=1), backend="reference")
    assert np.mean(predict(xs) == ys) > 0.9
