"""Reductions and row-wise functions over zero-size axes, on the llvm and reference backends,
against NumPy (and torch for softmax / logsumexp, which NumPy lacks): sums are 0, products 1,
means NaN, logsumexp -inf, softmax of no elements is empty, and max / min / argmax / argmin
over no elements are errors when called (when built, for static shapes), as NumPy's."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from helpers import assert_matches

import symgraph as sg

BACKENDS = ["llvm", "reference"]
# A node rejecting the call's shapes raises its own ShapeError (a ValueError) on every backend
CALL_TIME = ValueError
SHAPES = [(2, 0), (0, 3), (0, 0)]


def _compile(fn, shape, backend):
    x = sg.tensor("x", (None,) * len(shape), "float64")
    return sg.compile([x], fn(x), backend=backend)


def _np_mean(v, axis):
    with warnings.catch_warnings():  # NumPy warns about the mean of no elements
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.mean(v, axis=axis)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_sum_prod_mean_of_empty_match_numpy(shape, backend):
    v = np.zeros(shape)
    for axis in (0, 1, None):
        f = _compile(lambda x: [sg.sum(x, axis=axis), sg.prod(x, axis=axis),  # noqa: B023
                                sg.mean(x, axis=axis)], shape, backend)  # noqa: B023
        want = [np.sum(v, axis=axis), np.prod(v, axis=axis), _np_mean(v, axis)]
        for got, w in zip(f(v), want):
            assert_matches(got, np.asarray(w))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_logsumexp_of_empty_is_minus_inf(shape, backend):
    v = np.zeros(shape)
    for axis in (0, 1):
        f = _compile(lambda x: [sg.logsumexp(x, axis=axis),  # noqa: B023
                                sg.logsumexp(x, axis=axis, keepdims=True)], shape, backend)  # noqa: B023
        want = torch.logsumexp(torch.tensor(v), dim=axis).numpy()
        got, kept = f(v)
        assert_matches(got, want)
        assert_matches(kept, np.expand_dims(want, axis))
    f = _compile(lambda x: sg.logsumexp(x), shape, backend)
    assert_matches(f(v), np.asarray(-np.inf))


@pytest.mark.parametrize("backend", BACKENDS)
def test_logsumexp_gradient_is_unchanged_by_the_empty_axis_support(backend):
    v = np.array([[0.5, -1.0, 2.0], [-np.inf, -np.inf, -np.inf]])
    f = _compile(lambda x: [sg.logsumexp(x, axis=1),
                            sg.grad(sg.sum(sg.logsumexp(x[:1], axis=1)), x)], (2, 3), backend)
    got, g = f(v)
    xt = torch.tensor(v, requires_grad=True)
    torch.logsumexp(xt[:1], dim=1).sum().backward()
    assert_matches(got, torch.logsumexp(torch.tensor(v), dim=1).numpy())
    assert_matches(g, xt.grad.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_of_empty_is_empty(shape, backend):
    v = np.zeros(shape)
    for axis in (0, 1, -1):
        f = _compile(lambda x: [sg.nn.softmax(x, axis=axis),  # noqa: B023
                                sg.nn.log_softmax(x, axis=axis)], shape, backend)  # noqa: B023
        got, logs = f(v)
        assert_matches(got, torch.softmax(torch.tensor(v), dim=axis).numpy())
        assert_matches(logs, torch.log_softmax(torch.tensor(v), dim=axis).numpy())


REDUCERS = {"max": (sg.max, np.max), "min": (sg.min, np.min),
            "argmax": (sg.argmax, np.argmax), "argmin": (sg.argmin, np.argmin)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(REDUCERS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_max_and_argmax_over_no_elements_raise_when_called(shape, name, backend):
    fn, ref = REDUCERS[name]
    v = np.zeros(shape)
    for axis in (0, 1, None):
        f = _compile(lambda x: fn(x, axis=axis), shape, backend)  # noqa: B023
        try:
            want = ref(v, axis=axis)
        except ValueError:
            word = "attempt to get" if name.startswith("arg") else "zero-size array"
            with pytest.raises(CALL_TIME, match=rf"{name}: {word}.* is empty"):
                f(v)
            continue
        assert_matches(f(v), np.asarray(want))  # e.g. the max of each of no rows
    f = _compile(lambda x: fn(x, axis=1), shape, backend)
    assert_matches(f(np.arange(6.0).reshape(2, 3)), np.asarray(ref(np.arange(6.0).reshape(2, 3), axis=1)))


@pytest.mark.parametrize("name", list(REDUCERS))
def test_max_and_argmax_over_static_empty_axes_raise_when_built(name):
    fn, _ = REDUCERS[name]
    x = sg.tensor("x", (2, 0), "float32")
    with pytest.raises(sg.ShapeError, match=r"axis 1 of the input \(shape \(2, 0\)\) is empty"):
        fn(x, axis=1)
    with pytest.raises(sg.ShapeError, match="is empty"):
        fn(x)
    assert fn(x, axis=0).type.shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_of_an_expression_over_no_elements_raises_when_called(backend):
    # the rewriter fuses the expression into the reduction (FusedReduce): it must check too
    f = _compile(lambda x: sg.max(sg.exp(x) * 2.0, axis=1), (2, 0), backend)
    with pytest.raises(CALL_TIME, match=r"max: zero-size array.* is empty"):
        f(np.zeros((2, 0)))
    assert_matches(f(np.zeros((0, 3))), np.zeros(0))
