"""Elementwise ops against NumPy: values, dtypes (NEP 50), broadcasting, odd sizes, views,
and the IEEE special values (NaN, inf, tiny)."""

from __future__ import annotations

import math
import operator
import zlib

import numpy as np
import pytest
from helpers import assert_matches, evaluate, noncontiguous, numpy_as_symgraph, rand

import symgraph as sg

SHAPES = [(), (1,), (7,), (1023,), (3, 1, 7), (4, 5)]
FLOATS = ["float32", "float64"]


def np_sigmoid(x):
    return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def np_softplus(x):
    return np.logaddexp(np.zeros((), x.dtype), x)


def np_erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x).astype(x.dtype)


def np_gelu_tanh(x):
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1 + np.tanh(0.7978845608028654 * (x64 + 0.044715 * x64 ** 3)))).astype(x.dtype)


def np_gelu_erf(x):
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1 + np_erf(x64 / math.sqrt(2)))).astype(x.dtype)


def np_elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(x)).astype(x.dtype)


def np_leaky(x, alpha=0.01):
    return np.where(x > 0, x, x.dtype.type(alpha) * x)


# name -> (symgraph fn, NumPy fn, input range)
UNARY = {
    "exp": (sg.exp, np.exp, (-5, 5)),
    "log": (sg.log, np.log, (0.01, 10)),
    "log1p": (sg.log1p, np.log1p, (-0.99, 10)),
    "expm1": (sg.expm1, np.expm1, (-5, 5)),
    "sqrt": (sg.sqrt, np.sqrt, (0, 10)),
    "square": (sg.square, np.square, (-5, 5)),
    "abs": (sg.abs, np.abs, (-5, 5)),
    "builtin_abs": (abs, np.abs, (-5, 5)),
    "sign": (sg.sign, np.sign, (-5, 5)),
    "tanh": (sg.tanh, np.tanh, (-5, 5)),
    "sigmoid": (sg.sigmoid, np_sigmoid, (-20, 20)),
    "softplus": (sg.softplus, np_softplus, (-20, 20)),
    "relu": (sg.relu, lambda x: np.maximum(x, 0), (-5, 5)),
    "leaky_relu": (sg.leaky_relu, np_leaky, (-5, 5)),
    "leaky_relu_0.2": (lambda x: sg.leaky_relu(x, alpha=0.2), lambda x: np_leaky(x, 0.2), (-5, 5)),
    "elu": (sg.elu, np_elu, (-5, 5)),
    "gelu": (sg.gelu, np_gelu_tanh, (-5, 5)),
    "gelu_exact": (lambda x: sg.gelu(x, approximate=False), np_gelu_erf, (-5, 5)),
    "erf": (sg.erf, np_erf, (-3, 3)),
    "sin": (sg.sin, np.sin, (-7, 7)),
    "cos": (sg.cos, np.cos, (-7, 7)),
    "floor": (sg.floor, np.floor, (-5, 5)),
    "ceil": (sg.ceil, np.ceil, (-5, 5)),
    "neg": (operator.neg, np.negative, (-5, 5)),
    "nn.relu": (sg.nn.relu, lambda x: np.maximum(x, 0), (-5, 5)),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_matches_numpy(name, shape, dtype):
    fn, ref, (lo, hi) = UNARY[name]
    rng = np.random.default_rng(zlib.crc32(repr((name, shape, dtype)).encode()))
    x = rand(rng, shape, dtype, lo, hi)
    assert_matches(evaluate(fn, x), ref(x))


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_noncontiguous_and_static(name):
    fn, ref, (lo, hi) = UNARY[name]
    x = rand(np.random.default_rng(1), (5, 6), "float32", lo, hi)
    view = noncontiguous(x)
    assert not view.flags.c_contiguous
    assert_matches(evaluate(fn, view), ref(x))
    assert_matches(evaluate(fn, x, static=True), ref(x))


INT_UNARY = {"abs": (sg.abs, np.abs), "sign": (sg.sign, np.sign), "square": (sg.square, np.square),
             "neg": (operator.neg, np.negative), "floor": (sg.floor, np.floor),
             "ceil": (sg.ceil, np.ceil), "exp": (sg.exp, np.exp), "sqrt": (sg.sqrt, np.sqrt),
             "tanh": (sg.tanh, np.tanh), "sin": (sg.sin, np.sin), "log1p": (sg.log1p, np.log1p),
             "sigmoid": (sg.sigmoid,
                         lambda x: (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.exp(x).dtype)),
             "softplus": (sg.softplus, lambda x: np.logaddexp(0, x).astype(np.exp(x).dtype)),
             "erf": (sg.erf, lambda x: np_erf(x.astype(np.float64)).astype(np.exp(x).dtype)),
             "relu": (sg.relu, lambda x: np.maximum(x, 0) if x.dtype != bool else x),
             # activations with a float constant compute like ``x * 0.01``: float64 for ints
             "leaky_relu": (sg.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x).astype(np.float64)),
             "elu": (sg.elu, lambda x: np_elu(x.astype(np.float64))),
             "gelu": (sg.gelu, lambda x: np_gelu_tanh(x.astype(np.float64)))}


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32", "int64", "bool"])
@pytest.mark.parametrize("name", sorted(INT_UNARY))
def test_unary_on_integers_and_bools_follows_numpy(name, dtype):
    fn, ref = INT_UNARY[name]
    x = np.array([[0, 1, 2], [3, 4, 7]]).astype(dtype)
    if name in ("abs", "sign", "neg", "square", "sigmoid", "erf", "relu", "leaky_relu", "elu") \
            and np.dtype(dtype).kind == "i":
        x = x - 3
    try:
        with np.errstate(all="ignore"):
            want = np.asarray(ref(x))
    except TypeError:  # NumPy refuses (e.g. -bool): symgraph refuses while building
        with pytest.raises(TypeError):
            fn(sg.tensor("x", x.shape, dtype))
        return
    with np.errstate(all="ignore"):
        want = numpy_as_symgraph(ref, x)  # float32 where NumPy says float16
        assert_matches(evaluate(fn, x), want)


# --- binary ------------------------------------------------------------------------------

BINARY = {
    "+": (operator.add, operator.add, (-5, 5)),
    "-": (operator.sub, operator.sub, (-5, 5)),
    "*": (operator.mul, operator.mul, (-5, 5)),
    "/": (operator.truediv, operator.truediv, (0.5, 5)),
    "//": (operator.floordiv, operator.floordiv, (0.5, 9)),
    "%": (operator.mod, operator.mod, (0.5, 9)),
    "**": (operator.pow, operator.pow, (0.5, 3)),
    "power": (sg.power, np.power, (0.5, 3)),
    "maximum": (sg.maximum, np.maximum, (-5, 5)),
    "minimum": (sg.minimum, np.minimum, (-5, 5)),
    "<": (operator.lt, operator.lt, (-2, 2)),
    "<=": (operator.le, operator.le, (-2, 2)),
    ">": (operator.gt, operator.gt, (-2, 2)),
    ">=": (operator.ge, operator.ge, (-2, 2)),
    "==": (operator.eq, operator.eq, (-2, 2)),
    "!=": (operator.ne, operator.ne, (-2, 2)),
    "sg.eq": (sg.eq, np.equal, (-2, 2)),
}

SHAPE_PAIRS = [((), ()), ((), (7,)), ((1023,), (1023,)), ((3, 1), (1, 7)), ((2, 3, 1), (3, 5)),
               ((1,), (4, 1)), ((1, 1, 1), ())]


def _operands(name, shapes, dtypes, seed):
    rng = np.random.default_rng(seed)
    lo, hi = BINARY[name][2]
    a = rand(rng, shapes[0], dtypes[0], lo, hi)
    b = rand(rng, shapes[1], dtypes[1], lo, hi)
    if name in ("-", "%", "//", "*", "+") and np.dtype(dtypes[0]).kind == "f":
        a = -a  # negative dividends for floor-division and mod
    return a, b


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcasting_matches_numpy(name, shapes):
    fn, ref, _ = BINARY[name]
    for dtypes in (("float32", "float32"), ("float64", "float32")):
        a, b = _operands(name, shapes, dtypes, 7)
        assert_matches(evaluate(fn, a, b), ref(a, b), dtype="float32")
        assert_matches(evaluate(fn, a, b, static=True), ref(a, b), dtype="float32")


DTYPE_PAIRS = [("float32", "float64"), ("int32", "float32"), ("int64", "float32"),
               ("int32", "int64"), ("int64", "int64"), ("int32", "float64"), ("bool", "float32"),
               ("bool", "bool"), ("uint8", "int8"), ("int8", "bool"), ("int16", "uint8"), ("int8", "int16")]


@pytest.mark.parametrize("dtypes", DTYPE_PAIRS, ids=str)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_promotion_matches_numpy(name, dtypes):
    fn, ref, _ = BINARY[name]
    a, b = _operands(name, ((3, 4), (4,)), dtypes, 3)
    if np.dtype(dtypes[1]).kind in "iub" and name in ("/", "//", "%", "**", "power"):
        b = (np.abs(b) + 1).astype(dtypes[1])  # no integer division by zero or negative powers
    try:
        with np.errstate(all="ignore"):
            want = ref(a, b)
    except TypeError:  # e.g. bool - bool: refused while building, as NumPy refuses it
        with pytest.raises(TypeError):
            fn(sg.tensor("a", a.shape, dtypes[0]), sg.tensor("b", b.shape, dtypes[1]))
        return
    with np.errstate(all="ignore"):
        got = evaluate(fn, a, b)
    assert_matches(got, want, dtype="float32")


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
@pytest.mark.parametrize("scalar", [2, 2.5, -3], ids=str)
@pytest.mark.parametrize("name", ["+", "-", "*", "/", "//", "%", "**", "maximum", "<", "=="])
def test_python_scalars_are_weak(name, scalar, dtype):
    """NEP 50: ``int32_array * 2`` stays int32, ``int32_array * 2.5`` is float64, etc."""
    fn, ref, _ = BINARY[name]
    x = np.array([[1, 2, 3], [4, 5, 6]], dtype=dtype)
    if name == "**" and np.dtype(dtype).kind == "i" and scalar < 0:
        return  # NumPy raises for negative integer powers of integers
    assert_matches(evaluate(lambda v: fn(v, scalar), x), ref(x, scalar), dtype="float32")
    if name in ("<", "=="):
        return
    if name == "**" and np.dtype(dtype).kind == "i" and np.any(x < 0):
        return
    assert_matches(evaluate(lambda v: fn(scalar, v), x), ref(scalar, x), dtype="float32")


def test_numpy_array_on_the_left_uses_symbolic_reflected_op():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    c = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert_matches(evaluate(lambda v: c - v, x), c - x)
    assert_matches(evaluate(lambda v: c * v, x), c * x)
    assert_matches(evaluate(lambda v: c / (v + 1), x), c / (x + 1))


def test_binary_noncontiguous():
    rng = np.random.default_rng(4)
    a, b = rand(rng, (6, 5)), rand(rng, (6, 5))
    got = evaluate(lambda u, v: u * v + u, noncontiguous(a), noncontiguous(b)[::-1])
    assert_matches(got, a * b[::-1] + a)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_floordiv_and_mod_signs(dtype):
    a = np.array([-7, -1, 0, 1, 7, 9], dtype=dtype)
    b = np.array([2, -3, 5, -2, -4, 3], dtype=dtype)
    assert_matches(evaluate(operator.floordiv, a, b), a // b)
    assert_matches(evaluate(operator.mod, a, b), a % b)
    assert_matches(evaluate(lambda u, v: u ** v, a, np.abs(b)), a ** np.abs(b))


# --- where / clip / cast -------------------------------------------------------------------

@pytest.mark.parametrize("dtypes", [("float32", "float32"), ("float32", "float64"),
                                    ("int64", "float32"), ("int32", "int64")], ids=str)
def test_where_broadcasts_and_promotes(dtypes):
    rng = np.random.default_rng(5)
    cond = rng.uniform(size=(3, 1, 4)) > 0.5
    a = rand(rng, (5, 1), dtypes[0])
    b = rand(rng, (4,), dtypes[1])
    assert_matches(evaluate(sg.where, cond, a, b), np.where(cond, a, b))


def test_where_with_scalars_and_nonbool_condition():
    x = np.array([-2.0, 0.0, 3.0], dtype=np.float32)
    assert_matches(evaluate(lambda v: sg.where(v > 0, v, 0.5), x), np.where(x > 0, x, np.float32(0.5)))
    assert_matches(evaluate(lambda v: sg.where(v, 1.0, v), x), np.where(x, np.float32(1.0), x))


@pytest.mark.parametrize("dtype", FLOATS)
def test_clip(dtype):
    x = rand(np.random.default_rng(6), (7, 3), dtype)
    assert_matches(evaluate(lambda v: sg.clip(v, -1.0, 0.5), x), np.clip(x, -1.0, 0.5))
    lo = np.full((3,), -0.5, dtype)
    assert_matches(evaluate(lambda v, w: sg.clip(v, w, 1.0), x, lo), np.clip(x, lo, 1.0))


@pytest.mark.parametrize("src,dst", [("float32", "int32"), ("float64", "float32"),
                                     ("int64", "float32"), ("float32", "bool"), ("bool", "float64"),
                                     ("int32", "int64")])
def test_astype(src, dst):
    x = rand(np.random.default_rng(8), (4, 3), src, -4, 4)
    assert_matches(evaluate(lambda v: v.astype(dst), x), x.astype(dst))


def test_logical_ops():
    a = np.array([True, False, True, False])
    b = np.array([True, True, False, False])
    assert_matches(evaluate(lambda u, v: u & v, a, b), a & b)
    assert_matches(evaluate(lambda u, v: u | v, a, b), a | b)
    assert_matches(evaluate(lambda u: ~u, a), ~a)


# --- special values ------------------------------------------------------------------------

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-38, -1e-38, 1e-45, 88.8, -104.0,
                    1e30, -1e30, 1.0, -1.0])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_special_values(name, dtype):
    fn, ref, _ = UNARY[name]
    x = SPECIAL.astype(dtype)
    with np.errstate(all="ignore"):
        want = ref(x)
    got = evaluate(fn, x)
    if name in ("gelu", "gelu_exact"):  # the reference formula overflows where gelu does not
        finite = np.isfinite(x) & (np.abs(x) < 1e10)
        assert_matches(got[finite], want[finite])
        return
    assert_matches(got, want)


@pytest.mark.parametrize("dtype", FLOATS)
def test_exp_overflow_log_zero_and_nan_propagation(dtype):
    x = np.array([1000.0, -1000.0, 0.0, np.nan], dtype=dtype)
    with np.errstate(all="ignore"):
        assert_matches(evaluate(sg.exp, x), np.exp(x))
        assert_matches(evaluate(sg.log, x), np.log(x))
        assert_matches(evaluate(lambda v: v / 0.0, x), x / dtype_type(dtype)(0.0))
        assert_matches(evaluate(lambda v: sg.log(-v), x), np.log(-x))
    got = evaluate(sg.exp, x)
    assert got[0] == np.inf and got[1] == 0.0 and np.isnan(got[3])


def dtype_type(dtype):
    return np.dtype(dtype).type


@pytest.mark.parametrize("fn,ref", [(sg.maximum, np.maximum), (sg.minimum, np.minimum)])
def test_maximum_minimum_propagate_nan(fn, ref):
    a = np.array([np.nan, 1.0, np.nan, -np.inf], dtype=np.float32)
    b = np.array([0.0, np.nan, np.nan, np.inf], dtype=np.float32)
    assert_matches(evaluate(fn, a, b), ref(a, b))
    assert_matches(evaluate(lambda v: sg.relu(v), a), np.maximum(a, 0))


def test_comparisons_with_nan():
    a = np.array([np.nan, 1.0, np.nan], dtype=np.float32)
    b = np.array([np.nan, np.nan, 0.0], dtype=np.float32)
    for op in (operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne):
        assert_matches(evaluate(op, a, b), op(a, b))


def test_sigmoid_and_softplus_are_stable_at_extremes():
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=np.float32)
    s = evaluate(sg.sigmoid, x)
    assert np.all(np.isfinite(s)) and s[0] == 0.0 and s[-1] == 1.0 and s[2] == 0.5
    sp = evaluate(sg.softplus, x)
    np.testing.assert_allclose(sp, [0.0, 0.0, np.log(2), 100.0, 1000.0], rtol=1e-6, atol=1e-30)


def test_rank0_result_is_an_array_of_numpy_dtype():
    x = np.float64(2.0)
    out = evaluate(lambda v: v * 3 + 1, np.asarray(x))
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float64
    assert out == 7.0


def test_static_result_shapes_and_dtypes():
    a = sg.tensor("a", (None, 1, 7), "float32")
    b = sg.tensor("b", (3, 1), "float64")
    c = a * b
    assert c.type.shape == (None, 3, 7) and c.dtype == "float64"
    assert (a > 0).dtype == "bool"
    assert sg.exp(sg.tensor("i", (2,), "int32")).dtype == "float64"
    assert (sg.tensor("i", (2,), "int32") * 2).dtype == "int32"
    assert (sg.tensor("i", (2,), "int32") / 2).dtype == "float64"
    assert (sg.tensor("h", (2,), "float32") * 2.5).dtype == "float32"


ALL_DTYPES = ["bool", "int8", "uint8", "int16", "int32", "int64", "float32", "float64"]
# NumPy dtypes symgraph does not have, and its documented substitutes (docs/ops.md)
SUBSTITUTES = {"float16": "float32", "uint64": "int64"}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_static_dtype_table_matches_numpy(name):
    """Every dtype pair, and every dtype with a weak Python scalar, types like NumPy 2."""
    fn, ref, _ = BINARY[name]

    def numpy_dtype(*args):
        try:
            with np.errstate(all="ignore"):
                name = np.asarray(ref(*args)).dtype.name
                return SUBSTITUTES.get(name, name)
        except (TypeError, OverflowError, ValueError):
            return "error"

    def symgraph_dtype(*args):
        try:
            return fn(*args).dtype
        except (TypeError, OverflowError, ValueError):
            return "error"

    for a in ALL_DTYPES:
        sa, na = sg.tensor("a", (2,), a), np.ones(2, a)
        for b in ALL_DTYPES:
            sb, nb = sg.tensor("b", (2,), b), np.ones(2, b)
            assert symgraph_dtype(sa, sb) == numpy_dtype(na, nb), (a, b)
        for scalar in (True, 3, -1, 2.5, 300):
            assert symgraph_dtype(sa, scalar) == numpy_dtype(na, scalar), (a, scalar)
            assert symgraph_dtype(scalar, sa) == numpy_dtype(scalar, na), (scalar, a)


def test_out_of_range_python_ints():
    x = np.array([1, -5, 100], dtype=np.int8)
    for op in (operator.lt, operator.ge, operator.eq, operator.ne):
        assert_matches(evaluate(lambda v: op(v, 300), x), op(x, 300))
        assert_matches(evaluate(lambda v: op(v, -2**70), x), op(x, -2**70))
    assert_matches(evaluate(lambda v: v / 300, x), x / 300)
    with pytest.raises(OverflowError, match="300"):
        sg.tensor("x", (3,), "int8") + 300
    with pytest.raises(OverflowError):
        sg.tensor("u", (3,), "uint8") * -1
    with pytest.raises(ValueError, match="negative integer powers"):
        sg.tensor("i", (3,), "int32") ** -2
