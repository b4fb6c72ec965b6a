"""The LLVM math helpers (kernels/llvm/math.ll): accuracy against NumPy float64, IEEE edge cases,
and that a loop calling them is vectorised with no libm call left."""

from __future__ import annotations

import itertools
import math
import re
import zlib

import numpy as np
import pytest

llvm = pytest.importorskip("llvmlite.binding")

from helpers import host_vector_registers  # noqa: E402

from symgraph.codegen.llvm_math import (  # noqa: E402
    BINARY_FUNCTIONS,
    UNARY_FUNCTIONS,
    MathLoops,
    function_name,
    function_names,
    intrinsic_declarations,
    loop_ir,
    math_ir,
)

EPS32, EPS64 = 2.0**-23, 2.0**-52
N = 100_000

# Maximum relative error, in units of eps (2^-23 float, 2^-52 double), against NumPy float64.
# Measured over 10^6 points by benchmarks/math_accuracy.py (docs/math-accuracy.md), plus margin.
# The float64 bounds include NumPy's own error (it is the reference).
BOUND32 = {"exp": 1.5, "log": 1.5, "log1p": 1.5, "expm1": 2, "tanh": 3, "sigmoid": 2.5,
           "erf": 3, "softplus": 2, "sin": 2.5, "cos": 2.5, "pow": 1}
BOUND64 = {"exp": 2, "log": 2, "log1p": 2, "expm1": 2, "tanh": 3, "sigmoid": 3, "erf": 3,
           "softplus": 3, "sin": 2, "cos": 2, "pow": 3}
RANGE = {"exp": (-100, 100), "log": (0, 100), "log1p": (-1, 10), "expm1": (-30, 30),
         "tanh": (-10, 10), "sigmoid": (-40, 40), "erf": (-6, 6), "softplus": (-40, 40),
         "sin": (-50, 50), "cos": (-50, 50)}
SINCOS_LIMIT = {np.float32: 6.5e6, np.float64: 3.5e15}


def _erf(x):
    return np.frompyfunc(math.erf, 1, 1)(x).astype(np.float64)


def _sigmoid(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


REF = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh,
       "sigmoid": _sigmoid, "erf": _erf, "softplus": lambda x: np.logaddexp(0.0, x),
       "sin": np.sin, "cos": np.cos}


@pytest.fixture(scope="module")
def loops():
    return MathLoops()


def rel_err(got, ref, dtype):
    """Relative error (absolute below the smallest normal); 0 where both are the same inf/nan."""
    ref = np.asarray(ref, dtype=np.float64)
    with np.errstate(over="ignore"):
        rounded = ref.astype(dtype).astype(np.float64)
    ref = np.where(np.isinf(rounded), rounded, ref)  # overflow in dtype is correct
    got = got.astype(np.float64)
    with np.errstate(invalid="ignore"):
        err = np.abs(got - ref) / np.maximum(np.abs(ref), np.finfo(dtype).tiny)
    err[(got == ref) | (np.isnan(got) & np.isnan(ref))] = 0
    err[np.isnan(err)] = np.inf
    return err


def points(fn, dtype, rng):
    """Working range, all magnitudes (denormal to max) with both signs, and the edges."""
    fi = np.finfo(dtype)
    top = math.log10(SINCOS_LIMIT[dtype]) if fn in ("sin", "cos") else math.log10(float(fi.max))
    mags = 10.0 ** rng.uniform(math.log10(float(fi.smallest_subnormal)), top, N // 2)
    edges = [0.0, 1e-30, float(fi.tiny), float(fi.tiny) / 3, float(fi.smallest_subnormal), 1e30,
             float(fi.max), np.inf]
    edges = [e for e in edges if not (fn in ("sin", "cos") and e > SINCOS_LIMIT[dtype])]
    x = np.concatenate([rng.uniform(*RANGE[fn], N // 2), mags * rng.choice([-1, 1], mags.size),
                        edges, np.negative(edges), [np.nan]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fn", UNARY_FUNCTIONS)
def test_accuracy_against_numpy(loops, fn, dtype):
    rng = np.random.default_rng(zlib.crc32(f"{fn}{np.dtype(dtype).name}".encode()))
    x = points(fn, dtype, rng)
    got = loops(function_name(fn, np.dtype(dtype).name), x)
    with np.errstate(all="ignore"):
        ref = REF[fn](x.astype(np.float64))
    err = rel_err(got, ref, dtype)
    bound = (BOUND32 if dtype == np.float32 else BOUND64)[fn] * (EPS32 if dtype == np.float32 else EPS64)
    i = int(np.argmax(err))
    assert err[i] <= bound, f"{fn}: x={x[i]!r} got {got[i]!r} want {ref[i]!r} (rel err {err[i]:.3g})"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_ieee_edges(loops, dtype):
    """inf/nan/zero behave like NumPy (bit-exact where NumPy's answer is exact)."""
    inf, nan = np.inf, np.nan
    cases = {
        "exp": [(inf, inf), (-inf, 0.0), (nan, nan), (0.0, 1.0), (1000.0, inf), (-1000.0, 0.0)],
        "log": [(0.0, -inf), (-0.0, -inf), (-1.0, nan), (inf, inf), (-inf, nan), (nan, nan), (1.0, 0.0)],
        "log1p": [(-1.0, -inf), (-2.0, nan), (inf, inf), (nan, nan), (0.0, 0.0), (-0.0, -0.0)],
        "expm1": [(inf, inf), (-inf, -1.0), (nan, nan), (0.0, 0.0), (-0.0, -0.0), (-1000.0, -1.0)],
        "tanh": [(inf, 1.0), (-inf, -1.0), (nan, nan), (0.0, 0.0), (-0.0, -0.0), (1e30, 1.0)],
        "sigmoid": [(inf, 1.0), (-inf, 0.0), (nan, nan), (0.0, 0.5), (1e30, 1.0), (-1e30, 0.0)],
        "erf": [(inf, 1.0), (-inf, -1.0), (nan, nan), (0.0, 0.0), (-0.0, -0.0), (1e30, 1.0)],
        "softplus": [(inf, inf), (-inf, 0.0), (nan, nan), (1e30, 1e30), (-1e30, 0.0)],
        "sin": [(inf, nan), (-inf, nan), (nan, nan), (0.0, 0.0), (-0.0, -0.0)],
        "cos": [(inf, nan), (-inf, nan), (nan, nan), (0.0, 1.0), (-0.0, 1.0)],
    }
    for fn, pairs in cases.items():
        x = np.array([p[0] for p in pairs], dtype=dtype)
        want = np.array([p[1] for p in pairs], dtype=dtype)
        got = loops(function_name(fn, np.dtype(dtype).name), x)
        ok = ((got == want) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got) & np.isnan(want))
        assert ok.all(), f"{fn}: x={x[~ok]} got {got[~ok]} want {want[~ok]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_sin_cos_near_multiples_of_pi(loops, dtype):
    """Absolute error at k*pi/2 (where the relative error of a zero result is meaningless)."""
    k = np.arange(-20000, 20001)
    x = (k * (np.pi / 2)).astype(dtype)
    x = np.concatenate([x, np.nextafter(x, np.inf)])
    eps = EPS32 if dtype == np.float32 else EPS64
    for fn, ref in (("sin", np.sin), ("cos", np.cos)):
        got = loops(function_name(fn, np.dtype(dtype).name), x)
        err = np.abs(got.astype(np.float64) - ref(x.astype(np.float64)))
        assert err.max() <= eps, f"{fn}: absolute error {err.max():.3g} at x={x[np.argmax(err)]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_tiny_arguments_are_accurate(loops, dtype):
    """expm1/log1p/tanh/erf/sin keep full relative accuracy for tiny and denormal x."""
    fi = np.finfo(dtype)
    mags = np.geomspace(float(fi.smallest_subnormal) * 8, 1e-3, 2000)
    x = np.concatenate([mags, -mags]).astype(dtype)
    eps = EPS32 if dtype == np.float32 else EPS64
    for fn in ("expm1", "log1p", "tanh", "erf", "sin"):
        got = loops(function_name(fn, np.dtype(dtype).name), x)
        err = rel_err(got, REF[fn](x.astype(np.float64)), dtype)
        assert err.max() <= 2 * eps, f"{fn}: x={x[np.argmax(err)]!r} rel err {err.max():.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_pow(loops, dtype):
    rng = np.random.default_rng(7)
    name = function_name("pow", np.dtype(dtype).name)
    x = np.concatenate([np.exp(rng.uniform(-20, 20, N // 2)), -np.exp(rng.uniform(-4, 4, N // 2))])
    y = np.concatenate([rng.uniform(-20, 20, N // 2), np.round(rng.uniform(-25, 25, N // 2))])
    x, y = x.astype(dtype), y.astype(dtype)
    got = loops(name, x, y)
    xd, yd = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(all="ignore"):
        err = rel_err(got, np.power(xd, yd), dtype)
    bound = BOUND32["pow"] * EPS32 if dtype == np.float32 else BOUND64["pow"] * EPS64
    i = int(np.argmax(err))
    assert err[i] <= bound, f"pow({x[i]!r}, {y[i]!r}) = {got[i]!r}, rel err {err[i]:.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_pow_special_cases_match_numpy(loops, dtype):
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5, np.inf, -np.inf,
            np.nan, 1e-30, -7.0, 1e30]
    x, y = np.array(list(itertools.product(vals, vals)), dtype=dtype).T
    got = loops(function_name("pow", np.dtype(dtype).name), x, y)
    with np.errstate(all="ignore"):
        want = np.power(x, y)
    eps = EPS32 if dtype == np.float32 else EPS64
    with np.errstate(invalid="ignore"):
        close = np.abs(got - want) <= 64 * eps * np.abs(want)  # finite results: accuracy is tested above
    ok = (((got == want) | close) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got) & np.isnan(want))
    bad = [(a, b, c, d) for a, b, c, d, k in zip(x, y, got, want, ok) if not k]
    assert not bad, f"pow(x, y) got vs numpy: {bad[:8]}"


@pytest.fixture(scope="module")
def loops_without_fma():
    pairs = [(f, d) for f in ("sin", "cos", "exp", "log", "pow") for d in ("float32", "float64")]
    return MathLoops(pairs, features=llvm.get_host_cpu_features().flatten() + ",-fma")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_accuracy_does_not_depend_on_fma(loops_without_fma, dtype):
    """Compiled with FMA disabled (no contraction possible): exp/log/pow keep their accuracy (pow's
    error-free transforms need no FMA); sin/cos keep it where their Cody-Waite products are exact
    without FMA, |x| < 2^12 pi/2 (float) and 2^27 pi/2 (double) (docs/math-accuracy.md)."""
    asm = loops_without_fma.assembly()
    assert "vfmadd" not in asm
    rng = np.random.default_rng(11)
    eps = EPS32 if dtype == np.float32 else EPS64
    dt = np.dtype(dtype).name
    no_fma_limit = 6400.0 if dtype == np.float32 else 2.1e8
    for fn in ("sin", "cos", "exp", "log"):
        x = points(fn, dtype, rng)
        if fn in ("sin", "cos"):
            x = x[~(np.abs(x) > no_fma_limit)]
        got = loops_without_fma(function_name(fn, dt), x)
        with np.errstate(all="ignore"):
            err = rel_err(got, REF[fn](x.astype(np.float64)), dtype)
        assert err.max() <= 3 * eps, f"{fn}: x={x[np.argmax(err)]!r} rel err {err.max():.3g}"
    x = np.exp(rng.uniform(-20, 20, N // 4)).astype(dtype)
    y = rng.uniform(-20, 20, N // 4).astype(dtype)
    with np.errstate(all="ignore"):
        err = rel_err(loops_without_fma(function_name("pow", dt), x, y),
                      np.power(x.astype(np.float64), y.astype(np.float64)), dtype)
    assert err.max() <= 3 * eps


def _loop_asm(asm: str, name: str) -> str:
    m = re.search(rf"^loop_{name}:(.*?)^\.Lfunc_end", asm, re.S | re.M)
    assert m, f"loop_{name} missing from the assembly"
    return m.group(1)


def test_loops_vectorise_without_calls(loops):
    """After inlining, a loop over sg_expf is vectorised (256 bits or wider on AVX2 and AVX-512
    hosts) and calls nothing."""
    asm = loops.assembly()
    for name in function_names():
        body = _loop_asm(asm, name)
        assert not re.search(r"\bcall", body), f"loop_{name} still calls: {re.findall(r'call.*', body)[:3]}"
    exp_body = _loop_asm(asm, "sg_expf")
    assert "expf" not in exp_body
    registers = host_vector_registers()
    if registers is None:
        pytest.skip("host CPU has no AVX2: vector width not checked; no-call check passed")
    for name in function_names():
        assert re.search(registers, _loop_asm(asm, name)), f"loop_{name} is not vectorised"


def test_link_into_an_llvmlite_ir_module():
    """The backend's route: declare the helper in an llvmlite.ir module, link math_ir in, O3."""
    import ctypes

    import llvmlite.ir as ir

    f32, i64 = ir.FloatType(), ir.IntType(64)
    mod = ir.Module("kernel")
    helper = ir.Function(mod, ir.FunctionType(f32, [f32]), "sg_tanhf")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ir.PointerType(), ir.PointerType(), i64]), "kern")
    out, inp, n = fn.args
    for a in (out, inp):
        a.add_attribute("noalias")
    entry, loop, done = (fn.append_basic_block(s) for s in ("entry", "loop", "exit"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, ir.Constant(i64, 0)), loop, done)
    b = ir.IRBuilder(loop)
    i = b.phi(i64)
    x = b.load(b.gep(inp, [i], inbounds=True, source_etype=f32), typ=f32)
    b.store(b.call(helper, [x]), b.gep(out, [i], inbounds=True, source_etype=f32))
    nxt = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(ir.Constant(i64, 0), entry)
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("==", nxt, n), done, loop)
    ir.IRBuilder(done).ret_void()

    tm = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3, jit=True)
    ref = llvm.parse_assembly(str(mod))
    ref.link_in(llvm.parse_assembly(math_ir(["sg_tanhf"])))
    ref.triple, ref.data_layout = tm.triple, str(tm.target_data)
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(ref, pb)
    assert "sg_tanhf" not in [f.name for f in ref.functions]  # inlined, then dropped
    assert not re.search(r"\bcall", tm.emit_assembly(ref))
    engine = llvm.create_mcjit_compiler(ref, tm)
    engine.finalize_object()
    kern = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        engine.get_function_address("kern"))
    x = np.linspace(-6, 6, 1001, dtype=np.float32)
    y = np.empty_like(x)
    kern(y.ctypes.data, x.ctypes.data, x.size)
    assert rel_err(y, np.tanh(x.astype(np.float64)), np.float32).max() <= BOUND32["tanh"] * EPS32


def test_ir_interface():
    text = math_ir()
    for name in function_names():
        m = re.search(rf"^define linkonce_odr (float|double) @{name}\((.*?)\) (.*) {{$", text, re.M)
        assert m, name
        t = "float" if name.endswith("f") and name not in ("sg_erf",) else "double"
        arity = 2 if name.startswith("sg_pow") else 1
        assert m.group(1) == t and m.group(2).count(t) == arity, name
        for a in ("alwaysinline", "nounwind", "memory(none)", "willreturn"):
            assert a in m.group(3), (name, a)
    assert not re.search(r"^declare .*@(?!llvm\.)", text, re.M), "only LLVM intrinsics may be declared"
    assert not re.search(r"\bcall\b.*@(?!llvm\.)", text), "helpers call nothing but intrinsics"
    # a subset parses on its own, and without declarations it can be pasted next to them
    part = math_ir(["sg_tanhf", "sg_pow"], declarations=False)
    assert "@sg_tanhf" in part and "@sg_pow(" in part and "@sg_expf" not in part and "declare" not in part
    ref = llvm.parse_assembly(part + "\n".join(intrinsic_declarations()))
    ref.verify()
    with pytest.raises(KeyError):
        math_ir(["sg_gamma"])
    assert len(function_names()) == 2 * (len(UNARY_FUNCTIONS) + len(BINARY_FUNCTIONS))
    with pytest.raises(KeyError):
        function_name("gamma", "float32")


@pytest.mark.parametrize("cpu, registers", [("haswell", "ymm"), ("znver4", "zmm"),
                                            ("x86-64-v4", "[yz]mm")])
def test_loops_vectorise_for_pinned_targets(cpu, registers):
    """Whatever the host, a loop over each helper vectorises to the named CPU's vector width
    and calls nothing (assembly only: nothing runs, so an AVX2 host checks AVX-512 code)."""
    dtypes = {function_name(f, d): d for d in ("float32", "float64") for f in ("exp", "tanh", "log")}
    names = list(dtypes)
    text = math_ir(names) + "\n" + "".join(loop_ir(n, dtypes[n], 1) for n in names)
    target = llvm.Target.from_triple("x86_64-unknown-linux-gnu")
    tm = target.create_target_machine(cpu=cpu, features="", opt=3)
    mod = llvm.parse_assembly(text)
    mod.triple, mod.data_layout = tm.triple, str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    asm = tm.emit_assembly(mod)
    for name in names:
        body = _loop_asm(asm, name)
        assert not re.search(r"\bcall", body), name
        assert re.search(registers, body), f"loop_{name} not vectorised to {registers} for {cpu}"
