"""The Theano tutorial's programs, written once for any Theano-like library.

Each program takes ``theano`` (``shared``, ``function``, ``config``), ``T`` (``theano.tensor``)
and ``nn``, a namespace with the functions whose home differs between libraries: ``softmax``
and ``sigmoid`` (``T.nnet.*``), ``conv2d`` (Theano's flipped ``T.nnet.conv2d``) and ``pool_2d``
(``T.signal.pool.pool_2d``). The data live in shared variables and every training
function takes a minibatch ``index = T.lscalar()`` through ``givens``, as in the tutorial.

``tests/test_compat_pytensor.py`` runs these programs in PyTensor (in its own Python) and
through ``symgraph.compat.theano``; ``tests/test_compat_theano.py`` checks them against PyTorch.
The data and the initial weights come from the ``*_setup`` functions so that a reference
implementation can start from the same values. This module imports NumPy only.
"""

from __future__ import annotations

import math

import numpy as np

LOGREG = {"n": 110, "n_test": 30, "d": 16, "k": 4, "bs": 20, "lr": 0.13, "epochs": 3}
MLP = {"n": 110, "d": 16, "hidden": 10, "k": 4, "bs": 30, "lr": 0.05, "l1": 0.001, "l2": 0.0001,
       "epochs": 3}
LENET = {"n": 20, "side": 12, "filters": 4, "fs": 5, "hidden": 10, "k": 4, "bs": 5, "lr": 0.1,
         "epochs": 2}
DA = {"n": 40, "visible": 12, "hidden": 6, "bs": 10, "lr": 0.1, "corruption": 0.3, "epochs": 3}


def batches(n: int, bs: int) -> int:
    """The number of minibatches, the last one partial when ``bs`` does not divide ``n``."""
    return math.ceil(n / bs)


def _uniform_init(rng, n_in: int, n_out: int, scale: float = 1.0) -> np.ndarray:
    """The tutorial's ``uniform(-sqrt(6 / (n_in + n_out)), +...)`` weights."""
    bound = scale * math.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-bound, bound, (n_in, n_out))


# --- logistic regression ------------------------------------------------------------------------

def logreg_setup() -> dict:
    c = LOGREG
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((c["n"] + c["n_test"], c["d"]))
    ys = xs[:, :c["k"]].argmax(1)
    return {"train_x": xs[:c["n"]], "train_y": ys[:c["n"]], "test_x": xs[c["n"]:], "test_y": ys[c["n"]:]}


def _negative_log_likelihood(T, p_y_given_x, y):
    return -T.mean(T.log(p_y_given_x)[T.arange(y.shape[0]), y])


def _shared_dataset(theano, T, data_x, data_y):
    """The tutorial's ``shared_dataset``: labels stored as floatX and cast to int32."""
    shared_x = theano.shared(np.asarray(data_x, dtype=theano.config.floatX), borrow=True)
    shared_y = theano.shared(np.asarray(data_y, dtype=theano.config.floatX), borrow=True)
    return shared_x, T.cast(shared_y, "int32")


def logistic_regression(theano, T, nn) -> dict:
    """SGD on minibatches of 20 (the last one 10 rows); the training cost of every step and the
    test error of every test minibatch after each epoch."""
    c, data = LOGREG, logreg_setup()
    train_set_x, train_set_y = _shared_dataset(theano, T, data["train_x"], data["train_y"])
    test_set_x, test_set_y = _shared_dataset(theano, T, data["test_x"], data["test_y"])
    index = T.lscalar()
    x, y = T.matrix("x"), T.ivector("y")
    W = theano.shared(np.zeros((c["d"], c["k"]), dtype=theano.config.floatX), name="W", borrow=True)
    b = theano.shared(np.zeros((c["k"],), dtype=theano.config.floatX), name="b", borrow=True)
    p_y_given_x = nn.softmax(T.dot(x, W) + b)
    y_pred = T.argmax(p_y_given_x, axis=1)
    cost = _negative_log_likelihood(T, p_y_given_x, y)
    errors = T.mean(T.neq(y_pred, y))
    g_W, g_b = T.grad(cost=cost, wrt=W), T.grad(cost=cost, wrt=b)
    bs = c["bs"]
    train_model = theano.function(
        inputs=[index], outputs=cost,
        updates=[(W, W - c["lr"] * g_W), (b, b - c["lr"] * g_b)],
        givens={x: train_set_x[index * bs:(index + 1) * bs], y: train_set_y[index * bs:(index + 1) * bs]})
    test_model = theano.function(
        inputs=[index], outputs=errors,
        givens={x: test_set_x[index * bs:(index + 1) * bs], y: test_set_y[index * bs:(index + 1) * bs]})
    losses, test_errors = [], []
    for _ in range(c["epochs"]):
        losses += [float(train_model(i)) for i in range(batches(c["n"], bs))]
        test_errors += [float(test_model(i)) for i in range(batches(c["n_test"], bs))]
    return {"logreg": losses, "logreg_errors": test_errors, "logreg_W": W.get_value().tolist()}


# --- MLP with L1 and L2 --------------------------------------------------------------------------

def mlp_setup() -> dict:
    c = MLP
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((c["n"], c["d"]))
    w_rng = np.random.default_rng(1234)
    return {"train_x": xs, "train_y": xs[:, :c["k"]].argmax(1),
            "W1": _uniform_init(w_rng, c["d"], c["hidden"])}


def mlp(theano, T, nn) -> dict:
    """The tutorial's MLP: a tanh hidden layer, a logistic-regression layer with zero weights,
    cost ``nll + L1_reg * L1 + L2_reg * L2_sqr``; minibatches of 30 (the last one 20 rows)."""
    c, data = MLP, mlp_setup()
    train_set_x, train_set_y = _shared_dataset(theano, T, data["train_x"], data["train_y"])
    index = T.lscalar()
    x, y = T.matrix("x"), T.ivector("y")
    W1 = theano.shared(data["W1"], name="W", borrow=True)
    b1 = theano.shared(np.zeros((c["hidden"],), dtype=theano.config.floatX), name="b", borrow=True)
    hidden_output = T.tanh(T.dot(x, W1) + b1)
    W2 = theano.shared(np.zeros((c["hidden"], c["k"]), dtype=theano.config.floatX), name="W", borrow=True)
    b2 = theano.shared(np.zeros((c["k"],), dtype=theano.config.floatX), name="b", borrow=True)
    p_y_given_x = nn.softmax(T.dot(hidden_output, W2) + b2)
    L1 = abs(W1).sum() + abs(W2).sum()
    L2_sqr = (W1 ** 2).sum() + (W2 ** 2).sum()
    cost = _negative_log_likelihood(T, p_y_given_x, y) + c["l1"] * L1 + c["l2"] * L2_sqr
    params = [W1, b1, W2, b2]
    gparams = [T.grad(cost, param) for param in params]
    updates = [(param, param - c["lr"] * gparam) for param, gparam in zip(params, gparams)]
    bs = c["bs"]
    train_model = theano.function(
        inputs=[index], outputs=cost, updates=updates,
        givens={x: train_set_x[index * bs:(index + 1) * bs], y: train_set_y[index * bs:(index + 1) * bs]})
    losses = [float(train_model(i)) for _ in range(c["epochs"]) for i in range(batches(c["n"], bs))]
    return {"mlp": losses}


# --- LeNet ------------------------------------------------------------------------------------

def lenet_setup() -> dict:
    c = LENET
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((c["n"], c["side"] * c["side"]))
    images = xs.reshape(c["n"], c["side"], c["side"])
    half = c["side"] // 2
    quadrants = np.stack([images[:, :half, :half].sum((1, 2)), images[:, :half, half:].sum((1, 2)),
                          images[:, half:, :half].sum((1, 2)), images[:, half:, half:].sum((1, 2))], 1)
    w_rng = np.random.default_rng(23455)
    fan_in, fan_out = c["fs"] ** 2, c["filters"] * c["fs"] ** 2 // 4
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    pooled = (c["side"] - c["fs"] + 1) // 2
    return {"train_x": xs, "train_y": quadrants.argmax(1),
            "W0": w_rng.uniform(-bound, bound, (c["filters"], 1, c["fs"], c["fs"])),
            "W1": _uniform_init(w_rng, c["filters"] * pooled * pooled, c["hidden"])}


def lenet(theano, T, nn) -> dict:
    """LeNet on 1x12x12 images, minibatches of 5: a conv + max-pool + tanh layer (4 filters of
    5x5, pools of 2x2), a tanh hidden layer on its flattened output, logistic regression."""
    c, data = LENET, lenet_setup()
    train_set_x, train_set_y = _shared_dataset(theano, T, data["train_x"], data["train_y"])
    index = T.lscalar()
    x, y = T.matrix("x"), T.ivector("y")
    bs, side, fs = c["bs"], c["side"], c["fs"]
    layer0_input = x.reshape((bs, 1, side, side))
    W0 = theano.shared(data["W0"], borrow=True)
    b0 = theano.shared(np.zeros((c["filters"],), dtype=theano.config.floatX), borrow=True)
    conv_out = nn.conv2d(input=layer0_input, filters=W0, filter_shape=(c["filters"], 1, fs, fs),
                         input_shape=(bs, 1, side, side))
    pooled_out = nn.pool_2d(input=conv_out, ws=(2, 2), ignore_border=True)
    layer0_output = T.tanh(pooled_out + b0.dimshuffle("x", 0, "x", "x"))
    layer1_input = layer0_output.flatten(2)
    W1 = theano.shared(data["W1"], borrow=True)
    b1 = theano.shared(np.zeros((c["hidden"],), dtype=theano.config.floatX), borrow=True)
    layer1_output = T.tanh(T.dot(layer1_input, W1) + b1)
    W2 = theano.shared(np.zeros((c["hidden"], c["k"]), dtype=theano.config.floatX), borrow=True)
    b2 = theano.shared(np.zeros((c["k"],), dtype=theano.config.floatX), borrow=True)
    p_y_given_x = nn.softmax(T.dot(layer1_output, W2) + b2)
    cost = _negative_log_likelihood(T, p_y_given_x, y)
    params = [W2, b2, W1, b1, W0, b0]
    grads = T.grad(cost, params)
    updates = [(param_i, param_i - c["lr"] * grad_i) for param_i, grad_i in zip(params, grads)]
    train_model = theano.function(
        [index], cost, updates=updates,
        givens={x: train_set_x[index * bs:(index + 1) * bs], y: train_set_y[index * bs:(index + 1) * bs]})
    losses = [float(train_model(i)) for _ in range(c["epochs"]) for i in range(c["n"] // bs)]
    return {"lenet": losses, "lenet_W0": W0.get_value().tolist()}


# --- denoising autoencoder ------------------------------------------------------------------------

def da_setup() -> dict:
    """The data and a fixed corruption mask: the libraries' random streams differ, so the
    binomial mask the tutorial draws with ``theano_rng.binomial`` is drawn here once, as data."""
    c = DA
    rng = np.random.default_rng(3)
    xs = rng.uniform(0.0, 1.0, (c["n"], c["visible"]))
    mask = rng.binomial(n=1, p=1 - c["corruption"], size=xs.shape).astype(np.float64)
    w_rng = np.random.default_rng(123)
    return {"train_x": xs, "mask": mask, "W": _uniform_init(w_rng, c["visible"], c["hidden"], scale=4.0)}


def denoising_autoencoder(theano, T, nn) -> dict:
    """The tutorial's dA: tied weights (``W_prime = W.T``), sigmoid units, the cross-entropy
    reconstruction cost of the corrupted input ``mask * x``; minibatches of 10."""
    c, data = DA, da_setup()
    train_set_x = theano.shared(data["train_x"], borrow=True)
    train_mask = theano.shared(data["mask"], borrow=True)
    index = T.lscalar()
    x, corruption_mask = T.matrix("x"), T.matrix("corruption_mask")
    W = theano.shared(data["W"], name="W", borrow=True)
    b = theano.shared(np.zeros(c["hidden"], dtype=theano.config.floatX), name="b", borrow=True)
    b_prime = theano.shared(np.zeros(c["visible"], dtype=theano.config.floatX), name="b'", borrow=True)
    W_prime = W.T
    tilde_x = corruption_mask * x  # theano_rng.binomial(size=x.shape, n=1, p=1 - level) * x
    hidden = nn.sigmoid(T.dot(tilde_x, W) + b)
    z = nn.sigmoid(T.dot(hidden, W_prime) + b_prime)
    L = -T.sum(x * T.log(z) + (1 - x) * T.log(1 - z), axis=1)
    cost = T.mean(L)
    params = [W, b, b_prime]
    gparams = T.grad(cost, params)
    updates = [(param, param - c["lr"] * gparam) for param, gparam in zip(params, gparams)]
    bs = c["bs"]
    train_da = theano.function(
        [index], cost, updates=updates,
        givens={x: train_set_x[index * bs:(index + 1) * bs],
                corruption_mask: train_mask[index * bs:(index + 1) * bs]})
    losses = [float(train_da(i)) for _ in range(c["epochs"]) for i in range(batches(c["n"], bs))]
    return {"da": losses, "da_W": W.get_value().tolist()}


PROGRAMS = (logistic_regression, mlp, lenet, denoising_autoencoder)


def run_all(theano, T, nn) -> dict:
    """Every program's losses (and a few final weights), by name."""
    out: dict = {}
    for program in PROGRAMS:
        out.update(program(theano, T, nn))
    return out
