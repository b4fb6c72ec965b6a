"""Numeric corner cases on every CPU backend, against NumPy and PyTorch (float64 autograd).

Floor division and modulo (NumPy's ``npy_divmod``), integer division that must not trap,
gradients whose discarded ``where`` branch overflows, ``x ** p`` at 0, mixed-precision
``pow``, the hyperbolic functions of ``sg.elementwise``, ``sign(-0.0)`` and softmax rows with
infinities.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symgraph as sg

BACKENDS = ("llvm", "reference")
FLOATS = ("float32", "float64")
ROOT = Path(__file__).resolve().parent.parent


def run(backend: str, fn, *arrays):
    """Compile ``fn`` over inputs shaped like ``arrays`` on ``backend`` and call it."""
    syms = [sg.tensor(f"x{i}", a.shape, dtype=a.dtype.name) for i, a in enumerate(arrays)]
    return sg.compile(syms, fn(*syms), backend=backend)(*arrays)


def assert_same_bits(got, want) -> None:
    """Equal values, NaN where ``want`` has NaN, and the same sign on zeros."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    zero = want == 0
    np.testing.assert_array_equal(np.signbit(got[zero]), np.signbit(want[zero]))


def run_isolated(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter: a crash (SIGFPE) is a failed test, not a dead run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), SYMGRAPH_CACHE_DIR="off")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


# --- floor division and modulo -----------------------------------------------------------------

_SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 2.0, -2.0, 3.0, 5.5, -7.25, 1e-30, 1e30,
            np.inf, -np.inf, np.nan]


def _all_pairs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of special values, then random pairs whose quotients span every magnitude
    (tiny to beyond 2**p, subnormal operands included) and exact multiples nudged by an ulp
    (quotients just below or above an integer)."""
    vals = np.array(_SPECIAL, dtype=dtype)
    rng = np.random.default_rng(0)
    info = np.finfo(dtype)
    n = 4000

    def wide(k):
        exponents = rng.integers(info.minexp - 10, info.maxexp - 2, k)
        return (rng.standard_normal(k) * 2.0 ** exponents).astype(dtype)
    extra_a = [rng.standard_normal(200).astype(dtype) * 10.0 ** rng.integers(-3, 4, 200), wide(n)]
    extra_b = [rng.standard_normal(200).astype(dtype) * 10.0 ** rng.integers(-3, 4, 200), wide(n)]
    b = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(dtype)
    k = rng.integers(-2 ** 20, 2 ** 20, n) >> rng.integers(0, 20, n)
    multiple = (k * b.astype(np.float64)).astype(dtype)
    for step in (-1, 0, 1):
        extra_a.append(np.nextafter(multiple, np.where(step > 0, np.inf, -np.inf)).astype(dtype)
                       if step else multiple)
        extra_b.append(b)
    a = np.concatenate([np.repeat(vals, len(vals)), *extra_a])
    b = np.concatenate([np.tile(vals, len(vals)), *extra_b])
    return a, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_float_floordiv_and_mod_match_numpy_bit_for_bit(backend, dtype):
    a, b = _all_pairs(dtype)
    q, r = run(backend, lambda x, y: [x // y, x % y], a, b)
    with np.errstate(all="ignore"):
        assert_same_bits(q, np.floor_divide(a, b))
        assert_same_bits(r, np.mod(a, b))
    # the quotient NumPy rounds, not floor(a / b): 1.0 // 0.1 == 9, inf // 2 is NaN
    assert q[np.flatnonzero((a == 1.0) & (b == np.asarray(0.1, dtype)))[0]] == 9


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_float_floordiv_matches_numpy(backend):
    a = np.array([1.0, 7.5, -7.5, np.inf], np.float32)
    b = np.array([0.1, 2.0, 2.0, 3.0], np.float64)
    q, r = run(backend, lambda x, y: [x // y, x % y], a, b)
    with np.errstate(all="ignore"):
        assert_same_bits(q, np.floor_divide(a, b))
        assert_same_bits(r, np.mod(a, b))


_INT_DIVISION = """
import numpy as np
import symgraph as sg
for dtype in ("int8", "int16", "int32", "int64", "uint8"):
    info = np.iinfo(dtype)
    vals = np.unique(np.array([info.min, info.min + 1, -7, -1, 0, 1, 7, info.max]).astype(dtype))
    a, b = np.repeat(vals, len(vals)), np.tile(vals, len(vals))
    x, y = sg.tensor("x", a.shape, dtype), sg.tensor("y", b.shape, dtype)
    q, r = sg.compile([x, y], [x // y, x % y], backend={backend!r})(a, b)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(q, np.floor_divide(a, b), err_msg=dtype)
        np.testing.assert_array_equal(r, np.mod(a, b), err_msg=dtype)
print("ok")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_division_by_zero_and_int_min_by_minus_one_do_not_crash(backend):
    done = run_isolated(_INT_DIVISION.format(backend=backend))
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "ok"


_CUDA_DIVISION = """
import numpy as np
import symgraph as sg
from symgraph.backends.cuda import CudaCodegen
from symgraph.compile import build_fgraph
from symgraph.rewrite import rewrite_graph
from tests.gpu.host_emulation import run_on_host
nan, inf = float("nan"), float("inf")

def on_host(fn, *arrays):
    syms = [sg.tensor(f"x{{i}}", a.shape, a.dtype.name) for i, a in enumerate(arrays)]
    fg, ins, shared, _, _, _ = build_fgraph(syms, fn(*syms), None)
    rewrite_graph(fg, backend="cuda")
    mod = CudaCodegen(fg, ins).module([a.shape for a in arrays])
    return run_on_host(mod, list(arrays))

for dtype in ("int8", "int16", "int32", "int64", "uint8"):
    info = np.iinfo(dtype)
    vals = np.unique(np.array([info.min, info.min + 1, -7, -1, 0, 1, 7, info.max]).astype(dtype))
    a, b = np.repeat(vals, len(vals)), np.tile(vals, len(vals))
    q, r = on_host(lambda x, y: [x // y, x % y], a, b)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(q, np.floor_divide(a, b), err_msg=dtype)
        np.testing.assert_array_equal(r, np.mod(a, b), err_msg=dtype)
for dtype in ("float32", "float64"):
    a, b = np.array({pairs!r}, dtype)
    q, r = on_host(lambda x, y: [x // y, x % y], a, b)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(q, np.floor_divide(a, b), err_msg=dtype)
        np.testing.assert_array_equal(r, np.mod(a, b), err_msg=dtype)
        z = np.floor_divide(a, b) == 0
        np.testing.assert_array_equal(np.signbit(q[z]), np.signbit(np.floor_divide(a, b)[z]))
print("ok")
"""


@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="no host C++ compiler")
def test_cuda_rendering_of_division_matches_numpy_on_the_host():
    a, b = _all_pairs("float64")
    pick = np.r_[0:256, 256:len(a):97]
    pairs = [a[pick].tolist(), b[pick].tolist()]
    done = run_isolated(_CUDA_DIVISION.format(pairs=pairs))
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "ok"


# --- sign -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_sign_of_signed_zeros_and_nan_matches_numpy(backend, dtype):
    x = np.array([-0.0, 0.0, np.nan, -np.inf, np.inf, -2.5, 3.0, -1e-40, 1e-40], dtype)
    assert_same_bits(run(backend, sg.sign, x), np.sign(x))


# --- gradients: the discarded side of a selection ------------------------------------------------

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_grads(fn, *arrays, order: int = 1) -> list[np.ndarray]:
    """d sum(fn) / d each input (``order`` 2: d sum(d sum(fn)/dx) / dx) in float64 autograd."""
    ts = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in arrays]
    gs = torch.autograd.grad(fn(*ts).sum(), ts, create_graph=order > 1)
    if order > 1:
        total = sum(g.sum() for g in gs)
        if not total.requires_grad:  # piecewise linear: no second derivative at all
            return [np.zeros_like(np.asarray(a, np.float64)) for a in arrays]
        gs = torch.autograd.grad(total, ts, allow_unused=True, materialize_grads=True)
    return [g.detach().numpy(force=True) for g in gs]


def sg_grads(backend: str, fn, *arrays, order: int = 1) -> list[np.ndarray]:
    def graph(*xs):
        gs = sg.grad(sg.sum(fn(*xs)), list(xs))
        if order > 1:
            total = sg.sum(gs[0])
            for g in gs[1:]:
                total = total + sg.sum(g)
            gs = sg.grad(total, list(xs))
        return gs
    return run(backend, graph, *arrays)


def assert_close_to_torch(got, want, dtype: str) -> None:
    rtol = {"float32": 3e-6, "float64": 1e-12}[dtype]
    for g, w in zip(got, want):
        assert np.asarray(g).dtype == dtype
        # subnormal results have few significant bits: absolute tolerance below the normals
        np.testing.assert_allclose(g, w.astype(dtype), rtol=rtol, atol=np.finfo(dtype).tiny,
                                   equal_nan=True)


_SELECTIONS = {
    "elu": (sg.elu, F.elu),
    "elu_alpha": (lambda x: sg.elu(x, 0.5), lambda t: F.elu(t, 0.5)),
    "leaky_relu": (lambda x: sg.leaky_relu(x, 0.1), lambda t: F.leaky_relu(t, 0.1)),
    "relu": (sg.relu, torch.relu),
    "abs": (sg.abs, torch.abs),
    "softplus": (sg.softplus, lambda t: torch.logaddexp(torch.zeros_like(t), t)),
    "clip": (lambda x: sg.clip(x, -2.0, 3.0), lambda t: torch.clamp(t, -2.0, 3.0)),
    "maximum": (lambda x: sg.maximum(x, 0.25), lambda t: torch.maximum(t, torch.tensor(0.25))),
    "minimum": (lambda x: sg.minimum(x, 0.25), lambda t: torch.minimum(t, torch.tensor(0.25))),
}
# far beyond exp's overflow (88.7 in float32, 709.8 in float64), no ties, no zero
_WIDE = [-1e30, -800.0, -100.0, -1.5, -0.5, 0.3, 2.0, 50.0, 88.0, 89.0, 100.0, 709.0, 710.0,
         800.0, 1e30]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(_SELECTIONS))
def test_selection_gradients_are_finite_where_torch_is(name, dtype, backend):
    ours, theirs = _SELECTIONS[name]
    x = np.array(_WIDE, dtype)
    for order in (1, 2):
        got = sg_grads(backend, ours, x, order=order)
        if name == "softplus" and order == 2:  # torch's logaddexp double backward is NaN at 1e30
            want = torch_grads(torch.sigmoid, x)
        else:
            want = torch_grads(theirs, x, order=order)
        assert np.isfinite(want[0]).all()
        assert_close_to_torch(got, want, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_piecewise_formula_gradient_does_not_see_the_discarded_branch(dtype, backend):
    import sympy
    elu = sg.elementwise(lambda x: sympy.Piecewise((x, x > 0), (sympy.exp(x) - 1, True)), "elu_f")
    x = np.array(_WIDE, dtype)
    for order in (1, 2):
        assert_close_to_torch(sg_grads(backend, elu, x, order=order),
                              torch_grads(F.elu, x, order=order), dtype)


_ACROSS_OPS = {
    # a selection between separate ops: the gradient of exp is masked by the where's choice
    "where": (lambda x: sg.where(x > 0, x, sg.exp(x) - 1), F.elu),
    "where_exp": (lambda x: sg.where(x > 0.5, x, sg.exp(x)),
                  lambda t: torch.where(t > 0.5, t, torch.exp(torch.clamp(t, max=0.5)))),
    "clip_exp": (lambda x: sg.clip(sg.exp(x), 0.0, 1.0),
                 lambda t: torch.exp(torch.clamp(t, max=0.0))),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(_ACROSS_OPS))
def test_selection_between_ops_masks_the_discarded_branchs_gradient(name, dtype, backend):
    ours, safe = _ACROSS_OPS[name]  # torch with the discarded branch kept finite by hand
    x = np.array(_WIDE, dtype)
    assert_close_to_torch(sg_grads(backend, ours, x), torch_grads(safe, x), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_selection_between_ops_with_broadcasting(backend):
    m = np.array([[1000.0, -1.0, 3.0], [2.0, -3.0, 800.0]])
    b = np.array([1.0, 2.0, -0.5])

    def ours(u, v):
        z = u + v
        return sg.where(z > 0, u * z, sg.exp(z))

    def safe(u, v):
        z = u + v
        return torch.where(z > 0, u * z, torch.exp(torch.clamp(z, max=0.0)))
    assert_close_to_torch(sg_grads(backend, ours, m, b), torch_grads(safe, m, b), "float64")


# --- x ** p ---------------------------------------------------------------------------------------

_POW_X = [0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 3.0, 0.5, -2.0, -2.0, 1.5]
_POW_P = [0.0, 1.0, -1.0, 2.5, 0.5, 0.0, 2.5, -1.5, 2.0, 0.5, 1.0]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_pow_gradients_match_torch_at_zero_base_and_zero_exponent(dtype, backend):
    x, p = np.array(_POW_X, dtype), np.array(_POW_P, dtype)
    assert_close_to_torch(sg_grads(backend, lambda a, b: a ** b, x, p),
                          torch_grads(lambda a, b: a ** b, x, p), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("p", [0, 0.0, 1, 2, 0.5])
def test_pow_by_a_constant_has_torchs_gradient_at_zero(p, dtype, backend):
    x = np.array([0.0, 0.0, 1.5, -2.0, 3.0], dtype)
    assert_close_to_torch(sg_grads(backend, lambda a: a ** p, x),
                          torch_grads(lambda a: a ** p, x), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pow_exponent_gradient_of_a_float32_base_is_float64_accurate(backend):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 10.0, 64).astype(np.float32)
    p = rng.uniform(-3.0, 3.0, 64)
    got = sg_grads(backend, lambda a, b: a ** b, x, p)
    want = torch_grads(lambda a, b: a ** b, x, p)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-13, atol=0)
    np.testing.assert_allclose(got[0], want[0].astype(np.float32), rtol=3e-6, atol=0)


# --- softmax rows with infinities -----------------------------------------------------------------

_ROWS = np.array([[1.0, np.inf, 2.0], [1.0, -np.inf, 2.0], [1.0, np.nan, 2.0],
                  [-np.inf, -np.inf, -np.inf], [np.inf, np.inf, 0.0], [-np.inf, 3.0, -np.inf],
                  [1000.0, 0.0, -1000.0]])
_LABELS = np.array([0, 0, 0, 1, 2, 1, 0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_of_rows_with_infinities_matches_torch(fn, dtype, backend):
    x = _ROWS.astype(dtype)
    ours, theirs = getattr(sg.nn, fn), getattr(torch, fn)
    got = run(backend, lambda v: ours(v, axis=-1), x)
    want = theirs(torch.tensor(x.astype(np.float64)), -1).numpy().astype(dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True)
    # gradients of a weighted sum, where torch's are finite
    w = np.linspace(-1.0, 2.0, x.size).reshape(x.shape).astype(dtype)
    g = sg_grads(backend, lambda v, u: ours(v, axis=-1) * u, x, w)[0]
    tg = torch_grads(lambda v, u: theirs(v, -1) * u, x, w)[0]
    finite = np.isfinite(tg).all(axis=-1)
    assert finite.sum() >= 3
    np.testing.assert_allclose(g[finite], tg[finite].astype(dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_cross_entropy_of_rows_with_infinities_matches_torch(dtype, backend):
    from symgraph.ops.nn import SoftmaxCrossEntropy
    x = _ROWS.astype(dtype)
    w = np.linspace(0.5, 2.0, len(x)).astype(dtype)

    def graph(z, y, u):
        rows = SoftmaxCrossEntropy(sparse=True)(z, y)
        return [rows, sg.grad(sg.sum(rows * u), z)]  # the fused loss-and-gradient kernel
    got_rows, got_grad = run(backend, graph, x, _LABELS, w)
    t = torch.tensor(x.astype(np.float64), requires_grad=True)
    rows = F.cross_entropy(t, torch.tensor(_LABELS), reduction="none")
    (grad,) = torch.autograd.grad((rows * torch.tensor(w.astype(np.float64))).sum(), t)
    np.testing.assert_allclose(got_rows, rows.detach().numpy().astype(dtype), rtol=1e-6,
                               equal_nan=True)
    finite = np.isfinite(grad.numpy()).all(axis=-1)
    assert finite.sum() >= 2
    np.testing.assert_allclose(got_grad[finite], grad.numpy()[finite].astype(dtype), rtol=1e-5,
                               atol=1e-7)


# --- hyperbolic functions of sg.elementwise ------------------------------------------------------

def _hyperbolic_cases():
    import sympy
    return {  # name: (formula, NumPy value, NumPy derivative, domain)
        "sinh": (sympy.sinh, np.sinh, np.cosh, "exp"),
        "cosh": (sympy.cosh, np.cosh, np.sinh, "exp"),
        "tanh": (sympy.tanh, np.tanh, lambda x: 1 / np.cosh(x) ** 2, "exp"),
        "asinh": (sympy.asinh, np.arcsinh, lambda x: 1 / np.hypot(1, x), "all"),
        "acosh": (sympy.acosh, np.arccosh, lambda x: 1 / (np.sqrt(x - 1) * np.sqrt(x + 1)), "above1"),
        "atanh": (sympy.atanh, np.arctanh, lambda x: 1 / ((1 - x) * (1 + x)), "unit"),
    }


def _hyperbolic_grid(domain: str, dtype: str) -> np.ndarray:
    """Log-spaced magnitudes from tiny to huge (both signs), where the result is finite."""
    top = {"float32": 38, "float64": 300}[dtype]
    mag = np.logspace(-30, top, 1500)
    if domain == "exp":  # sinh / cosh overflow beyond log(max) + log(2)
        mag = mag[mag < np.log(np.finfo(dtype).max) + 0.69]
    elif domain == "unit":
        eps = np.finfo(dtype).eps
        mag = np.concatenate([mag[mag < 0.5], 1 - np.logspace(np.log10(eps), np.log10(0.5), 300)])
    elif domain == "above1":
        return np.unique((1 + mag).astype(dtype))
    x = np.unique(np.concatenate([mag, -mag]).astype(dtype))
    return x[np.abs(x) < 1] if domain == "unit" else x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["sinh", "cosh", "tanh", "asinh", "acosh", "atanh"])
def test_elementwise_hyperbolics_and_derivatives_are_accurate(name, dtype, backend):
    formula, value, derivative, domain = _hyperbolic_cases()[name]
    op = sg.elementwise(lambda x: formula(x), name)
    x = _hyperbolic_grid(domain, dtype)
    y, g = run(backend, lambda v: [op(v), sg.grad(sg.sum(op(v)), v)], x)
    x64 = x.astype(np.float64)
    rtol = 8 * np.finfo(dtype).eps  # a few ulp; NumPy's float64 is itself within an ulp
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(y, value(x64).astype(dtype), rtol=rtol, atol=tiny)
    with np.errstate(over="ignore", divide="ignore"):  # inf at acosh's 1
        want = derivative(x64)
    np.testing.assert_allclose(g, want.astype(dtype), rtol=rtol, atol=tiny)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["sinh", "cosh", "tanh", "asinh", "acosh", "atanh"])
def test_elementwise_hyperbolics_special_values_match_numpy(name, dtype, backend):
    formula, value, _, _ = _hyperbolic_cases()[name]
    op = sg.elementwise(lambda x: formula(x), name)
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 0.5, 2.0, 1e30, -1e30], dtype)
    with np.errstate(all="ignore"):
        want = value(x)
    got = run(backend, op, x)
    # infinities, NaN and the sign of zeros exactly; finite values to a few ulp
    np.testing.assert_allclose(got, want, rtol=8 * np.finfo(dtype).eps, atol=0, equal_nan=True)
    np.testing.assert_array_equal(np.signbit(got[want == 0]), np.signbit(want[want == 0]))


# --- the CUDA rendering of all of the above compiles --------------------------------------------

def _cuda_module_of_every_fix():
    import sympy

    from symgraph.backends.cuda import CudaCodegen
    from symgraph.compile import build_fgraph
    from symgraph.rewrite import rewrite_graph
    asinh = sg.elementwise(lambda x: sympy.asinh(x) + sympy.sinh(x) * sympy.tanh(x), "hyp")
    ins, outs = [], []
    for dtype in ("int8", "int16", "int32", "int64", "uint8", "float32", "float64"):
        a, b = sg.vector(f"a_{dtype}", dtype=dtype), sg.vector(f"b_{dtype}", dtype=dtype)
        ins += [a, b]
        outs += [a // b, a % b]
    x, p = sg.vector("x"), sg.vector("p", dtype="float64")
    ins += [x, p]
    outs += [sg.sign(x), asinh(x), sg.nn.softmax(sg.reshape(x, (2, -1)), axis=-1),
             *sg.grad(sg.sum(sg.elu(x) + asinh(x) + x ** p), [x, p])]
    fg, roots, _, _, _, _ = build_fgraph(ins, outs, None)
    rewrite_graph(fg, backend="cuda")
    return CudaCodegen(fg, roots).module([(8,)] * len(roots))


@pytest.mark.skipif(not __import__("shutil").which("nvcc"), reason="nvcc is not installed")
def test_cuda_rendering_of_the_numeric_fixes_compiles_with_nvcc():
    from symgraph.backends import cuda_compiler
    from symgraph.codegen.cuda_render import module_source
    from tests.gpu.host_emulation import renamed_source, symbol
    mod = _cuda_module_of_every_fix()
    kernels = {symbol(k): renamed_source(k) for k in mod.kernels if k.mode != "cublas"}
    source = module_source([]) + "\n" + "\n".join(kernels.values())
    ptx = cuda_compiler.nvcc_compile(source, "sm_80", "ptx", ("-Xcicc", "-O0")).decode()
    assert not [name for name in kernels if f".entry {name}(" not in ptx]


@pytest.mark.skipif(not __import__("shutil").which("g++"), reason="no host C++ compiler")
def test_cuda_rendering_of_sign_softmax_and_hyperbolics_matches_on_the_host():
    import sympy

    from symgraph.backends.cuda import CudaCodegen
    from symgraph.compile import build_fgraph
    from symgraph.rewrite import rewrite_graph
    from tests.gpu.host_emulation import run_on_host
    hyp = sg.elementwise(lambda v: sympy.asinh(v) + sympy.sinh(v), "hyp")
    rows = _ROWS.astype(np.float32)
    s = np.array([-0.0, 0.0, np.nan, -2.0, 3.0, 1e-4, -1e4, 89.0], np.float32)
    x, z = sg.vector("x"), sg.matrix("z")
    outs = [sg.sign(x), hyp(x), sg.grad(sg.sum(hyp(x) + sg.elu(x) * 1e-3), x),
            sg.nn.softmax(z), sg.nn.log_softmax(z)]
    fg, roots, _, _, _, _ = build_fgraph([x, z], outs, None)
    rewrite_graph(fg, backend="cuda")
    got = run_on_host(CudaCodegen(fg, roots).module([s.shape, rows.shape]), [s, rows])
    want = run("reference", lambda a, b: [sg.sign(a), hyp(a), sg.grad(
        sg.sum(hyp(a) + sg.elu(a) * 1e-3), a), sg.nn.softmax(b), sg.nn.log_softmax(b)], s, rows)
    assert_same_bits(got[0], np.sign(s))
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=0, equal_nan=True)
    t = torch.tensor(rows.astype(np.float64))
    np.testing.assert_allclose(got[3], torch.softmax(t, -1).numpy(), rtol=1e-6, equal_nan=True)


# --- the fused cross-entropy kernel at odd row lengths ------------------------------------------

def _ce_rows(n: int, dtype: str) -> np.ndarray:
    """Random rows of ``n`` logits, then rows with a special value at the first, a middle and
    the last position (the vector body and the scalar remainder of the row loops)."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((12, n)) * 3).astype(dtype)
    specials = [(np.inf, 0), (np.nan, n // 2), (-np.inf, n - 1), (np.nan, n - 1), (np.inf, n - 1)]
    for row, (value, col) in enumerate(specials, start=4):
        x[row, col] = value
    x[9] = -np.inf  # every logit -inf
    x[10] = x[10] + np.float32(1e30)  # huge logits: log(sum) - (x - max) keeps the loss exact
    x[11, : max(n - 1, 1)] = -np.inf  # one finite logit
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("sparse", [True, False], ids=["labels", "probabilities"])
@pytest.mark.parametrize("n", [1, 7, 9, 33, 1001])
def test_fused_cross_entropy_at_odd_row_lengths_matches_torch(n, sparse, dtype, backend):
    x = _ce_rows(n, dtype)
    rng = np.random.default_rng(7)
    if sparse:
        targets = rng.integers(0, n, len(x))
        targets[[0, 6, 7, 8]] = n - 1  # the label in the scalar remainder, on a special value
        targets[11] = n - 1  # the one finite logit
    else:
        targets = rng.uniform(0.0, 1.0, x.shape).astype(dtype)
        targets[:, :: 3] = 0.0  # zero targets on -inf logits add 0, not NaN
        targets /= np.maximum(targets.sum(-1, keepdims=True), 1e-30)
    loss, grad = run(backend, lambda z, t: [sg.nn.cross_entropy(z, t), sg.grad(sg.nn.cross_entropy(z, t), z)],
                     x, targets)
    if backend == "llvm":
        z, t = sg.tensor("z", x.shape, dtype), sg.tensor("t", targets.shape, targets.dtype.name)
        f = sg.compile([z, t], [sg.grad(sg.nn.cross_entropy(z, t), z)], backend="llvm")
        assert any("SoftmaxCrossEntropyWithGrad" in k.ops[0] for k in f.kernels)  # the fused kernel
    zt = torch.tensor(x.astype(np.float64), requires_grad=True)
    if sparse:
        rows = F.cross_entropy(zt, torch.tensor(targets), reduction="none")
    else:  # a zero target adds 0 to the row's loss (torch: 0 * -inf = NaN), see docs/ops.md
        tt = torch.tensor(targets.astype(np.float64))
        rows = -torch.where(tt == 0, 0.0, tt * F.log_softmax(zt, -1)).sum(-1)
    (want,) = torch.autograd.grad(rows.mean(), zt)
    rows, want = rows.detach().numpy(), want.numpy()
    ok = np.isfinite(rows)
    rtol = {"float32": 2e-6, "float64": 1e-12}[dtype]
    # the loss is the mean of the rows: NaN as soon as one row is; check it on the finite rows
    assert np.isnan(loss) == (not ok.all())
    finite_loss = run(backend, lambda z, t: sg.nn.cross_entropy(z, t), x[ok], targets[ok])
    np.testing.assert_allclose(finite_loss, rows[ok].mean(), rtol=10 * rtol)
    finite = np.isfinite(want).all(axis=-1)
    assert finite.sum() >= 5
    np.testing.assert_allclose(grad[finite], want[finite], rtol=rtol * 10, atol=1e-7 / len(x))
    # a row torch makes (partly) NaN is wholly NaN here (docs/math-accuracy.md)
    assert np.isnan(grad[~finite]).all()
