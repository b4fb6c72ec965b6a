"""``sg.compile(..., rewrite=False)`` on the llvm backend: every op the graph builders make
must lower without the rewriter's help (``StopGradient``, which every ``logsumexp`` holds, used
to be removed only by a rewrite; a large ``arange`` of a run-time size had no lowering at all).
Each graph, forward and gradient, is compared with the reference backend."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from helpers import assert_matches, rand

import symgraph as sg

RNG = np.random.default_rng(11)
A = rand(RNG, (4, 6), "float64")
B = rand(RNG, (6, 3), "float64")
V = rand(RNG, (6,), "float64")
LABELS = np.array([0, 3, 2, 2])
IMG = rand(RNG, (2, 3, 6, 6), "float64")
KER = rand(RNG, (4, 3, 3, 3), "float64")
mish = sg.elementwise(lambda t: t * sympy.tanh(sympy.log(1 + sympy.exp(t))), name="mish_rwf")


def _graphs():
    """name -> (inputs as (name, value), builder of the outputs from the symbolic inputs)."""
    am = [("a", A)]
    return {
        "logsumexp": (am, lambda a: [sg.logsumexp(a, axis=1), sg.logsumexp(a)]),
        "softmax": (am, lambda a: [sg.nn.softmax(a), sg.nn.log_softmax(a, axis=0)]),
        "stop_gradient": (am, lambda a: [sg.stop_gradient(a) * a,
                                         sg.grad(sg.sum(sg.stop_gradient(a) * a), a)]),
        "cross_entropy_labels": ([("a", A), ("t", LABELS)],
                                 lambda a, t: [sg.nn.cross_entropy(a, t),
                                               sg.grad(sg.nn.cross_entropy(a, t), a)]),
        "cross_entropy_probs": (am, lambda a: [sg.grad(sg.nn.cross_entropy(
            a, sg.nn.softmax(a * 2.0)), a)]),
        "bce_mse_hinge": (am, lambda a: [sg.nn.binary_cross_entropy(a, sg.sigmoid(a * 3.0)),
                                         sg.nn.mse(a, a * a), sg.nn.hinge(a, sg.sign(a))]),
        "reductions": (am, lambda a: [sg.max(a, axis=0), sg.min(a, axis=1), sg.prod(a, axis=1),
                                      sg.mean(a), sg.var(a, axis=0), sg.std(a, ddof=1),
                                      sg.argmax(a, axis=1), sg.argmin(a),
                                      sg.grad(sg.sum(sg.max(a, axis=1)) + sg.prod(a), a)]),
        "elementwise": (am, lambda a: [sg.where(a > 0, sg.exp(a), sg.log1p(a * a)),
                                       sg.clip(a, -1.0, 1.0), sg.gelu(a), sg.elu(a),
                                       sg.leaky_relu(a), sg.softplus(a), sg.erf(a),
                                       a // 0.7, a % 0.7, sg.power(sg.abs(a), 1.5),
                                       sg.cast(a, "int32"), mish(a),
                                       sg.grad(sg.sum(mish(a) * sg.tanh(a)), a)]),
        "linalg": ([("a", A), ("b", B), ("v", V)],
                   lambda a, b, v: [a @ b, sg.dot(a, v), sg.outer(v, v),
                                    *sg.grad(sg.sum(sg.relu(a @ b)), [a, b])]),
        "shapes": ([("a", A), ("v", V)],
                   lambda a, v: [sg.concatenate([a, a * 2.0], axis=1), sg.stack([v, v]),
                                 a.T.reshape((-1,)), sg.expand_dims(v, 0), sg.flatten(a),
                                 sg.broadcast_to(v, (2, 6)), sg.squeeze(a[:1]),
                                 sg.grad(sg.sum(sg.concatenate([a, a.T @ a], axis=0) ** 2), a)]),
        "indexing": ([("a", A), ("t", LABELS)],
                     lambda a, t: [a[t], a[:, t], sg.take(a, t, axis=1), a[1:, ::2],
                                   sg.one_hot(t, 6), sg.inc_subtensor(a, (slice(None), t), 1.0),
                                   sg.grad(sg.sum(a[t] ** 2) + sg.sum(a[::-1, 2]), a)]),
        "arange_runtime": ([("v", rand(RNG, (5000,), "float64"))],
                           lambda v: [sg.sum(sg.arange(sg.shape(v)[0]) * v),
                                      sg.arange(sg.shape(v)[0] // 1000)]),
        "conv_pool": ([("x", IMG), ("k", KER)],
                      lambda x, k: [sg.nn.conv2d(x, k, stride=1, padding=1),
                                    sg.nn.max_pool2d(x, 2), sg.nn.avg_pool2d(x, 3, stride=1),
                                    sg.nn.maxout(x, 3, axis=1),
                                    *sg.grad(sg.sum(sg.nn.max_pool2d(sg.nn.conv2d(x, k), 2)),
                                             [x, k])]),
        "dropout": (am, lambda a: [sg.nn.dropout(a, 0.5, sg.RandomStream(3))]),
        "hessian": ([("v", V)], lambda v: [sg.hessian(sg.sum(sg.sin(v) * v), v)]),
    }


GRAPHS = _graphs()
STATIC = {"conv_pool", "hessian"}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_rewrite_false_lowers_on_llvm_and_matches_reference(name):
    ins, build = GRAPHS[name]
    static = name in STATIC  # maxout's pooled axis and hessian's input must be static
    syms = [sg.tensor(n, np.shape(val) if static else (None,) * np.ndim(val),
                      np.asarray(val).dtype.name) for n, val in ins]
    values = [val for _, val in ins]
    # built twice: a random stream's state advances with each call
    want = sg.compile(syms, build(*syms), backend="reference")(*values)
    got = sg.compile(syms, build(*syms), backend="llvm", rewrite=False)(*values)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_matches(g, w, rtol=1e-9, atol=1e-11)


def test_large_run_time_arange_lowers_with_rewrites_too():
    v = sg.tensor("v", (None,), "float64")
    x = rand(RNG, (5000,), "float64")  # past the size specialisation folds into a constant
    f = sg.compile([v], [sg.arange(sg.shape(v)[0]), sg.sum(sg.arange(sg.shape(v)[0]) * v)])
    idx, total = f(x)
    assert_matches(idx, np.arange(5000))
    assert_matches(total, np.sum(np.arange(5000) * x))
