"""compile(..., check_finite=True) names the node and line that made a NaN/inf and changes nothing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import symgraph as sg

BACKENDS = ["llvm", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_names_the_first_node_and_the_users_line(backend):
    x = sg.vector("x", "float64")
    w = sg.shared(np.ones(3), name="w")
    h = sg.log(x)  # the NaN starts here for x < 0
    loss = (h * w).sum()
    f = sg.compile([x], loss, updates=[(w, w - 0.1 * sg.grad(loss, w))], backend=backend,
                   check_finite=True)
    assert f(np.array([1.0, 2.0, 3.0])) == pytest.approx(np.log([1, 2, 3]).sum())
    before = w.get_value()
    with pytest.raises(FloatingPointError) as info:
        f(np.array([1.0, -2.0, 3.0]))
    msg = str(info.value)
    assert "log produced nan" in msg and "h = sg.log(x)" in msg and "test_check_finite.py" in msg
    np.testing.assert_array_equal(w.get_value(), before)  # nothing installed


@pytest.mark.parametrize("backend", BACKENDS)
def test_overflow_is_reported_and_nan_arguments_are_named(backend):
    x = sg.vector("x")
    f = sg.compile([x], sg.exp(x) * 2.0, backend=backend, check_finite=True)
    with pytest.raises(FloatingPointError, match="exp produced inf"):
        f(np.array([1.0, 100.0], np.float32))
    with pytest.raises(FloatingPointError, match="argument 'x' contains nan"):
        f(np.array([np.nan], np.float32))
    np.testing.assert_allclose(f(np.array([0.0], np.float32)), [2.0])


def test_guard_keeps_random_streams_and_pickles():
    rng = sg.RandomStream(3)
    x = sg.vector("x")
    f = sg.compile([x], x + rng.uniform(sg.shape(x)), check_finite=True)
    a, b = f(np.zeros(4, np.float32)), f(np.zeros(4, np.float32))
    assert not np.array_equal(a, b)  # the stream advanced
    g = pickle.loads(pickle.dumps(f))
    assert g(np.zeros(4, np.float32)).shape == (4,)
    assert f.kernels  # inspection passes through


def test_no_default_updates_leaves_streams_alone():
    rng = sg.RandomStream(5)
    x = sg.vector("x")
    f = sg.compile([x], x + rng.uniform(sg.shape(x)), no_default_updates=True)
    np.testing.assert_array_equal(f(np.zeros(4, np.float32)), f(np.zeros(4, np.float32)))
