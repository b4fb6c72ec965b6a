"""``inc_subtensor`` with a value that broadcasts into ``x[key]``: values against NumPy,
gradients (which must sum back to the value's own shape) against torch float64 autograd, on
the llvm and reference backends, with static and unknown dims."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_matches, rand

import symgraph as sg

BACKENDS = ["llvm", "reference"]
X = rand(np.random.default_rng(3), (4, 5), "float64")
W = rand(np.random.default_rng(4), (4, 5), "float64")

# (name, key, value shape): x[key] has shape (2, 5) or (4, 2) or (3, 5); the value broadcasts
CASES = [
    ("rows_row", slice(0, 2), (1, 5)),
    ("rows_vector", slice(0, 2), (5,)),
    ("rows_scalar", slice(0, 2), ()),
    ("rows_column", slice(1, 3), (2, 1)),
    ("rows_one_one", slice(None, None, 2), (1, 1)),
    ("cols_gather_row", (slice(None), np.array([0, 3])), (1, 2)),
    ("cols_gather_vector", (slice(None), np.array([4, 1])), (2,)),
    ("cols_gather_column", (slice(None), np.array([2, 0])), (4, 1)),
    ("repeated_rows_vector", np.array([0, 2, 0]), (5,)),
    ("repeated_rows_scalar", np.array([3, 3, 1]), ()),
    ("int_then_slice_scalar", (1, slice(1, 4)), ()),
]


def _torch_inc(xt, key, yt):
    if isinstance(key, np.ndarray):  # repeated rows: accumulate like np.add.at
        return xt.index_put((torch.as_tensor(key),), yt, accumulate=True)
    tkey = tuple(torch.as_tensor(k) if isinstance(k, np.ndarray) else k
                 for k in (key if isinstance(key, tuple) else (key,)))
    out = xt.clone()
    out[tkey] += yt
    return out


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,key,yshape", CASES, ids=[c[0] for c in CASES])
def test_inc_subtensor_broadcast_value_and_grads(name, key, yshape, backend, static):
    yv = rand(np.random.default_rng(5), yshape, "float64")
    x = sg.tensor("x", X.shape if static else (None, None), "float64")
    y = sg.tensor("y", yshape if static else (None,) * len(yshape), "float64")
    out = sg.inc_subtensor(x, key, y)
    cost = sg.sum(sg.tanh(out) * sg.constant(W))
    gx, gy = sg.grad(cost, [x, y])
    assert gy.ndim == len(yshape)
    f = sg.compile([x, y], [out, gx, gy], backend=backend)
    got, got_gx, got_gy = f(X, yv)
    want = X.copy()
    np.add.at(want, key, yv)
    assert_matches(got, want)
    xt, yt = torch.tensor(X, requires_grad=True), torch.tensor(yv, requires_grad=True)
    (torch.tanh(_torch_inc(xt, key, yt)) * torch.tensor(W)).sum().backward()
    assert_matches(got_gx, xt.grad.numpy())
    assert_matches(got_gy, yt.grad.numpy())


def test_inc_subtensor_value_that_cannot_broadcast_is_a_build_time_shape_error():
    x = sg.tensor("x", (4, 5), "float64")
    with pytest.raises(sg.ShapeError, match=r"value of shape \(3,\) cannot be broadcast to "
                                            r"the indexed shape \(2, 5\)"):
        sg.inc_subtensor(x, slice(0, 2), sg.tensor("y", (3,), "float64"))
    with pytest.raises(sg.ShapeError, match="cannot be broadcast"):  # more dims than x[key]
        sg.inc_subtensor(x, slice(0, 2), sg.tensor("y", (1, 2, 5), "float64"))


SET_CASES = [c for c in CASES if not c[0].startswith("repeated")] + [
    ("slice_0d_index_row", (slice(None), np.array(2)), (1,)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name,key,yshape", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_set_subtensor_broadcast_value_and_grads(name, key, yshape, backend):
    yv = rand(np.random.default_rng(6), yshape, "float64")
    x = sg.tensor("x", (None, None), "float64")
    y = sg.tensor("y", (None,) * len(yshape), "float64")
    out = sg.set_subtensor(x, key, y)
    gx, gy = sg.grad(sg.sum(sg.tanh(out) * sg.constant(W)), [x, y])
    got, got_gx, got_gy = sg.compile([x, y], [out, gx, gy], backend=backend)(X, yv)
    want = X.copy()
    want[key] = yv
    assert_matches(got, want)
    xt, yt = torch.tensor(X, requires_grad=True), torch.tensor(yv, requires_grad=True)
    ot = xt.clone()
    tkey = tuple(torch.as_tensor(k) if isinstance(k, np.ndarray) else k
                 for k in (key if isinstance(key, tuple) else (key,)))
    ot[tkey] = yt
    (torch.tanh(ot) * torch.tensor(W)).sum().backward()
    assert_matches(got_gx, xt.grad.numpy())
    assert_matches(got_gy, yt.grad.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_set_subtensor_repeated_indices_last_write_wins(backend):
    x = sg.tensor("x", (None, None), "float64")
    y = sg.tensor("y", (None, None), "float64")
    rows = np.array([1, 3, 1])
    f = sg.compile([x, y], sg.set_subtensor(x, rows, y), backend=backend)
    yv = np.arange(15.0).reshape(3, 5)
    want = X.copy()
    want[rows] = yv  # NumPy: the last of the repeated rows wins
    assert_matches(f(X, yv), want)
