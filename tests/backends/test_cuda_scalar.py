"""The scalar-IR printer for CUDA C: literals, NumPy promotion, shared sub-expressions."""

from __future__ import annotations

import numpy as np
import pytest

from symgraph.codegen._scalar import S
from symgraph.codegen.cuda_scalar import Emitter, c_type, literal, render


@pytest.mark.parametrize("value", [0.1, 1 / 3, 3.4028234663852886e38, 1e-45, -2.5, 0.7978845608028654])
def test_float32_literals_round_trip(value):
    text = literal(value, "float32")
    assert text.endswith("f")
    assert np.float32(text[:-1]) == np.float32(value)


def test_special_literals():
    assert literal(float("inf"), "float32") == "__int_as_float(0x7f800000)"
    assert literal(float("-inf"), "float64") == "__longlong_as_double(0xfff0000000000000LL)"
    assert "0x7fc00000" in literal(float("nan"), "float32")
    assert literal(-2 ** 63, "int64") == "(-9223372036854775807LL - 1)"
    assert literal(5, "int8") == "((signed char)5)"
    assert literal(True, "bool") == "true"
    assert float(literal(0.1, "float64")) == 0.1


def test_shared_subexpressions_are_computed_once():
    x = S.inp(0, "float32")
    t = S.apply("tanh", S.apply("mul", x, x))
    root = S.apply("add", S.apply("mul", t, t), t)
    lines, (res,) = render([root], ["x"])
    assert sum("tanhf(" in ln for ln in lines) == 1
    assert sum("(x * x)" in ln for ln in lines) == 1
    assert lines[-1].startswith(f"const float {res} = ")


def test_numpy_promotion_and_math_names():
    i, f = S.inp(0, "int32"), S.inp(1, "float32")
    lines, (res,) = render([S.apply("add", i, f)], ["i", "f"])
    assert "((double)i)" in lines[-1] and "((double)f)" in lines[-1]  # int32 + float32 -> float64
    lines, _ = render([S.apply("exp", f)], ["i", "f"])
    assert "expf(f)" in lines[-1]
    lines, _ = render([S.apply("exp", S.inp(0, "float64"))], ["d"])
    assert "exp(d)" in lines[-1] and "expf" not in lines[-1]
    for op, helper in [("sigmoid", "sg_sigmoid"), ("softplus", "sg_softplus"), ("maximum", "sg_max")]:
        args = [f] * S.PRIMITIVES[op].nin
        lines, _ = render([S.apply(op, *args)], ["i", "f"])
        assert f"{helper}(" in lines[-1]
    c = S.apply("gt", f, S.const(0, "float32"))
    lines, _ = render([S.apply("where", c, f, S.const(1, "float32"))], ["i", "f"])
    assert " ? " in lines[-1]


def test_wrapping_integer_arithmetic_for_hash_constants():
    x = S.inp(0, "int64")
    big = S.const(-7046029254386353131, "int64")  # 0x9E3779B97F4A7C15 as int64
    lines, _ = render([S.apply("mul", x, big)], ["x"])
    assert "(unsigned long long)" in lines[-1]
    lines, _ = render([S.apply("mul", x, S.const(784, "int64"))], ["x"])
    assert "unsigned" not in lines[-1]  # index arithmetic stays readable


def test_emitter_numbering_continues_across_dags():
    em = Emitter("_t")
    render([S.apply("exp", S.inp(0, "float32"))], ["a"], em)
    render([S.apply("log", S.inp(0, "float32"))], ["b"], em)
    assert [ln.split()[2] for ln in em.lines] == ["_t0", "_t1"]


def test_unsupported_dtype_is_a_compile_error():
    import symgraph as sg
    with pytest.raises(sg.CompileError, match="float16"):
        c_type("float16")
