"""Shape-generic code against code for exact shapes and NumPy, on random graphs and sizes.

Each example builds a small graph over inputs whose dims are declared unknown, compiles it
twice (shape-generic, and with ``SYMGRAPH_SHAPE_GENERIC=0`` for exact shapes) and calls both
with several random sizes (0 and 1 included): results must match each other and NumPy.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symgraph as sg

UNARY = {"exp": (sg.exp, np.exp), "tanh": (sg.tanh, np.tanh), "abs": (abs, np.abs),
         "neg": (lambda a: -a, np.negative), "square": (lambda a: a * a, np.square)}
BINARY = {"add": (lambda a, b: a + b, np.add), "mul": (lambda a, b: a * b, np.multiply),
          "sub": (lambda a, b: a - b, np.subtract), "max": (sg.maximum, np.maximum)}
REDUCE = {"sum": ("sum", np.sum), "max": ("max", np.max), "mean": ("mean", np.mean)}


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch):
    """These tests count code generations: a warm start from the disk cache would answer
    instead (it generates nothing), so the cache is off."""
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")


def _compile(inputs, outputs, generic: bool):
    saved = os.environ.get("SYMGRAPH_SHAPE_GENERIC")
    os.environ["SYMGRAPH_SHAPE_GENERIC"] = "1" if generic else "0"
    try:
        return sg.compile(inputs, outputs)
    finally:
        if saved is None:
            os.environ.pop("SYMGRAPH_SHAPE_GENERIC", None)
        else:
            os.environ["SYMGRAPH_SHAPE_GENERIC"] = saved


@st.composite
def programs(draw):
    """A graph over x (n, k), y (n, k) and w (k, m) with n unknown: a chain of elementwise ops,
    an optional broadcast against a row, then a reduction or a product."""
    k = draw(st.integers(1, 5))
    m = draw(st.integers(1, 4))
    ops = draw(st.lists(st.sampled_from(sorted(UNARY) + sorted(BINARY)), min_size=1, max_size=4))
    row = draw(st.booleans())
    tail = draw(st.sampled_from(["none", "matmul", "reduce0", "reduce1", "gram"]))
    red = draw(st.sampled_from(sorted(REDUCE)))
    sizes = draw(st.lists(st.integers(1, 40), min_size=2, max_size=3)) + [0, 1]
    return k, m, ops, row, tail, red, sizes


def _build(lib, x, y, w, r, ops, row, tail, red):
    """The same program on symgraph values (lib="sg") or NumPy arrays (lib="np")."""
    pick = 0 if lib == "sg" else 1
    h = x
    for name in ops:
        if name in UNARY:
            h = UNARY[name][pick](h)
        else:
            h = BINARY[name][pick](h, y)
        h = h * 0.5  # keep values small through chains of exp
    if row:
        h = h + r
    if tail == "matmul":
        return h @ w
    if tail == "gram":
        return h.T @ h
    if tail in ("reduce0", "reduce1"):
        axis = 0 if tail == "reduce0" else 1
        if lib == "sg":
            return getattr(h, REDUCE[red][0])(axis=axis)
        return REDUCE[red][1](h, axis=axis)
    return h


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_generic_code_matches_exact_code_and_numpy(prog):
    k, m, ops, row, tail, red, sizes = prog
    x = sg.tensor("x", (None, k), "float64")
    y = sg.tensor("y", (None, k), "float64")
    w = sg.tensor("w", (k, m), "float64")
    r = sg.tensor("r", (k,), "float64")
    out = _build("sg", x, y, w, r, ops, row, tail, red)
    generic = _compile([x, y, w, r], out, generic=True)
    exact = _compile([x, y, w, r], out, generic=False)
    rng = np.random.default_rng(len(ops) * 7 + k)
    wv, rv = rng.standard_normal((k, m)), rng.standard_normal(k)
    for n in sizes:
        if n == 0 and tail == "reduce0" and red in ("max", "mean"):
            continue  # NumPy refuses a max over nothing (and warns on a mean): tested elsewhere
        xv, yv = rng.standard_normal((n, k)), rng.standard_normal((n, k))
        want = _build("np", xv, yv, wv, rv, ops, row, tail, red)
        got_generic = generic(xv, yv, wv, rv)
        got_exact = exact(xv, yv, wv, rv)
        np.testing.assert_allclose(got_generic, got_exact, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_generic, want, rtol=1e-10, atol=1e-10)
    assert generic.program.generations == 1  # every size, 0 and 1 included, ran one code
