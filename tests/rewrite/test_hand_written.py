"""Sigmoid and softmax written by hand (as in the lectures and Theano's tutorial) reach the stable
forms: values and gradients at magnitude 1000 are finite and match float64 NumPy / PyTorch on
both CPU backends, and the rewrite log says what fired."""

import numpy as np
import pytest
import torch

import symgraph as sg
from symgraph.ops.elemwise import fill

BACKENDS = ("llvm", "reference")
BIG = 1000.0
Z = np.array([-BIG, -60.0, -0.5, 0.0, 2.0, 60.0, BIG], np.float32)


def expit(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_expit(x):
    return -np.logaddexp(0, -x)


def stabilize_log(f) -> set:
    return {part for r in f.rewrite_log if r.group == "stabilize"
            for part in r.rewrite.replace("+", "/").split("/")}


SIGMOIDS = {
    "1/(1+exp(-z))": lambda z: 1 / (1 + sg.exp(-z)),
    "1/(exp(-z)+1)": lambda z: 1 / (sg.exp(-z) + 1),
    "1.0/(1.0+exp(0-z))": lambda z: 1.0 / (1.0 + sg.exp(0.0 - z)),
    "(1+exp(-z))**-1": lambda z: (1 + sg.exp(-z)) ** -1,
    "exp(z)/(1+exp(z))": lambda z: sg.exp(z) / (1 + sg.exp(z)),
    "exp(z)/(exp(z)+1)": lambda z: sg.exp(z) / (sg.exp(z) + 1),
    "1/(ones_like(z)+exp(-z))": lambda z: 1 / (fill(z, 1.0) + sg.exp(-z)),
    "1/(zeros_like(z)+1+exp(-z))": lambda z: 1 / (sg.zeros_like(z) + 1 + sg.exp(-z)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", sorted(SIGMOIDS))
def test_hand_written_sigmoid_values_logs_and_gradients(form, backend):
    z = sg.vector("z")
    p = SIGMOIDS[form](z)
    w = np.linspace(0.5, 2.0, Z.size).astype(np.float32)
    cost = sg.sum(sg.log(p) * w) + sg.sum(sg.log(1 - p))
    f = sg.compile([z], [p, sg.log(p), sg.log(1 - p), sg.grad(cost, z)], backend=backend)
    got_p, got_lp, got_l1mp, got_g = f(Z)
    z64 = Z.astype(np.float64)
    np.testing.assert_allclose(got_p, expit(z64), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(got_lp, log_expit(z64), rtol=1e-6)
    np.testing.assert_allclose(got_l1mp, log_expit(-z64), rtol=1e-6)
    np.testing.assert_allclose(got_g, w * expit(-z64) - expit(z64), rtol=1e-5, atol=1e-7)
    assert {"sigmoid", "log_sigmoid", "log1m_sigmoid"} <= stabilize_log(f)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_of_hand_written_sigmoid_in_one_expression(backend):
    z = sg.vector("z")
    cost = sg.sum(sg.log(1 / (1 + sg.exp(-z))))
    f = sg.compile([z], [cost, sg.grad(cost, z)], backend=backend)
    v, g = f(Z)
    z64 = Z.astype(np.float64)
    np.testing.assert_allclose(v, log_expit(z64).sum(), rtol=1e-6)
    np.testing.assert_allclose(g, expit(-z64), rtol=1e-5, atol=1e-30)


def _logreg(sigmoid, backend, X, y, steps=5, lr=0.1):
    """Train ``-(y log p + (1-y) log(1-p))`` logistic regression; weights after each step."""
    Xs, ys = sg.matrix("X"), sg.vector("y")
    w = sg.shared(np.linspace(-1, 1, X.shape[1]).astype(np.float32), "w")
    b = sg.shared(np.float32(0.5), "b")
    p = sigmoid(Xs @ w + b)
    loss = -sg.mean(ys * sg.log(p) + (1 - ys) * sg.log(1 - p))
    gw, gb = sg.grad(loss, [w, b])
    f = sg.compile([Xs, ys], loss, updates=[(w, w - lr * gw), (b, b - lr * gb)], backend=backend)
    out = []
    for _ in range(steps):
        lv = f(X, y)
        out.append((float(lv), w.get_value().copy(), float(b.get_value())))
    return out, f


def _torch_logreg(X, y, steps=5, lr=0.1):
    w = torch.tensor(np.linspace(-1, 1, X.shape[1]).astype(np.float32), dtype=torch.float64,
                     requires_grad=True)
    b = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    Xt, yt = torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    out = []
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w + b, yt)
        gw, gb = torch.autograd.grad(loss, [w, b])
        with torch.no_grad():
            w -= lr * gw
            b -= lr * gb
        out.append((loss.item(), w.detach().numpy().copy(), b.item()))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_written_logistic_regression_trains_with_large_inputs(backend):
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((16, 6)) * 300).astype(np.float32)  # |X @ w| in the thousands
    y = (rng.random(16) > 0.5).astype(np.float32)
    hand, f = _logreg(lambda z: 1 / (1 + sg.exp(-z)), backend, X, y)
    builtin, _ = _logreg(sg.sigmoid, backend, X, y)
    want = _torch_logreg(X, y)
    assert "sigmoid" in stabilize_log(f)
    for (lh, wh, bh), (lb, wb, bb), (lt, wt, bt) in zip(hand, builtin, want):
        assert np.isfinite(lh) and np.all(np.isfinite(wh)) and np.isfinite(bh)
        np.testing.assert_allclose([lh, bh], [lb, bb], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(wh, wb, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lh, lt, rtol=1e-4)
        np.testing.assert_allclose(wh, wt, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bh, bt, rtol=1e-4, atol=1e-5)


# --- softmax -------------------------------------------------------------------------------

def _keepdims(z, a):
    return sg.exp(z) / sg.sum(sg.exp(z), axis=a, keepdims=True)


def _shifted(z, a):
    e = sg.exp(z - sg.max(z, axis=a, keepdims=True))
    return e / sg.sum(e, axis=a, keepdims=True)


def _expand_dims(z, a):
    return sg.exp(z) / sg.expand_dims(sg.sum(sg.exp(z), axis=a), a)


def _reshape(z, a):
    s = sg.sum(sg.exp(z), axis=a)
    return sg.exp(z) / (s.reshape((-1, 1)) if a == 1 else s.reshape((1, -1)))


def _constant_shift(z, a):
    e = sg.exp(z - 3.0)
    return e / sg.sum(e, axis=a, keepdims=True)


SOFTMAXES = {"keepdims": _keepdims, "max-shifted": _shifted, "expand_dims": _expand_dims,
             "reshape": _reshape, "constant shift": _constant_shift}


def _logits(shape=(4, 5)):
    return (np.random.default_rng(0).standard_normal(shape) * BIG).astype(np.float32)


def _torch_value_grad(fn, z, *args):
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    v = fn(zt, *args)
    (g,) = torch.autograd.grad(v, zt)
    return v.item(), g.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("form", sorted(SOFTMAXES))
def test_hand_written_softmax_and_its_log(form, axis, backend):
    z = sg.matrix("z")
    p = SOFTMAXES[form](z, axis)
    w = np.linspace(-1, 1, 20).reshape(4, 5).astype(np.float32)
    cost = sg.sum(sg.log(p) * w)
    f = sg.compile([z], [p, sg.log(p), cost, sg.grad(cost, z)], backend=backend)
    zs = _logits()
    got_p, got_lp, got_v, got_g = f(zs)
    lsm = torch.log_softmax(torch.tensor(zs, dtype=torch.float64), axis).numpy()
    want_v, want_g = _torch_value_grad(lambda t: (torch.log_softmax(t, axis) * torch.tensor(
        w, dtype=torch.float64)).sum(), zs)
    np.testing.assert_allclose(got_p, np.exp(lsm), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(got_lp, lsm, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-5)
    assert {"softmax_by_hand", "log_softmax"} <= stabilize_log(f)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_written_softmax_of_a_3d_tensor_along_the_middle_axis(backend):
    z = sg.tensor3("z")
    zs = _logits((2, 3, 4))
    p = _shifted(z, 1)
    f = sg.compile([z], [sg.log(p), sg.grad(sg.sum(sg.log(p)[:, 0, :]), z)], backend=backend)
    got_lp, got_g = f(zs)
    want_v, want_g = _torch_value_grad(lambda t: torch.log_softmax(t, 1)[:, 0, :].sum(), zs)
    np.testing.assert_allclose(got_lp, torch.log_softmax(torch.tensor(zs, dtype=torch.float64), 1),
                               rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-5)


def _nll(p, y):
    """Theano's tutorial: ``-T.mean(T.log(p_y_given_x)[T.arange(y.shape[0]), y])``."""
    return -sg.mean(sg.log(p)[sg.arange(sg.shape(y)[0]), y])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["keepdims", "max-shifted"])
def test_theano_tutorial_negative_log_likelihood(form, backend):
    z, y = sg.matrix("z"), sg.vector("y", dtype="int64")
    cost = _nll(SOFTMAXES[form](z, 1), y)
    f = sg.compile([z, y], [cost, sg.grad(cost, z)], backend=backend)
    zs, labels = _logits(), np.array([0, 3, 1, 4])
    v, g = f(zs, labels)
    want_v, want_g = _torch_value_grad(
        lambda t: torch.nn.functional.cross_entropy(t, torch.tensor(labels)), zs)
    np.testing.assert_allclose(v, want_v, rtol=1e-5)
    np.testing.assert_allclose(g, want_g, rtol=1e-4, atol=1e-6)
    assert {"softmax_by_hand", "log_softmax", "sparse_cross_entropy"} <= stabilize_log(f)


@pytest.mark.parametrize("backend", BACKENDS)
def test_indexed_log_softmax_is_exact_for_fewer_labels_and_negative_labels(backend):
    # log_softmax(z)[arange(len(y)), y] reads the first len(y) rows; y = -1 is the last class
    z, y = sg.matrix("z"), sg.vector("y", dtype="int64")
    ls = sg.nn.log_softmax(z)
    picked = ls[sg.arange(sg.shape(y)[0]), y]
    cost = -sg.mean(picked)
    f = sg.compile([z, y], [picked, sg.grad(cost, z)], backend=backend)
    zs, labels = _logits(), np.array([-1, 2, -5])
    got, g = f(zs, labels)
    lsm = torch.log_softmax(torch.tensor(zs, dtype=torch.float64), 1)
    np.testing.assert_allclose(got, lsm[np.arange(3), labels].numpy(), rtol=1e-6)
    _, want_g = _torch_value_grad(lambda t: -torch.log_softmax(t, 1)[np.arange(3), labels].mean(),
                                  zs)
    np.testing.assert_allclose(g, want_g, rtol=1e-4, atol=1e-6)
    assert "sparse_cross_entropy" in stabilize_log(f)
    with pytest.raises(IndexError):
        f(zs, np.array([0, 5, 1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_negative_log_likelihood_with_hand_written_softmax(backend):
    z, t = sg.matrix("z"), sg.matrix("t")
    p = _keepdims(z, 1)
    cost = -(t * sg.log(p)).sum(axis=1).mean()
    f = sg.compile([z, t], [cost, sg.grad(cost, z)], backend=backend)
    zs = _logits()
    ts = np.eye(5, dtype=np.float32)[[0, 3, 1, 4]] * 0.7 + 0.06
    v, g = f(zs, ts)
    want_v, want_g = _torch_value_grad(
        lambda q: -(torch.tensor(ts, dtype=torch.float64) * torch.log_softmax(q, 1)).sum(1).mean(),
        zs)
    np.testing.assert_allclose(v, want_v, rtol=1e-5)
    np.testing.assert_allclose(g, want_g, rtol=1e-4, atol=1e-6)
    assert {"softmax_by_hand", "dense_cross_entropy"} <= stabilize_log(f)


def test_a_normalised_exp_that_is_not_a_softmax_is_left_alone():
    z = sg.matrix("z")
    others = [sg.exp(z) / (sg.sum(sg.exp(z), axis=1, keepdims=True) + 1.0),   # not a pure sum
              sg.exp(z) / sg.sum(sg.exp(2.0 * z), axis=1, keepdims=True),     # another exp
              sg.exp(z) / sg.sum(sg.exp(z), axis=(0, 1), keepdims=True)]      # two axes
    zs = _logits() / BIG
    for out in others:
        f = sg.compile([z], out, backend="reference")
        assert "softmax_by_hand" not in stabilize_log(f)
        np.testing.assert_allclose(f(zs), sg.compile([z], out, backend="reference",
                                                     rewrite=False)(zs), rtol=1e-6)
