"""Theano-style programs through ``symgraph.compat.theano``, checked against PyTorch (float64)
implementations of the same models from the same initial weights."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import theano_tutorial_programs as programs

import symgraph.compat.theano as theano
import symgraph.compat.theano.tensor as T
from symgraph.compat.theano.tensor.nnet import conv2d
from symgraph.compat.theano.tensor.signal import pool

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _data(n=120, d=16, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = (x[:, :classes].argmax(axis=1)).astype(np.int64)
    return x, y


# --- the API surface ------------------------------------------------------------------------------

def test_typed_constructors_and_floatx():
    assert T.dmatrix("x").dtype == "float64" and T.fvector().dtype == "float32"
    assert T.lscalar().dtype == "int64" and T.ivector().dtype == "int32"
    a, b = T.dmatrices("a", "b")
    assert (a.name, b.name, a.ndim) == ("a", "b", 2)
    assert T.row().type.shape == (1, None) and T.col().type.shape == (None, 1)
    assert theano.config.floatX == "float64" and T.matrix().dtype == "float64"
    old = theano.config.floatX
    try:
        theano.config.floatX = "float32"
        assert T.scalar().dtype == "float32"
    finally:
        theano.config.floatX = old


def test_dimshuffle_matches_numpy():
    x = T.dtensor3("x")
    v = np.arange(24.0).reshape(2, 3, 4)
    cases = [((2, 0, 1), v.transpose(2, 0, 1)), (("x", 0, 1, 2), v[None]),
             ((0, "x", 2, 1), v.transpose(0, 2, 1)[:, None])]
    for pattern, want in cases:
        got = theano.function([x], x.dimshuffle(*pattern))(v)
        np.testing.assert_array_equal(got, want)
    b = T.dvector("b")
    np.testing.assert_array_equal(theano.function([b], b.dimshuffle("x", 0, "x", "x"))(np.arange(3.0)),
                                  np.arange(3.0)[None, :, None, None])
    r = T.drow("r")
    np.testing.assert_array_equal(theano.function([r], r.dimshuffle(1))(np.ones((1, 3))), np.ones(3))


def test_set_and_inc_subtensor_switch_tensordot_batched_dot():
    x, y = T.dmatrix("x"), T.dvector("y")
    xv, yv = np.arange(12.0).reshape(3, 4), np.array([10.0, 20.0, 30.0, 40.0])
    f = theano.function([x, y], [T.set_subtensor(x[1], y), T.inc_subtensor(x[1:, 0], 5.0),
                                 T.switch(x > 5, x, -x)])
    got = f(xv, yv)
    want0 = xv.copy()
    want0[1] = yv
    want1 = xv.copy()
    want1[1:, 0] += 5
    np.testing.assert_array_equal(got[0], want0)
    np.testing.assert_array_equal(got[1], want1)
    np.testing.assert_array_equal(got[2], np.where(xv > 5, xv, -xv))
    a, b = T.dtensor3("a"), T.dtensor3("b")
    av = np.random.default_rng(0).standard_normal((2, 3, 4))
    bv = np.random.default_rng(1).standard_normal((2, 4, 5))
    a_s = T.tensor("float64", dims=(2, 3, 4))
    c_s = T.tensor("float64", dims=(3, 4, 5))
    np.testing.assert_allclose(theano.function([a, b], T.batched_dot(a, b))(av, bv), av @ bv)
    cv = np.random.default_rng(2).standard_normal((3, 4, 5))
    contract = theano.function([a_s, c_s], T.tensordot(a_s, c_s, axes=[[1, 2], [0, 1]]))
    np.testing.assert_allclose(contract(av, cv), np.tensordot(av, cv, axes=[[1, 2], [0, 1]]))


def test_zeros_ones_alloc_with_symbolic_shapes():
    """``T.zeros`` / ``T.ones`` / ``T.alloc`` take ints, ``x.shape`` or ``x.shape[i]`` (floatX
    unless a dtype is given); ``zeros_like`` / ``ones_like`` take a dtype; ``alloc`` carries the
    gradient back to its value, summed over the broadcast axes."""
    x, n = T.dmatrix("x"), T.lscalar("n")
    b = theano.shared(np.array([1.0, 2.0, 3.0]), "b")
    outs = [T.zeros(x.shape), T.zeros((x.shape[0], 2)), T.ones(5, dtype="int32"), T.zeros(n),
            T.alloc(0.0, x.shape[0], 3), T.alloc(np.float32(2), n, x.shape[1]),
            T.zeros_like(x, dtype="int64"), T.ones_like(x), T.alloc(b, n, 3)]
    outs.append(T.grad((T.alloc(b, x.shape[0], 3) * x).sum(), b))
    xv = np.arange(12.0).reshape(4, 3)
    want = [np.zeros((4, 3)), np.zeros((4, 2)), np.ones(5, "int32"), np.zeros(2), np.zeros((4, 3)),
            np.full((2, 3), 2, "float32"), np.zeros((4, 3), "int64"), np.ones((4, 3)),
            np.tile([1.0, 2.0, 3.0], (2, 1)), xv.sum(0)]
    for got, w in zip(theano.function([x, n], outs)(xv, 2), want):
        assert got.dtype == w.dtype
        np.testing.assert_array_equal(got, w)


def test_function_options():
    x, unused = T.dvector("x"), T.dvector("unused")
    with pytest.raises(ValueError, match="input 1 \\(unused\\) is not used"):
        theano.function([x, unused], x * 2)
    with pytest.warns(UserWarning, match="not used"):
        theano.function([x, unused], x * 2, on_unused_input="warn")
    f32 = T.fvector("f32")
    g = theano.function([f32], f32 * 2, allow_input_downcast=True)
    assert g(np.array([1.0, 2.0])).dtype == np.float32
    w = theano.shared(np.zeros(3), name="w", borrow=True)
    assert w and not w.get_value(borrow=True).any()
    w.set_value(np.ones(3), borrow=True)
    h = theano.function([x], (x * w).sum(), updates=[(w, w + x)], mode="FAST_COMPILE")
    assert h(np.ones(3)) == 3.0 and w.get_value()[0] == 2.0
    assert "input x float64" in theano.pp(x * 2)
    with pytest.raises(FloatingPointError):
        theano.function([x], T.log(x), mode="NanGuardMode")(np.array([-1.0]))


# --- Theano-tutorial programs against torch ---------------------------------------------------------

def test_logistic_regression_sgd_matches_torch():
    xs, ys = _data()
    x, y = T.dmatrix("x"), T.lvector("y")
    W = theano.shared(np.zeros((16, 4)), name="W", borrow=True)
    b = theano.shared(np.zeros(4), name="b", borrow=True)
    p_y_given_x = T.nnet.softmax(T.dot(x, W) + b)
    cost = T.mean(T.nnet.categorical_crossentropy(p_y_given_x, y))
    g_W, g_b = T.grad(cost=cost, wrt=W), T.grad(cost=cost, wrt=b)
    train = theano.function([x, y], cost, updates=[(W, W - 0.13 * g_W), (b, b - 0.13 * g_b)])
    tw = torch.zeros((16, 4), dtype=torch.float64, requires_grad=True)
    tb = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        for i in range(0, 120, 20):
            got = train(xs[i:i + 20], ys[i:i + 20])
            loss = torch.nn.functional.cross_entropy(torch.tensor(xs[i:i + 20]) @ tw + tb,
                                                     torch.tensor(ys[i:i + 20]))
            gw, gb = torch.autograd.grad(loss, [tw, tb])
            with torch.no_grad():
                tw -= 0.13 * gw
                tb -= 0.13 * gb
            assert got == pytest.approx(loss.item(), rel=1e-10)
    np.testing.assert_allclose(W.get_value(), tw.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_mlp_with_l1_l2_matches_torch():
    xs, ys = _data(seed=1)
    rng = np.random.default_rng(5)
    w1 = rng.uniform(-0.3, 0.3, (16, 10))
    w2 = rng.uniform(-0.3, 0.3, (10, 4))
    x, y = T.dmatrix("x"), T.lvector("y")
    W1, W2 = theano.shared(w1.copy(), "W1"), theano.shared(w2.copy(), "W2")
    b1, b2 = theano.shared(np.zeros(10), "b1"), theano.shared(np.zeros(4), "b2")
    hidden = T.tanh(T.dot(x, W1) + b1)
    p = T.nnet.softmax(T.dot(hidden, W2) + b2)
    L1 = abs(W1).sum() + abs(W2).sum()
    L2 = (W1 ** 2).sum() + (W2 ** 2).sum()
    cost = T.mean(T.nnet.categorical_crossentropy(p, y)) + 0.001 * L1 + 0.0001 * L2
    params = [W1, b1, W2, b2]
    grads = [T.grad(cost, p_) for p_ in params]
    train = theano.function([x, y], cost, updates=[(p_, p_ - 0.05 * g) for p_, g in zip(params, grads)])
    tp = [torch.tensor(v, requires_grad=True) for v in (w1, np.zeros(10), w2, np.zeros(4))]
    for i in range(0, 120, 30):
        got = train(xs[i:i + 30], ys[i:i + 30])
        tx = torch.tensor(xs[i:i + 30])
        logits = torch.tanh(tx @ tp[0] + tp[1]) @ tp[2] + tp[3]
        loss = (torch.nn.functional.cross_entropy(logits, torch.tensor(ys[i:i + 30]))
                + 0.001 * (tp[0].abs().sum() + tp[2].abs().sum())
                + 0.0001 * ((tp[0] ** 2).sum() + (tp[2] ** 2).sum()))
        gs = torch.autograd.grad(loss, tp)
        with torch.no_grad():
            for t_, g_ in zip(tp, gs):
                t_ -= 0.05 * g_
        assert got == pytest.approx(loss.item(), rel=1e-10)


def test_lenet_layer_with_flipped_filters_matches_torch():
    rng = np.random.default_rng(2)
    xv = rng.standard_normal((3, 1, 12, 12))
    wv = rng.standard_normal((4, 1, 5, 5)) * 0.2
    bv = rng.standard_normal(4) * 0.1
    x = T.dtensor4("x")
    W, b = theano.shared(wv, "W"), theano.shared(bv, "b")
    conv_out = conv2d(input=x, filters=W, filter_shape=(4, 1, 5, 5), input_shape=(None, 1, 12, 12))
    pooled = pool.pool_2d(input=conv_out, ws=(2, 2), ignore_border=True)
    out = T.tanh(pooled + b.dimshuffle("x", 0, "x", "x"))
    cost = out.sum()
    f = theano.function([x], [out, T.grad(cost, W)])
    got, gw = f(xv)
    tw = torch.tensor(wv, requires_grad=True)
    tconv = torch.nn.functional.conv2d(torch.tensor(xv), torch.flip(tw, dims=(2, 3)))
    tout = torch.tanh(torch.nn.functional.max_pool2d(tconv, 2) + torch.tensor(bv)[None, :, None, None])
    (tgw,) = torch.autograd.grad(tout.sum(), [tw])
    np.testing.assert_allclose(got, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw, tgw.numpy(), rtol=1e-9, atol=1e-11)


def test_denoising_autoencoder_matches_torch_and_corrupts():
    rng = np.random.default_rng(3)
    xs = rng.uniform(0.05, 0.95, (40, 12))
    wv = rng.uniform(-0.4, 0.4, (12, 6))
    x = T.dmatrix("x")
    W = theano.shared(wv.copy(), "W")
    b, b_prime = theano.shared(np.zeros(6), "b"), theano.shared(np.zeros(12), "bp")
    srng = theano.shared_randomstreams.RandomStreams(7)

    def cost_of(corruption_level):
        tilde = srng.binomial(size=x.shape, n=1, p=1 - corruption_level, dtype="float64") * x
        h = T.nnet.sigmoid(T.dot(tilde, W) + b)
        z = T.nnet.sigmoid(T.dot(h, W.T) + b_prime)
        return T.mean(T.sum(T.nnet.binary_crossentropy(z, x), axis=1))

    cost = cost_of(0.0)
    params = [W, b, b_prime]
    train = theano.function([x], cost, updates=[(p_, p_ - 0.1 * T.grad(cost, p_)) for p_ in params])
    tp = [torch.tensor(v, requires_grad=True) for v in (wv, np.zeros(6), np.zeros(12))]
    tx = torch.tensor(xs)
    for _ in range(3):
        got = train(xs)
        h = torch.sigmoid(tx @ tp[0] + tp[1])
        z = torch.sigmoid(h @ tp[0].T + tp[2])
        loss = torch.nn.functional.binary_cross_entropy(z, tx, reduction="none").sum(1).mean()
        gs = torch.autograd.grad(loss, tp)
        with torch.no_grad():
            for t_, g_ in zip(tp, gs):
                t_ -= 0.1 * g_
        assert got == pytest.approx(loss.item(), rel=1e-9)
    noisy = theano.function([x], cost_of(0.3))
    assert noisy(xs) != noisy(xs)  # fresh corruption every call


# --- the tutorial's own spelling: shared data, minibatches through givens, y.shape[0] ------------
# tests/theano_tutorial_programs.py holds the programs (tests/test_compat_pytensor.py runs them in
# PyTensor too); here the same SGD in PyTorch float64 from the same data and initial weights.

def _t(value):
    return torch.tensor(np.asarray(value, dtype=np.float64))


def _sgd_step(params, loss, lr):
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p_, g_ in zip(params, grads):
            p_ -= lr * g_
    return loss.item()


def _minibatches(n, bs):
    return [slice(i * bs, (i + 1) * bs) for i in range(programs.batches(n, bs))]


def _torch_logistic_regression():
    c, data = programs.LOGREG, programs.logreg_setup()
    W = torch.zeros((c["d"], c["k"]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c["k"], dtype=torch.float64, requires_grad=True)
    losses, errors = [], []
    x, y = _t(data["train_x"]), torch.tensor(data["train_y"])
    tx, ty = _t(data["test_x"]), torch.tensor(data["test_y"])
    for _ in range(c["epochs"]):
        for s in _minibatches(c["n"], c["bs"]):
            losses.append(_sgd_step([W, b], F.cross_entropy(x[s] @ W + b, y[s]), c["lr"]))
        with torch.no_grad():
            errors += [(torch.argmax(tx[s] @ W + b, 1) != ty[s]).double().mean().item()
                       for s in _minibatches(c["n_test"], c["bs"])]
    return {"logreg": losses, "logreg_errors": errors, "logreg_W": W.detach().numpy()}


def _torch_mlp():
    c, data = programs.MLP, programs.mlp_setup()
    params = [_t(data["W1"]), _t(np.zeros(c["hidden"])), _t(np.zeros((c["hidden"], c["k"]))),
              _t(np.zeros(c["k"]))]
    for p_ in params:
        p_.requires_grad_(True)
    W1, b1, W2, b2 = params
    x, y = _t(data["train_x"]), torch.tensor(data["train_y"])
    losses = []
    for _ in range(c["epochs"]):
        for s in _minibatches(c["n"], c["bs"]):
            penalty = (c["l1"] * (W1.abs().sum() + W2.abs().sum())
                       + c["l2"] * ((W1 ** 2).sum() + (W2 ** 2).sum()))
            loss = F.cross_entropy(torch.tanh(x[s] @ W1 + b1) @ W2 + b2, y[s]) + penalty
            losses.append(_sgd_step(params, loss, c["lr"]))
    return {"mlp": losses}


def _torch_lenet():
    c, data = programs.LENET, programs.lenet_setup()
    params = [_t(np.zeros((c["hidden"], c["k"]))), _t(np.zeros(c["k"])), _t(data["W1"]),
              _t(np.zeros(c["hidden"])), _t(data["W0"]), _t(np.zeros(c["filters"]))]
    for p_ in params:
        p_.requires_grad_(True)
    W2, b2, W1, b1, W0, b0 = params
    x, y = _t(data["train_x"]), torch.tensor(data["train_y"])
    losses = []
    for _ in range(c["epochs"]):
        for s in _minibatches(c["n"], c["bs"]):
            images = x[s].reshape(c["bs"], 1, c["side"], c["side"])
            conv = F.conv2d(images, torch.flip(W0, dims=(2, 3)))  # Theano's conv2d flips
            layer0 = torch.tanh(F.max_pool2d(conv, 2) + b0[None, :, None, None]).flatten(1)
            logits = torch.tanh(layer0 @ W1 + b1) @ W2 + b2
            losses.append(_sgd_step(params, F.cross_entropy(logits, y[s]), c["lr"]))
    return {"lenet": losses, "lenet_W0": W0.detach().numpy()}


def _torch_denoising_autoencoder():
    c, data = programs.DA, programs.da_setup()
    params = [_t(data["W"]), _t(np.zeros(c["hidden"])), _t(np.zeros(c["visible"]))]
    for p_ in params:
        p_.requires_grad_(True)
    W, b, b_prime = params
    x, mask = _t(data["train_x"]), _t(data["mask"])
    losses = []
    for _ in range(c["epochs"]):
        for s in _minibatches(c["n"], c["bs"]):
            z = torch.sigmoid(torch.sigmoid((mask[s] * x[s]) @ W + b) @ W.T + b_prime)
            loss = F.binary_cross_entropy(z, x[s], reduction="none").sum(1).mean()
            losses.append(_sgd_step(params, loss, c["lr"]))
    return {"da": losses, "da_W": W.detach().numpy()}


@pytest.mark.parametrize("program, reference", [
    (programs.logistic_regression, _torch_logistic_regression),
    (programs.mlp, _torch_mlp),
    (programs.lenet, _torch_lenet),
    (programs.denoising_autoencoder, _torch_denoising_autoencoder),
], ids=["logreg", "mlp", "lenet", "da"])
def test_tutorial_program_with_givens_matches_torch(program, reference):
    """Minibatches chosen by ``index = T.lscalar()`` through ``givens`` (a last partial batch for
    logistic regression, the MLP and the dA), ``T.arange(y.shape[0])``, labels cast from shared."""
    nn = SimpleNamespace(softmax=T.nnet.softmax, sigmoid=T.nnet.sigmoid, conv2d=conv2d,
                         pool_2d=pool.pool_2d)
    got, want = program(theano, T, nn), reference()
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(np.array(got[name]), np.array(want[name]), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
