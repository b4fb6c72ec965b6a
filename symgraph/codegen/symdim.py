"""Symbolic sizes: the dims of shape-generic native code.

A dim unknown when the graph is built becomes a *leaf*: a size the generated code reads at
run time (``x.shape[0]`` of an input).  Sizes computed from leaves (``64 * B``, the stride of
an axis, a storage's byte size) are ``SymInt``s: integer polynomials over leaves, with opaque
atoms for what is not a polynomial (``B // 3``, ``min(B, 7)``).  A ``SymInt`` also carries the
*hint*, its value for the call that triggered code generation.

Lowering code written for Python ints mostly runs unchanged on ``SymInt``s: arithmetic stays
symbolic, and a question a polynomial cannot answer by itself (``B == 1``? ``B * 4 > 4096``?)
is answered from the hint and recorded as a *guard*.  The generated code is valid for every
call whose leaves satisfy all the guards; the backend checks them (once per new tuple of input
shapes) before reusing the code, and generates new code when one fails.  ``int(b)`` pins ``b``
to its hint (a guard ``b == hint``): correct, only no longer generic in ``b``.

Lowering that wants to stay generic asks the guard-free questions instead: ``known_equal``,
``maybe_one`` and ``known_nonneg``.
"""

from __future__ import annotations

import contextlib
import math
import operator

_OPS = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
        "gt": operator.gt, "ge": operator.ge}
_NEGATE = {"eq": "ne", "ne": "eq", "lt": "ge", "le": "gt", "gt": "le", "ge": "lt"}

_guards: list | None = None  # the guards of the lowering in progress (``tracing``)


class NotGeneric(Exception):
    """A size question came up outside a ``tracing`` block (a bug), or a lowering gave up."""


@contextlib.contextmanager
def tracing():
    """Collect the guards of the decisions made on hints inside the block (yields the list)."""
    global _guards
    saved, _guards = _guards, []
    try:
        yield _guards
    finally:
        _guards = saved


class Atom:
    """A leaf (a run-time size) or an opaque function of sizes (``floordiv``, ``mod``, ``max``,
    ``min``): what the polynomial terms of a ``SymInt`` multiply."""

    __slots__ = ("kind", "args", "key", "hint", "nonneg", "name")

    def __init__(self, kind: str, args: tuple, key: str, hint: int, nonneg: bool, name: str = ""):
        self.kind, self.args, self.key = kind, args, key
        self.hint, self.nonneg, self.name = hint, nonneg, name

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, Atom) and other.key == self.key

    def __lt__(self, other: Atom) -> bool:
        return self.key < other.key

    def __repr__(self) -> str:
        return self.key


def leaf(index: int, hint: int, name: str = "", nonneg: bool = True) -> SymInt:
    """Run-time size number ``index`` (the generated code reads it from its dims table)."""
    return SymInt({(Atom("leaf", (index,), f"d{index}", int(hint), nonneg, name),): 1})


class SymInt:
    """An integer polynomial over atoms, with the value (``hint``) of the current call."""

    __slots__ = ("terms", "hint", "_hash")
    __array_ufunc__ = None  # NumPy scalars and arrays defer to our reflected operators

    def __init__(self, terms: dict):
        self.terms = tuple(sorted(terms.items()))
        self.hint = sum(c * math.prod(a.hint for a in mono) for mono, c in self.terms)
        self._hash = None

    # --- construction --------------------------------------------------------------------
    @staticmethod
    def make(terms: dict):
        """A ``SymInt``, or a plain int when no atom is left."""
        terms = {m: c for m, c in terms.items() if c}
        if not terms:
            return 0
        if len(terms) == 1 and () in terms:
            return terms[()]
        return SymInt(terms)

    def _terms(self) -> dict:
        return dict(self.terms)

    # --- arithmetic ----------------------------------------------------------------------
    def __add__(self, other):
        if not isinstance(other, (int, SymInt)):
            return NotImplemented
        terms = self._terms()
        for m, c in _as_terms(other).items():
            terms[m] = terms.get(m, 0) + c
        return SymInt.make(terms)

    __radd__ = __add__

    def __neg__(self):
        return SymInt.make({m: -c for m, c in self.terms})

    def __sub__(self, other):
        if not isinstance(other, (int, SymInt)):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other):
        if not isinstance(other, (int, SymInt)):
            return NotImplemented
        return (-self) + other

    def __mul__(self, other):
        if not isinstance(other, (int, SymInt)):
            return NotImplemented
        out: dict = {}
        for m1, c1 in self.terms:
            for m2, c2 in _as_terms(other).items():
                m = tuple(sorted(m1 + m2))
                out[m] = out.get(m, 0) + c1 * c2
        return SymInt.make(out)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if not isinstance(other, (int, SymInt)):
            return NotImplemented
        exact = _divide_exactly(self, other)
        return exact if exact is not None else _opaque("floordiv", self, other)

    def __rfloordiv__(self, other):
        if not isinstance(other, int):
            return NotImplemented
        return _opaque("floordiv", other, self)

    def __mod__(self, other):
        if not isinstance(other, (int, SymInt)):
            return NotImplemented
        return 0 if _divide_exactly(self, other) is not None else _opaque("mod", self, other)

    def __rmod__(self, other):
        if not isinstance(other, int):
            return NotImplemented
        return _opaque("mod", other, self)

    def __pos__(self):
        return self

    # --- comparisons (guarded) -----------------------------------------------------------
    def _compare(self, other, op: str) -> bool:
        if not isinstance(other, (int, SymInt)):
            return NotImplemented
        return compare(self - other, op)

    def __eq__(self, other):
        if not isinstance(other, (int, SymInt)):
            return False
        return self._compare(other, "eq")

    def __ne__(self, other):
        if not isinstance(other, (int, SymInt)):
            return True
        return self._compare(other, "ne")

    def __lt__(self, other):
        return self._compare(other, "lt")

    def __le__(self, other):
        return self._compare(other, "le")

    def __gt__(self, other):
        return self._compare(other, "gt")

    def __ge__(self, other):
        return self._compare(other, "ge")

    def __bool__(self) -> bool:
        return compare(self, "ne")

    def __int__(self) -> int:
        """Pins the value to the hint (a guard): correct, no longer generic."""
        compare(self - self.hint, "eq")
        return self.hint

    __index__ = __int__

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self.terms)
        return self._hash

    def __repr__(self) -> str:
        parts = []
        for mono, c in self.terms:
            names = "*".join(a.key for a in mono)
            if not names:
                parts.append(str(c))
            elif c == 1:
                parts.append(names)
            else:
                parts.append(f"{c}*{names}")
        return " + ".join(parts).replace("+ -", "- ")

    __str__ = __repr__


def _divide_exactly(x: SymInt, d):
    """``x / d`` when ``d`` is a positive int or a single term with a positive coefficient over
    nonnegative atoms, and divides every term of ``x`` (``64*B // B`` is 64), else None.
    (A zero divisor is excluded by the guard that any use of the quotient needs.)"""
    if isinstance(d, int):
        if d > 0 and all(c % d == 0 for _, c in x.terms):
            return SymInt.make({m: c // d for m, c in x.terms})
        return None
    if len(d.terms) != 1:
        return None
    (dmono, dc), = d.terms
    if dc <= 0 or not all(a.nonneg for a in dmono):
        return None
    out: dict = {}
    for mono, c in x.terms:
        rest = list(mono)
        for a in dmono:
            if a not in rest:
                return None
            rest.remove(a)
        if c % dc:
            return None
        out[tuple(rest)] = out.get(tuple(rest), 0) + c // dc
    return SymInt.make(out)


def _as_terms(x) -> dict:
    return dict(x.terms) if isinstance(x, SymInt) else ({(): x} if x else {})


def _opaque(kind: str, *args) -> SymInt:
    hints = [a.hint if isinstance(a, SymInt) else a for a in args]
    if kind == "floordiv":
        hint = hints[0] // hints[1] if hints[1] else 0
    elif kind == "mod":
        hint = hints[0] % hints[1] if hints[1] else 0
    elif kind == "max":
        hint = max(hints)
    else:
        hint = min(hints)
    nonneg = all(known_nonneg(a) for a in args)
    key = f"{kind}({', '.join(repr(a) for a in args)})"
    return SymInt({(Atom(kind, tuple(args), key, hint, nonneg),): 1})


def smax(a, b):
    """``max(a, b)`` without a guard: decided from the polynomials, or an opaque atom."""
    return _extreme("max", a, b)


def smin(a, b):
    """``min(a, b)`` without a guard (see ``smax``)."""
    return _extreme("min", a, b)


def _extreme(kind: str, a, b):
    if known_nonneg(a - b):  # a >= b
        return a if kind == "max" else b
    if known_nonneg(b - a):
        return b if kind == "max" else a
    return _opaque(kind, a, b)


# --- guard-free questions ----------------------------------------------------------------

def as_size(x):
    """A size as an int, or as the ``SymInt`` it is (a 0-d array or NumPy scalar unwrapped)."""
    if hasattr(x, "reshape") and hasattr(x, "item"):
        x = x.reshape(()).item()
    return x if isinstance(x, SymInt) else int(x)


def static_is(x, value: int) -> bool:
    """``x`` is the int ``value`` (a symbolic size never is, and no guard is recorded)."""
    return not isinstance(x, SymInt) and x == value


def is_symbolic(x) -> bool:
    return isinstance(x, SymInt)


def any_symbolic(xs) -> bool:
    return any(isinstance(x, SymInt) for x in xs)


def hint(x) -> int:
    """A size's value for the call code is generated for.  Only for choices that cannot
    change results (loops or BLAS, streaming stores): those need no guard."""
    return x.hint if isinstance(x, SymInt) else x


def known_nonneg(x) -> bool:
    """True when ``x >= 0`` for every value of its leaves (coefficients and atoms all >= 0)."""
    if not isinstance(x, SymInt):
        return x >= 0
    return all(c >= 0 and all(a.nonneg for a in mono) for mono, c in x.terms)


def known_equal(a, b) -> bool:
    """True when ``a`` and ``b`` are the same polynomial (equal for every leaf value)."""
    d = a - b
    return not isinstance(d, SymInt) and d == 0


def maybe_one(x) -> bool:
    """False only when ``x`` is provably not 1 (a static int other than 1)."""
    return isinstance(x, SymInt) or x == 1


def compare(diff, op: str) -> bool:
    """``diff <op> 0``, decided from the polynomial when it can be, else from the hint with a
    guard recorded."""
    if not isinstance(diff, SymInt):
        return _OPS[op](diff, 0)
    if known_nonneg(diff):
        positive = _known_positive(diff)
        if op == "ge" or (op == "gt" and positive) or (op == "ne" and positive):
            return True
        if op == "lt" or (op in ("le", "eq") and positive):
            return False
    if known_nonneg(-diff):
        negative = _known_positive(-diff)
        if op == "le" or (op == "lt" and negative) or (op == "ne" and negative):
            return True
        if op == "gt" or (op in ("ge", "eq") and negative):
            return False
    result = _OPS[op](diff.hint, 0)
    if _guards is None:
        raise NotGeneric(f"a decision on the symbolic size {diff} outside code generation")
    _guards.append((diff, op if result else _NEGATE[op]))
    return result


def _known_positive(x: SymInt) -> bool:
    const = dict(x.terms).get((), 0)
    return const > 0


# --- evaluation and code ---------------------------------------------------------------

def evaluate(x, values) -> int:
    """The value of ``x`` for run-time sizes ``values`` (leaf index -> int)."""
    if not isinstance(x, SymInt):
        return int(x)
    return sum(c * math.prod(_atom_value(a, values) for a in mono) for mono, c in x.terms)


def _atom_value(a: Atom, values) -> int:
    if a.kind == "leaf":
        return int(values[a.args[0]])
    args = [evaluate(v, values) for v in a.args]
    if a.kind == "floordiv":
        return args[0] // args[1] if args[1] else 0
    if a.kind == "mod":
        return args[0] % args[1] if args[1] else 0
    return max(args) if a.kind == "max" else min(args)


def guards_hold(guards: list, values) -> bool:
    return all(_OPS[op](evaluate(diff, values), 0) for diff, op in guards)


def leaves_of(xs) -> set[int]:
    """The leaf indices the sizes ``xs`` depend on."""
    found: set[int] = set()

    def visit(x):
        if isinstance(x, SymInt):
            for mono, _ in x.terms:
                for a in mono:
                    if a.kind == "leaf":
                        found.add(a.args[0])
                    else:
                        for v in a.args:
                            visit(v)
    for x in xs:
        visit(x)
    return found


def pinned(guards: list) -> set[int]:
    """Leaves a guard fixes to one value (``d - 7 == 0``): the code is not generic in them."""
    out = set()
    for diff, op in guards:
        if op == "eq" and len(leaves_of([diff])) == 1:
            out |= leaves_of([diff])
    return out


def to_expr(x):
    """The int64 scalar-IR expression of a size (``dim`` leaves for run-time sizes)."""
    from ._scalar import S
    if not isinstance(x, SymInt):
        return S.const(int(x), "int64")
    total = None
    for mono, c in x.terms:
        term = None
        for a in mono:
            e = _atom_expr(a)
            term = e if term is None else S.apply("mul", term, e)
        if term is None:
            term = S.const(c, "int64")
        elif c != 1:
            term = S.apply("mul", S.const(c, "int64"), term)
        total = term if total is None else S.apply("add", total, term)
    return total


def dim_expr(index: int):
    from ._scalar import S
    return S.SExpr("dim", (), int(index), "int64")


def _atom_expr(a: Atom):
    from ._scalar import S
    if a.kind == "leaf":
        return dim_expr(a.args[0])
    args = [to_expr(v) for v in a.args]
    op = {"floordiv": "floordiv", "mod": "mod", "max": "maximum", "min": "minimum"}[a.kind]
    return S.apply(op, *args)


def prod(xs):
    """The product of sizes (ints stay ints)."""
    out = 1
    for x in xs:
        out = out * x
    return out


def slice_indices(start, stop, step, d) -> tuple:
    """``slice(start, stop, step).indices(d)`` plus the slice's length, for a size ``d`` that
    may be symbolic (bounds are ints or None).  A full slice asks nothing; a bound compared
    with a symbolic size is a guard."""
    if not isinstance(d, SymInt):
        r = range(*slice(start, stop, step).indices(d))
        return r.start, r.stop, r.step, len(r)
    step = 1 if step is None else int(step)
    if step == 0:
        raise ValueError("slice step cannot be zero")
    lo, hi = (0, d) if step > 0 else (-1, d - 1)

    def clip(bound, default):
        if bound is None:
            return default
        bound = int(bound)
        if bound < 0:
            bound = bound + d
            return bound if bound >= lo else lo
        return bound if bound <= hi else hi

    first = clip(start, lo if step > 0 else hi)
    last = clip(stop, hi if step > 0 else lo)
    span = last - first if step > 0 else first - last
    if not known_nonneg(span) and span < 0:
        return first, last, step, 0
    size = span if abs(step) == 1 else (span + abs(step) - 1) // abs(step)
    return first, last, step, size
