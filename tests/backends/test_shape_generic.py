"""Shape-generic native code: a dim unknown at build time is a run-time size of the generated
code, so one program serves every size (codegen/symdim.py, backends/llvm.py)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import symgraph as sg
from symgraph.errors import ShapeError

BATCHES = (1, 7, 64, 500)


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch):
    """These tests count code generations: a warm start from the disk cache would answer
    instead (it generates nothing), so the cache is off."""
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")


def _mlp_step(x_shape, y_shape, seed=0, **options):
    rng = np.random.default_rng(seed)
    params = [sg.shared((rng.standard_normal((20, 16)) * 0.3).astype("float32"), name="W1"),
              sg.shared(np.zeros(16, "float32"), name="b1"),
              sg.shared((rng.standard_normal((16, 5)) * 0.3).astype("float32"), name="W2")]
    x = sg.tensor("x", x_shape)
    y = sg.tensor("y", y_shape, dtype="int64")
    logits = sg.tanh(x @ params[0] + params[1]) @ params[2]
    loss = sg.nn.cross_entropy(logits, y)
    grads = sg.grad(loss, params)
    f = sg.compile([x, y], [loss, sg.nn.softmax(logits)],
                   updates=[(p, p - 0.1 * g) for p, g in zip(params, grads)], **options)
    return f, params


def _numpy_step(params, x, y):
    """The same step in NumPy (float64), for the values."""
    w1, b1, w2 = (p.astype(np.float64) for p in params)
    h = np.tanh(x @ w1 + b1)
    z = h @ w2
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(y)), y]).mean()
    dz = p.copy()
    dz[np.arange(len(y)), y] -= 1
    dz /= len(y)
    dw2 = h.T @ dz
    dh = dz @ w2.T * (1 - h ** 2)
    return loss, p, [w1 - 0.1 * (x.T @ dh), b1 - 0.1 * dh.sum(0), w2 - 0.1 * dw2]


def test_training_step_generates_code_once_for_every_batch_size():
    f, params = _mlp_step((None, 20), (None,))
    rng = np.random.default_rng(1)
    for n in BATCHES:
        x = rng.standard_normal((n, 20)).astype("float32")
        y = rng.integers(0, 5, n)
        before = [p.get_value() for p in params]
        loss, probs = f(x, y)
        want_loss, want_probs, want_params = _numpy_step(before, x, y)
        np.testing.assert_allclose(loss, want_loss, rtol=2e-5)
        np.testing.assert_allclose(probs, want_probs, rtol=2e-5, atol=1e-6)
        for p, w in zip(params, want_params):
            np.testing.assert_allclose(p.get_value(), w, rtol=2e-5, atol=1e-6)
    assert f.program.generations == 1
    assert len(f.program.families) == 1


def test_generic_and_exact_code_agree_bit_for_bit():
    fg, pg = _mlp_step((None, 20), (None,))
    rng = np.random.default_rng(2)
    for n in (1, 3, 64):
        fs, ps = _mlp_step((n, 20), (n,))
        assert fs.program.families == []  # static shapes: code for exactly those
        x = rng.standard_normal((n, 20)).astype("float32")
        y = rng.integers(0, 5, n)
        for p, q in zip(ps, pg):
            p.set_value(q.get_value())
        for a, b in zip(fg(x, y), fs(x, y)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        for p, q in zip(ps, pg):
            np.testing.assert_allclose(p.get_value(), q.get_value(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [1, 2, 5, 33, 1000])
def test_elementwise_reductions_and_products_for_any_size(n):
    x = sg.tensor("x", (None, 3))
    v = sg.tensor("v", (None,))
    f = sg.compile([x, v], [(sg.exp(x) * 2).sum(axis=1), x.T @ x, x.max(axis=0), v * 2 + 1,
                            x.mean(axis=0)])
    rng = np.random.default_rng(n)
    for size in (n, n + 1):
        a = rng.standard_normal((size, 3)).astype("float32")
        b = rng.standard_normal(size).astype("float32")
        got = f(a, b)
        np.testing.assert_allclose(got[0], (np.exp(a) * 2).sum(1), rtol=1e-5)
        np.testing.assert_allclose(got[1], a.T @ a, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[2], a.max(0))
        np.testing.assert_allclose(got[3], b * 2 + 1, rtol=1e-6)
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(got[4], a.mean(0), rtol=1e-5, atol=1e-6)
    assert f.program.generations == 1


def test_zero_rows_run_the_same_code():
    x = sg.tensor("x", (None, 3))
    f = sg.compile([x], [x.sum(axis=0), x * 2, x.T @ x])
    for size in (4, 0, 1):
        a = np.ones((size, 3), "float32")
        s, d, g = f(a)
        np.testing.assert_array_equal(s, a.sum(0))
        np.testing.assert_array_equal(d, a * 2)
        np.testing.assert_array_equal(g, a.T @ a)
    assert f.program.generations == 1


def test_shape_arithmetic_and_reshape_stay_generic():
    x = sg.tensor("x", (None, 4, 3))
    n = sg.shape(x)[0]
    flat = x.reshape((n, -1))
    half = n // 2
    f = sg.compile([x], [flat, flat[:, :5] * 2, sg.cast(half, "float32") + x.sum()])
    for size in (2, 9, 40):
        a = np.arange(size * 12, dtype="float32").reshape(size, 4, 3)
        flat_v, head, s = f(a)
        np.testing.assert_array_equal(flat_v, a.reshape(size, -1))
        np.testing.assert_array_equal(head, a.reshape(size, -1)[:, :5] * 2)
        np.testing.assert_allclose(s, size // 2 + a.sum(), rtol=1e-6)
    assert f.program.generations == 1


def test_convnet_step_generates_code_once():
    rng = np.random.default_rng(3)
    w1 = sg.shared((rng.standard_normal((4, 1, 3, 3)) * 0.3).astype("float32"), name="w1")
    w2 = sg.shared((rng.standard_normal((4 * 3 * 3, 3)) * 0.3).astype("float32"), name="w2")
    x = sg.tensor("x", (None, 1, 8, 8))
    y = sg.tensor("y", (None,), dtype="int64")
    h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(x, w1)), 2)
    loss = sg.nn.cross_entropy(h.reshape((sg.shape(h)[0], -1)) @ w2, y)
    gw1, gw2 = sg.grad(loss, [w1, w2])
    f = sg.compile([x, y], [loss, gw1, gw2])
    ref = sg.compile([x, y], [loss, gw1, gw2], backend="reference")
    for n in (1, 5, 16):
        a = rng.standard_normal((n, 1, 8, 8)).astype("float32")
        b = rng.integers(0, 3, n)
        for got, want in zip(f(a, b), ref(a, b)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert f.program.generations == 1


def test_unequal_unknown_dims_broadcast_or_fail_as_numpy():
    a = sg.tensor("a", (None,))
    b = sg.tensor("b", (None,))
    f = sg.compile([a, b], a + b)
    one = np.ones(1, "float32")
    five = np.arange(5, dtype="float32")
    np.testing.assert_array_equal(f(five, five), five * 2)
    np.testing.assert_array_equal(f(five, one), five + 1)  # a guard sends this to other code
    np.testing.assert_array_equal(f(one, five), five + 1)
    np.testing.assert_array_equal(f(five[:3], five[:3]), five[:3] * 2)
    with pytest.raises(ShapeError) as err:
        f(five, five[:4])
    with sg_generic_off():
        g = sg.compile([a, b], a + b)
        with pytest.raises(ShapeError) as err_exact:
            g(five, five[:4])
    # the same message, but for the line that compiled each
    assert str(err.value).split("built at")[0] == str(err_exact.value).split("built at")[0]


class sg_generic_off:
    """Compile with shape-generic code turned off (``SYMGRAPH_SHAPE_GENERIC=0``)."""

    def __enter__(self):
        import os
        self.saved = os.environ.get("SYMGRAPH_SHAPE_GENERIC")
        os.environ["SYMGRAPH_SHAPE_GENERIC"] = "0"

    def __exit__(self, *exc):
        import os
        if self.saved is None:
            os.environ.pop("SYMGRAPH_SHAPE_GENERIC", None)
        else:
            os.environ["SYMGRAPH_SHAPE_GENERIC"] = self.saved


def test_turning_it_off_generates_code_per_shape():
    with sg_generic_off():
        x = sg.tensor("x", (None,))
        f = sg.compile([x], x * 2)
    for n in (3, 4, 5):
        np.testing.assert_array_equal(f(np.ones(n, "float32")), np.full(n, 2, "float32"))
    assert f.program.generations == 3 and f.program.families == []


def test_instances_of_one_program_run_from_many_threads():
    x = sg.tensor("x", (None, 8))
    f = sg.compile([x], [(x * 3).sum(axis=1), x @ x.T])
    sizes = [1, 2, 3, 17, 64, 100]
    arrays = {n: np.random.default_rng(n).standard_normal((n, 8)).astype("float32") for n in sizes}
    errors = []

    def work(k):
        for i in range(30):
            n = sizes[(k + i) % len(sizes)]
            s, g = f(arrays[n])
            if not (np.allclose(s, arrays[n].sum(1) * 3, rtol=1e-5, atol=1e-5)
                    and np.allclose(g, arrays[n] @ arrays[n].T, rtol=1e-4, atol=1e-4)):
                errors.append(n)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert f.program.generations == 1


def test_generated_code_reads_sizes_from_its_dims_table():
    x = sg.tensor("x", (None, 16))
    f = sg.compile([x], sg.exp(x) + 1)
    f(np.zeros((4, 16), "float32"))
    assert '%"dims"' in f.source()
    assert any("0..16*d0" in k.ir or "0..d0" in k.ir for k in f.kernels), [k.ir for k in f.kernels]


def test_instances_for_many_lengths_are_bounded():
    from symgraph.backends import MAX_INSTANCES
    x = sg.tensor("x", (None,))
    f = sg.compile([x], x * 2 + 1)
    for n in list(range(1, MAX_INSTANCES + 40)) + [3]:  # 3 was forgotten: a new instance
        a = np.arange(n, dtype="float32")
        np.testing.assert_array_equal(f(a), a * 2 + 1)
    assert len(f.program.specs) <= MAX_INSTANCES
    assert f.program.generations == 1


def test_sizes_from_unknown_dims_random_draws_arange_zeros_one_hot():
    x = sg.tensor("x", (None, 4))
    rng = sg.RandomStream(0)
    n = sg.shape(x)[0]
    f = sg.compile([x], [x * rng.bernoulli(sg.shape(x), 0.5), rng.uniform(sg.shape(x)),
                         sg.arange(n), sg.cast(n // 2, "float32"), sg.zeros((n, 3)) + 1,
                         sg.one_hot(sg.arange(n) % 4, 4)])
    for k in (1, 5, 9):
        masked, u, r, half, z, oh = f(np.ones((k, 4), "float32"))
        assert masked.shape == (k, 4) and set(np.unique(masked)) <= {0.0, 1.0}
        assert u.shape == (k, 4) and (u >= 0).all() and (u < 1).all()
        np.testing.assert_array_equal(r, np.arange(k))
        assert half == k // 2
        np.testing.assert_array_equal(z, np.ones((k, 3)))
        np.testing.assert_array_equal(oh, np.eye(4)[np.arange(k) % 4])
    assert f.program.generations == 1


def test_gathers_along_an_unknown_dim_stay_generic_and_checked():
    """Theano's NLL ``log(p)[arange(n), y]``: the row indices are checked against the run-time
    batch size (not pinned to one), and a bad index still raises NumPy's IndexError."""
    z = sg.tensor("z", (None, 5), "float64")
    y = sg.tensor("y", (None,), "int64")
    i = sg.tensor("i", (None,), "int64")
    nll = -sg.mean(sg.log(sg.nn.softmax(z))[sg.arange(z.shape[0]), y])
    f = sg.compile([z, y, i], [nll, sg.grad(nll, z), z[i]])
    rng = np.random.default_rng(4)
    for n in (3, 8, 1):
        zv, yv = rng.standard_normal((n, 5)), rng.integers(0, 5, n)
        iv = rng.integers(-n, n, 4)
        loss, g, rows = f(zv, yv, iv)
        p = np.exp(zv) / np.exp(zv).sum(1, keepdims=True)
        np.testing.assert_allclose(loss, -np.log(p[np.arange(n), yv]).mean(), rtol=1e-12)
        want_g = p.copy()
        want_g[np.arange(n), yv] -= 1
        np.testing.assert_allclose(g, want_g / n, rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(rows, zv[iv])
    assert f.program.generations == 1
    with pytest.raises(IndexError, match=r"index 6 is out of bounds for axis 0 with size 3"):
        f(np.zeros((3, 5)), np.zeros(3, "int64"), np.array([0, 6]))
