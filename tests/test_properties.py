"""Property tests (hypothesis): static shape inference agrees with NumPy for broadcasting,
reshape, transpose and indexing, with known and unknown (None) dims, and the reference
backend's values agree with NumPy's."""

from __future__ import annotations

import numpy as np
from helpers import index_key
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import symgraph as sg
from symgraph.graph.types import broadcast_shapes, format_shape

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hide(shape, mask):
    """Replace the dims selected by ``mask`` with None (unknown until call time)."""
    return tuple(None if m else d for d, m in zip(shape, mask))


def masks(n):
    return st.lists(st.booleans(), min_size=n, max_size=n)


@SETTINGS
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=5))
def test_broadcast_shapes_agree_with_numpy(shapes):
    a, b = shapes.input_shapes
    assert broadcast_shapes(a, b) == np.broadcast_shapes(a, b)
    x, y = sg.tensor("x", a), sg.tensor("y", b)
    assert (x + y).shape == shapes.result_shape
    f = sg.compile([x, y], x * y - y, backend="reference")
    av = np.arange(np.prod(a), dtype=np.float32).reshape(a)
    bv = np.ones(b, np.float32) * 2
    np.testing.assert_array_equal(f(av, bv), av * bv - bv)


@SETTINGS
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       st.data())
def test_broadcast_with_unknown_dims_is_consistent(shapes, data):
    a, b = shapes.input_shapes
    ha = hide(a, data.draw(masks(len(a))))
    hb = hide(b, data.draw(masks(len(b))))
    x, y = sg.tensor("x", ha), sg.tensor("y", hb)
    out = (x + y).type.shape
    want = shapes.result_shape
    assert len(out) == len(want)
    for d, w in zip(out, want):
        assert d is None or d == w  # never a wrong static dim
    f = sg.compile([x, y], x + y, backend="reference")  # the oracle checks the inferred type
    assert f(np.zeros(a, np.float32), np.zeros(b, np.float32)).shape == want


@SETTINGS
@given(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4),
       hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
def test_incompatible_broadcast_raises_shape_error(a, b):
    try:
        np.broadcast_shapes(a, b)
    except ValueError:
        ok = False
    else:
        ok = True
    assume(not ok)
    try:
        sg.tensor("x", a) + sg.tensor("y", b)
    except sg.ShapeError as e:
        assert format_shape(a) in str(e) and format_shape(b) in str(e)
    else:
        raise AssertionError(f"{a} + {b} should not broadcast")


@st.composite
def reshape_case(draw):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
    size = int(np.prod(shape))
    # factor the size into a random new shape
    new, rest = [], size
    for _ in range(draw(st.integers(0, 3))):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = draw(st.sampled_from(divisors))
        new.append(d)
        rest //= d
    new.append(rest)
    new = draw(st.permutations(new))
    if draw(st.booleans()):
        new[draw(st.integers(0, len(new) - 1))] = -1
    mask = draw(masks(len(shape)))
    return shape, tuple(new), mask


@SETTINGS
@given(reshape_case())
def test_reshape_agrees_with_numpy(case):
    shape, new, mask = case
    arr = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    want = arr.reshape(new)
    x = sg.tensor("x", hide(shape, mask), "float64")
    y = x.reshape(new)
    assert len(y.type.shape) == want.ndim
    for d, w in zip(y.type.shape, want.shape):
        assert d is None or d == w
    if not any(mask):
        assert y.type.shape == want.shape
    np.testing.assert_array_equal(sg.compile([x], y, backend="reference")(arr), want)


@SETTINGS
@given(hnp.array_shapes(min_dims=0, max_dims=5, min_side=1, max_side=4), st.data())
def test_transpose_agrees_with_numpy(shape, data):
    perm = data.draw(st.permutations(range(len(shape))))
    mask = data.draw(masks(len(shape)))
    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    x = sg.tensor("x", hide(shape, mask))
    y = sg.transpose(x, perm)
    assert y.type.shape == tuple(hide(shape, mask)[p] for p in perm)
    np.testing.assert_array_equal(sg.compile([x], y, backend="reference")(arr), arr.transpose(perm))


@st.composite
def index_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    key = index_key(draw, shape)
    mask = draw(masks(len(shape)))
    return shape, key, mask


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index_case())
def test_indexing_agrees_with_numpy(case):
    shape, key, mask = case
    arr = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    try:
        want = arr[key]
    except IndexError:
        assume(False)
    for hidden in (hide(shape, [False] * len(shape)), hide(shape, mask)):
        x = sg.tensor("x", hidden)
        y = x[key]
        assert len(y.type.shape) == want.ndim, (key, y.type.shape, want.shape)
        for d, w in zip(y.type.shape, want.shape):
            assert d is None or d == w, (key, y.type.shape, want.shape)
        if hidden == shape:
            assert y.type.shape == want.shape
        np.testing.assert_array_equal(sg.compile([x], y, backend="reference")(arr), want)


@SETTINGS
@given(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5), st.data())
def test_reductions_agree_with_numpy(shape, data):
    ndim = len(shape)
    axes = data.draw(st.one_of(st.none(), st.lists(st.integers(-ndim, ndim - 1), unique_by=lambda a: a % ndim,
                                                    max_size=ndim).map(tuple)))
    keepdims = data.draw(st.booleans())
    arr = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(-100, 100)))
    x = sg.tensor("x", hide(shape, data.draw(masks(ndim))), "float64")
    outs = [sg.sum(x, axes, keepdims), sg.max(x, axes, keepdims), sg.mean(x, axes, keepdims)]
    got = sg.compile([x], outs, backend="reference")(arr)
    for g, ref in zip(got, (np.sum, np.max, np.mean)):
        w = np.asarray(ref(arr, axis=axes, keepdims=keepdims))
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
