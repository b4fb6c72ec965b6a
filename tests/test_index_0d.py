"""0-d integer-array indices (``np.array(k)``) in non-leading positions, on every CPU backend.

Such an index is a constant of shape ``()``; the llvm lowering once turned it into a
``(1,)`` array, so scatters (``inc_subtensor`` and the gradient of a gather) wrote the first
row's value into every row.  Values are compared with NumPy, gradients with torch float64
autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_matches, rand

import symgraph as sg

BACKENDS = ["llvm", "reference"]
X = rand(np.random.default_rng(7), (3, 4, 5), "float64")

# keys on a (3, 4, 5) tensor with a 0-d index array after at least one other entry
KEYS = {
    "slice_a0": lambda: (slice(None), np.array(1)),
    "slice_a0_neg": lambda: (slice(None), np.array(-2)),
    "step_slice_a0": lambda: (slice(None, None, 2), np.array(3), slice(1, 4)),
    "slice_a0_slice": lambda: (slice(1, None), np.array(0), slice(None)),
    "ellipsis_a0": lambda: (Ellipsis, np.array(4)),
    "newaxis_slice_a0": lambda: (None, slice(None), np.array(2)),
    "slice_slice_a0": lambda: (slice(None), slice(None, None, -1), np.array(1)),
    "a0_with_array": lambda: (slice(None), np.array(1), np.array([0, 4, 2])),
    "array_slice_a0": lambda: (np.array([2, 0]), slice(None), np.array(3)),
    "int_slice_a0": lambda: (1, slice(None), np.array(2)),
}

# torch has no negative slice steps
TORCH_KEYS = [k for k in KEYS if k != "slice_slice_a0"]


def _torch_key(key):
    return tuple(torch.as_tensor(k) if isinstance(k, np.ndarray) else k for k in key)


def _weights(shape) -> np.ndarray:
    return rand(np.random.default_rng(8), shape, "float64")


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(KEYS))
def test_gather_with_0d_index_value_and_grad(name, backend, static):
    key = KEYS[name]()
    want = X[key]
    w = _weights(want.shape)
    x = sg.tensor("x", X.shape if static else (None,) * 3, "float64")
    y = x[key]
    cost = sg.sum(y * sg.constant(w))
    f = sg.compile([x], [y, sg.grad(cost, x)], backend=backend)
    got, gx = f(X)
    assert_matches(got, np.array(want, order="C"))
    want_gx = np.zeros_like(X)
    np.add.at(want_gx, key, w)  # d/dx sum(x[key] * w), NumPy's scatter-add
    assert_matches(gx, want_gx)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", TORCH_KEYS)
def test_inc_subtensor_with_0d_index_value_and_grads(name, backend):
    key = KEYS[name]()
    sub_shape = X[key].shape
    yv = rand(np.random.default_rng(9), sub_shape, "float64")
    w = _weights(X.shape)
    x = sg.tensor("x", (None,) * 3, "float64")
    y = sg.tensor("y", (None,) * len(sub_shape), "float64")
    out = sg.inc_subtensor(x, key, y)
    cost = sg.sum(out * out * sg.constant(w))
    f = sg.compile([x, y], [out, *sg.grad(cost, [x, y])], backend=backend)
    got, gx, gy = f(X, yv)
    want = X.copy()
    want[key] += yv
    assert_matches(got, want)
    xt, yt = torch.tensor(X, requires_grad=True), torch.tensor(yv, requires_grad=True)
    ot = xt.clone()
    ot[_torch_key(key)] += yt
    (ot * ot * torch.tensor(w)).sum().backward()
    assert_matches(gx, xt.grad.numpy())
    assert_matches(gy, yt.grad.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [0, 3, -1])
def test_take_with_0d_index_value_and_grad(backend, k):
    x = sg.tensor("x", (None, None, None), "float64")
    for axis in (1, 2, -1):
        want = np.take(X, np.array(k), axis=axis)
        w = _weights(want.shape)
        y = sg.take(x, np.array(k), axis=axis)
        f = sg.compile([x], [y, sg.grad(sg.sum(y * sg.constant(w)), x)], backend=backend)
        got, gx = f(X)
        assert_matches(got, want)
        xt = torch.tensor(X, requires_grad=True)
        (torch.index_select(xt, axis, torch.tensor([k % X.shape[axis]])).squeeze(axis)
         * torch.tensor(w)).sum().backward()
        assert_matches(gx, xt.grad.numpy())
