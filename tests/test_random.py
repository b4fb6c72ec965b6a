"""RandomStream: moments of uniform / normal / bernoulli, reproducibility, fresh draws per call."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import symgraph as sg

N = 40000  # moments below are checked to about 5 standard errors


def draw(make, calls=1, seed=3, inputs=(), args=()):
    rng = sg.RandomStream(seed)
    f = sg.compile(list(inputs), make(rng), backend="reference")
    return [f(*args) for _ in range(calls)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_moments(dtype):
    (u,) = draw(lambda r: r.uniform((N,), -2.0, 3.0, dtype=dtype))
    assert u.dtype == dtype and u.shape == (N,)
    assert u.min() >= -2.0 and u.max() < 3.0
    assert abs(u.mean() - 0.5) < 5 * 5 / np.sqrt(12 * N)
    assert abs(u.var() - 25 / 12) < 0.05 * 25 / 12
    hist, _ = np.histogram(u, bins=10, range=(-2, 3))
    assert np.all(np.abs(hist - N / 10) < 5 * np.sqrt(N / 10))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal_moments(dtype):
    (z,) = draw(lambda r: r.normal((200, 200), 1.5, 2.0, dtype=dtype))
    assert z.dtype == dtype and z.shape == (200, 200)
    n = z.size
    assert abs(z.mean() - 1.5) < 5 * 2.0 / np.sqrt(n)
    assert abs(z.std() - 2.0) < 0.03 * 2.0
    std = (z - 1.5) / 2.0
    assert abs(np.mean(std ** 3)) < 0.05  # symmetric
    assert abs(np.mean(std ** 4) - 3.0) < 0.15  # normal kurtosis
    assert abs(np.mean(np.abs(std) < 1) - 0.6827) < 0.01


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_bernoulli_moments(p):
    (b,) = draw(lambda r: r.bernoulli((N,), p))
    assert b.dtype == np.float32
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert abs(b.mean() - p) < 5 * np.sqrt(p * (1 - p) / N)


def test_same_seed_same_sequence_and_fresh_numbers_each_call():
    a = draw(lambda r: r.uniform((5,)), calls=3, seed=11)
    b = draw(lambda r: r.uniform((5,)), calls=3, seed=11)
    c = draw(lambda r: r.uniform((5,)), calls=3, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert not np.array_equal(a[0], c[0])


def test_different_draws_in_one_graph_differ():
    rng = sg.RandomStream(5)
    u1, u2 = rng.uniform((100,)), rng.uniform((100,))
    z1, z2 = rng.normal((100,)), rng.normal((100,))
    f = sg.compile([], [u1, u2, z1, z2], backend="reference")
    a, b, c, d = f()
    assert not np.array_equal(a, b) and not np.array_equal(c, d)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.5


def test_symbolic_shape_and_parameters():
    x = sg.matrix("x")
    lo = sg.scalar("lo")
    rng = sg.RandomStream(2)
    out = rng.uniform(sg.shape(x), lo, lo + 1.0)
    f = sg.compile([x, lo], out, backend="reference")
    v = f(np.zeros((30, 40), np.float32), np.float32(10.0))
    assert v.shape == (30, 40) and v.min() >= 10.0 and v.max() < 11.0
    n = sg.scalar("n", "int64")
    g = sg.compile([n], rng.normal((n, 3)), backend="reference")
    assert g(7).shape == (7, 3)


def test_state_is_a_shared_variable_that_advances():
    rng = sg.RandomStream(9)
    f = sg.compile([], rng.uniform((3,)), backend="reference")
    before = rng.state.get_value()
    first = f()
    assert not np.array_equal(rng.state.get_value(), before)
    rng.state.set_value(before)  # rewinding the state replays the sequence
    np.testing.assert_array_equal(f(), first)


def test_two_functions_share_one_stream():
    rng = sg.RandomStream(4)
    u = rng.uniform((4,))
    f, g = sg.compile([], u, backend="reference"), sg.compile([], u, backend="reference")
    assert not np.array_equal(f(), g())


def test_pickled_function_continues_the_stream():
    rng = sg.RandomStream(8)
    f = sg.compile([], rng.uniform((6,)), backend="reference")
    f()
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(f(), g())
