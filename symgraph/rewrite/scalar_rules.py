"""Rewrites of scalar-IR DAGs (the body of one ``Elemwise``): algebra and stabilisation.

A scalar rule is ``rule(node) -> SExpr | None`` on a node whose arguments are already
rewritten.  ``rewrite_expr`` rebuilds a DAG bottom-up applying a rule set at every node until
none fires, and reports which rules fired (for the rewrite log).  Results are cast back to the
node's dtype, so a rule never changes the type of the expression.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..graph.types import is_float
from ..ops.elemwise import S  # the scalar IR module (symgraph.scalar is also a function name)

Rule = Callable[[S.SExpr], "S.SExpr | None"]


_CACHE: dict[tuple[S.SExpr, int], tuple[S.SExpr, list[str]]] = {}


def rewrite_expr(root: S.SExpr, rules: dict[str, Rule]) -> tuple[S.SExpr, list[str]]:
    """Rebuild ``root`` applying ``rules`` at every node to a fixed point (memoised: DAGs are
    interned, so the many nodes of a graph that share an expression share the work)."""
    key = (root, id(rules))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit[0], list(hit[1])
    result = _rewrite_expr(root, rules)
    if len(_CACHE) > 50_000:
        _CACHE.clear()
    _CACHE[key] = result
    return result[0], list(result[1])


def _rewrite_expr(root: S.SExpr, rules: dict[str, Rule]) -> tuple[S.SExpr, list[str]]:
    fired: list[str] = []
    memo: dict[int, S.SExpr] = {}
    for node in S.topo([root]):
        if node.op in ("input", "const"):
            memo[id(node)] = node
            continue
        args = tuple(memo[id(a)] for a in node.args)
        if node.op == "cast":
            new = S.cast(args[0], node.dtype)
        elif all(a is b for a, b in zip(args, node.args)):
            new = node
        else:
            new = S.SExpr(node.op, args, node.value, node.dtype)
        new = _apply_rules(new, rules, fired)
        memo[id(node)] = new
    return memo[id(root)], fired


def _apply_rules(node: S.SExpr, rules: dict[str, Rule], fired: list[str]) -> S.SExpr:
    for _ in range(16):
        if node.op in ("input", "const"):
            return node
        for name, rule in rules.items():
            out = rule(node)
            if out is not None and out is not node:
                if out.dtype != node.dtype:
                    out = S.cast(out, node.dtype)
                fired.append(name)
                node = out
                break
        else:
            return node
    return node


# --- helpers ------------------------------------------------------------------------------

def c(value, like: S.SExpr) -> S.SExpr:
    return S.const(value, like.dtype)


def is_c(x: S.SExpr, value) -> bool:
    return x.op == "const" and x.value == value and not isinstance(x.value, bool)


def _same_dtype(x: S.SExpr, node: S.SExpr) -> S.SExpr:
    return x if x.dtype == node.dtype else S.cast(x, node.dtype)


# --- canonical algebra --------------------------------------------------------------------

def fold_scalar_constants(n: S.SExpr):
    """An operation on constants only becomes a constant."""
    if n.op in S.PRIMITIVES and n.args and all(a.op == "const" for a in n.args):
        (val,) = S.evaluate([n], [])
        v = np.asarray(val).item()
        if isinstance(v, float) and not np.isfinite(v):
            return None  # keep inf/nan producing expressions readable
        return S.const(v, n.dtype)
    return None


def _signbit(k: S.SExpr) -> bool:
    return bool(np.signbit(float(k.value)))


def _float_zero_sign_matters(x: S.SExpr, n: S.SExpr) -> bool:
    """Does the sign of a zero constant combined with ``x`` show in ``n``'s value?  Only when
    ``n`` is a float and ``x`` may be a signed zero (a float or a cast of one)."""
    return is_float(n.dtype) and is_float(x.dtype)


def add_zero(n: S.SExpr):
    """x + 0 -> x, 0 + x -> x: integers; floats only with -0.0 (``-0.0 + 0.0`` is ``+0.0``)."""
    if n.op == "add":
        a, b = n.args
        for x, k in ((a, b), (b, a)):
            if is_c(k, 0) and (not _float_zero_sign_matters(x, n) or _signbit(k)):
                return _same_dtype(x, n)
    return None


def sub_zero(n: S.SExpr):
    """x - 0 -> x (floats: +0.0 only); 0 - x -> -x (floats: -0.0 only, ``0.0 - 0.0`` is
    ``+0.0``, and an integer cast to float may be zero too)."""
    if n.op == "sub":
        a, b = n.args
        if is_c(b, 0) and (not _float_zero_sign_matters(a, n) or not _signbit(b)):
            return _same_dtype(a, n)
        if is_c(a, 0) and n.dtype != "bool" and (not is_float(n.dtype) or _signbit(a)):
            return S.apply("neg", _same_dtype(b, n))
    return None


def mul_one(n: S.SExpr):
    """x * 1 -> x, x * -1 -> -x (both exact, also for signed zeros, inf and NaN)."""
    if n.op == "mul":
        a, b = n.args
        for x, k in ((a, b), (b, a)):
            if is_c(k, 1):
                return _same_dtype(x, n)
            if is_c(k, -1) and n.dtype != "bool":
                return S.apply("neg", _same_dtype(x, n))
    return None


def div_one(n: S.SExpr):
    """x / 1 -> x."""
    if n.op == "truediv" and is_c(n.args[1], 1):
        return _same_dtype(n.args[0], n)
    return None


def neg_neg(n: S.SExpr):
    """-(-x) -> x."""
    if n.op == "neg" and n.args[0].op == "neg":
        return _same_dtype(n.args[0].args[0], n)
    return None


def _negation_in(x: S.SExpr, n: S.SExpr) -> S.SExpr | None:
    """``y`` when ``x`` is ``-y`` computed in ``n``'s dtype (an integer ``-y`` promoted to a
    float afterwards may have wrapped around)."""
    return x.args[0] if x.op == "neg" and x.dtype == n.dtype else None


def sub_neg(n: S.SExpr):
    """x - (-y) -> x + y; x + (-y) -> x - y; (-y) + x -> x - y (IEEE: ``x - y`` is
    ``x + (-y)`` exactly)."""
    if n.op not in ("add", "sub"):
        return None
    a, b = n.args
    y = _negation_in(b, n)
    if y is not None:
        return S.apply("add" if n.op == "sub" else "sub", a, y)
    y = _negation_in(a, n)
    if n.op == "add" and y is not None:
        return S.apply("sub", b, y)
    return None


def _reassociable(dtype: str) -> bool:
    """Integer arithmetic wraps modulo 2**bits, so add / mul chains may be regrouped; float
    chains may not: ``(x + 1e20) - 1e20`` is 0 in NumPy, regrouped it would be ``x``."""
    return dtype != "bool" and not is_float(dtype)


def sub_const(n: S.SExpr):
    """x - c -> x + (-c) on integers, so that constants of add chains can be gathered."""
    if n.op == "sub" and n.args[1].op == "const" and _reassociable(n.dtype):
        return S.apply("add", n.args[0], S.const(-n.args[1].value, n.args[1].dtype))
    return None


def _chain(n: S.SExpr, op: str) -> list[S.SExpr]:
    """Operands of a chain of ``op`` nodes of one dtype (iteratively, left to right)."""
    out, stack = [], [n]
    while stack:
        x = stack.pop()
        if x.op == op and x.dtype == n.dtype:
            stack.extend(reversed(x.args))
        else:
            out.append(x)
    return out


def gather_constants(n: S.SExpr):
    """Flatten integer add / mul chains and combine their constants: (x + 1) + 2 -> x + 3.

    Floating-point chains keep NumPy's evaluation order (``_reassociable``)."""
    if n.op not in ("add", "mul") or not _reassociable(n.dtype):
        return None
    terms = _chain(n, n.op)
    consts = [t for t in terms if t.op == "const"]
    if len(consts) < 2:
        return None
    rest = [t for t in terms if t.op != "const"]
    total = consts[0]
    for k in consts[1:]:
        (val,) = S.evaluate([S.apply(n.op, total, k)], [])
        total = S.const(np.asarray(val).item(), n.dtype)
    identity = 0 if n.op == "add" else 1
    if not rest:
        return total
    out = rest[0]
    for t in rest[1:]:
        out = S.apply(n.op, out, t)
    if not is_c(total, identity):
        out = S.apply(n.op, out, _same_dtype(total, out))
    return out


CANONICAL: dict[str, Rule] = {
    "fold_scalar_constants": fold_scalar_constants,
    "add_zero": add_zero, "sub_zero": sub_zero, "mul_one": mul_one, "div_one": div_one,
    "neg_neg": neg_neg, "sub_neg": sub_neg, "sub_const": sub_const,
    "gather_constants": gather_constants,
}


# --- stabilisation ------------------------------------------------------------------------
# Each rule replaces an expression by one that is equal in real arithmetic and at least as
# accurate in floating point.  None assumes anything about the values (no "this clamp never
# binds", no "sigmoid never reaches 0"): a rule that only holds under such an assumption would
# also fire on user code where it does not.

def _one_plus(x: S.SExpr) -> S.SExpr | None:
    """``y`` when ``x`` is ``1 + y`` (either order), else None."""
    if x.op == "add":
        a, b = x.args
        if is_c(a, 1):
            return b
        if is_c(b, 1):
            return a
    return None


def log1p_rule(n: S.SExpr):
    """log(1 + x) -> log1p(x); log(1 - x) -> log1p(-x) (float sums: an integer ``1 + x`` may
    wrap around)."""
    if n.op != "log":
        return None
    x = n.args[0]
    if not is_float(x.dtype):
        return None
    y = _one_plus(x)
    if y is not None:
        return S.apply("log1p", _same_dtype(y, x))
    if x.op == "sub" and is_c(x.args[0], 1):
        return S.apply("log1p", S.apply("neg", _same_dtype(x.args[1], x)))
    return None


def expm1_rule(n: S.SExpr):
    """exp(x) - 1 -> expm1(x) (also written exp(x) + (-1))."""
    if n.op == "sub" and n.args[0].op == "exp" and is_c(n.args[1], 1):
        return S.apply("expm1", n.args[0].args[0])
    if n.op == "add":
        a, b = n.args
        for e, k in ((a, b), (b, a)):
            if e.op == "exp" and is_c(k, -1):
                return S.apply("expm1", e.args[0])
    return None


def _negated(x: S.SExpr) -> S.SExpr | None:
    """``z`` when ``x`` is ``-z``, ``0 - z``, ``z * -1`` or ``-1 * z`` (the sign of a zero
    result does not matter where this is used: under ``exp``)."""
    if x.op == "neg":
        return x.args[0]
    if x.op == "sub" and is_c(x.args[0], 0):
        return x.args[1]
    if x.op == "mul":
        a, b = x.args
        if is_c(a, -1):
            return b
        if is_c(b, -1):
            return a
    return None


def _exp_of_neg(x: S.SExpr) -> S.SExpr | None:
    """``z`` when ``x`` is ``exp(-z)`` of a float ``z``."""
    if x.op != "exp":
        return None
    z = _negated(x.args[0])
    return z if z is not None and is_float(z.dtype) else None


def _sigmoid(z: S.SExpr, like: S.SExpr) -> S.SExpr:
    return S.apply("sigmoid", _same_dtype(z, like))


def sigmoid_rule(n: S.SExpr):
    """Hand-written logistic functions -> sigmoid: ``1 / (1 + exp(-z))`` (either order of the
    sum, ``-z`` also as ``0 - z`` or ``-1 * z``), ``(1 + exp(-z)) ** -1`` and
    ``exp(z) / (1 + exp(z))``.  Written out, ``exp`` overflows for large ``|z|``: the value is
    still right, but its gradient and a log of it are not."""
    if n.op not in ("truediv", "pow") or not is_float(n.dtype):
        return None
    num, den = n.args
    if (n.op == "truediv" and is_c(num, 1)) or (n.op == "pow" and is_c(den, -1)):
        d = den if n.op == "truediv" else num
        e = _one_plus(d)
        z = _exp_of_neg(e) if e is not None else None
        return _sigmoid(z, d) if z is not None else None
    if n.op == "truediv" and num.op == "exp" and is_float(num.dtype) and _one_plus(den) is num:
        return _sigmoid(num.args[0], num)
    return None


def log_sigmoid_rule(n: S.SExpr):
    """log(sigmoid(x)) -> -softplus(-x)."""
    if n.op == "log" and n.args[0].op == "sigmoid":
        s = n.args[0]
        x = _same_dtype(s.args[0], s)
        return S.apply("neg", S.apply("softplus", S.apply("neg", x)))
    return None


def log1m_sigmoid_rule(n: S.SExpr):
    """log(1 - sigmoid(x)) = log1p(-sigmoid(x)) -> -softplus(x)."""
    if n.op == "log1p" and n.args[0].op == "neg" and n.args[0].args[0].op == "sigmoid":
        s = n.args[0].args[0]
        return S.apply("neg", S.apply("softplus", _same_dtype(s.args[0], s)))
    return None


def softplus_rule(n: S.SExpr):
    """log(1 + exp(x)) = log1p(exp(x)) -> softplus(x); log(exp(x)) -> x."""
    if n.op == "log1p" and n.args[0].op == "exp":
        return S.apply("softplus", n.args[0].args[0])
    if n.op == "log" and n.args[0].op == "exp":
        return n.args[0].args[0]
    return None


def log_of_select_rule(n: S.SExpr):
    """log(where(c, sigmoid(z), k)) -> where(c, log(sigmoid(z)), log(k)) for a constant ``k``
    (either branch; also log1p and ``log1p(-where(...))``).

    The log of the selected value is the selected log, so this is exact; it lets the log of the
    sigmoid become ``-softplus(-z)`` under a guard such as ``log(where(p > 0, p, 1))``.
    """
    if n.op not in ("log", "log1p"):
        return None
    x, negate = n.args[0], False
    if n.op == "log1p" and x.op == "neg":
        x, negate = x.args[0], True
    if x.op != "where":
        return None
    c, a, b = x.args
    if not ((a.op == "sigmoid" and b.op == "const") or (b.op == "sigmoid" and a.op == "const")):
        return None

    def branch(v: S.SExpr) -> S.SExpr:
        v = _same_dtype(v, x)
        # the new logs sit below the node the driver revisits: settle them here
        log = S.apply(n.op, S.apply("neg", v) if negate else v)
        return _apply_rules(log, {**STABILIZE, "fold": fold_scalar_constants}, [])
    return S.apply("where", c, branch(a), branch(b))


STABILIZE: dict[str, Rule] = {
    "sigmoid": sigmoid_rule, "log_of_select": log_of_select_rule,
    "log1p": log1p_rule, "expm1": expm1_rule, "log_sigmoid": log_sigmoid_rule,
    "log1m_sigmoid": log1m_sigmoid_rule, "softplus": softplus_rule,
}


# --- specialisation -----------------------------------------------------------------------

def pow_const(n: S.SExpr):
    """x ** k for a constant small integer k -> multiplications (squaring), x ** 0.5 -> sqrt(x),
    x ** -k -> 1 / x ** k (float x).  A general pow costs an exp and a log per element.

    For k in (1, 2, -1, 0.5) this is what NumPy's ``**`` computes.  For other k the products
    round more than once, so the last bit may differ from NumPy's ``pow`` (as it may for exp
    or tanh, whose implementations differ from NumPy's too): W1's GELU ``x ** 3`` would be 3-5
    times slower as a ``pow``.
    """
    if n.op != "pow" or n.args[1].op != "const" or not is_float(n.dtype):
        return None
    x, k = _same_dtype(n.args[0], n), n.args[1].value
    if k == 0.5:
        return S.apply("sqrt", x)
    if k != int(k) or not 1 <= abs(k) <= 8:
        return None
    power, result, base = abs(int(k)), None, x
    while power:
        if power & 1:
            result = base if result is None else S.apply("mul", result, base)
        power >>= 1
        if power:
            base = S.apply("mul", base, base)
    return result if k > 0 else S.apply("truediv", c(1, x), result)


SPECIALIZE: dict[str, Rule] = {"pow_const": pow_const}
