"""Indexing against NumPy: ints, negative ints, slices with steps, None, Ellipsis, integer
arrays (paired, repeated), take, one_hot, inc_subtensor."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, evaluate, noncontiguous, rand

import symgraph as sg

X = rand(np.random.default_rng(41), (5, 6, 7), "float32")

# keys without integer arrays: applied the same way to the symbolic value and the array
BASIC_KEYS = [
    0, -1, 4, (1, 2), (-1, -2, -3), slice(None), slice(1, 4), slice(None, None, 2),
    slice(None, None, -1), slice(4, 0, -2), slice(-3, None), slice(10, 20), slice(-100, 100, 3),
    (slice(None), 2), (Ellipsis, 1), (Ellipsis, slice(None, None, 3)), (1, Ellipsis),
    (None,), (None, 0), (slice(None), None, slice(1, 2)), (Ellipsis, None), (0, None, Ellipsis, None),
    (slice(1, 2), slice(None), -1), (2, 3, 4), (slice(0, 0),),
    (slice(None), slice(5, 1, -1), slice(None, None, 2)),
]


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("key", BASIC_KEYS, ids=repr)
def test_basic_indexing_matches_numpy(key, static):
    for x in (X, noncontiguous(X).astype(np.float64)):
        assert_matches(evaluate(lambda v: v[key], x, static=static), np.array(x[key], order="C"))


@pytest.mark.parametrize("key", BASIC_KEYS, ids=repr)
def test_basic_indexing_static_shape(key):
    assert sg.tensor("x", X.shape)[key].type.shape == X[key].shape
    unknown = sg.tensor("x", (None, 6, None))[key].type.shape
    assert len(unknown) == X[key].ndim
    for d, want in zip(unknown, X[key].shape):
        assert d is None or d == want


def test_indexing_rank0_and_size1():
    v = np.array([3.5], dtype=np.float32)
    assert_matches(evaluate(lambda s: s[0], v), np.asarray(v[0]))
    assert_matches(evaluate(lambda s: s[-1:], v), v[-1:])
    s = np.asarray(np.float64(2.0))
    assert_matches(evaluate(lambda t: t[None], s), s[None])
    assert_matches(evaluate(lambda t: t[...], s), s[...])
    big = rand(np.random.default_rng(42), (1023,), "float32")
    assert_matches(evaluate(lambda t: t[::7], big), big[::7])
    assert_matches(evaluate(lambda t: t[1022], big), np.asarray(big[1022]))


# integer-array keys: indices are passed as runtime inputs of the compiled function
ARRAY_CASES = [
    ("rows", lambda i: (i,), [np.array([0, 2, 4])]),
    ("repeated", lambda i: (i,), [np.array([1, 1, 3, 1])]),
    ("negative", lambda i: (i,), [np.array([-1, 0, -5])]),
    ("2d index", lambda i: (i,), [np.array([[0, 1], [4, 4]])]),
    ("second axis", lambda i: (slice(None), i), [np.array([5, 0])]),
    ("last axis", lambda i: (Ellipsis, i), [np.array([6, 0, 3])]),
    ("pair", lambda i, j: (i, j), [np.array([0, 1, 4, 4]), np.array([5, 2, 0, 0])]),
    ("pair broadcast", lambda i, j: (i, j), [np.array([[0], [3]]), np.array([1, 2, 5])]),
    ("separated", lambda i, j: (i, slice(None), j), [np.array([0, 2]), np.array([6, 1])]),
    ("with int", lambda i: (1, i), [np.array([0, 5, 5])]),
    ("with slice after", lambda i: (i, slice(1, 5, 2)), [np.array([3, 0])]),
    ("with None", lambda i: (None, i), [np.array([4, 1])]),
    ("rank0 index", lambda i: (i,), [np.array(3)]),
]


@pytest.mark.parametrize("idx_dtype", ["int64", "int32"])
@pytest.mark.parametrize("name,key,indices", ARRAY_CASES, ids=[c[0] for c in ARRAY_CASES])
def test_integer_array_indexing_matches_numpy(name, key, indices, idx_dtype):
    indices = [i.astype(idx_dtype) for i in indices]
    x = sg.tensor("x", (None, None, None))
    syms = [sg.tensor(f"i{k}", (None,) * i.ndim, idx_dtype) for k, i in enumerate(indices)]
    f = sg.compile([x] + syms, x[key(*syms)], backend="reference")
    want = np.array(X[key(*indices)], order="C")
    assert_matches(f(X, *indices), want)
    # also with the indices as constants folded into the graph, and a static input shape
    xs = sg.tensor("xs", X.shape)
    g = sg.compile([xs], xs[key(*indices)], backend="reference")
    assert g.fgraph.outputs[0].shape == want.shape
    assert_matches(g(X), want)


def test_cross_entropy_style_gather():
    """``p[arange(n), labels]`` picks one entry per row, including repeated labels."""
    p = rand(np.random.default_rng(43), (7, 4), "float32")
    labels = np.array([0, 3, 3, 1, 0, 2, 3])
    x, y = sg.matrix("p"), sg.vector("y", "int64")
    n = sg.shape(x)[0]
    f = sg.compile([x, y], x[sg.arange(n), y], backend="reference")
    assert_matches(f(p, labels), p[np.arange(7), labels])
    g = sg.compile([x, y], -sg.mean(sg.log(x[sg.arange(n), y])), backend="reference")
    q = np.abs(p) + 0.1
    assert_matches(g(q, labels), np.asarray(-np.mean(np.log(q[np.arange(7), labels]))), rtol=1e-6)


def test_integer_index_out_of_bounds_at_runtime_names_op():
    x, i = sg.vector("x"), sg.vector("i", "int64")
    f = sg.compile([x, i], x[i], backend="reference")
    with pytest.raises(IndexError, match="Subtensor"):
        f(np.zeros(3, np.float32), np.array([0, 3]))


def test_static_index_errors():
    x = sg.tensor("x", (3, 4))
    with pytest.raises(IndexError, match="out of bounds"):
        x[3]
    with pytest.raises(IndexError, match="out of bounds"):
        x[:, -5]
    with pytest.raises(IndexError, match="too many"):
        x[0, 0, 0]
    with pytest.raises(IndexError):
        x[..., ...]
    with pytest.raises(IndexError, match="integer"):
        x[sg.vector("f")]
    with pytest.raises(IndexError):
        x[np.array([0, 5])]
    with pytest.raises(ValueError):
        x[::0]


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_take(axis):
    idx = np.array([[2, 0], [1, 1]])
    x = rand(np.random.default_rng(44), (3, 4), "float64")
    assert_matches(evaluate(lambda v: sg.take(v, idx, axis=axis), x), np.take(x, idx, axis=axis))
    i = sg.tensor("i", (None, None), "int32")
    v = sg.matrix("v", "float64")
    f = sg.compile([v, i], sg.take(v, i, axis=axis), backend="reference")
    assert_matches(f(x, idx.astype(np.int32)), np.take(x, idx, axis=axis))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_one_hot(dtype):
    labels = np.array([[0, 3], [2, 2], [4, 1]])
    want = np.eye(5, dtype=dtype)[labels]
    y = sg.tensor("y", (None, None), "int64")
    f = sg.compile([y], sg.one_hot(y, 5, dtype=dtype), backend="reference")
    assert_matches(f(labels), want)
    assert_matches(evaluate(lambda v: sg.one_hot(v, 5), np.array([1, 0], np.int32)),
                   np.eye(5, dtype=np.float32)[[1, 0]])
    with pytest.raises(TypeError):
        sg.one_hot(sg.vector("f"), 3)


def test_inc_subtensor_accumulates_repeated_indices():
    x = np.zeros((4, 3), np.float32)
    idx = np.array([0, 2, 0, 0])
    y = rand(np.random.default_rng(45), (4, 3), "float32")
    want = x.copy()
    np.add.at(want, idx, y)
    xs, ys, i = sg.matrix("x"), sg.matrix("y"), sg.vector("i", "int64")
    f = sg.compile([xs, ys, i], sg.inc_subtensor(xs, i, ys), backend="reference")
    assert_matches(f(x, y, idx), want)
    g = sg.compile([xs, ys], sg.inc_subtensor(xs, (slice(1, 3), 0), ys[0, :2]), backend="reference")
    want2 = x.copy()
    want2[1:3, 0] += y[0, :2]
    assert_matches(g(x, y), want2)
