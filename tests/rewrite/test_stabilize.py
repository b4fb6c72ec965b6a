"""Each naive form, written as a user would, gives finite correct values and gradients at
magnitude 1000 (and keeps precision near 0 for log1p / expm1)."""

import numpy as np
import pytest

import symgraph as sg

from .helpers import fired, op_names

BIG = 1000.0


def np_log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def expit(x):
    """The logistic function without overflow warnings."""
    return 0.5 * (1 + np.tanh(0.5 * x))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def value_and_grad(inputs, cost, wrt, values):
    f = sg.compile(inputs, [cost, sg.grad(cost, wrt)], backend="reference")
    v, g = f(*values)
    assert np.all(np.isfinite(v)) and np.all(np.isfinite(g))
    return f, v, g


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 5)) * BIG).astype(np.float32)


def test_log_of_softmax(logits):
    z = sg.matrix("z")
    w = np.linspace(-1, 1, 20).reshape(4, 5).astype(np.float32)
    f, v, g = value_and_grad([z], sg.sum(sg.log(sg.nn.softmax(z)) * w), z, [logits])
    assert fired(f, "log_softmax")
    np.testing.assert_allclose(v, np.sum(np_log_softmax(logits.astype(np.float64)) * w), rtol=1e-5)
    want = w - np_softmax(logits.astype(np.float64)) * w.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)


def test_sparse_cross_entropy_written_with_indexing(logits):
    z = sg.matrix("z")
    y = sg.vector("y", dtype="int64")
    labels = np.array([0, 3, 1, 4])
    rows = sg.arange(sg.shape(z)[0])
    cost = -sg.mean(sg.log(sg.nn.softmax(z))[rows, y])
    f, v, g = value_and_grad([z, y], cost, z, [logits, labels])
    # the stable op, here fused with its gradient (softmax_ce_grad)
    assert "SoftmaxCrossEntropyWithGrad" in op_names(f)
    ls = np_log_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(v, -ls[np.arange(4), labels].mean(), rtol=1e-5)
    onehot = np.eye(5)[labels]
    np.testing.assert_allclose(g, (np_softmax(logits.astype(np.float64)) - onehot) / 4, atol=1e-6)


def test_sparse_cross_entropy_with_static_batch(logits):
    z = sg.tensor("z", (4, 5))
    y = sg.vector("y", dtype="int64")
    labels = np.array([2, 2, 0, 1])
    cost = -sg.mean(sg.log(sg.nn.softmax(z))[sg.arange(4), y])
    f, v, g = value_and_grad([z, y], cost, z, [logits, labels])
    assert fired(f, "sparse_cross_entropy")
    ls = np_log_softmax(logits.astype(np.float64))
    np.testing.assert_allclose(v, -ls[np.arange(4), labels].mean(), rtol=1e-5)


def test_dense_cross_entropy_sum_of_targets_times_log_softmax(logits):
    z, t = sg.matrix("z"), sg.matrix("t")
    targets = np.full((4, 5), 0.2, np.float32)
    targets[0] = [1, 0, 0, 0, 0]
    cost = -sg.sum(t * sg.log(sg.nn.softmax(z)))
    f, v, g = value_and_grad([z, t], cost, z, [logits, targets])
    assert fired(f, "dense_cross_entropy")
    z64 = logits.astype(np.float64)
    np.testing.assert_allclose(v, -(targets * np_log_softmax(z64)).sum(), rtol=1e-5)
    want = np_softmax(z64) * targets.sum(-1, keepdims=True) - targets
    np.testing.assert_allclose(g, want, atol=1e-5)


def test_log_one_plus_x_becomes_log1p():
    x = sg.vector("x")
    xs = np.array([1e-8, -1e-9, BIG, -0.5], np.float32)
    f, v, g = value_and_grad([x], sg.sum(sg.log(1 + x) * np.arange(4, dtype=np.float32)), x, [xs])
    assert fired(f, "log1p")
    x64 = xs.astype(np.float64)
    np.testing.assert_allclose(v, np.sum(np.log1p(x64) * np.arange(4)), rtol=1e-6)
    np.testing.assert_allclose(g, np.arange(4) / (1 + x64), rtol=1e-6)
    f1 = sg.compile([x], sg.log(1 + x), backend="reference")
    assert f1(xs)[0] == pytest.approx(1e-8, rel=1e-5)  # log(1 + 1e-8) is 0 in float32


def test_exp_minus_one_becomes_expm1():
    x = sg.vector("x")
    xs = np.array([1e-8, -BIG, 2.0], np.float32)
    f, v, g = value_and_grad([x], sg.sum(sg.exp(x) - 1), x, [xs])
    assert fired(f, "expm1")
    np.testing.assert_allclose(v, np.expm1(xs.astype(np.float64)).sum(), rtol=1e-6)
    np.testing.assert_allclose(g, np.exp(xs.astype(np.float64)), rtol=1e-6)
    assert sg.compile([x], sg.exp(x) - 1, backend="reference")(xs)[0] == pytest.approx(1e-8, rel=1e-5)


def test_log_of_sigmoid():
    x = sg.vector("x")
    xs = np.array([-BIG, BIG, 0.0, -30.0], np.float32)
    f, v, g = value_and_grad([x], sg.sum(sg.log(sg.sigmoid(x))), x, [xs])
    assert fired(f, "log_sigmoid")
    x64 = xs.astype(np.float64)
    np.testing.assert_allclose(v, np.sum(-np.logaddexp(0, -x64)), rtol=1e-6)
    np.testing.assert_allclose(g, expit(-x64), rtol=1e-5, atol=1e-30)


def test_log_of_one_minus_sigmoid():
    x = sg.vector("x")
    xs = np.array([BIG, -BIG, 0.0, 30.0], np.float32)
    f, v, g = value_and_grad([x], sg.sum(sg.log(1 - sg.sigmoid(x))), x, [xs])
    assert fired(f, "log1m_sigmoid")
    x64 = xs.astype(np.float64)
    np.testing.assert_allclose(v, np.sum(-np.logaddexp(0, x64)), rtol=1e-6)
    np.testing.assert_allclose(g, -expit(x64), rtol=1e-5)


@pytest.mark.parametrize("prob", [sg.sigmoid, lambda x: 1 / (1 + sg.exp(-x))])
def test_binary_cross_entropy_of_sigmoid_probabilities_is_computed_from_the_logits(prob):
    x, t = sg.vector("x"), sg.vector("t")
    xs = np.array([BIG, -BIG, 0.5, -BIG, BIG], np.float32)
    ts = np.array([0, 1, 1, 0, 1], np.float32)
    naive = sg.nn.binary_cross_entropy(prob(x), t, from_logits=False)
    f, v, g = value_and_grad([x, t], naive, x, [xs, ts])
    x64 = xs.astype(np.float64)
    want = np.mean(np.logaddexp(0, x64) - ts * x64)
    np.testing.assert_allclose(v, want, rtol=1e-6)
    np.testing.assert_allclose(g, (expit(x64) - ts) / 5, rtol=1e-5, atol=1e-12)


def test_hand_written_binary_cross_entropy_of_sigmoid():
    x, t = sg.vector("x"), sg.vector("t")
    xs = np.array([BIG, -BIG, 0.5], np.float32)
    ts = np.array([0, 1, 1], np.float32)
    p = sg.sigmoid(x)
    cost = -sg.mean(t * sg.log(p) + (1 - t) * sg.log(1 - p))
    f, v, g = value_and_grad([x, t], cost, x, [xs, ts])
    x64 = xs.astype(np.float64)
    np.testing.assert_allclose(v, np.mean(np.logaddexp(0, x64) - ts * x64), rtol=1e-6)
    np.testing.assert_allclose(g, (expit(x64) - ts) / 3, rtol=1e-5)


def test_naive_logsumexp_shifts_the_max_out():
    x = sg.matrix("x")
    xs = np.array([[BIG, BIG - 1, -BIG], [-BIG, -BIG, -BIG + 2]], np.float32)
    cost = sg.sum(sg.log(sg.sum(sg.exp(x), axis=1)) * np.array([1.0, 2.0], np.float32))
    f, v, g = value_and_grad([x], cost, x, [xs])
    assert fired(f, "naive_logsumexp")
    x64 = xs.astype(np.float64)
    m = x64.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(x64 - m).sum(axis=1, keepdims=True)))[:, 0]
    np.testing.assert_allclose(v, lse[0] + 2 * lse[1], rtol=1e-6)
    np.testing.assert_allclose(g, np_softmax(x64) * np.array([[1.0], [2.0]]), atol=1e-6)


def test_stabilising_before_grad_leaves_intermediate_wrt_alone():
    z = sg.matrix("z")
    p = sg.nn.softmax(z)
    cost = sg.sum(sg.log(p))
    gp = sg.grad(cost, p)  # p must stay in the graph: its gradient is 1 / p
    zs = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(sg.compile([z], gp, backend="reference")(zs), np.full((2, 3), 3.0))
