"""Sizes given by symbolic int scalars or shape vectors (``arange``, ``zeros/ones/full``,
``*_like``, ``reshape`` with -1, ``broadcast_to``, random draws, ``one_hot``) on the reference
and llvm backends for several call shapes, and shared variables declared with unknown dims
(``sg.shared(value, shape=(None, 784))``) whose ``set_value`` changes those dims."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers import assert_matches

import symgraph as sg

BACKENDS = ["reference", "llvm"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_arange_with_symbolic_parts_from_shapes(backend):
    x = sg.tensor("x", (None, 3), "float64")
    n = sg.shape(x)[0]
    outs = [sg.arange(n), sg.arange(1, n, 2), sg.arange(n, 0, -1), sg.arange(n - 5, n),
            sg.arange(2 * n, dtype="float32"), sg.arange(n, -n, -3)]
    f = sg.compile([x], outs, backend=backend)
    for k in (0, 1, 4, 7):
        want = [np.arange(k), np.arange(1, k, 2), np.arange(k, 0, -1), np.arange(k - 5, k),
                np.arange(2 * k, dtype="float32"), np.arange(k, -k, -3)]
        for got, w in zip(f(np.ones((k, 3))), want):
            assert_matches(got, w)


def test_arange_with_symbolic_inputs_matches_numpy_on_the_reference_backend():
    a, b = sg.tensor("a", (), "int64"), sg.tensor("b", (), "int32")
    c = sg.tensor("c", (), "int64")
    f = sg.compile([a, b, c], [sg.arange(a), sg.arange(a, b), sg.arange(a, b, c),
                               sg.arange(2, b, 3), sg.arange(a, 10, -2)], backend="reference")
    for av, bv, cv in [(0, 5, 1), (5, 0, -2), (3, 3, 1), (-2, 7, 3), (7, -2, -3), (-4, 9, 100)]:
        want = [np.arange(av), np.arange(av, bv), np.arange(av, bv, cv), np.arange(2, bv, 3),
                np.arange(av, 10, -2)]
        for got, w in zip(f(av, np.int32(bv), cv), want):
            assert_matches(got, w)
    with pytest.raises(ValueError, match="arange: step cannot be zero"):
        f(1, np.int32(2), 0)
    with pytest.raises(ValueError, match="arange: step cannot be zero"):
        sg.arange(a, 5, 0)
    with pytest.raises(TypeError, match=r"arange: stop must be an int or an int scalar, got float32"):
        sg.arange(sg.scalar("f"))
    with pytest.raises(TypeError, match=r"arange: the size must be an int or an int scalar, got None"):
        sg.arange(sg.tensor("v", (None,)).type.shape[0])  # not an empty range


@pytest.mark.parametrize("backend", BACKENDS)
def test_sizes_from_symbolic_dims_and_shape_vectors(backend):
    x = sg.tensor("x", (None, 4), "float64")
    n = sg.shape(x)[0]
    rng = sg.RandomStream(3)
    outs = [sg.zeros((n, 3)), sg.ones(sg.shape(x), dtype="int32"), sg.full((2, n), 7.0),
            sg.zeros(n), sg.reshape(x, (n * 2, -1)), sg.reshape(x, (-1, n)),
            sg.broadcast_to(sg.constant(np.arange(4.0)), (n, 1, 4)), sg.zeros_like(x[1:]),
            sg.ones_like(x[:, :n]), sg.full_like(x, 2.5), rng.normal((n, 2)),
            rng.uniform(sg.shape(x)), rng.bernoulli((n,), 0.5),
            sg.one_hot(sg.arange(n) % 3, n)]
    f = sg.compile([x], outs, backend=backend)
    for k in (1, 2, 5):
        xv = np.arange(k * 4.0).reshape(k, 4)
        got = f(xv)
        want = [np.zeros((k, 3), "float32"), np.ones((k, 4), "int32"),
                np.full((2, k), 7.0, "float32"), np.zeros(k, "float32"), xv.reshape(k * 2, -1),
                xv.reshape(-1, k), np.broadcast_to(np.arange(4.0), (k, 1, 4)),
                np.zeros((k - 1, 4)), np.ones((k, min(k, 4))), np.full((k, 4), 2.5)]
        for g, w in zip(got, want):
            assert_matches(g, w)
        normal, uniform, coin, hot = got[len(want):]
        assert normal.shape == (k, 2) and normal.dtype == np.float32
        assert uniform.shape == (k, 4) and ((uniform >= 0) & (uniform < 1)).all()
        assert coin.shape == (k,) and set(np.unique(coin)) <= {0.0, 1.0}
        assert_matches(hot, np.eye(k, dtype="float32")[np.arange(k) % 3])


def test_one_hot_with_a_symbolic_number_of_classes():
    labels, n = sg.tensor("labels", (None,), "int32"), sg.tensor("n", (), "int64")
    y = sg.one_hot(labels, n)
    assert y.type.shape == (None, None)
    f = sg.compile([labels, n], y, backend="reference")
    lv = np.array([0, 2, 1], dtype=np.int32)
    assert_matches(f(lv, 4), np.eye(4, dtype="float32")[lv])
    assert_matches(f(lv, 0), np.zeros((3, 0), "float32"))
    with pytest.raises(TypeError, match="n .the number of classes. must be an int or an int "
                                        "scalar, got float32"):
        sg.one_hot(labels, sg.scalar("k"))
    assert sg.one_hot(labels, sg.constant(5)).type.shape == (None, 5)


# --- shared variables with unknown dims ----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_set_value_changes_a_declared_unknown_dim_of_a_compiled_function(backend):
    data = sg.shared(np.ones((3, 4)), name="data", shape=(None, 4))
    assert data.type.shape == (None, 4)
    n = sg.shape(data)[0]
    f = sg.compile([], [sg.sum(data, axis=0), data[n // 2:]], backend=backend)
    total, tail = f()
    assert_matches(total, np.full(4, 3.0))
    assert tail.shape == (2, 4)
    new = np.arange(20.0).reshape(5, 4)
    data.set_value(new)
    total, tail = f()  # compiled before set_value: still right
    assert_matches(total, new.sum(axis=0))
    assert_matches(tail, new[2:])
    data.set_value(np.ones((0, 4)))
    assert_matches(f()[0], np.zeros(4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_updates_of_a_shared_variable_with_an_unknown_dim(backend):
    acc = sg.shared(np.zeros(2), name="acc", shape=(None,))
    grow = sg.compile([], [], updates=[(acc, acc + 1.0)], backend=backend)
    grow()
    acc.set_value(np.zeros(3))
    grow()
    assert_matches(acc.get_value(), np.ones(3))
    bad = sg.shared(np.zeros((2, 3)), name="bad", shape=(None, 3))
    g = sg.compile([], [], updates=[(bad, sg.zeros((sg.shape(bad)[0], 3)) [:, :2].sum() +
                                     sg.zeros((4, 3)))], backend=backend)
    g()  # the unknown dim may change with an update
    assert bad.get_value().shape == (4, 3)


def test_set_value_errors_name_the_variable_and_shapes():
    data = sg.shared(np.ones((3, 4)), name="data", shape=(None, 4))
    with pytest.raises(ValueError, match=r"shared variable 'data': a value of shape \(5, 3\) does "
                                         r"not fit the declared shape \(None, 4\) \(current value "
                                         r"\(3, 4\)\); only the None dims may change"):
        data.set_value(np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"'data': a value of shape \(4,\) does not fit"):
        data.set_value(np.ones(4))
    assert data.get_value().shape == (3, 4)  # unchanged
    fixed = sg.shared(np.ones((3, 4)), name="fixed")
    with pytest.raises(ValueError, match=r"shared variable 'fixed': shape must stay \(3, 4\), got "
                                         r"\(2, 4\) \(declare the dims that may change as None"):
        fixed.set_value(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"shared variable 'w': the value's shape \(3, 4\) does "
                                         r"not fit the declared shape \(None, 5\)"):
        sg.shared(np.ones((3, 4)), name="w", shape=(None, 5))
    with pytest.raises(TypeError, match=r"shape must be a tuple of ints and None, got 3"):
        sg.shared(np.ones(3), name="v", shape=3)


def test_a_function_reading_a_resizable_shared_variable_pickles():
    data = sg.shared(np.ones((3, 2)), name="data", shape=(None, 2))
    f = sg.compile([], sg.sum(data), backend="llvm")
    g = pickle.loads(pickle.dumps(f))
    assert float(g()) == 6.0
    g.shared[0].set_value(np.ones((5, 2)))
    assert float(g()) == 10.0


def test_theano_shared_accepts_a_shape_with_unknown_dims():
    from symgraph.compat import theano
    d = theano.shared(np.ones((2, 3), dtype="float32"), name="d", shape=(None, 3))
    f = theano.function([], d.sum())
    d.set_value(np.ones((4, 3), dtype="float32"))
    assert float(f()) == 12.0
