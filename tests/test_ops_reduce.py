"""Reductions against NumPy: axis (None, int, negative, tuple), keepdims, dtypes, NaN/inf."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special
from helpers import assert_matches, evaluate, noncontiguous, rand

import symgraph as sg

REDUCTIONS = {
    "sum": (sg.sum, np.sum), "mean": (sg.mean, np.mean), "max": (sg.max, np.max),
    "min": (sg.min, np.min), "prod": (sg.prod, np.prod), "var": (sg.var, np.var),
    "std": (sg.std, np.std), "logsumexp": (sg.logsumexp, scipy.special.logsumexp),
}
AXES = [None, 0, 1, -1, -2, (0, 2), (-1, 0), (0, 1, 2), ()]


def _ref(name, x, axis, keepdims):
    ref = REDUCTIONS[name][1]
    want = np.asarray(ref(x, axis=axis, keepdims=keepdims))
    if name == "logsumexp":  # scipy computes in the input's dtype; same as NumPy would
        want = want.astype(np.result_type(x.dtype, np.float32) if x.dtype.kind == "f" else np.float64)
    return want


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_axes_keepdims(name, axis, keepdims):
    rng = np.random.default_rng(11)
    for dtype in ("float32", "float64"):
        x = rand(rng, (3, 5, 4), dtype, 0.5, 1.5) if name == "prod" else rand(rng, (3, 5, 4), dtype)
        fn = REDUCTIONS[name][0]
        want = _ref(name, x, axis, keepdims)
        assert_matches(evaluate(lambda v: fn(v, axis=axis, keepdims=keepdims), x), want,
                       rtol=1e-5 if dtype == "float32" else 1e-11)
        assert_matches(evaluate(lambda v: fn(v, axis=axis, keepdims=keepdims), x, static=True), want,
                       rtol=1e-5 if dtype == "float32" else 1e-11)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("shape", [(), (1,), (7,), (1023,), (1, 1)], ids=str)
def test_reduction_sizes(name, shape):
    rng = np.random.default_rng(12)
    x = rand(rng, shape, "float32", 0.9, 1.1) if name == "prod" else rand(rng, shape, "float32")
    fn = REDUCTIONS[name][0]
    assert_matches(evaluate(fn, x), _ref(name, x, None, False), rtol=2e-5)
    if x.ndim:
        assert_matches(evaluate(lambda v: fn(v, axis=-1), x), _ref(name, x, -1, False), rtol=2e-5)


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction_noncontiguous(name):
    x = rand(np.random.default_rng(13), (6, 5), "float64", 0.5, 1.5)
    fn = REDUCTIONS[name][0]
    assert_matches(evaluate(lambda v: fn(v, axis=0), noncontiguous(x)), _ref(name, x, 0, False))


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
@pytest.mark.parametrize("name", ["sum", "prod", "max", "min", "mean", "var", "std"])
def test_integer_reduction_dtypes(name, dtype):
    x = rand(np.random.default_rng(14), (4, 3), dtype, -3, 3)
    if dtype == "bool" and name in ("var", "std"):
        return
    fn, ref = REDUCTIONS[name]
    assert_matches(evaluate(lambda v: fn(v, axis=0), x), np.asarray(ref(x, axis=0)))
    assert_matches(evaluate(fn, x), np.asarray(ref(x)))


@pytest.mark.parametrize("name,fn,ref", [("argmax", sg.argmax, np.argmax), ("argmin", sg.argmin, np.argmin)])
def test_argmax_argmin(name, fn, ref):
    rng = np.random.default_rng(15)
    x = rand(rng, (4, 7, 3), "float32")
    x[1, 2, :] = x[1, 3, :]  # ties: first index wins
    for axis in (None, 0, 1, -1, 2):
        for keepdims in (False, True):
            want = np.asarray(ref(x, axis=axis, keepdims=keepdims))
            assert_matches(evaluate(lambda v: fn(v, axis=axis, keepdims=keepdims), x), want)
    method = getattr(sg.matrix("m"), name)
    assert method(axis=1).dtype == "int64"
    xi = np.array([[3, 1, 3], [0, 5, 5]], dtype=np.int32)
    assert_matches(evaluate(lambda v: fn(v, axis=1), xi), ref(xi, axis=1))


def test_methods_match_functions():
    x = rand(np.random.default_rng(16), (3, 4), "float64")
    out = evaluate(lambda v: [v.sum(axis=0), v.mean(1, True), v.max(), v.min(axis=-1), v.prod(0),
                              v.argmax(axis=1), v.argmin(), v.var(0), v.std(1)], x)
    want = [x.sum(axis=0), x.mean(1, keepdims=True), x.max(), x.min(axis=-1), x.prod(0),
            x.argmax(axis=1), x.argmin(), x.var(0), x.std(1)]
    for g, w in zip(out, want):
        assert_matches(g, np.asarray(w))


def test_var_std_ddof():
    x = rand(np.random.default_rng(17), (5, 4), "float64")
    assert_matches(evaluate(lambda v: sg.var(v, axis=0, ddof=1), x), np.var(x, axis=0, ddof=1))
    assert_matches(evaluate(lambda v: sg.std(v, ddof=1), x), np.asarray(np.std(x, ddof=1)))


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_var_std_with_ddof_at_least_the_count_follow_numpy(static, backend):
    """NumPy divides by max(n - ddof, 0): an empty axis or ddof >= n gives nan or inf, never a
    negative variance (or -0.0)."""
    for x, ddof in ((np.zeros((0, 3)), 1), (np.zeros((0, 3)), 0), (np.ones((1, 3)), 1),
                    (np.arange(6.0).reshape(2, 3), 3)):
        v = sg.tensor("x", x.shape if static else (None, None), "float64")
        f = sg.compile([v], [sg.var(v, axis=0, ddof=ddof), sg.std(v, axis=0, ddof=ddof),
                             sg.var(v, ddof=ddof)], backend=backend)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = [np.var(x, axis=0, ddof=ddof), np.std(x, axis=0, ddof=ddof), np.var(x, ddof=ddof)]
        for got, w in zip(f(x), want):
            assert_matches(got, np.asarray(w))
            assert not np.signbit(got[~np.isnan(got)]).any()


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_std_gradient_is_zero_where_the_variance_is_zero(backend):
    """Rows of equal values (and single elements) have std 0; its gradient there is 0, as
    PyTorch's, not the NaN of sqrt's 0/0; other rows get (x - mean) / (n * std)."""
    x = np.array([[1.0, 2.0, 4.0], [3.0, 3.0, 3.0]])
    v = sg.tensor("x", (None, 3), "float64")
    w = np.array([0.5, -2.0])
    out, g, g1 = sg.compile([v], [sg.std(v, axis=1), sg.grad((sg.std(v, axis=1) * w).sum(), v),
                                  sg.grad(sg.std(v[:, :1], axis=1).sum(), v)], backend=backend)(x)
    std = x.std(axis=1)
    assert_matches(out, std)
    want = np.zeros_like(x)
    want[0] = w[0] * (x[0] - x[0].mean()) / (3 * std[0])
    assert_matches(g, want)
    assert_matches(g1, np.zeros_like(x))


# --- special values ------------------------------------------------------------------------

def test_max_min_propagate_nan():
    x = np.array([[1.0, np.nan, 3.0], [np.inf, -np.inf, 0.0]], dtype=np.float32)
    for fn, ref in ((sg.max, np.max), (sg.min, np.min), (sg.sum, np.sum), (sg.mean, np.mean),
                    (sg.prod, np.prod), (sg.argmax, np.argmax), (sg.argmin, np.argmin)):
        for axis in (None, 0, 1):
            with np.errstate(all="ignore"):
                want = np.asarray(ref(x, axis=axis))
            assert_matches(evaluate(lambda v: fn(v, axis=axis), x), want)


def test_sum_of_infinities_and_tiny_values():
    x = np.array([[np.inf, 1.0], [np.inf, -np.inf], [1e-45, 1e-45]], dtype=np.float32)
    with np.errstate(all="ignore"):
        assert_matches(evaluate(lambda v: sg.sum(v, axis=1), x), x.sum(axis=1))
        assert_matches(evaluate(lambda v: sg.var(v, axis=1), x), x.var(axis=1))


def test_logsumexp_is_stable_and_handles_infinities():
    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [-np.inf, -np.inf], [np.inf, 1.0],
                  [np.nan, 0.0]], dtype=np.float64)
    with np.errstate(all="ignore"):
        want = scipy.special.logsumexp(x, axis=1)
    assert_matches(evaluate(lambda v: sg.logsumexp(v, axis=1), x), want)


def test_mean_with_unknown_dims_divides_by_runtime_count():
    x = rand(np.random.default_rng(18), (5, 3), "float32")
    for shape in [(None, None), (None, 3), (5, None)]:
        v = sg.tensor("v", shape, "float32")
        f = sg.compile([v], [sg.mean(v, axis=0), sg.var(v), sg.mean(v, axis=(0, 1), keepdims=True)],
                       backend="reference")
        got = f(x)
        assert_matches(got[0], x.mean(axis=0))
        assert_matches(got[1], np.asarray(x.var()), rtol=1e-5)
        assert_matches(got[2], x.mean(axis=(0, 1), keepdims=True))


def test_reduction_static_shapes():
    x = sg.tensor("x", (2, None, 4), "float32")
    assert sg.sum(x, axis=1).type.shape == (2, 4)
    assert sg.max(x, axis=(0, -1), keepdims=True).type.shape == (1, None, 1)
    assert sg.mean(x).type.shape == ()
    assert sg.argmax(x, axis=-1).type.shape == (2, None)
    assert sg.sum(sg.tensor("i", (3,), "int32")).dtype == "int64"
    assert sg.mean(sg.tensor("i", (3,), "int32")).dtype == "float64"


def test_bad_axes_raise_at_build_time():
    x = sg.tensor("x", (2, 3), "float32")
    with pytest.raises(sg.ShapeError, match="out of bounds"):
        sg.sum(x, axis=2)
    with pytest.raises(sg.ShapeError, match="out of bounds"):
        sg.max(x, axis=-3)
    with pytest.raises(sg.ShapeError, match="repeated"):
        sg.sum(x, axis=(0, -2))
    with pytest.raises(sg.ShapeError):
        sg.argmax(x, axis=5)
    for fn in (sg.sum, sg.max, sg.mean, sg.argmax):  # a rank-0 tensor has no axis 0
        with pytest.raises(sg.ShapeError, match="out of bounds"):
            fn(sg.scalar("s"), axis=0)
