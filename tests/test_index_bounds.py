"""Out-of-range indices and labels raise IndexError on every backend, like NumPy.

Gathers (``x[idx]``, ``take``), scatter-add (``inc_subtensor`` and the gradient of a gather)
and sparse cross-entropy labels are checked at run time by the native code; the error names
the node, the bad value, the axis and size and the input shapes, the function stays usable and
no shared variable changes.
"""

from __future__ import annotations

import ctypes
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import symgraph as sg
from symgraph.codegen.symdim import evaluate

BACKENDS = ["reference", "llvm"]


def _ivec(name="i"):
    return sg.vector(name, "int64")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_out_of_range_raises_and_the_function_stays_usable(backend):
    x, i = sg.vector("x"), _ivec()
    f = sg.compile([x, i], x[i] * 2, backend=backend)
    xv = np.arange(10, dtype=np.float32)
    for bad, value in (([1, 12, 3], 12), ([-11, 0], -11), ([10], 10)):
        with pytest.raises(IndexError) as info:
            f(xv, np.array(bad))
        msg = str(info.value)
        assert f"index {value} is out of bounds for axis 0 with size 10" in msg
        assert "Subtensor" in msg and "(10,)" in msg and f"({len(bad)},)" in msg
        assert "test_index_bounds.py" in msg  # the user's line that built the gather
    np.testing.assert_array_equal(f(xv, np.array([2, 9, -1, -10])), xv[[2, 9, -1, -10]] * 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_on_an_inner_axis_and_with_two_index_arrays(backend):
    x, i, j = sg.matrix("x"), _ivec("i"), _ivec("j")
    f = sg.compile([x, i], x[:, i], backend=backend)
    g = sg.compile([x, i, j], x[i, j], backend=backend)
    xv = np.arange(12, dtype=np.float32).reshape(3, 4)
    with pytest.raises(IndexError, match="index 4 is out of bounds for axis 1 with size 4"):
        f(xv, np.array([0, 4]))
    with pytest.raises(IndexError, match="index -5 is out of bounds for axis 1 with size 4"):
        f(xv, np.array([-5]))
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 0 with size 3"):
        g(xv, np.array([3, 0]), np.array([0, 1]))
    with pytest.raises(IndexError, match="index 7 is out of bounds for axis 1 with size 4"):
        g(xv, np.array([0, 1]), np.array([0, 7]))
    np.testing.assert_array_equal(f(xv, np.array([-1, 0, 3])), xv[:, [-1, 0, 3]])
    np.testing.assert_array_equal(g(xv, np.array([-1, 2]), np.array([-4, 3])), xv[[-1, 2], [-4, 3]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_take_checks_its_indices(backend):
    x, i = sg.matrix("x"), _ivec()
    f = sg.compile([x, i], [sg.take(x, i, axis=0), sg.take(x, i)], backend=backend)
    xv = np.arange(6, dtype=np.float32).reshape(2, 3)
    with pytest.raises(IndexError, match="out of bounds for axis 0 with size 2"):
        f(xv, np.array([0, 2]))
    idx = np.array([-1, 1])
    a, b = f(xv, idx)
    np.testing.assert_array_equal(a, np.take(xv, idx, axis=0))
    np.testing.assert_array_equal(b, np.take(xv, idx))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scatter_add_and_the_gradient_of_a_gather_check_their_indices(backend):
    x, y, i = sg.vector("x"), sg.vector("y"), _ivec()
    f = sg.compile([x, y, i], sg.inc_subtensor(x, i, y), backend=backend)
    g = sg.compile([x, i], sg.grad(sg.sum(x[i] * x[i]), x), backend=backend)
    xv, yv = np.zeros(5, np.float32), np.ones(2, np.float32)
    with pytest.raises(IndexError, match="index 5 is out of bounds for axis 0 with size 5"):
        f(xv, yv, np.array([0, 5]))
    with pytest.raises(IndexError, match="index -6 is out of bounds for axis 0 with size 5"):
        g(np.arange(5, dtype=np.float32), np.array([-6, 1]))
    expect = xv.copy()
    np.add.at(expect, [-1, -1], yv)
    np.testing.assert_array_equal(f(xv, yv, np.array([-1, -1])), expect)
    grad = np.zeros(5, np.float32)
    np.add.at(grad, [4, 4, 0], 2 * np.arange(5, dtype=np.float32)[[4, 4, 0]])
    np.testing.assert_allclose(g(np.arange(5, dtype=np.float32), np.array([-1, 4, 0])), grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_labels_must_be_in_range(backend):
    z, t = sg.matrix("z"), _ivec("t")
    f = sg.compile([z, t], sg.nn.cross_entropy(z, t), backend=backend)
    zv = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    for labels in ([0, 1, 5, 2], [0, -1, 2, 3]):
        with pytest.raises(IndexError) as info:
            f(zv, np.array(labels))
        lo, hi = min(labels), max(labels)
        assert f"labels must be in [0, 5), got values in [{lo}, {hi}]" in str(info.value)
        assert "(input shapes z: (4, 5), t: (4,))" in str(info.value)
    ls = zv - np.log(np.exp(zv).sum(1, keepdims=True))
    np.testing.assert_allclose(f(zv, np.array([4, 0, 1, 3])), -ls[range(4), [4, 0, 1, 3]].mean(),
                               rtol=1e-5)


def test_llvm_and_reference_messages_agree_with_threads():
    """Large enough for the parallel path: the extremes are merged across threads exactly."""
    z, t = sg.matrix("z"), _ivec("t")
    labels = np.arange(40000) % 7
    labels[123], labels[39000] = 9, -2
    zv = np.zeros((40000, 7), np.float32)
    messages = []
    for backend, opts in (("reference", {}), ("llvm", {"threads": 2})):
        f = sg.compile([z, t], sg.nn.cross_entropy(z, t), backend=backend, **opts)
        with pytest.raises(IndexError) as info:
            f(zv, labels)
        messages.append(str(info.value).split("\n")[0])
    assert messages[0] == messages[1]
    assert "got values in [-2, 9]" in messages[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failing_training_step_leaves_every_shared_variable_unchanged(backend):
    rng = np.random.default_rng(1)
    emb = sg.shared(rng.standard_normal((6, 3)).astype(np.float32), name="emb")
    w = sg.shared(rng.standard_normal((3, 4)).astype(np.float32), name="w")
    steps = sg.shared(np.zeros((), np.int64), name="steps")
    i, t = _ivec("i"), _ivec("t")
    loss = sg.nn.cross_entropy(emb[i] @ w, t)
    updates = sg.nn.sgd(loss, [emb, w], lr=0.5) + [(steps, steps + 1)]
    f = sg.compile([i, t], loss, updates=updates, backend=backend)
    before = [emb.get_value().copy(), w.get_value().copy()]
    for bad_i, bad_t in (([0, 6], [1, 2]), ([0, 1], [1, 4])):
        with pytest.raises(IndexError):
            f(np.array(bad_i), np.array(bad_t))
        np.testing.assert_array_equal(emb.get_value(), before[0])
        np.testing.assert_array_equal(w.get_value(), before[1])
        assert steps.get_value() == 0
    f(np.array([-1, 2]), np.array([3, 0]))  # a valid step after the failures
    assert steps.get_value() == 1
    assert not np.array_equal(emb.get_value(), before[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_hot_of_an_out_of_range_label_is_a_zero_row(backend):
    """``one_hot`` is a comparison with ``arange(n)``, not an index: no error on any backend."""
    t = _ivec("t")
    f = sg.compile([t], sg.one_hot(t, 3), backend=backend)
    np.testing.assert_array_equal(f(np.array([0, 3, -1, 2])),
                                  [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 1]])


def test_llvm_status_codes_and_concurrent_callers():
    x, i = sg.vector("x"), _ivec()
    f = sg.compile([x, i], x[i], backend="llvm")
    xv = np.arange(10, dtype=np.float32)
    f(xv, np.array([0]))
    spec = f.program.last
    site = spec.prog.checks[0]
    # x's length is a run-time size of the code (shape-generic): the bound is evaluated for it
    hi = evaluate(site.hi, spec.dim_values)
    assert len(spec.prog.checks) == 1 and (site.lo, hi, site.wrapped) == (0, 10, True)
    assert "check0(" in f.kernels[0].ir and "atomicrmw umax" in f.source()
    problems: list = []

    def worker(k):
        for n in range(30):
            bad = (n + k) % 3 == 0
            idx = np.array([k, 10 + n if bad else -n % 10])
            try:
                out = f(xv, idx)
            except IndexError as e:
                if not (bad and f"index {10 + n} is out of bounds" in str(e)):
                    problems.append((k, n, str(e)))
                continue
            if bad or not np.array_equal(out, xv[idx]):
                problems.append((k, n, out))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not problems
    np.testing.assert_array_equal(f(xv, np.array([3, -3])), xv[[3, -3]])


def test_llvm_non_contiguous_inputs_are_still_retried_and_checked():
    x, i = sg.vector("x"), _ivec()
    f = sg.compile([x, i], x[i], backend="llvm")
    xv = np.arange(20, dtype=np.float32)[::2]  # not contiguous: status 1, then a copy
    np.testing.assert_array_equal(f(xv, np.array([9, -1])), xv[[9, -1]])
    with pytest.raises(IndexError, match="index 10 is out of bounds"):
        f(xv, np.array([0, 10])[::1])
    with pytest.raises(IndexError, match="index 10 is out of bounds"):
        f(xv, np.array([0, 5, 10, 3])[::2])


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")
def test_exported_library_returns_the_status_and_skips_the_updates(tmp_path):
    emb = sg.shared(np.arange(12, dtype=np.float32).reshape(6, 2), name="emb")
    i = _ivec("i")
    loss = sg.sum(emb[i] ** 2)
    f = sg.compile([i], loss, updates=sg.nn.sgd(loss, [emb], lr=0.1), backend="llvm")
    paths = f.export(str(tmp_path / "gather"), example_inputs=[np.array([0, 1])])
    assert "int32_t gather_run(gather_ctx *ctx, const int64_t *i" in Path(paths["header"]).read_text()
    lib = ctypes.CDLL(paths["library"])
    ctx = ctypes.c_void_p()
    assert lib.gather_create(ctypes.byref(ctx)) == 0
    out = np.zeros((), np.float32)
    weights = np.empty((6, 2), np.float32)

    def call(idx):
        idx = np.ascontiguousarray(idx, np.int64)
        return lib.gather_run(ctx, ctypes.c_void_p(idx.ctypes.data), ctypes.c_void_p(out.ctypes.data))

    assert call([0, 6]) == 2
    lib.gather_get_emb(ctx, ctypes.c_void_p(weights.ctypes.data), ctypes.c_int64(12))
    np.testing.assert_array_equal(weights, emb.get_value())
    assert call([-1, 5]) == 0
    assert out == float((np.arange(10, 12) ** 2).sum() * 2)
    lib.gather_get_emb(ctx, ctypes.c_void_p(weights.ctypes.data), ctypes.c_int64(12))
    expect = emb.get_value().copy()
    expect[5] -= 0.1 * 2 * 2 * expect[5]
    np.testing.assert_allclose(weights, expect)


def test_constant_indices_in_range_need_no_run_time_check():
    x, t = sg.matrix("x"), _ivec("t")
    f = sg.compile([x, t], x[sg.arange(3), t], backend="llvm")
    xv = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(f(xv, np.array([3, 0, -1])), xv[np.arange(3), [3, 0, -1]])
    assert [(c.axis, c.lo, c.hi) for c in f.program.last.prog.checks] == [(1, 0, 4)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gathers_from_an_empty_axis(backend):
    x, i = sg.matrix("x"), _ivec()
    f = sg.compile([x, i], x[i], backend=backend)
    empty = np.zeros((0, 3), np.float32)
    assert f(empty, np.zeros(0, np.int64)).shape == (0, 3)
    with pytest.raises(IndexError, match="index 0 is out of bounds for axis 0 with size 0"):
        f(empty, np.array([0]))
    with pytest.raises(IndexError, match="index -1 is out of bounds for axis 0 with size 0"):
        f(empty, np.array([-1]))


@pytest.mark.parametrize("bad", [-1001, 1000, 5000])
def test_a_parallel_gather_reports_the_bad_index(bad):
    x, i = sg.vector("x"), _ivec()
    f = sg.compile([x, i], x[i] + 1, backend="llvm", threads=2)
    xv = np.arange(1000, dtype=np.float32)
    idx = np.arange(100000) % 1000 - 500
    idx[77777] = bad
    with pytest.raises(IndexError, match=f"index {bad} is out of bounds for axis 0 with size 1000"):
        f(xv, idx)
    idx[77777] = -1000
    np.testing.assert_array_equal(f(xv, idx), xv[idx] + 1)
