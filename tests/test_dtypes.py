"""Every public dtype through the elementwise functions, the reductions and the binary
operators, on the llvm and reference backends, against NumPy under symgraph's documented dtype
rules (docs/ops.md, "dtypes"): float math on bool/int8/uint8 is float32 where NumPy says
float16, sums and products of uint8 are int64 where NumPy says uint64, and float16 / uint64
themselves are refused when the graph is built, alike for every backend."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, numpy_as_symgraph

import symgraph as sg

BACKENDS = ["llvm", "reference"]
DTYPES = ["bool", "int8", "uint8", "int16", "int32", "int64", "float32", "float64"]

UNARY = {name: (getattr(sg, name), getattr(np, name)) for name in
         ["exp", "log", "log1p", "expm1", "sqrt", "square", "abs", "sign", "floor", "ceil",
          "tanh", "sin", "cos"]}
REDUCE = {name: (getattr(sg, name), getattr(np, name)) for name in
          ["sum", "prod", "mean", "max", "min", "argmax", "argmin", "var", "std"]}
BINARY = {"add": (sg.add, np.add), "sub": (sg.sub, np.subtract), "mul": (sg.mul, np.multiply),
          "divide": (sg.divide, np.divide), "maximum": (sg.maximum, np.maximum),
          "minimum": (sg.minimum, np.minimum), "power": (sg.power, np.power),
          "eq": (sg.eq, np.equal), "lt": (sg.lt, np.less)}


def _values(dtype: str, reverse: bool = False) -> np.ndarray:
    v = np.array([0, 1, 2, 3, 5, 7, 120, 2])
    v = v[::-1] if reverse else v
    return (v % 2 == 1) if dtype == "bool" else v.astype(dtype)


def _accepted(fns: dict, ref_args: list, sym_args: list) -> tuple[list, list]:
    """The names NumPy computes for these dtypes (symgraph then builds them) and, for those
    NumPy refuses with a TypeError, a check that symgraph refuses them while building."""
    names, wants = [], []
    for name, (fn, ref) in fns.items():
        try:
            with np.errstate(all="ignore"):
                want = numpy_as_symgraph(ref, *ref_args)
        except TypeError:
            with pytest.raises(TypeError):
                fn(*sym_args)
            continue
        names.append(name)
        wants.append(want)
    return names, wants


def _check(fns, names, wants, syms, args, backend):
    outs = [fns[n][0](*syms) for n in names]
    with np.errstate(all="ignore"):
        got = sg.compile(syms, outs, backend=backend)(*args)
    for name, g, w in zip(names, got, wants):
        try:
            assert_matches(g, w, rtol=2e-6 if w.dtype == np.float32 else None)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_unary_and_reductions_of_every_dtype_match_numpy(dtype, backend):
    x = _values(dtype)
    sx = sg.tensor("x", (None,), dtype)
    fns = {**UNARY, **REDUCE}
    names, wants = _accepted(fns, [x], [sx])
    _check(fns, names, wants, [sx], [x], backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_ops_of_every_dtype_pair_match_numpy(dtype, backend):
    for other in DTYPES:
        a, b = _values(dtype), _values(other, reverse=True)
        sa, sb = sg.tensor("a", (None,), dtype), sg.tensor("b", (None,), other)
        names, wants = _accepted(BINARY, [a, b], [sa, sb])
        _check(BINARY, names, wants, [sa, sb], [a, b], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_int_float_math_is_float32_and_uint8_sums_are_int64(backend):
    for dtype in ("bool", "int8", "uint8"):
        x = sg.tensor("x", (None,), dtype)
        assert sg.exp(x).dtype == sg.sqrt(x).dtype == sg.tanh(x).dtype == "float32"
    u = sg.tensor("u", (None,), "uint8")
    assert sg.sum(u).dtype == sg.prod(u).dtype == "int64"
    big = np.full(1000, 200, np.uint8)
    f = sg.compile([u], [sg.sum(u), sg.prod(u[:3]), sg.exp(u[:2] // 16)], backend=backend)
    total, product, e = f(big)
    assert_matches(total, np.int64(200_000))
    assert_matches(product, np.int64(8_000_000))
    # exp(12) = 162754.8: finite in float32, past float16's largest value (65504)
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(np.uint8([12]))).all()
    assert_matches(e, np.exp(np.float32([12, 12])))


def test_float16_and_uint64_are_refused_when_built():
    for make in (lambda: sg.tensor("h", (3,), "float16"),
                 lambda: sg.constant(np.ones(3, np.float16)),
                 lambda: sg.shared(np.ones(3, np.float16)),
                 lambda: sg.tensor("x", (3,)).astype("float16")):
        with pytest.raises(TypeError, match="float16 is not supported.*use float32"):
            make()
    with pytest.raises(TypeError, match="uint64 is not supported; use int64"):
        sg.tensor("u", (3,), "uint64")


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_arrays_are_accepted_by_float32_inputs(backend):
    x = sg.tensor("x", (None,), "float32")
    f = sg.compile([x], sg.exp(x), backend=backend)
    h = np.array([0.5, 1.0, -2.0], np.float16)
    assert_matches(f(h), np.exp(h.astype(np.float32)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_power_wraps_like_numpy(backend):
    for dtype in ("int8", "uint8", "int32", "int64"):
        a, b = sg.tensor("a", (None,), dtype), sg.tensor("b", (None,), dtype)
        base = np.array([2, 3, 3, 7, 120, 0, 1, 5], dtype)
        exp = np.array([7, 39, 40, 9, 2, 0, 100, 1], dtype)  # 3**39 needs more than 53 bits
        with np.errstate(all="ignore"):
            assert_matches(sg.compile([a, b], a ** b, backend=backend)(base, exp), base ** exp)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_of_every_dtype(dtype, backend):
    v = _values(dtype)
    x = sg.tensor("x", (None,), dtype)
    got = sg.compile([x], sg.logsumexp(x), backend=backend)(v)
    want = np.logaddexp.reduce(v.astype(np.float64))  # stable, then in exp's float dtype
    assert_matches(got, np.asarray(want, dtype=sg.exp(x).dtype))
