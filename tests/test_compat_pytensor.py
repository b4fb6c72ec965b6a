"""The Theano tutorial's programs run in PyTensor and through ``symgraph.compat.theano``: the
losses must agree step for step.

The programs (``tests/theano_tutorial_programs.py``) are written once, the tutorial's way:
data in shared variables, minibatches chosen by ``index = T.lscalar()`` through ``givens``, the
negative log-likelihood ``-T.mean(T.log(p_y_given_x)[T.arange(y.shape[0]), y])``:

1. logistic regression, with a last partial minibatch, and the test error of each epoch;
2. an MLP with L1/L2 penalties;
3. LeNet: Theano's (flipped) ``conv2d`` + max pooling + tanh, a hidden layer, logistic regression;
4. a denoising autoencoder with tied weights, sigmoid units and the cross-entropy cost.

Each side supplies only ``softmax``, ``sigmoid``, ``conv2d`` and ``pool_2d``. PyTensor 3 has no
``T.nnet`` and no ``signal.pool``: its side takes ``pytensor.tensor.special.softmax`` with
``axis=-1`` (without an axis it normalises over every element, not per row), builds Theano's
``conv2d`` from ``pytensor.tensor.signal.convolve2d`` (a true convolution, as Theano's, over the
broadcast batch and channel axes, summed over input channels) and ``pool_2d`` as a reshape into
2x2 windows and a ``max`` over them. The denoising autoencoder's corruption mask is
data (a fixed binomial draw), since the two libraries' random streams give other numbers.

PyTensor cannot share an environment with symgraph (its numba pins an older llvmlite), so the
PyTensor side runs in another Python: ``SYMGRAPH_PYTENSOR_PYTHON``, or the peers' virtual
environment ``.venv-peers`` / ``~/.venv-peers`` that the benchmarks use. Without one the test is
skipped; ``tests/test_compat_theano.py`` checks the same programs against PyTorch always."""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import theano_tutorial_programs as programs

import symgraph.compat.theano as theano
import symgraph.compat.theano.tensor as T
from symgraph.compat.theano.tensor.nnet import conv2d
from symgraph.compat.theano.tensor.signal import pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYTENSOR_SIDE = """import json, sys, warnings
from types import SimpleNamespace
warnings.simplefilter("ignore")  # numba's object-mode notes for Convolve2d
import pytensor
import pytensor.tensor as pt
from pytensor.tensor.signal import convolve2d
from pytensor.tensor.special import softmax
sys.path.insert(0, sys.argv[1])
import theano_tutorial_programs as programs


def conv2d(input, filters, filter_shape=None, input_shape=None):
    # (b, 1, c, h, w) with (1, k, c, fh, fw): every image with every filter, summed over channels
    out = convolve2d(input[:, None], filters[None], mode="valid", method="direct")
    return out.sum(axis=2)


def pool_2d(input, ws, ignore_border=True):
    b, k, h, w = input.shape
    windows = input.reshape((b, k, h // ws[0], ws[0], w // ws[1], ws[1]))
    return windows.max(axis=(3, 5))


# PyTensor's softmax normalises over every element unless given an axis; Theano's is per row
nn = SimpleNamespace(softmax=lambda z: softmax(z, axis=-1), sigmoid=pt.sigmoid, conv2d=conv2d,
                     pool_2d=pool_2d)
print(json.dumps(programs.run_all(pytensor, pt, nn)))
"""

# (rtol, atol) per result: float64 sums in another order (symgraph's kernels, PyTensor's BLAS and
# scipy's direct convolution) differ by a few ulps; measured at most 3e-15 relative over every
# loss and final weight, conv included. The test errors are fractions of a minibatch: exact.
TOLERANCE = {"logreg_errors": (0.0, 0.0)}
DEFAULT_TOLERANCE = (1e-10, 1e-13)


def _pytensor_python() -> str | None:
    candidates = [os.environ.get("SYMGRAPH_PYTENSOR_PYTHON"),
                  os.path.join(ROOT, ".venv-peers", "bin", "python"),
                  os.path.expanduser("~/.venv-peers/bin/python")]
    for python in filter(None, candidates):
        if os.path.exists(python) and subprocess.run([python, "-c", "import pytensor"],
                                                     capture_output=True).returncode == 0:
            return python
    return None


def _symgraph_results() -> dict:
    nn = SimpleNamespace(softmax=T.nnet.softmax, sigmoid=T.nnet.sigmoid, conv2d=conv2d,
                         pool_2d=pool.pool_2d)
    return programs.run_all(theano, T, nn)


def _pytensor_results(python: str) -> dict:
    tests = os.path.join(ROOT, "tests")
    run = subprocess.run([python, "-c", PYTENSOR_SIDE, tests], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_theano_tutorial_programs_match_pytensor_step_for_step():
    python = _pytensor_python()
    if python is None:
        pytest.skip("no Python with PyTensor (set SYMGRAPH_PYTENSOR_PYTHON or make .venv-peers)")
    want = _pytensor_results(python)
    got = _symgraph_results()
    assert sorted(got) == sorted(want)
    for name in sorted(want):
        rtol, atol = TOLERANCE.get(name, DEFAULT_TOLERANCE)
        np.testing.assert_allclose(np.array(got[name]), np.array(want[name]), rtol=rtol, atol=atol,
                                   err_msg=name)
    # the programs train: a later epoch's mean loss is below the first's
    for name, config in [("logreg", programs.LOGREG), ("mlp", programs.MLP), ("da", programs.DA)]:
        per_epoch = programs.batches(config["n"], config["bs"])
        assert np.mean(got[name][-per_epoch:]) < np.mean(got[name][:per_epoch]), name
