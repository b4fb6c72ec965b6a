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


def add_zero(n: S.SExpr):
    """x + 0 -> x, 0 + x -> x."""
    if n.op == "add":
        a, b = n.args
        if is_c(b, 0):
            return _same_dtype(a, n)
        if is_c(a, 0):
            return _same_dtype(b, n)
    return None


def sub_zero(n: S.SExpr):
    """x - 0 -> x, 0 - x -> -x."""
    if n.op == "sub":
        a, b = n.args
        if is_c(b, 0):
            return _same_dtype(a, n)
        if is_c(a, 0) and n.dtype != "bool":
            return S.apply("neg", _same_dtype(b, n))
    return None


def mul_one(n: S.SExpr):
    """x * 1 -> x, x * -1 -> -x."""
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


def sub_neg(n: S.SExpr):
    """x - (-y) -> x + y; x + (-y) -> x - y; (-y) + x -> x - y."""
    if n.op == "sub" and n.args[1].op == "neg":
        return S.apply("add", n.args[0], n.args[1].args[0])
    if n.op == "add" and n.args[1].op == "neg":
        return S.apply("sub", n.args[0], n.args[1].args[0])
    if n.op == "add" and n.args[0].op == "neg":
        return S.apply("sub", n.args[1], n.args[0].args[0])
    return None


def sub_const(n: S.SExpr):
    """x - c -> x + (-c), so that constants of add chains can be gathered."""
    if n.op == "sub" and n.args[1].op == "const" and n.dtype != "bool" and is_float(n.dtype):
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
    """Flatten add / mul chains and combine their constants: (x + 1) + 2 -> x + 3."""
    if n.op not in ("add", "mul") or n.dtype == "bool":
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
    """log(1 + x) -> log1p(x); log(1 - x) -> log1p(-x)."""
    if n.op != "log":
        return None
    x = n.args[0]
    y = _one_plus(x)
    if y is not None:
        return S.apply("log1p", y)
    if x.op == "sub" and is_c(x.args[0], 1):
        return S.apply("log1p", S.apply("neg", x.args[1]))
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


def log_sigmoid_rule(n: S.SExpr):
    """log(sigmoid(x)) -> -softplus(-x)."""
    if n.op == "log" and n.args[0].op == "sigmoid":
        x = n.args[0].args[0]
        return S.apply("neg", S.apply("softplus", S.apply("neg", x)))
    return None


def log1m_sigmoid_rule(n: S.SExpr):
    """log(1 - sigmoid(x)) = log1p(-sigmoid(x)) -> -softplus(x)."""
    if n.op == "log1p" and n.args[0].op == "neg" and n.args[0].args[0].op == "sigmoid":
        return S.apply("neg", S.apply("softplus", n.args[0].args[0].args[0]))
    return None


def softplus_rule(n: S.SExpr):
    """log(1 + exp(x)) = log1p(exp(x)) -> softplus(x); log(exp(x)) -> x."""
    if n.op == "log1p" and n.args[0].op == "exp":
        return S.apply("softplus", n.args[0].args[0])
    if n.op == "log" and n.args[0].op == "exp":
        return n.args[0].args[0]
    return None


BCE_CLAMP = -50.0  # clamps at or below this only guard log(0) of an underflowed probability


def bce_clamp_rule(n: S.SExpr):
    """maximum(-softplus(y), c) with c <= -50 -> -softplus(y).

    ``binary_cross_entropy`` on probabilities clamps ``log(p)`` at -100 because ``p`` may have
    underflowed to 0.  Once ``log(sigmoid(x))`` is rewritten to ``-softplus(-x)`` it is exact
    for every ``x``, so the clamp is dropped and the loss becomes the logits form.
    """
    if n.op != "maximum":
        return None
    for a, k in (n.args, reversed(n.args)):
        if (k.op == "const" and is_float(k.dtype) and k.value <= BCE_CLAMP and a.op == "neg"
                and a.args[0].op == "softplus"):
            return a
    return None


def sigmoid_range_rule(n: S.SExpr):
    """where(sigmoid(z) > 0, a, b) -> a and where(sigmoid(z) < 1, a, b) -> a.

    Guards that protect a log from a sigmoid that underflowed (``binary_cross_entropy`` on
    probabilities): once the log is rewritten to the exact softplus form, the guard goes.
    """
    if n.op != "where":
        return None
    c = n.args[0]
    if c.op == "gt" and c.args[0].op == "sigmoid" and is_c(c.args[1], 0):
        return n.args[1]
    if c.op == "lt" and c.args[0].op == "sigmoid" and is_c(c.args[1], 1):
        return n.args[1]
    return None


STABILIZE: dict[str, Rule] = {
    "sigmoid_range": sigmoid_range_rule,
    "log1p": log1p_rule, "expm1": expm1_rule, "log_sigmoid": log_sigmoid_rule,
    "log1m_sigmoid": log1m_sigmoid_rule, "softplus": softplus_rule,
    "bce_on_probabilities": bce_clamp_rule,
}


# --- specialisation -----------------------------------------------------------------------

def pow_const(n: S.SExpr):
    """x ** k for a constant small integer k -> multiplications (squaring), x ** 0.5 -> sqrt(x),
    x ** -k -> 1 / x ** k (float x).  A general pow costs an exp and a log per element."""
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
