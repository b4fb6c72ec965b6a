"""Random graphs (hypothesis): the llvm backend agrees with the reference backend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import symgraph as sg

SETTINGS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    derandomize=True)

UNARY = [sg.tanh, sg.sigmoid, sg.abs, sg.square, sg.relu, lambda v: sg.exp(sg.clip(v, -4, 4)),
         lambda v: sg.log1p(sg.abs(v)), lambda v: v.T * 1.0]
BINARY = [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b, sg.maximum,
          lambda a, b: sg.where(a > b, a, b * 0.5)]


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@st.composite
def graphs(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=5))
    a, b = shapes.input_shapes
    dtype = draw(st.sampled_from(["float32", "float64"]))
    ops = draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 100)), min_size=1, max_size=6))
    return a, b, dtype, ops


@SETTINGS
@given(graphs())
def test_random_graphs_match_reference(case):
    a, b, dtype, ops = case
    x = sg.tensor("x", shape=tuple(None for _ in a), dtype=dtype)
    y = sg.tensor("y", shape=tuple(None for _ in b), dtype=dtype)
    v = x + y
    outs = []
    for kind, k in ops:
        if kind == 0:
            v = UNARY[k % len(UNARY)](v)
        elif kind == 1:
            w = y if v.ndim >= y.ndim else x
            v = BINARY[k % len(BINARY)](v, w) if v.ndim >= w.ndim else BINARY[k % len(BINARY)](w, v)
        elif v.ndim:
            outs.append(v.sum(axis=k % v.ndim, keepdims=bool(k & 1)))
            outs.append(v[::-1] * 2.0)
    outs.append(v)
    cost = sum((o * o).sum() for o in outs)
    outs += list(sg.grad(cost, [x, y]))
    rng = np.random.default_rng(len(ops))
    xv = rng.uniform(-2, 2, a).astype(dtype)
    yv = rng.uniform(-2, 2, b).astype(dtype)
    f = sg.compile([x, y], outs, backend="llvm")
    r = sg.compile([x, y], outs, backend="reference")
    tol = dict(rtol=2e-4, atol=1e-4) if dtype == "float32" else dict(rtol=1e-9, atol=1e-9)
    for got, want in zip(f(xv, yv), r(xv, yv)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, **tol)
