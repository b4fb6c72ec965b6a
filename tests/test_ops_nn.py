"""sg.nn against hand-written NumPy: softmax, log_softmax, losses, conv2d, pooling, dropout,
maxout."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, evaluate, noncontiguous, rand

import symgraph as sg


def np_log_softmax(x, axis=-1):
    x64 = x.astype(np.float64)
    m = x64.max(axis=axis, keepdims=True)
    return (x64 - m - np.log(np.exp(x64 - m).sum(axis=axis, keepdims=True))).astype(x.dtype)


def np_softmax(x, axis=-1):
    return np.exp(np_log_softmax(x, axis).astype(np.float64)).astype(x.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,axis", [((4, 7), -1), ((4, 7), 0), ((1, 1), -1), ((3, 1023), 1),
                                        ((2, 3, 5), 1), ((7,), 0)], ids=str)
def test_softmax_and_log_softmax(shape, axis, dtype):
    x = rand(np.random.default_rng(51), shape, dtype, -10, 10)
    assert_matches(evaluate(lambda v: sg.nn.softmax(v, axis=axis), x), np_softmax(x, axis), rtol=1e-5)
    assert_matches(evaluate(lambda v: sg.nn.log_softmax(v, axis=axis), x), np_log_softmax(x, axis),
                   rtol=1e-5, atol=1e-5)
    assert_matches(evaluate(lambda v: sg.nn.softmax(v, axis=axis), noncontiguous(x)), np_softmax(x, axis),
                   rtol=1e-5)


def test_softmax_extreme_values():
    x = np.array([[1000.0, 0.0, -1000.0], [-np.inf, 0.0, 0.0], [5.0, 5.0, 5.0]], dtype=np.float32)
    with np.errstate(all="ignore"):
        assert_matches(evaluate(sg.nn.softmax, x), np_softmax(x), rtol=1e-6)
        assert_matches(evaluate(sg.nn.log_softmax, x), np_log_softmax(x), rtol=1e-6)
    assert np.all(np.isfinite(evaluate(sg.nn.softmax, x)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_integer_labels(dtype):
    rng = np.random.default_rng(52)
    z = rand(rng, (9, 5), dtype, -4, 4)
    labels = rng.integers(0, 5, size=9)
    want = np.asarray(-np.mean(np_log_softmax(z).astype(np.float64)[np.arange(9), labels])).astype(dtype)
    x, y = sg.matrix("z", dtype), sg.vector("y", "int64")
    f = sg.compile([x, y], sg.nn.cross_entropy(x, y), backend="reference")
    assert_matches(f(z, labels), want, rtol=1e-5)
    y32 = sg.vector("y", "int32")
    g = sg.compile([x, y32], sg.nn.cross_entropy(x, y32), backend="reference")
    assert_matches(g(z, labels.astype(np.int32)), want, rtol=1e-5)


def test_cross_entropy_probability_targets():
    rng = np.random.default_rng(53)
    z = rand(rng, (6, 4), "float32", -4, 4)
    t = rng.uniform(size=(6, 4)).astype(np.float32)
    t /= t.sum(axis=1, keepdims=True)
    t[0] = [0, 1, 0, 0]  # a one-hot row
    want = np.asarray(-np.mean(np.sum(t * np_log_softmax(z), axis=1)), dtype=np.float32)
    assert_matches(evaluate(sg.nn.cross_entropy, z, t), want, rtol=1e-5)


def test_cross_entropy_extreme_logits_stay_finite():
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=np.float32)
    labels = np.array([1, 1])
    x, y = sg.matrix("z"), sg.vector("y", "int64")
    f = sg.compile([x, y], sg.nn.cross_entropy(x, y), backend="reference")
    np.testing.assert_allclose(f(z, labels), 1000.0, rtol=1e-6)


def test_cross_entropy_bad_labels():
    x, y = sg.matrix("z"), sg.vector("y", "int64")
    f = sg.compile([x, y], sg.nn.cross_entropy(x, y), backend="reference")
    with pytest.raises(IndexError, match="labels"):
        f(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(sg.ShapeError, match=r"\(4,\).*\(3, 5\)"):
        sg.nn.cross_entropy(sg.tensor("z", (3, 5)), sg.tensor("y", (4,), "int64"))


def np_bce_logits(x, t):
    x64 = x.astype(np.float64)
    return np.mean(np.logaddexp(0, x64) - t * x64)


def np_bce_probs(p, t):
    p64 = p.astype(np.float64)
    with np.errstate(divide="ignore"):
        return -np.mean(t * np.maximum(np.log(p64), -100) + (1 - t) * np.maximum(np.log1p(-p64), -100))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_binary_cross_entropy(dtype):
    rng = np.random.default_rng(54)
    x = rand(rng, (8, 3), dtype, -30, 30)
    t = (rng.uniform(size=(8, 3)) > 0.5).astype(dtype)
    want = np.asarray(np_bce_logits(x, t), dtype=dtype)
    assert_matches(evaluate(sg.nn.binary_cross_entropy, x, t), want, rtol=1e-5)
    p = rng.uniform(0.001, 0.999, size=(8, 3)).astype(dtype)
    p[0, 0], p[1, 1] = 0.0, 1.0  # clamped logs, no inf
    want = np.asarray(np_bce_probs(p, t), dtype=dtype)
    got = evaluate(lambda a, b: sg.nn.binary_cross_entropy(a, b, from_logits=False), p, t)
    assert np.isfinite(got)
    assert_matches(got, want, rtol=1e-5)


def test_mse_and_hinge():
    rng = np.random.default_rng(55)
    a, b = rand(rng, (5, 4)), rand(rng, (5, 4))
    assert_matches(evaluate(sg.nn.mse, a, b), np.asarray(np.mean((a - b) ** 2), dtype=np.float32), rtol=1e-5)
    s = rand(rng, (10,))
    t = np.where(rng.uniform(size=10) > 0.5, 1, -1).astype(np.int64)
    want = np.asarray(np.mean(np.maximum(0, 1 - t * s)), dtype=np.float32)
    assert_matches(evaluate(sg.nn.hinge, s, t), want, rtol=1e-5)


# --- convolution and pooling --------------------------------------------------------------

def np_conv2d(x, w, stride, padding):
    sh, sw = stride
    ph, pw = padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, h, wd = xp.shape
    o, _, kh, kw = w.shape
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.tensordot(patch, w.astype(np.float64), axes=([1, 2, 3], [1, 2, 3]))
    return out.astype(np.result_type(x.dtype, w.dtype))


CONV_CASES = [((2, 3, 7, 7), (4, 3, 3, 3), 1, 0), ((1, 1, 5, 5), (1, 1, 1, 1), 1, 0),
              ((2, 3, 9, 7), (5, 3, 3, 2), 2, 1), ((1, 2, 8, 8), (3, 2, 5, 5), (2, 3), (2, 1)),
              ((3, 1, 1, 1), (2, 1, 1, 1), 1, 0), ((1, 2, 4, 4), (2, 2, 3, 3), 3, 1)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("xs,ws,stride,padding", CONV_CASES, ids=str)
def test_conv2d(xs, ws, stride, padding, dtype):
    rng = np.random.default_rng(56)
    x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
    s2 = stride if isinstance(stride, tuple) else (stride, stride)
    p2 = padding if isinstance(padding, tuple) else (padding, padding)
    want = np_conv2d(x, w, s2, p2)
    conv = lambda a, b: sg.nn.conv2d(a, b, stride=stride, padding=padding)
    assert_matches(evaluate(conv, x, w), want, rtol=1e-5, atol=1e-5)
    assert_matches(evaluate(conv, x, w, static=True), want, rtol=1e-5, atol=1e-5)
    assert_matches(evaluate(conv, noncontiguous(x), noncontiguous(w)), want, rtol=1e-5, atol=1e-5)


def test_conv2d_errors():
    with pytest.raises(sg.ShapeError, match=r"\(2, 3, 8, 8\).*\(4, 2, 3, 3\)"):
        sg.nn.conv2d(sg.tensor("x", (2, 3, 8, 8)), sg.tensor("w", (4, 2, 3, 3)))
    with pytest.raises(sg.ShapeError, match="does not fit"):
        sg.nn.conv2d(sg.tensor("x", (2, 3, 2, 2)), sg.tensor("w", (4, 3, 3, 3)))
    with pytest.raises(sg.ShapeError, match="rank 4"):
        sg.nn.conv2d(sg.matrix("x"), sg.tensor4("w"))
    with pytest.raises(ValueError, match="stride"):
        sg.nn.conv2d(sg.tensor4("x"), sg.tensor4("w"), stride=0)
    with pytest.raises(ValueError, match="padding"):
        sg.nn.conv2d(sg.tensor4("x"), sg.tensor4("w"), padding=(1, -1))
    with pytest.raises(ValueError, match="stride"):
        sg.nn.max_pool2d(sg.tensor4("x"), 2, stride=(1, 0))
    x, w = sg.tensor4("x"), sg.tensor4("w")
    f = sg.compile([x, w], sg.nn.conv2d(x, w), backend="reference")
    with pytest.raises(sg.ShapeError, match="channels"):
        f(np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 4, 3, 3), np.float32))


def np_pool(x, size, stride, mode):
    kh, kw = size
    sh, sw = stride
    h, w = x.shape[-2:]
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros(x.shape[:-2] + (oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            win = x[..., i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[..., i, j] = win.max(axis=(-2, -1)) if mode == "max" else win.mean(axis=(-2, -1))
    return out


POOL_CASES = [((2, 3, 8, 8), 2, None), ((1, 2, 7, 7), 3, 2), ((1, 1, 9, 5), (3, 2), (1, 1)),
              ((2, 1, 5, 5), 2, 1), ((1, 1, 1, 1), 1, None), ((4, 7, 7), 3, 3), ((6, 6), (2, 3), (1, 2))]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("shape,size,stride", POOL_CASES, ids=str)
def test_pool2d(shape, size, stride, mode):
    x = rand(np.random.default_rng(57), shape, "float32")
    size2 = size if isinstance(size, tuple) else (size, size)
    stride2 = size2 if stride is None else (stride if isinstance(stride, tuple) else (stride, stride))
    fn = sg.nn.max_pool2d if mode == "max" else sg.nn.avg_pool2d
    want = np_pool(x, size2, stride2, mode)
    assert_matches(evaluate(lambda v: fn(v, size, stride), x), want, rtol=1e-6)
    assert_matches(evaluate(lambda v: fn(v, size, stride), noncontiguous(x), static=True), want, rtol=1e-6)


def test_pool_too_large_window():
    with pytest.raises(sg.ShapeError, match=r"\(1, 1, 2, 2\)"):
        sg.nn.max_pool2d(sg.tensor("x", (1, 1, 2, 2)), 3)


def test_maxout():
    x = rand(np.random.default_rng(58), (5, 12), "float32")
    assert_matches(evaluate(lambda v: sg.nn.maxout(v, 3), x, static=True), x.reshape(5, 4, 3).max(axis=-1))
    v = sg.tensor("v", (None, 12))
    f = sg.compile([v], sg.nn.maxout(v, 4), backend="reference")
    assert_matches(f(x), x.reshape(5, 3, 4).max(axis=-1))
    y = rand(np.random.default_rng(59), (2, 6, 3), "float32")
    assert_matches(evaluate(lambda u: sg.nn.maxout(u, 2, axis=1), y, static=True),
                   y.reshape(2, 3, 2, 3).max(axis=2))
    with pytest.raises(ValueError, match="divisible"):
        sg.nn.maxout(sg.tensor("w", (3, 10)), 3)


@pytest.mark.parametrize("first", [5, None])
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_maxout_of_an_empty_tensor(first, backend):
    """A zero-size axis after the pooled one: the result is empty too, gradient included."""
    x = np.zeros((5, 3, 0, 5))
    v = sg.tensor("x", (first, 3, 0, 5), "float64")
    out = sg.nn.maxout(v, 3, axis=1)
    got, g = sg.compile([v], [out, sg.grad(out.sum(), v)], backend=backend)(x)
    assert got.shape == (5, 1, 0, 5) and g.shape == x.shape


def test_dropout():
    rng = sg.RandomStream(7)
    x = sg.matrix("x")
    f = sg.compile([x], sg.nn.dropout(x, 0.25, rng), backend="reference")
    ones = np.ones((200, 100), np.float32)
    a, b = f(ones), f(ones)
    for out in (a, b):
        kept = out != 0
        np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
        assert abs(kept.mean() - 0.75) < 0.01  # 20000 draws: 5 standard deviations
        assert abs(out.mean() - 1.0) < 0.02
    assert np.any(a != b)
    assert sg.nn.dropout(x, 0.0, rng) is x
    with pytest.raises(ValueError):
        sg.nn.dropout(x, 1.0, rng)
