"""Every op on the llvm backend matches the reference backend."""

from __future__ import annotations

import numpy as np
import pytest
from test_llvm_helpers import compare, rand

import symgraph as sg


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path / "cache"))


UNARY = ["exp", "log", "log1p", "expm1", "sqrt", "square", "abs", "sign", "tanh", "sigmoid",
         "softplus", "relu", "elu", "gelu", "erf", "sin", "cos", "floor", "ceil"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unary_ops(dtype):
    x = sg.vector("x", dtype=dtype)
    outs = [getattr(sg, name)(x) for name in UNARY]
    v = rand((1023,), dtype, low=-3, high=3)
    pos = {"log", "sqrt", "log1p"}
    outs = [getattr(sg, n)(sg.abs(x) + 0.1) if n in pos else o for n, o in zip(UNARY, outs)]
    tol = dict(rtol=2e-6, atol=2e-6) if dtype == "float32" else dict(rtol=1e-13, atol=1e-14)
    compare([x], outs, [v], tol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_binary_ops_broadcasting(dtype):
    a = sg.tensor("a", shape=(None, 1, None), dtype=dtype)
    b = sg.matrix("b", dtype=dtype)
    outs = [a + b, a - b, a * b, sg.maximum(a, b), sg.minimum(a, b), a < b, a >= b, sg.eq(a, b),
            sg.where(a > b, a, b)]
    if dtype.startswith("float"):
        outs += [a / (sg.abs(b) + 1), a ** 2, sg.power(sg.abs(a) + 1, b)]
    else:
        nz = sg.where(sg.eq(b, 0), 1, b)
        outs += [a // nz, a % nz, a / nz]
    compare([a, b], outs, [rand((3, 1, 7), dtype), rand((5, 7), dtype, seed=1)])


def test_size_one_and_scalars():
    x = sg.tensor("x", shape=(None, None))
    s = sg.scalar("s")
    compare([x, s], [x * s + 1, sg.exp(s), (x * s).sum()], [rand((1, 1)), np.float32(1.5)])


def test_bool_and_casts():
    x = sg.vector("x")
    m = x > 0
    outs = [sg.ops.logical_and(m, x < 1), sg.ops.logical_or(m, x < -1), sg.ops.logical_not(m),
            m.astype("float32"), x.astype("int32"), x.astype("float64"), (x * 3).astype("int64") % 4]
    compare([x], outs, [rand((37,))])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reductions(dtype):
    x = sg.tensor3("x", dtype=dtype)
    outs = [x.sum(), x.sum(axis=0), x.sum(axis=1), x.sum(axis=2), x.sum(axis=(0, 2)),
            x.mean(axis=1, keepdims=True), x.max(axis=0), x.min(axis=2), x.prod(axis=1),
            sg.argmax(x, axis=1), sg.argmin(x, axis=2), sg.argmax(x), sg.logsumexp(x, axis=2),
            sg.var(x, axis=0), sg.std(x)]
    compare([x], outs, [rand((4, 7, 9), dtype, low=0.5, high=1.5)], tol=dict(rtol=1e-5, atol=1e-6))


def test_long_sum_within_tolerance():
    x = sg.vector("x")
    v = rand((1 << 17,), "float32", low=0, high=1)
    f = sg.compile([x], x.sum())
    exact = v.astype(np.float64).sum()
    assert abs(float(f(v)) - exact) / exact < 1e-5


def test_int_reductions():
    x = sg.matrix("x", dtype="int32")
    compare([x], [x.sum(axis=0), x.max(axis=1), x.prod(axis=0), sg.argmax(x, axis=0)],
            [rand((6, 5), "int32")])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_shapes_and_transposes(dtype):
    a = sg.matrix("a", dtype=dtype)
    b = sg.matrix("b", dtype=dtype)
    c = sg.tensor3("c", dtype=dtype)
    v = sg.vector("v", dtype=dtype)
    outs = [a @ b, a.T @ a, b @ b.T, c @ b, sg.dot(a, v[:7]), sg.outer(v, v), c @ c.transpose(0, 2, 1),
            sg.tanh(a @ b + v[:1])]
    compare([a, b, c, v], outs,
            [rand((5, 7), dtype), rand((7, 3), dtype, 1), rand((2, 4, 7), dtype, 2), rand((9,), dtype, 3)],
            tol=dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else None)


def test_int_matmul():
    a = sg.matrix("a", dtype="int64")
    compare([a], [a @ a.T], [rand((4, 3), "int64")])


def test_shape_ops_and_views():
    x = sg.tensor3("x")
    outs = [x.transpose(2, 0, 1) * 1, x.reshape((-1, 6)), sg.flatten(x), x[:, 1] + 0, x[1:, ::2, -1],
            x[::-1], x[None, 0], sg.concatenate([x, x * 2], axis=1), sg.stack([x[0], x[1]], axis=2),
            sg.broadcast_to(x[:, :1], (2, 3, 6)) * 1, sg.squeeze(x[:, :1]), sg.expand_dims(x, 1) + 0,
            x.T.reshape((6, 6))]
    compare([x], outs, [rand((2, 3, 6))])


def test_non_contiguous_inputs():
    x = sg.matrix("x")
    v = rand((8, 10))[::2, ::3]
    compare([x], [sg.exp(x) + x.sum(axis=0), x @ x.T], [v])


def test_advanced_indexing_and_index_add():
    x = sg.matrix("x")
    i = sg.vector("i", dtype="int64")
    outs = [x[i], x[:, i], x[i, 1], x[i, i], sg.take(x, i, axis=1), x[-1, i] * 2]
    cost = (x[i] * x[i]).sum() + x[:, i].sum()
    outs.append(sg.grad(cost, x))
    compare([x, i], outs, [rand((5, 6)), np.array([0, 2, 2, -1, 4], dtype=np.int64)])


def test_softmax_family():
    x = sg.matrix("x")
    t = sg.vector("t", dtype="int64")
    p = sg.matrix("p")
    outs = [sg.nn.softmax(x), sg.nn.log_softmax(x), sg.nn.softmax(x, axis=0),
            sg.nn.cross_entropy(x, t), sg.nn.cross_entropy(x, p)]
    loss = sg.nn.cross_entropy(x, t) + sg.nn.cross_entropy(x, p)
    outs.append(sg.grad(loss, x))
    pv = np.abs(rand((7, 11), seed=3))
    pv /= pv.sum(axis=1, keepdims=True)
    compare([x, t, p], outs, [rand((7, 11)) * 5, np.arange(7, dtype=np.int64) % 11, pv])


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
def test_conv_and_pool_with_gradients(stride, padding):
    x = sg.tensor4("x", dtype="float64")
    w = sg.tensor4("w", dtype="float64")
    y = sg.nn.conv2d(x, w, stride=stride, padding=padding)
    z = sg.nn.max_pool2d(sg.relu(y), 2) + 0
    a = sg.nn.avg_pool2d(y, 2, stride=1)
    cost = (z * z).sum() + a.sum()
    gx, gw = sg.grad(cost, [x, w])
    compare([x, w], [y, z, a, gx, gw], [rand((2, 3, 9, 8), "float64"), rand((4, 3, 3, 3), "float64", 1)])


def test_random_streams_match_reference():
    rng = sg.RandomStream(7)
    x = sg.matrix("x")
    outs = [rng.uniform((3, 5)), rng.normal((4,), dtype="float64"), sg.nn.dropout(x, 0.5, rng),
            rng.uniform((2, 2), dtype="float64")]
    f = sg.compile([x], outs, backend="llvm")
    rng2 = sg.RandomStream(7)
    outs2 = [rng2.uniform((3, 5)), rng2.normal((4,), dtype="float64"), sg.nn.dropout(x, 0.5, rng2),
             rng2.uniform((2, 2), dtype="float64")]
    r = sg.compile([x], outs2, backend="reference")
    v = rand((6, 6))
    for _ in range(2):  # the state advances identically
        for got, want in zip(f(v), r(v)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_updates_and_shared():
    w = sg.shared(rand((4, 3)), "w")
    x = sg.matrix("x")
    loss = ((x @ w) ** 2).mean()
    g = sg.grad(loss, w)
    f = sg.compile([x], loss, updates=[(w, w - 0.1 * g)], backend="llvm")
    w2 = sg.shared(w.get_value(), "w2")
    loss2 = ((x @ w2) ** 2).mean()
    r = sg.compile([x], loss2, updates=[(w2, w2 - 0.1 * sg.grad(loss2, w2))], backend="reference")
    v = rand((5, 4))
    for _ in range(3):
        np.testing.assert_allclose(f(v), r(v), rtol=1e-5)
    np.testing.assert_allclose(w.get_value(), w2.get_value(), rtol=1e-5)


def test_outputs_that_are_inputs_or_constants():
    x = sg.vector("x")
    compare([x], [x, x, sg.constant(np.arange(3.0, dtype=np.float32)), x.T], [rand((4,))])


def test_shapes_specialise_per_call():
    x = sg.vector("x")
    f = sg.compile([x], sg.exp(x).sum())
    for n in (1, 7, 1023, 7):
        v = rand((n,))
        np.testing.assert_allclose(f(v), np.exp(v).sum(), rtol=1e-5)
    assert len(f.program.specs) == 3
