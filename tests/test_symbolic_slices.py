"""Slices with symbolic bounds (``x[i * bs:(i + 1) * bs]``, ``x[:n // 2]``, ``x[::s]``) in reads,
``set_subtensor`` / ``inc_subtensor`` and ``givens``: NumPy's values, finite-difference and
PyTorch gradients, R_op and vmap, the minibatch idiom, and the errors."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from helpers import assert_matches, fd_jacobian
from hypothesis import given, settings
from hypothesis import strategies as st

import symgraph as sg

BOUND = st.one_of(st.none(), st.integers(-12, 12))
STEP = st.one_of(st.none(), st.sampled_from([1, -1, 2, -2, 3, -3]))


def _int(name: str, dtype: str = "int64"):
    return sg.tensor(name, (), dtype)


@functools.cache
def _read_fn(pattern: tuple[bool, bool, bool], dtype: str):
    """``x[a:b:c, 1:]`` and the gradient of ``sum(y ** 2)``, with the parts marked True
    symbolic inputs (the others left out: ``None``)."""
    x = sg.tensor("x", (None, 3), "float64")
    parts = [_int(n, dtype) if p else None for n, p in zip("abc", pattern)]
    y = x[parts[0]:parts[1]:parts[2], 1:]
    f = sg.compile([x] + [p for p in parts if p is not None],
                   [y, sg.grad(sg.sum(y ** 2), x)], backend="reference")
    return f


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 9), start=BOUND, stop=BOUND, step=STEP,
       dtype=st.sampled_from(["int64", "int32"]))
def test_symbolic_slice_reads_match_numpy(n, start, stop, step, dtype):
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3) + 0.5
    pattern = (start is not None, stop is not None, step is not None)
    f = _read_fn(pattern, dtype)
    y, g = f(x, *[v for v in (start, stop, step) if v is not None])
    key = (slice(start, stop, step), slice(1, None))
    assert_matches(y, x[key])
    want = np.zeros_like(x)
    want[key] = 2 * x[key]
    assert_matches(g, want)


@functools.cache
def _write_fn(inc: bool):
    x = sg.tensor("x", (None, 3), "float64")
    y = sg.tensor("y", (None,), "float64")
    a, b, c = _int("a"), _int("b"), _int("c")
    w = sg.constant(np.linspace(-1.0, 2.0, 48).reshape(16, 3))
    out = (sg.inc_subtensor if inc else sg.set_subtensor)(x[a:b:c], y)
    cost = sg.sum(out * w[:sg.shape(x)[0]])
    return sg.compile([x, y, a, b, c], [out, *sg.grad(cost, [x, y])], backend="reference")


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 9), start=st.integers(-12, 12), stop=st.integers(-12, 12),
       step=st.sampled_from([1, -1, 2, -3]), inc=st.booleans(), full_row=st.booleans())
def test_symbolic_slice_writes_match_numpy(n, start, stop, step, inc, full_row):
    """``y`` of shape (3,) broadcasts over the sliced rows (or (1,) over everything)."""
    x = np.arange(n * 3, dtype=np.float64).reshape(n, 3)
    yv = np.array([10.0, 20.0, 30.0]) if full_row else np.array([7.0])
    out, gx, gy = _write_fn(inc)(x, yv, start, stop, step)
    want = x.copy()
    key = slice(start, stop, step)
    if inc:
        want[key] += yv
    else:
        want[key] = yv
    assert_matches(out, want)
    w = np.linspace(-1.0, 2.0, 48).reshape(16, 3)[:n]
    want_gx = w.copy()
    if not inc:
        want_gx[key] = 0
    assert_matches(gx, want_gx)
    assert_matches(gy, np.broadcast_to(w[key].sum(axis=0), (3,)).sum(axis=0, keepdims=True)
                   if not full_row else w[key].sum(axis=0))


@pytest.mark.parametrize("inc", [False, True])
def test_write_gradients_match_torch_and_finite_differences(inc):
    rng = np.random.default_rng(3)
    xv, yv = rng.normal(size=(7, 4)), rng.normal(size=(3, 2))
    x, y, i = sg.tensor("x", (None, 4), "float64"), sg.tensor("y", (None, 2), "float64"), _int("i")
    write = sg.inc_subtensor if inc else sg.set_subtensor
    out = write(x, (slice(i, i + 3), slice(1, 3)), y)
    cost = sg.sum(sg.sin(out) * out)
    f = sg.compile([x, y, i], [cost, *sg.grad(cost, [x, y])], backend="reference")
    _, gx, gy = f(xv, yv, 2)
    xt, yt = torch.tensor(xv, requires_grad=True), torch.tensor(yv, requires_grad=True)
    ot = xt.clone()
    if inc:
        ot[2:5, 1:3] += yt
    else:
        ot[2:5, 1:3] = yt
    (torch.sin(ot) * ot).sum().backward()
    assert_matches(gx, xt.grad.numpy())
    assert_matches(gy, yt.grad.numpy())
    fd = fd_jacobian(lambda v: np.asarray(f(xv, v, 2)[0]), yv)
    np.testing.assert_allclose(gy, fd, rtol=1e-6, atol=1e-8)


def test_read_gradient_with_negative_symbolic_step_matches_finite_differences():
    rng = np.random.default_rng(4)
    xv = rng.normal(size=(9,))
    x, a, c = sg.tensor("x", (None,), "float64"), _int("a"), _int("c")
    y = x[a::c]
    cost = sg.sum(sg.exp(y) * sg.arange(sg.shape(y)[0]).astype("float64"))
    f = sg.compile([x, a, c], [cost, sg.grad(cost, x)], backend="reference")
    for a_, c_ in [(-2, -3), (7, -1), (1, 2), (20, -2)]:
        g = f(xv, a_, c_)[1]
        fd = fd_jacobian(lambda v: np.asarray(f(v, a_, c_)[0]), xv)
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
        assert (g[np.setdiff1d(np.arange(9), np.arange(9)[a_::c_])] == 0).all()


def test_mixed_keys_ints_none_arrays_and_several_symbolic_slices():
    rng = np.random.default_rng(5)
    xv = rng.normal(size=(6, 5, 4))
    x = sg.tensor("x", (None, None, 4), "float64")
    i, j = _int("i"), _int("j")
    idx = sg.constant(np.array([3, 0, 3]))
    outs = [x[i:j, 2, None, ::-1], x[..., i:], x[1:, j::-2, idx], x[None, i:j, i:j],
            sg.set_subtensor(x[i:j, 1, 1:3], 5.0), sg.inc_subtensor(x[i:, j:], 1.0),
            sg.inc_subtensor(x[i:j, :, idx], 1.0)]
    f = sg.compile([x, i, j], outs, backend="reference")
    for iv, jv in [(1, 4), (-3, 5), (0, 0), (4, -1)]:
        got = f(xv, iv, jv)
        want = [xv[iv:jv, 2, None, ::-1], xv[..., iv:], xv[1:, jv::-2, [3, 0, 3]],
                xv[None, iv:jv, iv:jv]]
        w = xv.copy()
        w[iv:jv, 1, 1:3] = 5.0
        want.append(w)
        w = xv.copy()
        w[iv:, jv:] += 1.0
        want.append(w)
        w = xv.copy()
        np.add.at(w, (slice(iv, jv), slice(None), [3, 0, 3]), 1.0)
        want.append(w)
        for g, wnt in zip(got, want):
            assert_matches(g, wnt)


def test_static_shapes_of_symbolic_slices():
    x = sg.tensor("x", (None, 4), "float64")
    i = _int("i")
    assert x[i:i + 2].type.shape == (None, 4)
    assert x[:, i:].type.shape == (None, None)
    assert sg.tensor("e", (0, 4))[i:].type.shape == (0, 4)
    # constant bounds are static bounds: the static shape stays known
    assert sg.tensor("s", (6, 4))[sg.constant(1):sg.constant(-1)].type.shape == (4, 4)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_bounds_computed_from_shapes_run_on_every_backend(backend):
    """Bounds that depend only on input shapes fold into constants on the native backends,
    so each new input shape gets its own specialisation."""
    x = sg.tensor("x", (None, 4), "float64")
    n, m = sg.shape(x)[0], sg.shape(x)[1]
    outs = [x[n // 2:], x[-n // 3::-2, m - 1:0:-1], x[1:n - 1][::2],
            sg.set_subtensor(x[n // 2:], 3.0),
            sg.inc_subtensor(x[:n // 2, m - 2:], sg.constant(np.ones(2))),
            sg.grad(sg.sum(x[n // 2::-1] ** 2), x)]
    f = sg.compile([x], outs, backend=backend)
    for k in (0, 1, 4, 7):
        xv = np.arange(k * 4.0).reshape(k, 4)
        want = [xv[k // 2:], xv[(-k) // 3::-2, 3:0:-1], xv[1:k - 1][::2]]
        w = xv.copy()
        w[k // 2:] = 3.0
        want.append(w)
        w = xv.copy()
        w[:k // 2, 2:] += 1.0
        want.append(w)
        w = np.zeros_like(xv)
        w[k // 2::-1] = 2 * xv[k // 2::-1]
        want.append(w)
        for g, wnt in zip(f(xv), want):
            assert_matches(g, wnt)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_symbolic_step_of_zero_raises_numpys_error_at_call_time(backend):
    x = sg.tensor("x", (None,), "float64")
    step = sg.shape(x)[0] - 4  # zero for a length-4 input
    f = sg.compile([x], x[::step], backend=backend)
    assert_matches(f(np.arange(6.0)), np.arange(6.0)[::2])
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        f(np.arange(4.0))
    if backend == "reference":
        s = _int("s")
        g = sg.compile([x, s], x[1:s:s], backend=backend)
        with pytest.raises(ValueError, match="slice step cannot be zero"):
            g(np.arange(4.0), 0)


def test_value_dependent_slice_lengths_run_on_llvm_with_one_code_generation():
    """A slice whose length depends on the value of an int input (``x[i:i + 2]``): the llvm
    backend reads that value at run time like an unknown dim (codegen/symdim.py)."""
    x, i = sg.tensor("x", (None, 3), "float64"), _int("i")
    f = sg.compile([x, i], [x[i:i + 2] * 2, x[i * 2:]], backend="llvm")
    for n in (5, 9):
        xv = np.arange(3.0 * n).reshape(n, 3)
        for k in (0, 1, 3, 4, 7, -2):
            got = f(xv, k)
            assert_matches(got[0], xv[k:k + 2] * 2)
            assert_matches(got[1], xv[k * 2:])
    # the signs and clipping of the bounds are guards: a few codes serve every call
    assert f.program.generations <= 4 and f.program.uses_values


def test_rop_and_vmap_and_jacobian_through_symbolic_slices():
    rng = np.random.default_rng(6)
    xv, vv = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    x, v, i = sg.tensor("x", (None, 4), "float64"), sg.tensor("v", (None, 4), "float64"), _int("i")
    y = sg.set_subtensor(x[i:], sg.sin(x[i:] * x[:-i][:1]))[:, 1::2] ** 2
    jv = sg.Rop(y, x, v)
    rows = sg.vmap(lambda r: r[i:i + 2] * 2.0)(x)
    jac = sg.jacobian(sg.sum(x[i:] ** 2, axis=0), x)
    f = sg.compile([x, v, i], [y, jv, rows, jac], backend="reference")
    got_y, got_jv, got_rows, got_jac = f(xv, vv, 2)
    fn = lambda a: np.asarray(f(a, vv, 2)[0])  # noqa: E731
    np.testing.assert_allclose(got_jv, fd_jacobian(fn, xv).reshape(got_y.size, -1).dot(
        vv.ravel()).reshape(got_y.shape), rtol=1e-6, atol=1e-8)
    assert_matches(got_rows, xv[:, 2:4] * 2.0)
    fj = lambda a: (a[2:] ** 2).sum(axis=0)  # noqa: E731
    np.testing.assert_allclose(got_jac, fd_jacobian(fj, xv), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("backend", ["reference", "llvm", "cuda"])
def test_minibatch_idiom_with_givens_trains(backend, monkeypatch):
    """Theano's tutorial idiom: a symbolic index selects each minibatch of shared data (cuda:
    on the stand-in device, the generated CUDA C compiled for the host)."""
    if backend == "cuda":
        from tests.gpu.fake_device import install
        from tests.gpu.host_emulation import CXX
        if CXX is None:
            pytest.skip("no host C++ compiler")
        install(monkeypatch)
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")  # generations are counted
    rng = np.random.default_rng(0)
    n, d, bs, lr = 120, 5, 20, 0.5
    xs = rng.normal(size=(n, d))
    ys = (xs @ rng.normal(size=d) > 0).astype(np.int64)
    train_x = sg.shared(xs, name="train_x", shape=(None, d))
    train_y = sg.shared(ys, name="train_y", shape=(None,))
    index = sg.tensor("index", (), "int64")
    x, y = sg.tensor("x", (None, d), "float64"), sg.tensor("y", (None,), "int64")
    W, b = sg.shared(np.zeros((d, 2)), name="W"), sg.shared(np.zeros(2), name="b")
    cost = sg.nn.cross_entropy(x @ W + b, y)
    gW, gb = sg.grad(cost, [W, b])
    train = sg.compile([index], cost, updates=[(W, W - lr * gW), (b, b - lr * gb)],
                       givens={x: train_x[index * bs:(index + 1) * bs],
                               y: train_y[index * bs:(index + 1) * bs]}, backend=backend)
    # the same SGD in NumPy
    w_np, b_np = np.zeros((d, 2)), np.zeros(2)
    losses = []
    for _ in range(4):
        epoch = []
        for k in range(n // bs):
            epoch.append(train(k))
            xb, yb = xs[k * bs:(k + 1) * bs], ys[k * bs:(k + 1) * bs]
            z = xb @ w_np + b_np
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(bs), yb] -= 1
            w_np, b_np = w_np - lr * xb.T @ p / bs, b_np - lr * p.sum(0) / bs
        losses.append(np.mean(epoch))
    assert losses[-1] < 0.6 * losses[0]
    np.testing.assert_allclose(W.get_value(), w_np, rtol=1e-9, atol=1e-12)
    # a shorter data set: the same function, the last batch is cut short as in NumPy
    train_x.set_value(xs[:50])
    train_y.set_value(ys[:50])
    assert np.isfinite(train(2))
    if backend == "llvm":  # one code for every minibatch index and data-set size
        assert train.program.generations == 1, [f.prog.guards for f in train.program.families]
    if backend == "cuda":
        assert train.program.codegen.generations == 1
        assert train.program.codegen.uses_values and "sg_d" in train.program.source()


def test_theano_forms_of_set_and_inc_subtensor():
    from symgraph.compat.theano import tensor as T
    x, i = sg.tensor("x", (None, 3), "float64"), _int("i")
    xv = np.arange(12.0).reshape(4, 3)
    outs = [T.set_subtensor(x[i:i + 2], 1.0), T.inc_subtensor(x[i:, ::2], 1.0),
            sg.set_subtensor(x[i:, 0], -1.0), sg.inc_subtensor(x[1:3], 2.0)]
    got = sg.compile([x, i], outs, backend="reference")(xv, 1)
    want = [xv.copy() for _ in range(4)]
    want[0][1:3] = 1.0
    want[1][1:, ::2] += 1.0
    want[2][1:, 0] = -1.0
    want[3][1:3] += 2.0
    for g, w in zip(got, want):
        assert_matches(g, w)


def test_errors_name_the_problem():
    x, i = sg.tensor("x", (None, 4), "float64"), _int("i")
    with pytest.raises(TypeError, match=r"slice start must be an int.*float64"):
        x[sg.scalar("f", "float64"):]
    with pytest.raises(TypeError, match=r"slice stop must be an int or an int scalar.*\[\?"):
        x[:sg.tensor("v", (None,), "int64")]
    with pytest.raises(TypeError, match="slice step must be an int, None or an int scalar, got float"):
        x[::1.5]
    with pytest.raises(ValueError, match="slice step cannot be zero"):
        x[i::0]
    with pytest.raises(IndexError, match="too many indices"):
        x[i:, 1, 2]
    with pytest.raises(sg.ShapeError, match=r"set_subtensor: value of shape \(3,\) cannot be "
                                            r"broadcast to the sliced shape \(\?, 4\)"):
        sg.set_subtensor(x[i:], sg.constant(np.ones(3)))
    with pytest.raises(TypeError, match=r"the first argument must be an indexed value"):
        sg.set_subtensor(x, 1.0)
    f = sg.compile([x, i], sg.inc_subtensor(x[i:], sg.constant(np.ones((2, 4)))),
                   backend="reference")
    with pytest.raises(sg.ShapeError, match=r"inc_subtensor: value of shape \(2, 4\) cannot be "
                                            r"broadcast to the sliced shape \(3, 4\)"):
        f(np.ones((5, 4)), 2)


def test_theano_tutorial_minibatches_through_the_compat_layer():
    """The logistic-regression tutorial as written for Theano (labels a cast of a shared
    variable, the NLL indexed with ``arange``), in FAST_COMPILE mode (the reference backend)."""
    import symgraph.compat.theano as theano
    import symgraph.compat.theano.tensor as T
    rng = np.random.default_rng(1)
    n, d, k, bs = 120, 6, 3, 20
    xs = rng.normal(size=(n, d))
    ys = xs[:, :k].argmax(1)
    train_set_x = theano.shared(xs, borrow=True, shape=(None, d))
    train_set_y = T.cast(theano.shared(ys.astype("float64"), borrow=True), "int32")
    index = T.lscalar()
    x, y = T.matrix("x"), T.ivector("y")
    W, b = theano.shared(np.zeros((d, k)), name="W"), theano.shared(np.zeros(k), name="b")
    p_y_given_x = T.nnet.softmax(T.dot(x, W) + b)
    cost = -T.mean(T.log(p_y_given_x)[T.arange(T.shape(y)[0]), y])
    g_W, g_b = T.grad(cost, W), T.grad(cost, b)
    train_model = theano.function(
        inputs=[index], outputs=cost, updates=[(W, W - 0.5 * g_W), (b, b - 0.5 * g_b)],
        givens={x: train_set_x[index * bs:(index + 1) * bs],
                y: train_set_y[index * bs:(index + 1) * bs]}, mode="FAST_COMPILE")
    assert train_model(0) == pytest.approx(np.log(k), rel=1e-12)  # zero weights: uniform
    losses = [np.mean([train_model(i) for i in range(n // bs)]) for _ in range(4)]
    assert losses[-1] < 0.6 * losses[0]


def test_writes_through_several_symbolic_slices_and_static_indices():
    """Each symbolic slice is one level; the innermost takes ``y`` (or the static rest of the
    key does) and every level is written back into the one it was cut from."""
    x = sg.tensor("x", (None, None, 3), "float64")
    i, j = _int("i"), _int("j")
    xv = np.arange(60.0).reshape(5, 4, 3)
    outs = [sg.set_subtensor(x[i:j, j:], -1.0), sg.inc_subtensor(x[i:j, j:, 1:], 2.0),
            sg.set_subtensor(x[i:, 1, j::-1], 9.0), sg.inc_subtensor(x[i:], 1.0),
            sg.set_subtensor(x[i:j, ::-1, i], sg.constant(np.arange(4.0)))]
    f = sg.compile([x, i, j], outs, backend="reference")
    for iv, jv in [(1, 3), (0, 2), (-2, 1)]:
        want = [xv.copy() for _ in outs]
        want[0][iv:jv, jv:] = -1.0
        want[1][iv:jv, jv:, 1:] += 2.0
        want[2][iv:, 1, jv::-1] = 9.0
        want[3][iv:] += 1.0
        want[4][iv:jv, ::-1, iv] = np.arange(4.0)
        for got, w in zip(f(xv, iv, jv), want):
            assert_matches(got, w)


def test_vmap_of_writes_into_symbolic_slices():
    """Batched ``x`` with an unbatched value, and an unbatched ``x`` with batched values."""
    x, v, i = sg.tensor("x", (None, 5), "float64"), sg.tensor("v", (None, 2), "float64"), _int("i")
    base = sg.constant(np.arange(10.0).reshape(2, 5))
    zeroed = sg.vmap(lambda r: sg.set_subtensor(r[i:], 0.0))(x)
    placed = sg.vmap(lambda row: sg.inc_subtensor(base[:, i:i + 2], row))(v)
    f = sg.compile([x, v, i], [zeroed, placed], backend="reference")
    xv, vv = np.arange(15.0).reshape(3, 5), np.arange(6.0).reshape(3, 2)
    got_zeroed, got_placed = f(xv, vv, 3)
    want = xv.copy()
    want[:, 3:] = 0.0
    assert_matches(got_zeroed, want)
    want = np.broadcast_to(np.arange(10.0).reshape(2, 5), (3, 2, 5)).copy()
    want[:, :, 3:5] += vv[:, None, :]
    assert_matches(got_placed, want)
