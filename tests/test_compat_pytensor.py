"""The Theano tutorial's logistic regression and an MLP with L1/L2, written for PyTensor and, with
``symgraph.compat.theano``, for symgraph: the losses must agree step for step.

PyTensor cannot share an environment with symgraph (its numba pins an older llvmlite), so the
PyTensor side runs in another Python: ``SYMGRAPH_PYTENSOR_PYTHON``, or the peers' virtual
environment ``.venv-peers`` / ``~/.venv-peers`` that the benchmarks use. Without one the test is
skipped; ``tests/test_compat_theano.py`` checks the same programs against PyTorch always."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

import symgraph.compat.theano as theano
import symgraph.compat.theano.tensor as T

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYTENSOR_PROGRAMS = """import json
import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.special import softmax

rng = np.random.default_rng(0)
xs = rng.standard_normal((120, 16)); ys = xs[:, :4].argmax(1).astype("int64")
out = {}
# logistic regression, minibatches of 20, the tutorial's NLL
x, y = pt.dmatrix("x"), pt.lvector("y")
W = pytensor.shared(np.zeros((16, 4)), name="W"); b = pytensor.shared(np.zeros(4), name="b")
p = softmax(pt.dot(x, W) + b, axis=-1)
cost = -pt.mean(pt.log(p)[pt.arange(y.shape[0]), y])
gW, gb = pytensor.grad(cost, [W, b])
train = pytensor.function([x, y], cost, updates=[(W, W - 0.13 * gW), (b, b - 0.13 * gb)])
out["logreg"] = [float(train(xs[i:i + 20], ys[i:i + 20])) for _ in range(3) for i in range(0, 120, 20)]
# MLP with L1/L2
r = np.random.default_rng(5)
w1 = r.uniform(-0.3, 0.3, (16, 10)); w2 = r.uniform(-0.3, 0.3, (10, 4))
W1, W2 = pytensor.shared(w1.copy()), pytensor.shared(w2.copy())
b1, b2 = pytensor.shared(np.zeros(10)), pytensor.shared(np.zeros(4))
h = pt.tanh(pt.dot(x, W1) + b1)
p = softmax(pt.dot(h, W2) + b2, axis=-1)
cost = (-pt.mean(pt.log(p)[pt.arange(y.shape[0]), y]) + 0.001 * (abs(W1).sum() + abs(W2).sum())
        + 0.0001 * ((W1 ** 2).sum() + (W2 ** 2).sum()))
params = [W1, b1, W2, b2]
grads = pytensor.grad(cost, params)
train = pytensor.function([x, y], cost, updates=[(q, q - 0.05 * g) for q, g in zip(params, grads)])
out["mlp"] = [float(train(xs[i:i + 30], ys[i:i + 30])) for i in range(0, 120, 30)]
print(json.dumps(out))
"""


def _pytensor_python() -> str | None:
    candidates = [os.environ.get("SYMGRAPH_PYTENSOR_PYTHON"),
                  os.path.join(ROOT, ".venv-peers", "bin", "python"),
                  os.path.expanduser("~/.venv-peers/bin/python")]
    for python in filter(None, candidates):
        if os.path.exists(python) and subprocess.run([python, "-c", "import pytensor"],
                                                     capture_output=True).returncode == 0:
            return python
    return None


def _symgraph_losses() -> dict:
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((120, 16))
    ys = xs[:, :4].argmax(1).astype("int64")
    out = {}
    x, y = T.dmatrix("x"), T.lvector("y")
    W = theano.shared(np.zeros((16, 4)), name="W")
    b = theano.shared(np.zeros(4), name="b")
    p = T.nnet.softmax(T.dot(x, W) + b)
    cost = -T.mean(T.log(p)[T.arange(T.shape(y)[0]), y])  # x.shape[0] in Theano
    gW, gb = theano.grad(cost, [W, b])
    train = theano.function([x, y], cost, updates=[(W, W - 0.13 * gW), (b, b - 0.13 * gb)])
    out["logreg"] = [float(train(xs[i:i + 20], ys[i:i + 20])) for _ in range(3) for i in range(0, 120, 20)]
    r = np.random.default_rng(5)
    w1, w2 = r.uniform(-0.3, 0.3, (16, 10)), r.uniform(-0.3, 0.3, (10, 4))
    W1, W2 = theano.shared(w1.copy()), theano.shared(w2.copy())
    b1, b2 = theano.shared(np.zeros(10)), theano.shared(np.zeros(4))
    h = T.tanh(T.dot(x, W1) + b1)
    p = T.nnet.softmax(T.dot(h, W2) + b2)
    cost = (-T.mean(T.log(p)[T.arange(T.shape(y)[0]), y]) + 0.001 * (abs(W1).sum() + abs(W2).sum())
            + 0.0001 * ((W1 ** 2).sum() + (W2 ** 2).sum()))
    params = [W1, b1, W2, b2]
    train = theano.function([x, y], cost,
                            updates=[(q, q - 0.05 * g) for q, g in zip(params, theano.grad(cost, params))])
    out["mlp"] = [float(train(xs[i:i + 30], ys[i:i + 30])) for i in range(0, 120, 30)]
    return out


def test_theano_programs_match_pytensor_losses():
    python = _pytensor_python()
    if python is None:
        pytest.skip("no Python with PyTensor (set SYMGRAPH_PYTENSOR_PYTHON or make .venv-peers)")
    run = subprocess.run([python, "-c", PYTENSOR_PROGRAMS], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    want = json.loads(run.stdout.strip().splitlines()[-1])
    got = _symgraph_losses()
    for program in ("logreg", "mlp"):
        np.testing.assert_allclose(got[program], want[program], rtol=1e-9, err_msg=program)
