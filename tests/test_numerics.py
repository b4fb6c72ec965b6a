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
    vals = np.array(_SPECIAL, dtype=dtype)
    rng = np.random.default_rng(0)
    extra = rng.standard_normal(200).astype(dtype) * 10.0 ** rng.integers(-3, 4, 200)
    a = np.concatenate([np.repeat(vals, len(vals)), extra])
    b = np.concatenate([np.tile(vals, len(vals)), rng.permutation(extra)])
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
    pairs = [a[:256].tolist(), b[:256].tolist()]
    done = run_isolated(_CUDA_DIVISION.format(pairs=pairs))
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.strip() == "ok"
