"""A 784-1024-1024-10 MLP's softmax cross-entropy built with symgraph and run by the reference
backend equals a hand-written NumPy computation."""

from __future__ import annotations

import numpy as np

import symgraph as sg

SIZES = (784, 1024, 1024, 10)
BATCH = 32


def numpy_loss(x, labels, params):
    h = x
    for k, (w, b) in enumerate(params):
        h = h @ w + b
        if k < len(params) - 1:
            h = np.maximum(h, 0)
    z = h - h.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels].mean(), h


def test_mlp_loss_matches_numpy():
    rng = np.random.default_rng(2024)
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        b = (rng.standard_normal(n_out) * 0.1).astype(np.float32)
        params.append((w, b))
    x_val = rng.uniform(0, 1, size=(BATCH, SIZES[0])).astype(np.float32)
    y_val = rng.integers(0, SIZES[-1], size=BATCH)

    x = sg.tensor("x", (None, SIZES[0]))
    y = sg.tensor("y", (None,), "int64")
    shared = [(sg.shared(w, name=f"W{k}"), sg.shared(b, name=f"b{k}")) for k, (w, b) in enumerate(params)]
    h = x
    for k, (w, b) in enumerate(shared):
        h = h @ w + b
        if k < len(shared) - 1:
            h = sg.relu(h)
    loss = sg.nn.cross_entropy(h, y)
    f = sg.compile([x, y], [loss, h], backend="reference")
    got_loss, got_logits = f(x_val, y_val)

    want_loss, want_logits = numpy_loss(x_val, y_val, params)
    assert got_loss.dtype == np.float32 and got_loss.shape == ()
    assert got_logits.dtype == np.float32 and got_logits.shape == (BATCH, SIZES[-1])
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    # the same loss through the public pieces a user would combine by hand
    manual = -sg.mean(sg.nn.log_softmax(h)[sg.arange(sg.shape(h)[0]), y])
    g = sg.compile([x, y], manual, backend="reference")
    np.testing.assert_allclose(g(x_val, y_val), want_loss, rtol=1e-5)
