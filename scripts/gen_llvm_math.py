"""Generate ``kernels/llvm/math.ll``: symgraph's vectorisable math helpers in LLVM IR text.

Run ``python scripts/gen_llvm_math.py`` (needs mpmath, which sympy brings) to refit the
polynomials and rewrite the file. Every polynomial is fitted here: a near-minimax fit by
iteratively reweighted least squares (Lawson's algorithm) on Chebyshev nodes at 60 digits, then
rounded to the target precision; the script prints each fit's error after rounding.

Each function is emitted straight-line (``select`` instead of branches, no calls: shared pieces
such as the exp and log cores are emitted inline by the Python helpers below), so that a loop
calling it vectorises once it is inlined.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import mpmath as mp

mp.mp.dps = 60
OUT = Path(__file__).resolve().parent.parent / "kernels" / "llvm" / "math.ll"

# ---------------------------------------------------------------------------------------------
# polynomial fitting


def fit(f, a, b, deg, basis=lambda t: t, weight=lambda t: 1, iters=4):
    """Coefficients c (low order first) of sum c_k basis(t)^k ~ f(t) on [a, b], near-minimax in
    the weighted error weight(t)*|f - p|."""
    n = 6 * (deg + 1) + 40
    a, b = mp.mpf(a), mp.mpf(b)
    ts = [a + (b - a) * (1 - mp.cos(mp.pi * (i + mp.mpf(0.5)) / n)) / 2 for i in range(n)]
    fs = [f(t) for t in ts]
    ws = [mp.mpf(weight(t)) for t in ts]
    us = [basis(t) for t in ts]
    lw = [mp.mpf(1)] * n
    c = None
    for _ in range(iters):
        A = mp.matrix(n, deg + 1)
        B = mp.matrix(n, 1)
        for i in range(n):
            s = mp.sqrt(lw[i]) * ws[i]
            for k in range(deg + 1):
                A[i, k] = s * us[i] ** k
            B[i] = s * fs[i]
        c = mp.qr_solve(A, B)[0]
        errs = [abs(ws[i] * (fs[i] - sum(c[k] * us[i] ** k for k in range(deg + 1)))) for i in range(n)]
        tot = sum(lw[i] * errs[i] for i in range(n))
        lw = [lw[i] * errs[i] / tot * n for i in range(n)]
    return [c[k] for k in range(deg + 1)]


def ratfit(f, a, b, m, k, iters=12):
    """(P, Q) with Q[0] = 1 and P(t)/Q(t) ~ f(t) on [a, b], near-minimax in relative error
    (Loeb's linearisation with Lawson reweighting)."""
    n = 8 * (m + k + 2) + 60
    a, b = mp.mpf(a), mp.mpf(b)
    ts = [a + (b - a) * (1 - mp.cos(mp.pi * (i + mp.mpf(0.5)) / n)) / 2 for i in range(n)]
    fs = [f(t) for t in ts]
    qprev = [mp.mpf(1)] * n
    lw = [mp.mpf(1)] * n
    P = Q = None
    for _ in range(iters):
        A = mp.matrix(n, m + 1 + k)
        B = mp.matrix(n, 1)
        for i, t in enumerate(ts):
            w = mp.sqrt(lw[i]) / (abs(fs[i]) * qprev[i])
            for j in range(m + 1):
                A[i, j] = w * t**j
            for j in range(1, k + 1):
                A[i, m + j] = -w * fs[i] * t**j
            B[i] = w * fs[i]
        c = mp.qr_solve(A, B)[0]
        P = [c[j] for j in range(m + 1)]
        Q = [mp.mpf(1)] + [c[m + j] for j in range(1, k + 1)]
        qprev = [abs(sum(q * t**j for j, q in enumerate(Q))) for t in ts]
        errs = [abs(sum(p * t**j for j, p in enumerate(P)) / qprev[i] / fs[i] - 1) for i, t in enumerate(ts)]
        tot = sum(lw[i] * errs[i] for i in range(n))
        lw = [lw[i] * errs[i] / tot * n for i in range(n)]
    return P, Q


def check(name, f, a, b, coeffs, basis=lambda t: t, weight=lambda t: 1):
    """Print the weighted error of the rounded polynomial on a dense grid."""
    worst = mp.mpf(0)
    for i in range(1001):
        t = mp.mpf(a) + (mp.mpf(b) - a) * i / 1000
        u = basis(t)
        p = sum(mp.mpf(c) * u**k for k, c in enumerate(coeffs))
        worst = max(worst, abs(weight(t) * (f(t) - p)))
    print(f"  {name:<14} degree {len(coeffs) - 1:2d}  error {mp.nstr(worst, 3)}", file=sys.stderr)


def _s(z):
    return mp.sqrt(z)


def q_exp(r):  # (e^r - 1 - r) / r^2
    return (mp.exp(r) - 1 - r) / r**2 if r else mp.mpf(1) / 2


def g_tanh(z):  # tanh(x)/x with z = x^2
    return mp.tanh(_s(z)) / _s(z) if z else mp.mpf(1)


def g_erf(z):  # erf(x)/x with z = x^2
    return mp.erf(_s(z)) / _s(z) if z else 2 / mp.sqrt(mp.pi)


def p_log1p(t):  # log1p(t)/t on [0, 1] (float softplus)
    return mp.log1p(t) / t if t else mp.mpf(1)


def r_log(z):  # (2 atanh(s)/s - 2) / z with z = s^2
    return (2 * mp.atanh(_s(z)) / _s(z) - 2) / z if z else mp.mpf(2) / 3


def p_tanh(z):  # (tanh(x)/x - 1) / z with z = x^2
    return (mp.tanh(_s(z)) / _s(z) - 1) / z if z else -mp.mpf(1) / 3


def p_erf(z):  # erf(x)/x with z = x^2
    return mp.erf(_s(z)) / _s(z) if z else 2 / mp.sqrt(mp.pi)


def r_erfc(a):  # erfc(a) e^(a^2)
    return mp.erfc(a) * mp.exp(a * a)


def s_sin(z):  # (sin(r)/r - 1) / z
    return (mp.sin(_s(z)) / _s(z) - 1) / z if z else -mp.mpf(1) / 6


def c_cos(z):  # (cos(r) - 1 + z/2) / z^2
    return (mp.cos(_s(z)) - 1 + z / 2) / z**2 if z else mp.mpf(1) / 24


def rel(f):
    return lambda t: 1 / abs(f(t))


# ---------------------------------------------------------------------------------------------
# types and constants


@dataclass(frozen=True)
class Ty:
    name: str  # float / double
    ity: str  # i32 / i64
    bits: int
    mant: int  # explicit mantissa bits
    suffix: str  # "f" / ""

    @property
    def bias(self) -> int:
        return (1 << (self.bits - self.mant - 2)) - 1

    def rnd(self, v) -> float:
        """v rounded to this type, as a Python float."""
        v = float(mp.mpf(v))
        if self.bits == 32:
            return struct.unpack("<f", struct.pack("<f", v))[0]
        return v

    def lit(self, v) -> str:
        """An LLVM literal for v rounded to this type (hex: exact for float and double)."""
        if isinstance(v, str):
            return v
        fv = self.rnd(v)
        if fv != fv:
            return "0x7FF8000000000000"
        return "0x{:016X}".format(struct.unpack("<Q", struct.pack("<d", fv))[0])

    def magic(self) -> float:
        return 1.5 * 2.0**self.mant

    def magic_bits(self) -> int:
        return struct.unpack("<I" if self.bits == 32 else "<Q",
                             struct.pack("<f" if self.bits == 32 else "<d", self.magic()))[0]


F32 = Ty("float", "i32", 32, 23, "f")
F64 = Ty("double", "i64", 64, 52, "")
INF = float("inf")
NAN = float("nan")


def split_bits(v, nbits: int) -> float:
    """v rounded to nbits significant bits (the head of a Cody-Waite constant)."""
    v = mp.mpf(v)
    e = int(mp.floor(mp.log(abs(v), 2)))
    scale = mp.mpf(2) ** (nbits - 1 - e)
    return float(mp.nint(v * scale) / scale)


# ---------------------------------------------------------------------------------------------
# an IR emitter for one function


class Fn:
    """Straight-line IR for one function; every method returns the SSA name of its result."""

    def __init__(self, ty: Ty):
        self.t = ty
        self.lines: list[str] = []
        self.n = 0
        self.intrinsics: set[str] = set()

    def _new(self, rhs: str) -> str:
        self.n += 1
        name = f"%t{self.n}"
        self.lines.append(f"  {name} = {rhs}")
        return name

    def comment(self, text: str) -> None:
        self.lines.append(f"  ; {text}")

    def k(self, v) -> str:
        return self.t.lit(v)

    # float arithmetic (contract lets LLVM fuse into FMA where that only adds accuracy)
    def bin(self, op, a, b, flags="contract", ty=None):
        ty = ty or self.t
        return self._new(f"{op} {flags + ' ' if flags else ''}{ty.name} {ty.lit(a)}, {ty.lit(b)}")

    def mul(self, a, b, flags="contract"):
        return self.bin("fmul", a, b, flags)

    def add(self, a, b, flags="contract"):
        return self.bin("fadd", a, b, flags)

    def sub(self, a, b, flags="contract"):
        return self.bin("fsub", a, b, flags)

    def div(self, a, b):
        return self.bin("fdiv", a, b, "")

    def neg(self, a):
        return self._new(f"fneg {self.t.name} {a}")

    def fcmp(self, pred, a, b):
        return self._new(f"fcmp {pred} {self.t.name} {self.k(a)}, {self.k(b)}")

    def sel(self, c, a, b, ty=None):
        ty = ty or self.t
        return self._new(f"select i1 {c}, {ty.name} {ty.lit(a)}, {ty.name} {ty.lit(b)}")

    def isel(self, c, a, b):
        return self._new(f"select i1 {c}, {self.t.ity} {a}, {self.t.ity} {b}")

    def band(self, a, b, ty="i1"):
        return self._new(f"and {ty} {a}, {b}")

    def bor(self, a, b, ty="i1"):
        return self._new(f"or {ty} {a}, {b}")

    def bnot(self, a):
        return self._new(f"xor i1 {a}, true")

    def iop(self, op, a, b):
        return self._new(f"{op} {self.t.ity} {a}, {b}")

    def to_int(self, a):
        return self._new(f"bitcast {self.t.name} {a} to {self.t.ity}")

    def to_fp(self, a):
        return self._new(f"bitcast {self.t.ity} {a} to {self.t.name}")

    def intrinsic(self, name, *args):
        full = f"llvm.{name}.{'f32' if self.t.bits == 32 else 'f64'}"
        self.intrinsics.add(f"declare {self.t.name} @{full}({', '.join([self.t.name] * len(args))})")
        joined = ", ".join(f"{self.t.name} {self.k(a)}" for a in args)
        return self._new(f"call {self.t.name} @{full}({joined})")

    def fabs(self, a):
        return self.intrinsic("fabs", a)

    def copysign(self, a, b):
        return self.intrinsic("copysign", a, b)

    def horner(self, x, coeffs):
        """c0 + x*(c1 + x*(c2 + ...)) with contract (fused multiply-adds)."""
        acc = self.k(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.add(self.mul(acc, x), self.k(c))
        return acc

    def min_(self, a, hi):  # nan-preserving clamp from above
        return self.sel(self.fcmp("ogt", a, hi), self.k(hi), a)

    def max_(self, a, lo):  # nan-preserving clamp from below
        return self.sel(self.fcmp("olt", a, lo), self.k(lo), a)

    def int_to_fp_small(self, i):
        """An integer |i| < 2^(mant-1) as a float, by the magic-number trick (exact, vectorises
        everywhere, unlike i64 -> double conversion on AVX2)."""
        b = self.iop("add", i, str(self.t.magic_bits()))
        return self.sub(self.to_fp(b), self.k(self.t.magic()), "")

    def rint_reduce(self, x, scale):
        """(n as float, n as int) with n = round-to-nearest(x*scale), for |x*scale| < 2^(mant-1)."""
        v = self.add(self.mul(x, self.k(scale)), self.k(self.t.magic()))
        nf = self.sub(v, self.k(self.t.magic()), "")
        ni = self.iop("sub", self.to_int(v), str(self.t.magic_bits()))
        return nf, ni

    def pow2(self, ni):
        """2^ni for ni in the normal exponent range, built from the bits."""
        e = self.iop("add", ni, str(self.t.bias))
        return self.to_fp(self.iop("shl", e, str(self.t.mant)))


# ---------------------------------------------------------------------------------------------
# coefficients per type


@dataclass
class Consts:
    """Rounded coefficients, low order first; a list is empty where that type does not use it."""

    expq: list  # expm1(r) = r + r^2 expq(r)
    logr: list  # log core: R(z) = z logr(z), z = s^2
    sins: list
    cosc: list
    tanh_p: list = field(default_factory=list)  # float: tanh = x tanh_p(z)/tanh_q(z)
    tanh_q: list = field(default_factory=list)
    erf_p: list = field(default_factory=list)  # float: erf = x erf_p(z)/erf_q(z)
    erf_q: list = field(default_factory=list)
    log1p01: list = field(default_factory=list)  # float softplus: log1p(t) = t log1p01(t), t in [0,1]
    tanhp: list = field(default_factory=list)  # double: tanh = x + x z tanhp(z) for |x| < TANH_SMALL
    erfp: list = field(default_factory=list)  # double: erf = x erfp(z) for |x| < ERF_SMALL
    erfc: list = field(default_factory=list)  # double: erfc(a) = e^(-a^2) erfc(1/(1+a)) beyond


def make_consts(t: Ty) -> Consts:
    dbl = t.bits == 64
    zlog = float(((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2) * 1.01
    zsin = float((mp.pi / 4) ** 2) * 1.01
    specs = {
        "expq": (q_exp, -0.3466, 0.3466, 10 if dbl else 4, None, rel(q_exp)),
        "logr": (r_log, 0, zlog, 6 if dbl else 3, None, rel(r_log)),
        "sins": (s_sin, 0, zsin, 6 if dbl else 3, None, rel(s_sin)),
        "cosc": (c_cos, 0, zsin, 6 if dbl else 3, None, rel(c_cos)),
    }
    if dbl:
        specs["tanhp"] = (p_tanh, 0, TANH_SMALL**2, 10, None, rel(p_tanh))
        specs["erfp"] = (p_erf, 0, ERF_SMALL**2, 12, None, rel(p_erf))
        specs["erfc"] = (r_erfc, ERF_SMALL, ERF_BIG[64], 13, lambda a: 1 / (1 + a), lambda a: mp.exp(-a * a))
    else:
        specs["log1p01"] = (p_log1p, 0, 1, 9, None, rel(p_log1p))
    out = {}
    print(f"{t.name}:", file=sys.stderr)
    if not dbl:  # float tanh and erf are rational (double uses the exp forms)
        rational = (("tanh", g_tanh, TANH_RATIONAL_CLAMP, 5, 4), ("erf", g_erf, ERF_BIG[32], 6, 5))
        for key, f, top, m, k in rational:
            P, Q = ratfit(f, 0, top**2, m, k)
            P, Q = [t.rnd(c) for c in P], [t.rnd(c) for c in Q]
            out[key + "_p"], out[key + "_q"] = P, Q
            worst = max(abs(sum(mp.mpf(c) * z**j for j, c in enumerate(P))
                            / sum(mp.mpf(c) * z**j for j, c in enumerate(Q)) / f(z) - 1)
                        for z in (top**2 * mp.mpf(i) / 2000 for i in range(2001)))
            print(f"  {key + ' P/Q':<14} degree {m}/{k}  error {mp.nstr(worst, 3)}", file=sys.stderr)
    for key, (f, a, b, deg, basis, weight) in specs.items():
        kw = {"weight": weight}
        if basis is not None:
            kw["basis"] = basis
        coeffs = [t.rnd(c) for c in fit(f, a, b, deg, **kw)]
        check(key, f, a, b, coeffs, **kw)
        out[key] = coeffs
    return Consts(**out)


TANH_SMALL = 0.55
TANH_RATIONAL_CLAMP = 9.02  # float tanh rounds to +-1 beyond 9.01
SINCOS_LIMIT = {32: 6.5e6, 64: 3.5e15}  # |x| * 2/pi stays below 2^(mant-1)
ERF_SMALL = 1.0
ERF_BIG = {32: 4.0, 64: 6.0}  # erf(x) rounds to 1 beyond these

# ---------------------------------------------------------------------------------------------
# shared cores (emitted inline)


def exp_clamp(t: Ty):
    # exp(HI) overflows, exp(LO) rounds to 0; reduction n stays inside the two-scale range
    return (89.0, -104.0) if t.bits == 32 else (710.0, -746.0)


def ln2_parts(t: Ty):
    hi = split_bits(mp.log(2), 16 if t.bits == 32 else 40)
    lo = t.rnd(mp.log(2) - hi)
    return hi, lo


def em_core(F: Fn, C: Consts, x, extra=None):
    """(r + r^2 Q(r) = expm1(r), n as int) for x already clamped; extra is a small addend of x."""
    hi, lo = ln2_parts(F.t)
    nf, ni = F.rint_reduce(x, 1 / mp.log(2))
    r = F.sub(F.sub(x, F.mul(nf, F.k(hi))), F.mul(nf, F.k(lo)))
    if extra is not None:
        r = F.add(r, extra, "")
    q = F.horner(r, C.expq)
    em = F.add(r, F.mul(F.mul(r, r), q))
    return em, ni


def exp_core(F: Fn, C: Consts, x, clamp=True, extra=None):
    F.comment("exp: n = rint(x/ln2), r = x - n*ln2 (Cody-Waite), e^r = 1 + r + r^2 Q(r), * 2^n")
    if clamp:
        hi, lo = exp_clamp(F.t)
        x = F.max_(F.min_(x, hi), lo)
    em, ni = em_core(F, C, x, extra)
    p = F.add(F.k(1.0), em)
    n1 = F.iop("ashr", ni, "1")
    n2 = F.iop("sub", ni, n1)
    return F.mul(F.mul(p, F.pow2(n1)), F.pow2(n2))


def expm1_core(F: Fn, C: Consts, x):
    F.comment("expm1 = 2^n expm1(r) + 2^n - 1 = 2 (t*em + (t - 1/2)), t = 2^(n-1)")
    hi, lo = (89.0, -80.0) if F.t.bits == 32 else (710.0, -700.0)
    xc = F.max_(F.min_(x, hi), lo)
    em, ni = em_core(F, C, xc)
    t = F.pow2(F.iop("sub", ni, "1"))
    return F.mul(F.add(F.mul(t, em), F.sub(t, F.k(0.5), "")), F.k(2.0))


def log_parts(F: Fn, C: Consts, x, denormals: bool):
    """Return (dk, f, hfsq, s_term) with log(x) = dk*ln2 + f - hfsq + s_term for x > 0 finite;
    log1p(f) = f - (hfsq - s*(hfsq + R(s^2))), s = f/(2+f), f = m - 1, m in [sqrt(1/2), sqrt(2))."""
    t = F.t
    F.comment("log: x = m 2^k with m in [sqrt(1/2), sqrt(2)), log(m) = log1p(f) via s = f/(2+f)")
    adj = None
    if denormals:
        tiny = 2.0 ** (1 - t.bias)
        den = F.fcmp("olt", x, tiny)
        x = F.sel(den, F.mul(x, F.k(2.0**t.mant), ""), x)
        adj = F.isel(den, str(t.mant), "0")
    ix = F.to_int(x)
    sqrt_half_bits = struct.unpack("<I" if t.bits == 32 else "<Q",
                                   struct.pack("<f" if t.bits == 32 else "<d", t.rnd(mp.sqrt(0.5))))[0]
    tix = F.iop("sub", ix, str(sqrt_half_bits))
    k = F.iop("ashr", tix, str(t.mant))
    mi = F.iop("sub", ix, F.iop("shl", k, str(t.mant)))
    m = F.to_fp(mi)
    if adj is not None:
        k = F.iop("sub", k, adj)
    dk = F.int_to_fp_small(k)
    f = F.sub(m, F.k(1.0), "")
    s = F.div(f, F.add(F.k(2.0), f, ""))
    z = F.mul(s, s)
    R = F.mul(z, F.horner(z, C.logr))
    hfsq = F.mul(F.mul(f, f), F.k(0.5))
    s_term = F.mul(s, F.add(hfsq, R))
    return dk, f, hfsq, s_term


def log_combine(F: Fn, dk, f, hfsq, s_term, corr=None):
    """dk*ln2_hi - ((hfsq - (s_term + dk*ln2_lo + corr)) - f)."""
    hi, lo = ln2_parts(F.t)
    low = F.add(s_term, F.mul(dk, F.k(lo)))
    if corr is not None:
        low = F.add(low, corr, "")
    inner = F.sub(F.sub(hfsq, low, ""), f, "")
    return F.sub(F.mul(dk, F.k(hi)), inner)


def log_full(F: Fn, C: Consts, x):
    dk, f, hfsq, st = log_parts(F, C, x, denormals=True)
    r = log_combine(F, dk, f, hfsq, st)
    r = F.sel(F.fcmp("oeq", x, INF), F.k(INF), r)
    r = F.sel(F.fcmp("ogt", x, 0.0), r, F.k(NAN))
    return F.sel(F.fcmp("oeq", x, 0.0), F.k(-INF), r)


def log1p_core(F: Fn, C: Consts, x):
    """log1p(x) for x > -1 finite (x = 1 + u - 1 exactly recovered by the correction term)."""
    F.comment("log1p(x) = log(u) + (x - (u - 1))/u with u = 1 + x")
    u = F.add(F.k(1.0), x, "")
    corr = F.div(F.sub(x, F.sub(u, F.k(1.0), ""), ""), u)
    dk, f, hfsq, st = log_parts(F, C, u, denormals=False)
    return log_combine(F, dk, f, hfsq, st, corr)


def sincos_core(F: Fn, C: Consts, x, cos: bool):
    t = F.t
    F.comment("n = rint(x*2/pi), r = x - n*pi/2 (4-part Cody-Waite), quadrant picks +-sin/cos(r)")
    nf, q = F.rint_reduce(x, 2 / mp.pi)
    rest = mp.pi / 2
    r = x
    for _ in range(3):
        head = split_bits(rest, 12 if t.bits == 32 else 26)
        r = F.sub(r, F.mul(nf, F.k(head)))
        rest -= head
    r = F.sub(r, F.mul(nf, F.k(t.rnd(rest))))
    z = F.mul(r, r)
    sp = F.add(r, F.mul(F.mul(r, z), F.horner(z, C.sins)))
    hz = F.mul(z, F.k(0.5))
    w = F.sub(F.k(1.0), hz)
    tail = F.add(F.sub(F.sub(F.k(1.0), w, ""), hz, ""), F.mul(z, F.mul(z, F.horner(z, C.cosc))))
    cp = F.add(w, tail, "")
    if cos:
        q = F.iop("add", q, "1")
    odd = F._new(f"trunc {t.ity} {q} to i1")
    v = F.sel(odd, cp, sp)
    sign = F.iop("shl", F.iop("and", q, "2"), str(t.bits - 2))
    res = F.to_fp(F.iop("xor", F.to_int(v), sign))
    # beyond SINCOS_LIMIT the rounding trick for n fails: answer nan rather than a wrong value
    return F.sel(F.fcmp("ogt", F.fabs(x), SINCOS_LIMIT[t.bits]), F.k(NAN), res)


# ---------------------------------------------------------------------------------------------
# the public functions


def fn_exp(F, C, x):
    return exp_core(F, C, x)


def fn_expm1(F, C, x):
    r = expm1_core(F, C, x)
    # expm1(x) rounds to x below this; also keeps denormals and the sign of zero exact
    return F.sel(F.fcmp("olt", F.fabs(x), 2.0 ** -(F.t.mant + 4)), x, r)


def fn_log(F, C, x):
    return log_full(F, C, x)


def fn_log1p(F, C, x):
    r = log1p_core(F, C, x)
    r = F.sel(F.fcmp("oeq", x, INF), F.k(INF), r)
    r = F.sel(F.fcmp("ogt", x, -1.0), r, F.k(NAN))
    r = F.sel(F.fcmp("oeq", x, -1.0), F.k(-INF), r)
    return F.sel(F.fcmp("oeq", x, 0.0), x, r)  # keeps the sign of zero


def fn_tanh(F, C, x):
    if F.t.bits == 32:
        return tanh_rational(F, C, x)
    return tanh_exp(F, C, x)


def tanh_rational(F, C, x):
    F.comment(f"tanhf = x P(x^2) / Q(x^2), x clamped to +-{TANH_RATIONAL_CLAMP:g} (one division, no exp)")
    xc = F.max_(F.min_(x, TANH_RATIONAL_CLAMP), -TANH_RATIONAL_CLAMP)
    z = F.mul(xc, xc)
    p = F.mul(xc, F.horner(z, C.tanh_p))
    r = F.div(p, F.horner(z, C.tanh_q))
    return F.max_(F.min_(r, 1.0), -1.0)  # P/Q may exceed 1 by an ulp near the clamp


def tanh_exp(F, C, x):
    F.comment(f"|x| < {TANH_SMALL:g}: x + x^3 P(x^2); else sign(x) (1 - 2/(e^(2|x|) + 1))")
    a = F.fabs(x)
    z = F.mul(x, x)
    small = F.copysign(F.add(x, F.mul(F.mul(x, z), F.horner(z, C.tanhp))), x)  # keeps tanh(-0) = -0
    ac = F.min_(a, 10.0 if F.t.bits == 32 else 20.0)
    e = exp_core(F, C, F.add(ac, ac), clamp=False)
    big = F.sub(F.k(1.0), F.div(F.k(2.0), F.add(e, F.k(1.0), "")), "")
    big = F.copysign(big, x)
    return F.sel(F.fcmp("olt", a, TANH_SMALL), small, big)


def fn_sigmoid(F, C, x):
    F.comment("t = e^-|x|: 1/(1+t) for x >= 0, t/(1+t) below (no overflow, no nan)")
    t = exp_core(F, C, F.neg(F.fabs(x)))
    s = F.div(F.k(1.0), F.add(F.k(1.0), t, ""))
    return F.sel(F.fcmp("oge", x, 0.0), s, F.mul(t, s, ""))


def fn_softplus(F, C, x):
    F.comment("softplus = max(x, 0) + log1p(e^-|x|)")
    t = exp_core(F, C, F.neg(F.fabs(x)))
    if F.t.bits == 32:  # t is in [0, 1]: log1p(t) = t P(t), no log core
        lp = F.mul(t, F.horner(t, C.log1p01))
    else:
        lp = log1p_core(F, C, t)
    m = F.sel(F.fcmp("ogt", x, 0.0), x, F.k(0.0))
    return F.add(m, lp, "")


def fn_erf(F, C, x):
    if F.t.bits == 32:
        F.comment(f"erff = x P(x^2) / Q(x^2), x clamped to +-{ERF_BIG[32]:g} (one division, no exp)")
        xc = F.max_(F.min_(x, ERF_BIG[32]), -ERF_BIG[32])
        z = F.mul(xc, xc)
        r = F.div(F.mul(xc, F.horner(z, C.erf_p)), F.horner(z, C.erf_q))
        return F.max_(F.min_(r, 1.0), -1.0)
    return erf_exp(F, C, x)


def erf_exp(F, C, x):
    F.comment(f"|x| < {ERF_SMALL:g}: x P(x^2); else sign(x) (1 - e^(-x^2) R(1/(1+|x|)))")
    a = F.fabs(x)
    z = F.mul(x, x)
    small = F.mul(x, F.horner(z, C.erfp))
    ac = F.min_(a, ERF_BIG[F.t.bits])
    u = F.div(F.k(1.0), F.add(F.k(1.0), ac, ""))
    e = exp_core(F, C, F.neg(F.mul(ac, ac, "")), clamp=False)
    big = F.sub(F.k(1.0), F.mul(e, F.horner(u, C.erfc)), "")
    big = F.copysign(big, x)
    return F.sel(F.fcmp("olt", a, ERF_SMALL), small, big)


def fn_sin(F, C, x):
    return F.sel(F.fcmp("oeq", x, 0.0), x, sincos_core(F, C, x, cos=False))  # sin(-0) = -0


def fn_cos(F, C, x):
    return sincos_core(F, C, x, cos=True)


UNARY = {
    "exp": fn_exp, "log": fn_log, "log1p": fn_log1p, "expm1": fn_expm1, "tanh": fn_tanh,
    "sigmoid": fn_sigmoid, "erf": fn_erf, "softplus": fn_softplus, "sin": fn_sin, "cos": fn_cos,
}

ATTRS = "alwaysinline mustprogress nofree norecurse nosync nounwind willreturn memory(none) speculatable"


def pow_specials(F: Fn, x, y, r):
    """C99/NumPy pow special cases around r = |x|^y computed as exp(y log|x|)."""
    t = F.t
    F.comment("pow specials: sign for odd integer y, nan for x < 0 and non-integer y, pow(x,0)=pow(1,y)=1")
    ay = F.fabs(y)
    two_m = 2.0**t.mant
    big = F.fcmp("oge", ay, two_m)  # every such float is an even integer (inf included)
    rint_y = F.sub(F.add(ay, F.k(two_m), ""), F.k(two_m), "")
    hy = F.mul(ay, F.k(0.5), "")
    rint_h = F.sub(F.add(hy, F.k(two_m), ""), F.k(two_m), "")
    isint = F.bor(big, F.fcmp("oeq", rint_y, ay))
    iseven = F.bor(big, F.fcmp("oeq", rint_h, hy))
    isodd = F.band(isint, F.bnot(iseven))
    xneg = F._new(f"icmp slt {t.ity} {F.to_int(x)}, 0")
    r = F.sel(F.band(xneg, isodd), F.neg(r), r)
    bad = F.band(F.band(F.fcmp("olt", x, 0.0), F.fcmp("one", x, -INF)), F.bnot(isint))
    r = F.sel(bad, F.k(NAN), r)
    one = F.bor(F.fcmp("oeq", y, 0.0), F.fcmp("oeq", x, 1.0))
    one = F.bor(one, F.band(F.fcmp("oeq", F.fabs(x), 1.0), F.fcmp("oeq", ay, INF)))
    return F.sel(one, F.k(1.0), r)


def fn_pow(F: Fn, C: Consts, x, y, C64: Consts):
    if F.t.bits == 32:
        F.comment("powf: exp(y log|x|) evaluated in double, rounded once to float")
        ax = F.fabs(x)
        xd = F._new(f"fpext float {ax} to double")
        yd = F._new(f"fpext float {y} to double")
        F.t = F64
        rd = exp_core(F, C64, F.mul(yd, log_full(F, C64, xd), ""))
        F.t = F32
        r = F._new(f"fptrunc double {rd} to float")
        return pow_specials(F, x, y, r)
    F.comment("pow: exp(y log|x|) with log|x| and the product carried as hi + lo (no FMA needed)")
    ax = F.fabs(x)
    hi, lo = log_hilo(F, C, ax)
    zhi = F.mul(y, hi, "")
    zlo = F.add(two_prod_err(F, y, hi, zhi), F.mul(y, lo, ""), "")
    # no correction where z is inf/nan/huge or the split overflowed (|y| near the largest double)
    ok = F.band(F.fcmp("olt", F.fabs(zhi), 1000.0), F.fcmp("olt", F.fabs(zlo), 1.0))
    zlo = F.sel(ok, zlo, F.k(0.0))
    r = exp_core(F, C, zhi, extra=zlo)
    return pow_specials(F, x, y, r)


def two_sum(F: Fn, a, b):
    """(s, e) with s + e == a + b exactly (Knuth); no contraction allowed."""
    s = F.add(a, b, "")
    bb = F.sub(s, a, "")
    e = F.add(F.sub(a, F.sub(s, bb, ""), ""), F.sub(b, bb, ""), "")
    return s, e


def split(F: Fn, a):
    c = F.mul(a, F.k(2.0**27 + 1), "")
    ah = F.sub(c, F.sub(c, a, ""), "")
    return ah, F.sub(a, ah, "")


def two_prod_err(F: Fn, a, b, p):
    """The rounding error a*b - p of p = fl(a*b) (Dekker, Veltkamp split; |a|, |b| < 2^995)."""
    ah, al = split(F, a)
    bh, bl = split(F, b)
    e = F.add(F.sub(F.mul(ah, bh, ""), p, ""), F.mul(ah, bl, ""), "")
    e = F.add(e, F.mul(al, bh, ""), "")
    return F.add(e, F.mul(al, bl, ""), "")


def log_hilo(F: Fn, C: Consts, x):
    """log(x) as hi + lo with |lo| <= ulp(hi), for x > 0 (special values: see log_full)."""
    hi2, lo2 = ln2_parts(F.t)
    dk, f, _, _ = log_parts(F, C, x, denormals=True)
    ff = F.mul(f, f, "")
    ff_lo = two_prod_err(F, f, f, ff)
    hfsq = F.mul(ff, F.k(0.5), "")
    s = F.div(f, F.add(F.k(2.0), f, ""))
    z = F.mul(s, s)
    R = F.mul(z, F.horner(z, C.logr))
    s_term = F.mul(s, F.add(hfsq, R))
    s1, e1 = two_sum(F, F.mul(dk, F.k(hi2), ""), f)
    s2, e2 = two_sum(F, s1, F.neg(hfsq))
    lo = F.add(F.add(e1, e2, ""), F.sub(s_term, F.mul(ff_lo, F.k(0.5), ""), ""), "")
    lo = F.add(lo, F.mul(dk, F.k(lo2), ""), "")
    hi = F.add(s2, lo, "")
    lo = F.sub(lo, F.sub(hi, s2, ""), "")
    log_special = log_full(F, C, x)
    fin = F.band(F.fcmp("ogt", x, 0.0), F.fcmp("olt", x, INF))
    return F.sel(fin, hi, log_special), F.sel(fin, lo, F.k(0.0))


def emit_function(name: str, t: Ty, nargs: int, body) -> tuple[str, set[str]]:
    F = Fn(t)
    args = ["%x", "%y"][:nargs]
    res = body(F, *args)
    sig = ", ".join(f"{t.name} {a}" for a in args)
    text = [f"define linkonce_odr {t.name} @{name}({sig}) {ATTRS} {{", "entry:"]
    text += F.lines
    text += [f"  ret {t.name} {res}", "}", ""]
    return "\n".join(text), F.intrinsics


def generate() -> str:
    consts = {32: make_consts(F32), 64: make_consts(F64)}
    parts = [
        "; symgraph vectorisable math helpers (generated by scripts/gen_llvm_math.py: edit that).",
        "; @sg_<fn>f(float) and @sg_<fn>(double) for exp log log1p expm1 tanh sigmoid erf softplus",
        "; sin cos, plus @sg_powf(float, float) and @sg_pow(double, double). Straight-line code",
        "; (select, no branches, no libm calls), alwaysinline + memory(none): a loop calling",
        "; them vectorises after inlining. Accuracy: docs/math-accuracy.md.",
        "",
    ]
    decls: set[str] = set()
    for fname, body in UNARY.items():
        for t in (F32, F64):
            C = consts[t.bits]
            text, intr = emit_function(f"sg_{fname}{t.suffix}", t, 1, lambda F, x, b=body, C=C: b(F, C, x))
            parts.append(text)
            decls |= intr
    for t in (F32, F64):
        C = consts[t.bits]
        text, intr = emit_function(
            f"sg_pow{t.suffix}", t, 2, lambda F, x, y, C=C: fn_pow(F, C, x, y, consts[64]))
        parts.append(text)
        decls |= intr
    parts += sorted(decls) + [""]
    return "\n".join(parts)


if __name__ == "__main__":
    OUT.write_text(generate())
    print(f"wrote {OUT}", file=sys.stderr)
