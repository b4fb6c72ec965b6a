"""User-defined elementwise ops from SymPy formulas (``sg.elementwise``).

SymPy is imported and the derivatives are derived once, when the op is defined; each use
only translates the cached SymPy expressions to the scalar IR (cached per input dtype), so
the op runs on every backend and differentiates to any order like a built-in op.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache

from . import scalar as S
from .errors import CompileError
from .graph.basic import Variable, as_variable
from .graph.types import result_dtype


def _to_scalar(expr, symbols, dtype: str) -> S.SExpr:
    """Translate a SymPy expression tree to a scalar-IR DAG (computed in ``dtype``)."""
    import sympy as sp

    from . import _hyperbolic as hyperbolic

    memo: dict = {}
    slot = {s: i for i, s in enumerate(symbols)}

    def c(v):
        return S.const(float(v), dtype)

    def go(e):
        if e in memo:
            return memo[e]
        if e in slot:
            r = S.inp(slot[e], dtype)
        elif e.is_Number or e in (sp.pi, sp.E) or e.is_NumberSymbol:
            r = c(sp.N(e, 17))
        elif isinstance(e, sp.Add):
            args = [go(a) for a in e.args]
            r = args[0]
            for a in args[1:]:
                r = S.apply("add", r, a)
        elif isinstance(e, sp.Mul):
            num, den = [], []
            for a in e.args:
                if isinstance(a, sp.Pow) and a.exp.is_Number and a.exp < 0:
                    den.append(go(a.base) if a.exp == -1 else go(sp.Pow(a.base, -a.exp)))
                else:
                    num.append(go(a))
            r = num[0] if num else c(1)
            for a in num[1:]:
                r = S.apply("mul", r, a)
            for a in den:
                r = S.apply("truediv", r, a)
        elif isinstance(e, sp.Pow):
            base, ex = e.args
            if ex == sp.Rational(1, 2):
                r = S.apply("sqrt", go(base))
            elif ex == -1:
                r = S.apply("truediv", c(1), go(base))
            elif ex == 2:
                r = S.apply("square", go(base))
            elif ex.is_Integer and 2 < ex <= 4:
                b = go(base)
                r = b
                for _ in range(int(ex) - 1):
                    r = S.apply("mul", r, b)
            elif ex.is_Integer and ex < 0:
                r = S.apply("truediv", c(1), go(sp.Pow(base, -ex)))
            elif base == sp.E:
                r = S.apply("exp", go(ex))
            else:
                r = S.apply("pow", go(base), go(ex))
        elif isinstance(e, sp.exp):
            r = S.apply("exp", go(e.args[0]))
        elif isinstance(e, sp.log):
            arg = e.args[0]
            if isinstance(arg, sp.Add) and 1 in arg.args:
                r = S.apply("log1p", go(arg - 1))
            else:
                r = S.apply("log", go(arg))
        elif isinstance(e, sp.Piecewise):
            r = None
            for value, cond in reversed(e.args):
                v = go(value)
                r = v if cond == sp.true or r is None else S.apply("where", go_cond(cond), v, r)
        elif isinstance(e, sp.Heaviside):
            # derivative of Max / Min / Abs-like formulas; SymPy's H(0) (1/2 unless given)
            arg = go(e.args[0])
            h0 = go(e.args[1]) if len(e.args) > 1 else c(0.5)
            r = S.apply("where", S.apply("gt", arg, c(0)), c(1),
                        S.apply("where", S.apply("eq", arg, c(0)), h0, c(0)))
        elif isinstance(e, sp.DiracDelta) or (
                isinstance(e, sp.Derivative)
                and isinstance(e.expr, (sp.floor, sp.ceiling, sp.sign, sp.Heaviside))):
            # derivatives of piecewise-constant functions: zero almost everywhere, like the
            # gradient of the built-in floor / sign ops
            r = c(0)
        elif isinstance(e, sp.tan):
            r = S.apply("truediv", S.apply("sin", go(e.args[0])), S.apply("cos", go(e.args[0])))
        elif type(e) in hyperbolic.BUILDERS:  # accurate forms, see symgraph/_hyperbolic.py
            r = hyperbolic.BUILDERS[type(e)](go(e.args[0]))
        elif isinstance(e, (sp.Max, sp.Min)):
            args = [go(a) for a in e.args]
            r = args[0]
            for a in args[1:]:
                r = S.apply("maximum" if isinstance(e, sp.Max) else "minimum", r, a)
        else:
            name = {sp.tanh: "tanh", sp.sin: "sin", sp.cos: "cos", sp.erf: "erf", sp.Abs: "abs",
                    sp.sign: "sign", sp.floor: "floor", sp.ceiling: "ceil"}.get(type(e))
            if name is None:
                if isinstance(e, (sp.sech, sp.csch, sp.coth)):
                    return go(hyperbolic.with_stable_functions(e))
                raise CompileError(f"sg.elementwise: SymPy function {type(e).__name__} (in "
                                   f"{e}) has no scalar-IR translation")
            r = S.apply(name, go(e.args[0]))
        if r.dtype != dtype and r.dtype != "bool":
            r = S.cast(r, dtype)
        memo[e] = r
        return r

    def go_cond(cond):
        rel = {sp.StrictLessThan: "lt", sp.LessThan: "le", sp.StrictGreaterThan: "gt",
               sp.GreaterThan: "ge", sp.Eq: "eq", sp.Ne: "ne"}
        for cls, op in rel.items():
            if isinstance(cond, cls):
                return S.apply(op, go(cond.lhs), go(cond.rhs))
        raise CompileError(f"sg.elementwise: unsupported condition {cond}")

    return go(expr)


class ElementwiseFormula:
    """A callable elementwise op defined by a SymPy formula; see ``sg.elementwise``."""

    def __init__(self, formula: Callable, name: str):
        import sympy as sp
        nargs = len(inspect.signature(formula).parameters)
        self.name = name
        self.symbols = sp.symbols(f"x0:{nargs}", real=True)
        self.expr = sp.sympify(formula(*self.symbols))
        # derivatives derived once, at definition time, of the formula with the hyperbolic
        # functions whose derivatives have accurate forms (symgraph/_hyperbolic.py)
        from ._hyperbolic import with_stable_functions
        self._stable_expr = with_stable_functions(self.expr)
        self.derivatives = [sp.diff(self._stable_expr, s) for s in self.symbols]
        self.nin = nargs
        self._check()

    def _check(self):
        """Translate once now, so an untranslatable formula fails where it is defined."""
        try:
            _to_scalar(self._stable_expr, self.symbols, "float64")
            for d in self.derivatives:
                _to_scalar(d, self.symbols, "float64")
        except CompileError as e:
            raise CompileError(f"{e} (defining elementwise op {self.name!r}: {self.expr})") from None

    @cache  # noqa: B019 - one cache per op, lives as long as the op
    def _exprs(self, dtype: str):
        expr = _to_scalar(self._stable_expr, self.symbols, dtype)
        partials = tuple(_to_scalar(d, self.symbols, dtype) for d in self.derivatives)
        return expr, partials

    def __call__(self, *args) -> Variable:
        from .ops.elemwise import Elemwise, cast
        if len(args) != self.nin:
            raise TypeError(f"{self.name} takes {self.nin} arguments, got {len(args)}")
        xs = [as_variable(a) for a in args]
        dtype = result_dtype(*[x.dtype for x in xs])
        if not dtype.startswith("float"):
            dtype = "float64"
        xs = [cast(x, dtype) for x in xs]
        expr, partials = self._exprs(dtype)
        return Elemwise(expr, self.nin, name=self.name, partials=partials)(*xs)

    def __repr__(self):
        return f"<elementwise {self.name}: {self.expr}>"


def elementwise(formula: Callable, name: str) -> ElementwiseFormula:
    """Define an elementwise op from a SymPy formula, e.g.
    ``mish = sg.elementwise(lambda x: x * sympy.tanh(sympy.log(1 + sympy.exp(x))), "mish")``.
    """
    return ElementwiseFormula(formula, name)
