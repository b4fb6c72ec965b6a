"""Shared helpers for the op tests: compile on the reference backend and compare with NumPy."""

from __future__ import annotations

import numpy as np

import symgraph as sg

RTOL = {"float16": 1e-2, "float32": 2e-5, "float64": 1e-12}
ATOL = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-13}


def symbolic(arr: np.ndarray, name: str = "x", static: bool = False):
    """A symbolic input matching ``arr``: its dtype and rank, dims static or unknown."""
    arr = np.asarray(arr)
    shape = arr.shape if static else (None,) * arr.ndim
    return sg.tensor(name, shape, dtype=arr.dtype.name)


def evaluate(fn, *arrays, static: bool = False):
    """Build ``fn(*symbolic inputs)`` and evaluate it on ``arrays`` with the reference backend."""
    syms = [symbolic(a, f"x{i}", static) for i, a in enumerate(arrays)]
    out = fn(*syms)
    f = sg.compile(syms, out, backend="reference")
    return f(*arrays)


def noncontiguous(arr: np.ndarray) -> np.ndarray:
    """The same values as ``arr`` in a non-contiguous view (strided, or transposed)."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return arr
    big = np.empty(arr.shape[:-1] + (arr.shape[-1] * 2,), dtype=arr.dtype)
    view = big[..., ::2]
    view[...] = arr
    if arr.ndim >= 2:  # also make it a transposed view
        t = np.empty(arr.shape[::-1], dtype=arr.dtype).T
        t[...] = arr
        return t
    assert not view.flags.c_contiguous or arr.size <= 1
    return view


def assert_matches(got, want, dtype: str | None = None, rtol=None, atol=None):
    """Same shape and dtype as NumPy's result and the same values (NaN where NumPy has NaN)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"dtype {got.dtype} != NumPy's {want.dtype}"
    assert got.shape == want.shape, f"shape {got.shape} != NumPy's {want.shape}"
    dt = dtype or (want.dtype.name if want.dtype.kind == "f" else "float64")
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=rtol or RTOL[dt], atol=atol or ATOL[dt],
                                   equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)


def numpy_as_symgraph(ref, *arrays) -> np.ndarray:
    """NumPy's ``ref(*arrays)`` under symgraph's documented dtype substitutes (docs/ops.md,
    dtypes): where NumPy answers in float16 (float math on bool/int8/uint8) symgraph computes
    in float32, and where it answers in uint64 (sums of uint8) symgraph answers in int64."""
    want = np.asarray(ref(*arrays))
    if want.dtype == np.float16:
        want = np.asarray(ref(*[a.astype(np.float32) if np.asarray(a).dtype.kind in "biu" else a
                                for a in map(np.asarray, arrays)]))
    if want.dtype == np.uint64:
        want = want.astype(np.int64)
    return want


def rand(rng: np.random.Generator, shape, dtype="float32", low=-3.0, high=3.0) -> np.ndarray:
    """Random values of ``dtype`` in ``[low, high)`` (integers: rounded)."""
    x = rng.uniform(low, high, size=shape)
    if np.dtype(dtype).kind in "iu":
        return np.asarray(np.round(x)).astype(dtype)
    if np.dtype(dtype).kind == "b":
        return np.asarray(x > 0)
    return np.asarray(x).astype(dtype)


def run_in_threads(work, n: int) -> list[BaseException]:
    """Run ``work(k)`` for ``k`` in ``range(n)``, each on its own thread, and return what they
    raised (an empty list when every call succeeded)."""
    import threading
    errors: list[BaseException] = []

    def guarded(k):
        try:
            work(k)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def host_vector_registers() -> str | None:
    """Regex of the vector registers a vectorised loop may use on this host, or None below AVX2.

    AVX2 hosts vectorise with 256-bit ``ymm``; AVX-512 hosts with ``zmm`` or, where LLVM's tuning
    for the CPU prefers 256-bit vectors, ``ymm``. Tests read this instead of assuming the ISA."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    if features.get("avx512f", False):
        return r"[yz]mm"
    if features.get("avx2", False):
        return r"ymm"
    return None


def index_key(draw, shape: tuple) -> tuple:
    """A random NumPy indexing key for an array of ``shape`` (hypothesis ``draw``): ints, slices
    with any step (bounds may lie outside), ``None``, integer arrays (gathers) and ``...``."""
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
    key: list = []
    axis = 0
    while axis < len(shape) and draw(st.booleans()):
        kind = draw(st.sampled_from(["int", "slice", "none", "array"]))
        d = shape[axis]
        if kind == "int" and d:
            key.append(draw(st.integers(-d, d - 1)))
        elif kind == "slice" or (kind in ("int", "array") and not d):
            bound = st.one_of(st.none(), st.integers(-d - 2, d + 2))
            step = draw(st.one_of(st.none(), st.integers(-3, 3).filter(lambda s: s != 0)))
            key.append(slice(draw(bound), draw(bound), step))
        elif kind == "none":
            key.append(None)
            continue
        else:
            ishape = draw(st.sampled_from([(), (3,), (2, 1), (1, 3)]))
            key.append(draw(hnp.arrays(np.int64, ishape, elements=st.integers(-d, d - 1))))
        axis += 1
    if draw(st.booleans()) and axis < len(shape):
        key.insert(draw(st.integers(0, len(key))), Ellipsis)
    return tuple(key)


def fd_jacobian(fn, x, eps=1e-6):
    """Central differences of ``fn`` (NumPy in, NumPy out): shape ``fn(x).shape + x.shape``."""
    cols = []
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = eps
        cols.append((fn(x + e.reshape(x.shape)) - fn(x - e.reshape(x.shape))) / (2 * eps))
    return np.stack(cols, axis=-1).reshape(np.shape(fn(x)) + x.shape)


def rewrite_disabled(name: str):
    """Compile without the registered rewrite ``name`` (put back in its place afterwards)."""
    from symgraph.rewrite import engine, load_all
    load_all()
    return engine.disabled(name)
