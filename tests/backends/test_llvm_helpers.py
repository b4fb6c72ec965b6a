"""Shared helpers for the llvm backend tests: compile on llvm and reference, compare."""

from __future__ import annotations

import numpy as np

import symgraph as sg

TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-11, atol=1e-12)}


def compare(inputs, outputs, values, updates=None, tol=None, **kw):
    """Run the graph on both backends and assert the results agree; returns the llvm results."""
    f = sg.compile(inputs, outputs, updates=updates, backend="llvm", **kw)
    r = sg.compile(inputs, outputs, updates=updates, backend="reference")
    got, want = f(*values), r(*values)
    if not isinstance(got, list):
        got, want = [got], [want]
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        t = tol or TOL.get(w.dtype.name, dict(rtol=0, atol=0))
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, **t)
        else:
            np.testing.assert_array_equal(g, w)
    return got


def rand(shape, dtype="float32", seed=0, low=-2.0, high=2.0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.uniform(low, high, size=shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.integers(-5, 6, size=shape).astype(dtype)
