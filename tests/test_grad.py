"""``sg.grad``: hand-derived gradients, pooled sums, graph size, known_grads, disconnected
inputs, error messages, higher order and the XOR example."""

from __future__ import annotations

import importlib.util
import pathlib
import warnings

import numpy as np
import pytest

import symgraph as sg
from symgraph.graph.fgraph import clone_replace, toposort

RNG = np.random.default_rng(4)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def f64(name, shape):
    return sg.tensor(name, shape, "float64")


def compile_ref(inputs, outputs):
    return sg.compile(inputs, outputs, backend="reference")


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- gradients against hand-derived NumPy formulas ---------------------------------------

def test_mlp_loss_matches_hand_derived_formulas():
    n, d, h, c = 5, 4, 6, 3
    xv, yv = RNG.standard_normal((n, d)), RNG.integers(0, c, n)
    w1v, b1v = RNG.standard_normal((d, h)), RNG.standard_normal(h) * 0.1
    w2v, b2v = RNG.standard_normal((h, c)), RNG.standard_normal(c) * 0.1
    x, y = f64("x", (None, d)), sg.tensor("y", (None,), "int64")
    w1, b1, w2, b2 = params = [sg.shared(v, name=k) for v, k in
                               [(w1v, "w1"), (b1v, "b1"), (w2v, "w2"), (b2v, "b2")]]
    loss = sg.nn.cross_entropy(sg.relu(x @ w1 + b1) @ w2 + b2, y)
    got = compile_ref([x, y], [loss, *sg.grad(loss, params)])(xv, yv)

    z1 = xv @ w1v + b1v
    a1 = np.maximum(z1, 0)
    p = np_softmax(a1 @ w2v + b2v)
    dlogits = (p - np.eye(c)[yv]) / n
    da1 = dlogits @ w2v.T
    dz1 = da1 * (z1 > 0)
    expected = [-np.mean(np.log(p[np.arange(n), yv])),
                xv.T @ dz1, dz1.sum(0), a1.T @ dlogits, dlogits.sum(0)]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_softmax_cross_entropy_matches_hand_derived_formulas():
    zv = RNG.standard_normal((4, 5))
    labels = np.array([0, 4, 2, 2])
    tv = np_softmax(RNG.standard_normal((4, 5)))  # probability rows
    z, t = f64("z", (4, 5)), f64("t", (4, 5))
    sparse = sg.nn.cross_entropy(z, labels)
    dense = sg.nn.cross_entropy(z, t)
    g_sparse, (g_dense_z, g_dense_t) = sg.grad(sparse, z), sg.grad(dense, [z, t])
    got = compile_ref([z, t], [g_sparse, g_dense_z, g_dense_t])(zv, tv)
    p = np_softmax(zv)
    log_p = np.log(p)
    np.testing.assert_allclose(got[0], (p - np.eye(5)[labels]) / 4, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got[1], (p * tv.sum(1, keepdims=True) - tv) / 4, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got[2], -log_p / 4, rtol=1e-12)
    # one-hot targets give the same gradient as integer labels
    onehot = compile_ref([z], sg.grad(sg.nn.cross_entropy(z, sg.one_hot(labels, 5, "float64")), z))
    np.testing.assert_allclose(onehot(zv), got[0], rtol=1e-12, atol=1e-15)


def _np_conv(xp, k):
    n, c, hp, wp = xp.shape
    o, _, kh, kw = k.shape
    oh, ow = hp - kh + 1, wp - kw + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("ncyx,oc->noyx", xp[:, :, i:i + oh, j:j + ow], k[:, :, i, j])
    return out


def test_small_convnet_loss_matches_hand_derived_formulas():
    n, c, hw, o, classes = 2, 2, 6, 3, 4
    xv = RNG.standard_normal((n, c, hw, hw))
    kv = RNG.standard_normal((o, c, 3, 3)) * 0.5
    wv = RNG.standard_normal((o * 9, classes)) * 0.3
    yv = np.array([1, 3])
    x, k, w = f64("x", (n, c, hw, hw)), f64("k", kv.shape), f64("w", wv.shape)
    conv = sg.nn.conv2d(x, k, stride=1, padding=1)
    pooled = sg.nn.max_pool2d(sg.relu(conv), 2)
    loss = sg.nn.cross_entropy(sg.flatten(pooled, 2) @ w, yv)
    got = compile_ref([x, k, w], [loss, *sg.grad(loss, [x, k, w])])(xv, kv, wv)

    # forward by hand (padding 1, so the output keeps the 6x6 size)
    xp = np.pad(xv, ((0, 0), (0, 0), (1, 1), (1, 1)))
    z = _np_conv(xp, kv)
    a = np.maximum(z, 0)
    win = a.reshape(n, o, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, o, 3, 3, 4)
    pooled_v = win.max(-1)
    flat = pooled_v.reshape(n, -1)
    p = np_softmax(flat @ wv)
    # backward by hand
    dlogits = (p - np.eye(classes)[yv]) / n
    dw = flat.T @ dlogits
    dpool = (dlogits @ wv.T).reshape(n, o, 3, 3)
    first_max = np.eye(4)[win.argmax(-1)]  # the window's maximum gets the gradient
    da = (first_max * dpool[..., None]).reshape(n, o, 3, 3, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    dz = da.reshape(n, o, 6, 6) * (z > 0)
    dk = np.zeros_like(kv)
    dxp = np.zeros_like(xp)
    for i in range(3):
        for j in range(3):
            dk[:, :, i, j] = np.einsum("noyx,ncyx->oc", dz, xp[:, :, i:i + 6, j:j + 6])
            dxp[:, :, i:i + 6, j:j + 6] += np.einsum("noyx,oc->ncyx", dz, kv[:, :, i, j])
    expected = [-np.mean(np.log(p[np.arange(n), yv])), dxp[:, :, 1:-1, 1:-1], dk, dw]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


# --- pooled sums ------------------------------------------------------------------------

def test_shared_weight_in_two_branches_gets_the_pooled_sum():
    xv, wv = RNG.standard_normal((3, 4)), RNG.standard_normal((4, 2))
    x = f64("x", (3, 4))
    w = sg.shared(wv, name="w")
    branch1 = sg.tanh(x @ w).sum()
    branch2 = ((x * 2.0) @ w).sum() ** 2
    g_both = sg.grad(branch1 + branch2, w)
    g1, g2 = sg.grad(branch1, w), sg.grad(branch2, w)
    got, e1, e2 = compile_ref([x], [g_both, g1, g2])(xv)
    np.testing.assert_allclose(got, e1 + e2, rtol=1e-12)
    np.testing.assert_allclose(e1, xv.T @ (1 - np.tanh(xv @ wv) ** 2), rtol=1e-12)
    np.testing.assert_allclose(e2, 2 * (2 * xv @ wv).sum() * (2 * xv).T @ np.ones((3, 2)), rtol=1e-12)


def test_variable_used_twice_in_one_op():
    x = f64("x", (3,))
    f = compile_ref([x], sg.grad((x * x + x / (x + x)).sum(), x))
    xv = np.array([0.5, -1.5, 2.0])
    np.testing.assert_allclose(f(xv), 2 * xv, rtol=1e-12)


def test_conv_filter_applied_at_every_position_gets_the_pooled_sum():
    x = f64("x", (1, 1, 4, 5))
    w = sg.shared(np.zeros((1, 1, 2, 3)), name="w")
    f = compile_ref([x], sg.grad(sg.nn.conv2d(x, w).sum(), w))
    xv = RNG.standard_normal((1, 1, 4, 5))
    expected = np.zeros((1, 1, 2, 3))
    for i in range(2):
        for j in range(3):  # the filter tap (i, j) sees a 3x3 block of the input
            expected[0, 0, i, j] = xv[0, 0, i:i + 3, j:j + 3].sum()
    np.testing.assert_allclose(f(xv), expected, rtol=1e-12)
    ones = compile_ref([x], sg.grad(sg.nn.conv2d(x, w).sum(), w))(np.ones((1, 1, 4, 5)))
    np.testing.assert_array_equal(ones, np.full((1, 1, 2, 3), 9.0))  # 3x3 output positions


# --- graph size -------------------------------------------------------------------------

def _chain(n: int):
    x = f64("x", (3, 4))
    m = sg.constant(np.eye(4) * 0.5)
    steps = [sg.tanh, lambda h: h * 1.5, lambda h: h @ m, sg.nn.softmax,
             lambda h: h - sg.mean(h, axis=1, keepdims=True), lambda h: h + x,
             lambda h: sg.reshape(h, (4, 3)).T, sg.sin, lambda h: sg.maximum(h, x), sg.exp]
    h = x
    for i in range(n):
        h = steps[i % len(steps)](h)
    return x, h.sum()


GRAPH_SIZE_FACTOR = 4  # nodes(forward + gradient) <= 4 * nodes(forward); measured ~2.85


def test_gradient_graph_grows_linearly_with_the_forward_graph():
    sizes = {}
    for n in (100, 200):
        x, cost = _chain(n)
        n_fwd = len(toposort([cost]))
        n_grad = len(toposort([sg.grad(cost, x)]))
        assert n_fwd >= n
        assert n_grad <= GRAPH_SIZE_FACTOR * n_fwd, (n, n_fwd, n_grad)
        sizes[n] = (n_fwd, n_grad)
    # doubling the chain doubles the gradient graph (no per-parameter or quadratic blow-up)
    (f1, g1), (f2, g2) = sizes[100], sizes[200]
    assert (g2 - f2) <= 2.1 * (g1 - f1)


def test_gradient_of_a_long_chain_is_correct():
    x, cost = _chain(30)
    sg.verify_grad(lambda v: clone_replace([cost], {x: v})[0],
                   [RNG.uniform(-1, 1, (3, 4))])


# --- known_grads, disconnected, errors --------------------------------------------------

def test_known_grads_start_backprop_from_an_intermediate():
    x, w, v = f64("x", (3,)), f64("w", (2, 3)), f64("v", (2,))
    h = sg.tanh(w @ x)
    gw, gx = sg.grad(None, [w, x], known_grads={h: v})
    both = sg.grad(h.sum(), x, known_grads={h: v})  # seeds add up: (1 + v)
    xv, wv, vv = RNG.standard_normal(3), RNG.standard_normal((2, 3)), RNG.standard_normal(2)
    got_w, got_x, got_both = compile_ref([x, w, v], [gw, gx, both])(xv, wv, vv)
    dh = 1 - np.tanh(wv @ xv) ** 2
    np.testing.assert_allclose(got_w, np.outer(vv * dh, xv), rtol=1e-12)
    np.testing.assert_allclose(got_x, wv.T @ (vv * dh), rtol=1e-12)
    np.testing.assert_allclose(got_both, wv.T @ ((1 + vv) * dh), rtol=1e-12)


def test_known_grads_rank_must_match():
    x = f64("x", (3,))
    with pytest.raises(ValueError, match="rank"):
        sg.grad(None, x, known_grads={sg.tanh(x): np.ones((3, 1))})


def test_disconnected_modes():
    x, unused = f64("x", (3,)), f64("unused", (2, 2))
    cost = (x ** 2).sum()
    with pytest.raises(sg.GradientError, match="unused"):
        sg.grad(cost, [x, unused])
    with pytest.raises(sg.GradientError, match="does not depend"):
        sg.grad(cost, unused, disconnected="raise")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gx, gu = sg.grad(cost, [x, unused], disconnected="warn")
    assert any("unused" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gx2, gu2 = sg.grad(cost, [x, unused], disconnected="ignore")
    xv = np.array([1.0, 2.0, 3.0])
    for out_x, out_u in ([gx, gu], [gx2, gu2]):
        rx, ru = compile_ref([x, unused], [out_x, out_u])(xv, np.ones((2, 2)))
        np.testing.assert_allclose(rx, 2 * xv)
        np.testing.assert_array_equal(ru, np.zeros((2, 2)))
        assert out_u.dtype == "float64" and out_u.shape == (2, 2)
    with pytest.raises(ValueError, match="disconnected"):
        sg.grad(cost, x, disconnected="maybe")


def test_depending_on_a_shape_only_is_disconnected():
    w, x = f64("w", (None, 3)), f64("x", (3,))
    by_shape = (x * 2.0).sum() / sg.cast(sg.shape(w)[0], "float64")
    via_zeros_like = sg.zeros_like(w).sum() + x.sum()
    for cost in (by_shape, via_zeros_like):
        with pytest.raises(sg.GradientError, match="does not depend"):
            sg.grad(cost, w)
        g = sg.grad(cost, w, disconnected="ignore")
        np.testing.assert_array_equal(compile_ref([w, x], g)(np.ones((2, 3)), np.ones(3)), np.zeros((2, 3)))


def test_stop_gradient_gives_zeros_not_an_error():
    x = f64("x", (3,))
    g = sg.grad((sg.stop_gradient(x) * x).sum() + sg.stop_gradient(x).sum(), x)
    xv = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(compile_ref([x], g)(xv), xv)


def test_clear_errors():
    x = f64("x", (3,))
    with pytest.raises(ValueError, match="scalar"):
        sg.grad(x * 2, x)
    with pytest.raises(TypeError, match="float scalar"):
        sg.grad(sg.argmax(x), x)
    with pytest.raises(TypeError, match="constant"):
        sg.grad(x.sum(), sg.constant(np.ones(3)))
    with pytest.raises(TypeError, match="not a symbolic variable"):
        sg.grad(x.sum(), np.ones(3))
    with pytest.raises(TypeError, match="not a symbolic variable"):
        sg.grad(x.sum(), 3)
    with pytest.raises(TypeError, match=r"wrt\[1\]"):
        sg.grad(x.sum(), [x, "x"])
    with pytest.raises(ValueError, match="cost or known_grads"):
        sg.grad(None, x)


def test_gradient_shapes_and_dtypes_follow_wrt():
    x32 = sg.matrix("x32")
    w = sg.shared(np.ones((3, 2), np.float32), name="w")
    b = sg.shared(np.zeros((), np.float64), name="b")
    cost = (sg.cast(x32 @ w, "float64") + b).sum()
    gx, gw, gb = sg.grad(cost, [x32, w, b])
    assert (gx.dtype, gw.dtype, gb.dtype) == ("float32", "float32", "float64")
    assert gw.shape == (3, 2) and gb.ndim == 0
    rx, rw, rb = compile_ref([x32], [gx, gw, gb])(np.ones((5, 3), np.float32))
    assert rx.shape == (5, 3) and rw.shape == (3, 2) and rb.shape == ()
    np.testing.assert_allclose(rw, np.full((3, 2), 5.0))
    assert rb == 10.0


def test_gradient_with_respect_to_an_intermediate():
    x = f64("x", (3,))
    y = x * 2.0
    cost = (y ** 2).sum()
    gy, gx = sg.grad(cost, [y, x])
    xv = np.array([1.0, 2.0, -1.0])
    ry, rx = compile_ref([x], [gy, gx])(xv)
    np.testing.assert_allclose(ry, 4 * xv)
    np.testing.assert_allclose(rx, 8 * xv)


def test_broadcast_against_unknown_dims_reduces_at_run_time():
    a, b = f64("a", (None, None)), f64("b", (3, 4))
    f = compile_ref([a, b], sg.grad((a * b).sum(), a))
    bv = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(f(np.ones((1, 4)), bv), bv.sum(0, keepdims=True))
    np.testing.assert_allclose(f(np.ones((3, 1)), bv), bv.sum(1, keepdims=True))
    np.testing.assert_allclose(f(np.ones((1, 1)), bv), bv.sum(keepdims=True))
    np.testing.assert_allclose(f(np.ones((3, 4)), bv), bv)


# --- higher order -----------------------------------------------------------------------

def test_grad_of_grad_of_grad():
    x = f64("x", ())
    g1 = sg.grad(x ** 4 + sg.sin(x), x)
    g2 = sg.grad(g1, x)
    g3 = sg.grad(g2, x)
    r = compile_ref([x], [g1, g2, g3])(np.float64(0.7))
    np.testing.assert_allclose(r, [4 * 0.7 ** 3 + np.cos(0.7), 12 * 0.7 ** 2 - np.sin(0.7),
                                   24 * 0.7 - np.cos(0.7)], rtol=1e-12)


def _mlp_loss(x, w1, w2, labels):
    return sg.nn.cross_entropy(sg.tanh(x @ w1) @ w2, labels)


def test_mlp_loss_second_derivatives():
    xv = RNG.standard_normal((4, 3))
    labels = np.array([0, 1, 1, 0])

    def grad_w1(x, w1, w2):
        return sg.grad(_mlp_loss(x, w1, w2, labels), w1)

    def grad_norm(x, w1, w2):
        g1, g2 = sg.grad(_mlp_loss(x, w1, w2, labels), [w1, w2])
        return (g1 ** 2).sum() + (g2 ** 2).sum()

    args = [xv, RNG.standard_normal((3, 5)), RNG.standard_normal((5, 2))]
    sg.verify_grad(grad_w1, args)
    sg.verify_grad(grad_norm, args)


def test_gradients_can_be_compiled_with_updates():
    w = sg.shared(np.array([3.0, -2.0]), name="w")
    loss = ((w - np.array([1.0, 1.0])) ** 2).sum()
    step = sg.compile([], loss, updates=[(w, w - 0.25 * sg.grad(loss, w))], backend="reference")
    for _ in range(30):
        step()
    np.testing.assert_allclose(w.get_value(), [1.0, 1.0], atol=1e-6)


# --- examples/xor.py --------------------------------------------------------------------

def _load_xor():
    spec = importlib.util.spec_from_file_location("xor_example", ROOT / "examples" / "xor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xor_example_learns_xor(capsys):
    xor = _load_xor()
    losses, probs = xor.train(backend="reference", steps=150)
    assert losses[-1] < 0.05 < losses[0]
    assert np.array_equal(probs > 0.5, xor.Y > 0.5)
    assert xor.main(["--backend", "reference", "--steps", "100"]) == 0
    assert "learned XOR" in capsys.readouterr().out
