"""``sg.elementwise``: user-defined elementwise ops from SymPy formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy

import symgraph as sg

RNG = np.random.default_rng(5)


def f64(name, shape):
    return sg.tensor(name, shape, "float64")


def compile_ref(inputs, outputs):
    return sg.compile(inputs, outputs, backend="reference")


def mish_formula(x):
    return x * sympy.tanh(sympy.log(1 + sympy.exp(x)))


def np_mish(x):
    return x * np.tanh(np.log1p(np.exp(x)))


def test_values_and_gradient_on_the_reference_backend():
    mish = sg.elementwise(mish_formula, name="mish")
    x = f64("x", (None, 3))
    y = mish(x)
    xv = RNG.standard_normal((4, 3)) * 2
    got_y, got_g = compile_ref([x], [y, sg.grad(y.sum(), x)])(xv)
    np.testing.assert_allclose(got_y, np_mish(xv), rtol=1e-12)
    sp_x = sympy.Symbol("x", real=True)
    d = sympy.lambdify(sp_x, sympy.diff(mish_formula(sp_x), sp_x), "numpy")
    np.testing.assert_allclose(got_g, d(xv), rtol=1e-10)
    sg.verify_grad(mish, [xv])
    assert str(y.owner.op) == "mish"


def test_second_and_third_derivatives():
    mish = sg.elementwise(mish_formula, name="mish")
    sg.verify_grad(lambda x: sg.grad(mish(x).sum(), x), [RNG.standard_normal((3, 4))])
    x = f64("x", ())
    g1 = sg.grad(mish(x), x)
    g2 = sg.grad(g1, x)
    g3 = sg.grad(g2, x)
    sp_x = sympy.Symbol("x", real=True)
    expr = mish_formula(sp_x)
    expected = [float(sympy.diff(expr, sp_x, k).subs(sp_x, 0.3)) for k in (1, 2, 3)]
    np.testing.assert_allclose(compile_ref([x], [g1, g2, g3])(np.float64(0.3)), expected, rtol=1e-9)


def test_several_arguments_with_broadcasting():
    def formula(x, y, z):
        return sympy.exp(-x * y) * sympy.sin(z) + x ** 2 / (1 + y ** 2)

    op = sg.elementwise(formula, name="combo")
    assert op.nin == 3
    vals = [RNG.standard_normal((3, 4)), RNG.standard_normal((4,)), RNG.standard_normal((3, 1))]
    sg.verify_grad(op, vals)
    sg.verify_grad(lambda x, y, z: sg.grad(op(x, y, z).sum(), [x, y, z])[1], vals)
    a, b, c = (f64(n, v.shape) for n, v in zip("abc", vals))
    xv, yv, zv = vals
    got = compile_ref([a, b, c], op(a, b, c))(*vals)
    np.testing.assert_allclose(got, np.exp(-xv * yv) * np.sin(zv) + xv ** 2 / (1 + yv ** 2), rtol=1e-12)
    # Rop uses the SymPy partials too
    va, vb, vc = (f64("v" + n, v.shape) for n, v in zip("abc", vals))
    jvp = sg.Rop(op(a, b, c), [a, b, c], [va, vb, vc])
    dirs = [RNG.standard_normal(v.shape) for v in vals]
    f = compile_ref([a, b, c], op(a, b, c))
    eps = 1e-6
    plus = f(*[v + eps * d for v, d in zip(vals, dirs)])
    minus = f(*[v - eps * d for v, d in zip(vals, dirs)])
    got = compile_ref([a, b, c, va, vb, vc], jvp)(*vals, *dirs)
    np.testing.assert_allclose(got, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)


def test_sympy_differentiates_once_at_definition(monkeypatch):
    calls = []
    real_diff = sympy.diff

    def counting_diff(*args, **kwargs):
        calls.append(args)
        return real_diff(*args, **kwargs)

    monkeypatch.setattr(sympy, "diff", counting_diff)
    op = sg.elementwise(lambda x, y: sympy.tanh(x) * y ** 2, name="counted")
    assert len(calls) == 2  # one partial derivative per argument
    x32, x64 = sg.matrix("x32"), f64("x64", (None, None))
    for _ in range(20):
        y = op(x32, x32) + op(x64, 2.0)
        g1 = sg.grad(y.sum(), [x32, x64])
        sg.grad(sg.grad(op(x64, x64).sum(), x64).sum(), x64)
    compile_ref([x32, x64], g1)(np.ones((2, 2), np.float32), np.ones((2, 2)))
    sg.verify_grad(lambda a: op(a, a), [RNG.standard_normal(3)])
    assert len(calls) == 2


def test_dtypes():
    op = sg.elementwise(lambda x: x ** 3 + 1, name="cube1")
    assert op(sg.matrix("a")).dtype == "float32"
    assert op(f64("b", (2,))).dtype == "float64"
    ints = sg.tensor("i", (3,), "int64")
    assert op(ints).dtype == "float64"  # integer inputs compute in float64
    np.testing.assert_allclose(compile_ref([ints], op(ints))(np.array([1, 2, 3])), [2, 9, 28])
    with pytest.raises(TypeError, match="takes 1 arguments"):
        op(ints, ints)


@pytest.mark.parametrize("name, formula, gen", [
    ("relu_max", lambda x: sympy.Max(0, x), "away"),
    ("min2", lambda x, y: sympy.Min(x, y * 2), "away"),
    ("abs", lambda x: sympy.Abs(x) * x, "away"),
    ("piecewise", lambda x: sympy.Piecewise((x ** 2, x > 0), (sympy.sin(x), True)), "away"),
    ("floor_times", lambda x: sympy.floor(x) * x, "away"),
    ("sign", lambda x: sympy.sign(x) * x ** 2, "away"),
    ("hyperbolic", lambda x: sympy.sinh(x) + sympy.cosh(x) / 3 + sympy.sech(x), "normal"),
    ("inverse_hyperbolic", lambda x: sympy.asinh(x) + sympy.atanh(x / 3), "normal"),
    ("tan", lambda x: sympy.tan(x / 2), "normal"),
    ("rational_power", lambda x: (1 + x ** 2) ** sympy.Rational(3, 2) - x ** -2, "away"),
    ("constants", lambda x: sympy.pi * x + sympy.E ** x + sympy.log(x ** 2 + 1, 2), "normal"),
    ("erf", lambda x: sympy.erf(x) * sympy.exp(-x), "normal"),
])
def test_formula_families(name, formula, gen):
    op = sg.elementwise(formula, name=name)
    n = op.nin
    x = RNG.standard_normal((n, 3, 4))
    if gen == "away":
        x = x + 0.3 * np.sign(x)
    args = list(x)
    sg.verify_grad(op, args)
    syms = sympy.symbols(f"s0:{n}", real=True)
    reference = sympy.lambdify(syms, formula(*syms), [{"erf": np.vectorize(math.erf)}, "numpy"])
    tensors = [f64(f"a{i}", (3, 4)) for i in range(n)]
    np.testing.assert_allclose(compile_ref(tensors, op(*tensors))(*args), reference(*args) + 0 * args[0],
                               rtol=1e-10, atol=1e-12)


def test_zero_derivative_parts_stay_zero():
    op = sg.elementwise(lambda x: sympy.floor(x) + sympy.sign(x), name="steps")
    x = f64("x", (4,))
    g = compile_ref([x], sg.grad(op(x).sum(), x))(np.array([0.3, -1.2, 2.5, 7.1]))
    np.testing.assert_array_equal(g, np.zeros(4))


def test_untranslatable_function_is_a_clear_error():
    with pytest.raises(sg.CompileError, match=r"atan.*no scalar-IR translation.*'arctan'"):
        sg.elementwise(lambda x: sympy.atan(x), name="arctan")
    with pytest.raises(sg.CompileError, match="gamma"):
        sg.elementwise(lambda x: x * sympy.gamma(x), name="g")
    # the derivative is checked too: loggamma itself is missing, and so is its derivative
    with pytest.raises(sg.CompileError, match="loggamma|polygamma"):
        sg.elementwise(lambda x: sympy.loggamma(x), name="lg")
