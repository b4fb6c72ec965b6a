"""Accurate hyperbolic functions for ``sg.elementwise`` formulas (imports SymPy: load lazily).

SymPy's textbook forms lose accuracy in floating point: ``asinh(x) = log(x + sqrt(x**2 + 1))``
is -inf at x = -1e4 in float32, ``sinh(x) = (exp(x) - exp(-x)) / 2`` cancels near 0 and
overflows at x = 89 (float32) though sinh(89) is finite, and the derivatives
``1 - tanh(x)**2``, ``1 / sqrt(x**2 + 1)`` and ``1 / (1 - x**2)`` cancel or overflow.  Here:

* ``BUILDERS`` turn each function into a scalar-IR expression of the vectorised primitives
  (expm1, exp, log1p, log, sqrt) in the forms of the C libraries (fdlibm / glibc): the
  argument's magnitude, a small-argument form without cancellation, a large-argument form
  that does not overflow before the result does, and the sign put back (NaN and signed
  zeros pass through).  They are accurate to a few ulp in float32 and float64.
* ``STABLE`` maps SymPy's classes to stand-ins whose derivatives are stable forms
  (``sech(x)**2``, ``1 / hypot(1, x)``, ``1 / ((1 - x) * (1 + x))``), so the partial derivatives
  SymPy derives for a formula are accurate too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import sympy as sp

from .codegen._scalar import S  # symgraph.scalar is shadowed by the sg.scalar constructor

# beyond this |x| the e**-|x| term of sinh / cosh is below float64's rounding (fdlibm: 22)
_EXP_SMALL = 22.0
# beyond this |x| asinh(x) = log(2|x|) and acosh(x) = log(2x) to float64 rounding (2**28)
_LOG_LARGE = 2.0 ** 28


class SgSinh(sp.Function):
    """sinh; d/dx = cosh."""

    def fdiff(self, argindex=1):
        return SgCosh(self.args[0])


class SgCosh(sp.Function):
    """cosh; d/dx = sinh."""

    def fdiff(self, argindex=1):
        return SgSinh(self.args[0])


class SgTanh(sp.Function):
    """tanh; d/dx = sech(x)**2 (1 - tanh(x)**2 is 0 beyond |x| = 9 in float32)."""

    def fdiff(self, argindex=1):
        return SgSech(self.args[0]) ** 2


class SgSech(sp.Function):
    """sech = 1 / cosh."""

    def fdiff(self, argindex=1):
        return -SgSech(self.args[0]) * SgTanh(self.args[0])


class SgAsinh(sp.Function):
    """asinh; d/dx = 1 / hypot(1, x) (1 / sqrt(x**2 + 1) is 0 once x**2 overflows)."""

    def fdiff(self, argindex=1):
        return SgInvHypot(self.args[0])


class SgInvHypot(sp.Function):
    """1 / sqrt(1 + x**2) without overflow."""

    def fdiff(self, argindex=1):
        x = self.args[0]
        return -x * SgInvHypot(x) ** 3


class SgAcosh(sp.Function):
    """acosh; d/dx = 1 / (sqrt(x - 1) * sqrt(x + 1)) (no x**2 to overflow)."""

    def fdiff(self, argindex=1):
        x = self.args[0]
        return 1 / (sp.sqrt(x - 1) * sp.sqrt(x + 1))


class SgAtanh(sp.Function):
    """atanh; d/dx = 1 / ((1 - x) * (1 + x)) (1 - x**2 cancels near |x| = 1)."""

    def fdiff(self, argindex=1):
        x = self.args[0]
        return 1 / ((1 - x) * (1 + x))


STABLE = {sp.sinh: SgSinh, sp.cosh: SgCosh, sp.tanh: SgTanh, sp.asinh: SgAsinh,
          sp.acosh: SgAcosh, sp.atanh: SgAtanh}


def with_stable_functions(expr):
    """``expr`` with the hyperbolic functions replaced by the stand-ins of ``STABLE``
    (sech, csch and coth first become 1 / cosh, 1 / sinh and 1 / tanh)."""
    expr = expr.replace(sp.sech, lambda a: 1 / sp.cosh(a))
    expr = expr.replace(sp.csch, lambda a: 1 / sp.sinh(a))
    expr = expr.replace(sp.coth, lambda a: 1 / sp.tanh(a))
    for cls, stand_in in STABLE.items():
        expr = expr.replace(cls, stand_in)
    return expr


# --- scalar-IR forms -------------------------------------------------------------------------

def _ops(dtype: str):
    def c(v):
        return S.const(v, dtype)

    def f(op, *args):
        return S.apply(op, *args)
    return c, f


def _odd(x: S.SExpr, magnitude: S.SExpr) -> S.SExpr:
    """``sign(x) * magnitude``, with x itself where x is ±0 or NaN (keeps the zero's sign)."""
    c, f = _ops(x.dtype)
    return f("where", f("lt", x, c(0)), f("neg", magnitude),
             f("where", f("gt", x, c(0)), magnitude, x))


def _half_exp_squared(a: S.SExpr) -> S.SExpr:
    """exp(a) / 2 as (exp(a / 2) / 2) * exp(a / 2): finite up to the largest finite result."""
    c, f = _ops(a.dtype)
    w = f("exp", f("mul", c(0.5), a))
    return f("mul", f("mul", c(0.5), w), w)


def sinh(x: S.SExpr) -> S.SExpr:
    """sinh: with t = expm1(|x|), (t + t / (t + 1)) / 2 (no cancellation near 0)."""
    c, f = _ops(x.dtype)
    a = f("abs", x)
    t = f("expm1", a)
    small = f("mul", c(0.5), f("add", t, f("truediv", t, f("add", t, c(1)))))
    return _odd(x, f("where", f("lt", a, c(_EXP_SMALL)), small, _half_exp_squared(a)))


def cosh(x: S.SExpr) -> S.SExpr:
    """cosh: (e + 1 / e) / 2 with e = exp(|x|), exp(|x|) / 2 without overflow beyond 22."""
    c, f = _ops(x.dtype)
    a = f("abs", x)
    e = f("exp", a)
    small = f("add", f("mul", c(0.5), e), f("truediv", c(0.5), e))
    return f("where", f("lt", a, c(_EXP_SMALL)), small, _half_exp_squared(a))


def sech(x: S.SExpr) -> S.SExpr:
    c, f = _ops(x.dtype)
    return f("truediv", c(1), cosh(x))


def asinh(x: S.SExpr) -> S.SExpr:
    """asinh: log1p(a + a**2 / (1 + sqrt(1 + a**2))) with a = |x|, log(a) + log(2) for huge a."""
    c, f = _ops(x.dtype)
    a = f("abs", x)
    a2 = f("mul", a, a)
    small = f("log1p", f("add", a, f("truediv", a2, f("add", c(1), f("sqrt", f("add", c(1), a2))))))
    large = f("add", f("log", a), c(math.log(2)))
    return _odd(x, f("where", f("gt", a, c(_LOG_LARGE)), large, small))


def acosh(x: S.SExpr) -> S.SExpr:
    """acosh: log1p(t + sqrt(t) * sqrt(t + 2)) with t = x - 1 (exact near 1), log(x) + log(2)
    for huge x; NaN below 1 (sqrt(t))."""
    c, f = _ops(x.dtype)
    t = f("sub", x, c(1))
    small = f("log1p", f("add", t, f("mul", f("sqrt", t), f("sqrt", f("add", t, c(2))))))
    large = f("add", f("log", x), c(math.log(2)))
    return f("where", f("gt", x, c(_LOG_LARGE)), large, small)


def atanh(x: S.SExpr) -> S.SExpr:
    """atanh: log1p(2a / (1 - a)) / 2 with a = |x| (1 - a is exact near 1)."""
    c, f = _ops(x.dtype)
    a = f("abs", x)
    r = f("mul", c(0.5), f("log1p", f("truediv", f("mul", c(2), a), f("sub", c(1), a))))
    return _odd(x, r)


def inv_hypot(x: S.SExpr) -> S.SExpr:
    """1 / sqrt(1 + x**2): r / sqrt(1 + r**2) with r = 1 / |x| when |x| > 1 (no overflow)."""
    c, f = _ops(x.dtype)
    a = f("abs", x)
    r = f("truediv", c(1), a)
    big = f("truediv", r, f("sqrt", f("add", c(1), f("mul", r, r))))
    small = f("truediv", c(1), f("sqrt", f("add", c(1), f("mul", a, a))))
    return f("where", f("gt", a, c(1)), big, small)


def tanh(x: S.SExpr) -> S.SExpr:
    return S.apply("tanh", x)


BUILDERS: dict[type, Callable[[S.SExpr], S.SExpr]] = {
    SgSinh: sinh, SgCosh: cosh, SgTanh: tanh, SgSech: sech, SgAsinh: asinh, SgAcosh: acosh,
    SgAtanh: atanh, SgInvHypot: inv_hypot,
    sp.sinh: sinh, sp.cosh: cosh, sp.asinh: asinh, sp.acosh: acosh, sp.atanh: atanh,
}
