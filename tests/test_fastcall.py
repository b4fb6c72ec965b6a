"""The llvm backend's two call paths: the C caller (``symgraph._fastcall``) and the Python
fallback.  Both must give the same results, raise the same errors, install updates all or
nothing, be safe from several threads, never alias outputs, and leak nothing."""

from __future__ import annotations

import gc
import sys
import threading
import tracemalloc
import weakref

import numpy as np
import pytest
from helpers import run_in_threads

import symgraph as sg
from symgraph.fastcall import fastcall_module

FAST = fastcall_module()
needs_fast = pytest.mark.skipif(FAST is None, reason="symgraph._fastcall was not built")


@pytest.fixture(params=["fast", "python"])
def path(request, monkeypatch):
    """Which call path functions compiled in the test use."""
    if request.param == "fast":
        if FAST is None:
            pytest.skip("symgraph._fastcall was not built")
        monkeypatch.delenv("SYMGRAPH_NO_FASTCALL", raising=False)
    else:
        monkeypatch.setenv("SYMGRAPH_NO_FASTCALL", "1")
    return request.param


def is_fast(f) -> bool:
    return FAST is not None and isinstance(f._caller, FAST.Caller)


def make_step(trust_input: bool = False, backend: str = "llvm"):
    """Logistic regression SGD step with two shared parameters (W3's shape, smaller)."""
    w = sg.shared(np.linspace(-0.5, 0.5, 6).astype(np.float32), name="w")
    b = sg.shared(np.float32(0.1), name="b")
    x = sg.tensor("x", (None, 6))
    y = sg.tensor("y", (None,))
    p = sg.sigmoid(x @ w + b)
    loss = -sg.mean(y * sg.log(p) + (1 - y) * sg.log(1 - p))
    gw, gb = sg.grad(loss, [w, b])
    f = sg.compile([x, y], loss, updates=[(w, w - 0.5 * gw), (b, b - 0.5 * gb)], backend=backend,
                   trust_input=trust_input, threads=1)
    return f, w, b


def data(n: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 6)).astype(np.float32),
            (rng.random(n) < 0.5).astype(np.float32))


def test_the_path_in_use(path):
    f, _, _ = make_step()
    x, y = data()
    f(x, y)
    f(x, y)
    assert is_fast(f) == (path == "fast")
    if path == "fast":
        assert f._caller.n_specs == 1
        assert f._caller.fast_calls == 1  # the first call compiled and registered the shapes


@pytest.mark.parametrize("trust_input", [False, True])
def test_steps_match_the_reference_backend(path, trust_input):
    f, w, b = make_step(trust_input)
    g, w_ref, b_ref = make_step(backend="reference")
    for k, n in enumerate([8, 8, 5, 8, 5]):  # two shape signatures, revisited
        x, y = data(n, seed=k)
        np.testing.assert_allclose(f(x, y), g(x, y), rtol=1e-5)
        np.testing.assert_allclose(w.get_value(), w_ref.get_value(), rtol=1e-5)
        np.testing.assert_allclose(b.get_value(), b_ref.get_value(), rtol=1e-5)
    if path == "fast":
        assert f._caller.n_specs == 2 and f._caller.fast_calls == 3


X = np.ones((4, 6), np.float32)
Y = np.array([0, 1, 1, 0], np.float32)
BAD_CALLS = [
    ("too few", (X,), TypeError, r"takes 2 arguments.*got 1"),
    ("too many", (X, Y, Y), TypeError, r"takes 2 arguments.*got 3"),
    ("rank", (np.ones(6, np.float32), Y), ValueError, r"'x'.*rank"),
    ("static dim", (np.ones((4, 5), np.float32), Y), ValueError, r"'x'.*dimension 1 must be 6"),
    ("float64", (X.astype(np.float64), Y), TypeError, r"'x'.*float64"),
    ("int to float ok, complex not", (X, Y.astype(np.complex64)), TypeError, r"'y'.*complex64"),
    ("not an array", (X, object()), TypeError, r"'y'"),
    ("labels rank", (X, Y[:, None]), ValueError, r"'y'.*rank"),
]


@pytest.mark.parametrize("args,exc,pattern", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_the_same_errors_and_change_nothing(path, args, exc, pattern):
    f, w, b = make_step()
    f(X, Y)  # registers the good shapes, so the fast path is live
    before = w.get_value(), b.get_value(), w._version
    with pytest.raises(exc, match=pattern):
        f(*args)
    np.testing.assert_array_equal(w.get_value(), before[0])
    np.testing.assert_array_equal(b.get_value(), before[1])
    assert w._version == before[2]
    f(X, Y)
    assert w._version == before[2] + 1


def test_error_messages_are_identical_on_both_paths(monkeypatch):
    messages = {}
    for name in ("fast", "python"):
        if name == "python":
            monkeypatch.setenv("SYMGRAPH_NO_FASTCALL", "1")
        f, _, _ = make_step()
        f(X, Y)
        for label, args, exc, _ in BAD_CALLS:
            with pytest.raises(exc) as info:
                f(*args)
            messages.setdefault(label, set()).add(str(info.value))
    assert all(len(m) == 1 for m in messages.values()), messages


def test_unusual_arguments_take_the_fallback_and_still_work(path):
    f, w, b = make_step()
    g, w_ref, b_ref = make_step(backend="reference")
    x, y = data(4)
    wide = np.zeros((4, 12), np.float32)
    wide[:, ::2] = x
    swapped = y.astype(">f4")
    calls = [(x, y), (wide[:, ::2], y), (x.tolist(), y), (x, swapped), (x.astype(np.float16), y),
             (np.asfortranarray(x), y)]
    for args in calls:
        version = w._version
        np.testing.assert_allclose(f(*args), g(*args), rtol=1e-5)
        assert w._version == version + 1  # exactly one update per call, whichever path ran it
        np.testing.assert_allclose(w.get_value(), w_ref.get_value(), rtol=1e-5)
    if path == "fast":
        assert f._caller.fast_calls == 0  # every call above went to the Python path
        f(x, y)
        assert f._caller.fast_calls == 1


def test_more_shapes_than_the_c_table_holds(path):
    x = sg.vector("x")
    f = sg.compile([x], x * 2, threads=1)
    shapes = list(range(1, FAST.MAX_SPECS + 5)) if FAST is not None else list(range(1, 13))
    for n in shapes * 2:
        v = np.arange(n, dtype=np.float32)
        np.testing.assert_array_equal(f(v), v * 2)
    if path == "fast":
        assert f._caller.n_specs == FAST.MAX_SPECS
        # the second round of the shapes the table holds; the others stay on the Python path
        # (all are in recent use: replacing would evict each entry just before its next call)
        assert f._caller.fast_calls == FAST.MAX_SPECS
        assert f._caller.replaced == 0


@needs_fast
def test_shapes_no_longer_called_make_room_for_new_ones():
    """The table is full of shapes an earlier phase used (a training set's batch sizes); a new
    phase calls other shapes (a test set's): once the old ones have not run for a while, the
    new ones replace them and take the C path too, least recently used first."""
    x = sg.vector("x")
    f = sg.compile([x], x * 2, threads=1)
    for n in range(1, FAST.MAX_SPECS + 1):
        f(np.arange(n, dtype=np.float32))
    for n in range(1, 9):
        f(np.arange(n, dtype=np.float32))  # these 8 stay in recent use
    new = range(1000, 1016)
    for _ in range(FAST.STALE_CALLS // len(new) + 2):
        for n in new:
            v = np.arange(n, dtype=np.float32)
            np.testing.assert_array_equal(f(v), v * 2)
    assert f._caller.replaced == len(new) and f._caller.n_specs == FAST.MAX_SPECS
    before = f._caller.fast_calls
    for n in list(new) + [1, 2]:
        f(np.arange(n, dtype=np.float32))
    assert f._caller.fast_calls - before == len(new) + 2
    assert f._caller.replaced == len(new)  # shapes 1 and 2 ran after 9-64: those went first


@needs_fast
def test_replacing_entries_while_other_threads_call(monkeypatch):
    """Entries are replaced while other threads run calls with the GIL released: a running
    call's entry is never the one replaced, and every result stays right."""
    x = sg.tensor("x", (None, 64))
    f = sg.compile([x], sg.tanh(x) * 2 + x, threads=1)
    for n in range(1, FAST.MAX_SPECS + 1):
        f(np.ones((n, 64), np.float32))

    def work(k):
        rng = np.random.default_rng(k)
        for _ in range(700):
            n = int(rng.integers(100, 300))
            v = rng.standard_normal((n, 64)).astype(np.float32)
            np.testing.assert_allclose(f(v), np.tanh(v) * 2 + v, rtol=1e-5, atol=1e-6)

    assert run_in_threads(work, 4) == []
    assert f._caller.replaced > 0 and f._caller.n_specs == FAST.MAX_SPECS


def test_calls_rotating_through_many_batch_sizes_stay_on_the_c_path(path):
    """Shape-generic code makes a batch size cheap to add; the C table holds as many as the
    llvm backend keeps instances of (an epoch's last batch, validation sets, ...)."""
    x = sg.tensor("x", (None, 3))
    f = sg.compile([x], (x * 2).sum(axis=1), threads=1)
    sizes = [1, 7, 64, 500, 3, 33, 128, 2, 9, 17, 250, 4]
    for _ in range(3):
        for n in sizes:
            v = np.ones((n, 3), np.float32)
            np.testing.assert_array_equal(f(v), np.full(n, 6, np.float32))
    if path == "fast":
        assert f._caller.n_specs == len(sizes)
        assert f._caller.fast_calls == 2 * len(sizes)  # every call after each size's first


def test_outputs_never_alias(path):
    w = sg.shared(np.arange(4, dtype=np.float32), name="w")
    x = sg.vector("x")
    y = x * 3
    f = sg.compile([x], [x, y, y, w, w * 1], updates=[(w, y)], threads=1)
    arg = np.ones(4, np.float32)
    for _ in range(2):
        w.set_value(np.arange(4, dtype=np.float32))
        outs = f(arg)
        stored = w._value
        for i, o in enumerate(outs):
            assert o.flags.writeable and o.flags.owndata
            assert not np.shares_memory(o, arg) and not np.shares_memory(o, stored)
            for other in outs[:i]:
                assert not np.shares_memory(o, other)
        for o in outs:
            o[...] = -7
        np.testing.assert_array_equal(arg, np.ones(4, np.float32))
        np.testing.assert_array_equal(w.get_value(), np.full(4, 3, np.float32))
    if path == "fast":
        assert f._caller.fast_calls == 1


def test_no_reference_or_memory_leak(path):
    f, w, b = make_step()
    x, y = data()
    f(x, y)
    refs = sys.getrefcount(x), sys.getrefcount(y), sys.getrefcount(w._value)
    out = f(x, y)
    # `out`, the recycling table of its specialisation and getrefcount's argument hold it
    assert sys.getrefcount(out) == 3
    del out
    tracemalloc.start()
    try:
        for _ in range(2000):
            f(x, y)
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(10000):
            f(x, y)
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert (sys.getrefcount(x), sys.getrefcount(y), sys.getrefcount(w._value)) == refs
    assert grown < 20_000, grown  # a leak of one small object per call would be >= 300 kB
    if path == "fast":
        assert f._caller.fast_calls == 12001


def test_threads_share_one_function(path):
    x = sg.matrix("x")
    v = sg.shared(np.eye(8, dtype=np.float32) * 2, name="v")
    n = sg.shared(np.int64(0), name="n")
    f = sg.compile([x], sg.tanh(x @ v).sum(axis=1), updates=[(n, n + 1)], threads=1)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(6)]
    expected = [np.tanh(a @ (np.eye(8, dtype=np.float32) * 2)).sum(axis=1) for a in inputs]
    f(inputs[0])
    barrier = threading.Barrier(len(inputs))

    def work(k):
        barrier.wait()
        for _ in range(200):
            np.testing.assert_allclose(f(inputs[k]), expected[k], rtol=1e-5, atol=1e-5)

    errors = run_in_threads(work, len(inputs))
    assert not errors, errors
    assert n.get_value() == 1 + 200 * len(inputs)
    if path == "fast":
        assert f._caller.fast_calls == 200 * len(inputs)


def test_threads_with_contended_shared_lock(path):
    """An update target whose lock another thread holds is installed after it is released."""
    n = sg.shared(np.int64(0), name="n")
    f = sg.compile([], n, updates=[(n, n + 1)], threads=1)
    f()
    holding = threading.Event()
    release = threading.Event()

    def hold():
        with n._lock:
            holding.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(5)
    result = []
    caller = threading.Thread(target=lambda: result.append(f()))
    caller.start()
    caller.join(0.2)
    assert n._version == 1  # still waiting for the lock
    release.set()
    t.join()
    caller.join()
    assert result[0] == 1 and n.get_value() == 2 and n._version == 2


def test_device_held_shared_values(path):
    """A shared value a device holds is pulled first; an update clears the device state."""
    w = sg.shared(np.zeros(3, np.float32), name="w")
    f = sg.compile([], w.sum(), updates=[(w, w + 1)], threads=1)
    assert f() == 0
    w._assign_device("fake", object(), lambda: np.full(3, 5, np.float32))
    assert f() == 15
    assert w.device_state == {} and w.__dict__["_pull"] is None
    np.testing.assert_array_equal(w.get_value(), np.full(3, 6, np.float32))
    w.device_state["fake"] = object()  # a stale handle: the update must drop it
    assert f() == 18
    assert w.device_state == {}
    np.testing.assert_array_equal(w.get_value(), np.full(3, 7, np.float32))


@needs_fast
def test_trust_input_takes_the_fast_path():
    f, w, b = make_step(trust_input=True)
    x, y = data()
    f(x, y)
    f(x, y)
    assert is_fast(f) and f._caller.fast_calls == 1
    f(x.tolist(), y)  # converted by the fallback
    assert f._caller.fast_calls == 1


def test_keyword_arguments_bind_by_input_name(path):
    """``f(x=..., y=...)`` is ``f(..., ...)`` by the inputs' names (the positional call keeps
    the fast path); a bad keyword is a TypeError naming it, and changes no shared value."""
    f, w, b = make_step()
    g, w2, b2 = make_step()
    for call in (lambda: f(X, y=Y), lambda: f(y=Y, x=X)):
        np.testing.assert_array_equal(call(), g(X, Y))
        np.testing.assert_array_equal(w.get_value(), w2.get_value())
        np.testing.assert_array_equal(b.get_value(), b2.get_value())
    before = w.get_value()
    for bad, match in [(lambda: f(X, z=Y), "unexpected keyword argument 'z'.*x, y"),
                       (lambda: f(X, x=X, y=Y), "multiple values for argument 'x'"),
                       (lambda: f(x=X), "missing argument 'y'")]:
        with pytest.raises(TypeError, match=match):
            bad()
    np.testing.assert_array_equal(w.get_value(), before)


def test_a_dropped_function_is_collected(path):
    """The C caller, its fallback closure and the function form a cycle the GC must free."""
    x = sg.vector("x")
    w = sg.shared(np.ones(3, np.float32), name="w")
    f = sg.compile([x], x * w, updates=[(w, w + 1)], threads=1)
    f(np.ones(3, np.float32))
    f(np.ones(3, np.float32))
    refs = weakref.ref(f), weakref.ref(f.program)
    del f
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_shared_variable_subclass_with_its_own_value_uses_the_python_path():
    class Logged(sg.SharedVariable):
        reads = 0

        @property
        def _value(self):
            Logged.reads += 1
            return self.__dict__["_host"]

        @_value.setter
        def _value(self, arr):
            self.__dict__["_host"] = arr

    w = Logged(np.ones(3, np.float32), name="w")
    x = sg.vector("x")
    f = sg.compile([x], x * w, threads=1)
    for _ in range(3):
        np.testing.assert_array_equal(f(np.ones(3, np.float32)), np.ones(3, np.float32))
    assert not is_fast(f) and Logged.reads == 3


@needs_fast
def test_a_nonzero_status_from_the_native_code_falls_back():
    """A status other than 0 (a refused input, an error a kernel reports) sends the call to the
    Python path, which handles it; nothing is installed twice."""
    from symgraph.backends import llvm_jit
    refuse = llvm_jit.Loaded(llvm_jit.emit_object(llvm_jit.optimize(
        "define i32 @refuse(ptr %args) {\n  ret i32 1\n}\n")), "refuse")
    n = sg.shared(np.int64(0), name="n")
    x = sg.vector("x")
    f = sg.compile([x], x * 2, updates=[(n, n + 1)], threads=1)
    f(np.ones(3, np.float32))
    # a specialisation for shape (5,) whose native code always refuses
    assert f._caller.add([(5,)], [(5,), ()], refuse.address, 0, FAST.ArenaLock(), refuse)
    fast = f._caller.fast_calls
    for k in range(3):
        np.testing.assert_array_equal(f(np.full(5, k, np.float32)), np.full(5, 2 * k, np.float32))
        assert n.get_value() == 2 + k
    assert f._caller.fast_calls == fast
    f(np.ones(3, np.float32))
    assert f._caller.fast_calls == fast + 1 and n.get_value() == 5


def test_the_argument_errors_of_test_errors_match_the_reference_backend(path):
    """Every bad call of tests/test_errors.py raises, on llvm, the reference backend's error."""
    from test_errors import BAD_CALLS as ERROR_CALLS

    def step(backend):
        w = sg.shared(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
        b = sg.shared(np.zeros(2, np.float32), name="b")
        x = sg.tensor("x", (None, 3))
        y = sg.tensor("y", (None,), "int64")
        loss = sg.nn.cross_entropy(x @ w + b, y)
        gw, gb = sg.grad(loss, [w, b])
        f = sg.compile([x, y], loss, updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)], backend=backend)
        return f, w

    (f, w), (g, _) = step("llvm"), step("reference")
    good = np.ones((4, 3), np.float32), np.array([0, 1, 1, 0])
    f(*good)
    f(*good)
    for label, args, exc, pattern in ERROR_CALLS:
        version = w._version
        with pytest.raises(exc, match=pattern) as got:
            f(*args)
        with pytest.raises(exc) as want:
            g(*args)
        assert str(got.value) == str(want.value), label
        assert w._version == version
    if path == "fast":
        assert f._caller.fast_calls == 1


# --- the call path changes no state it must not, and never crashes ------------------------

BACKENDS = ["llvm", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_update_of_the_wrong_run_time_shape_changes_nothing(path, backend):
    """Both updates are checked before anything is installed (on llvm before the native
    call); the error names the variable, both shapes and the line that compiled the function,
    and is the same on every backend and call path."""
    w = sg.shared(np.arange(3.0), name="w")
    v = sg.shared(np.arange(3.0), name="v")
    x = sg.vector("x", dtype="float64")
    f = sg.compile([x], x.sum(), updates=[(v, v + 1), (w, x * 2)], backend=backend, threads=1)
    reader = sg.compile([], w * 1, backend=backend, threads=1)
    for _ in range(2):
        with pytest.raises(sg.ShapeError) as info:
            f(np.ones(2))
        assert str(info.value).startswith(
            "update of shared variable 'w' computed shape (2,), but the variable has shape (3,); "
            "no shared variable was changed\n  built at ")
        assert "test_fastcall.py" in str(info.value) and "sg.compile([x], x.sum()" in str(info.value)
        assert w._version == 0 and v._version == 0
        np.testing.assert_array_equal(w.get_value(), np.arange(3.0))
        np.testing.assert_array_equal(v.get_value(), np.arange(3.0))
        np.testing.assert_array_equal(reader(), np.arange(3.0))
    assert f(np.ones(3)) == 3.0
    np.testing.assert_array_equal(w.get_value(), np.full(3, 2.0))
    np.testing.assert_array_equal(v.get_value(), np.arange(1.0, 4.0))


def test_a_static_update_shape_is_refused_when_compiling():
    w = sg.shared(np.zeros(3, np.float32), name="w")
    m = sg.tensor("m", (2, None))
    for backend in BACKENDS:
        with pytest.raises(sg.ShapeError, match=r"update of 'w' has shape \(2,\) but the variable "
                           r"has shape \(3,\)\n  built at .*test_fastcall.py"):
            sg.compile([m], [], updates=[(w, m.sum(axis=1))], backend=backend)


WRONG_RANKS = [
    ("python int", 2), ("python float", 2.5), ("python bool", True),
    ("numpy float32", np.float32(2)), ("numpy int8", np.int8(2)),
    ("0-d array", np.array(2.0, np.float32)),
    ("nested list", [[1.0, 2.0]]), ("list of lists of ints", [[1], [2]]),
]


@pytest.mark.parametrize("value", [v for _, v in WRONG_RANKS], ids=[k for k, _ in WRONG_RANKS])
def test_scalars_and_wrong_ranks_get_the_rank_error_everywhere(path, value):
    """A Python or NumPy scalar, a 0-d array or a nested list for a vector input raises the
    same ValueError on both backends and both call paths, and changes nothing."""
    messages = set()
    for backend in BACKENDS:
        n = sg.shared(np.int64(0), name="n")
        x = sg.vector("x")
        f = sg.compile([x], x * 2, updates=[(n, n + 1)], backend=backend, threads=1)
        f(np.ones(3, np.float32))
        with pytest.raises(ValueError) as info:
            f(value)
        messages.add(str(info.value))
        assert n.get_value() == 1 and n._version == 1
    want = f"argument 'x': expected a rank-1 array of shape (?,), got shape {np.shape(value)}"
    assert messages == {want}


def test_python_scalars_still_work_for_rank_0_inputs(path):
    for backend in BACKENDS:
        s = sg.scalar("s")
        f = sg.compile([s], s * 2, backend=backend, threads=1)
        assert f(2) == 4.0 and f(1.5) == 3.0 and f(np.float32(2)) == 4.0


CHILD_CHECKS = r'''
import sys
import numpy as np
import symgraph as sg

for backend in ("llvm", "reference"):
    x = sg.vector("x")
    f = sg.compile([x], x * 2, trust_input=True, backend=backend, threads=1)
    f(np.ones(4, np.float32))  # registers the shape (4,)
    big = np.arange(1 << 24).astype(np.int8)  # the native code would read 4x past its end
    out = f(big)
    assert out.dtype == np.float32 and np.array_equal(out, big.astype(np.float32) * 2), backend
    assert np.array_equal(f(np.ones(4, np.int8)), np.full(4, 2, np.float32))
    for bad, exc in [(np.ones(4), TypeError), (np.ones((2, 2), np.float32), ValueError),
                     (np.float32(1), ValueError), (np.ones(4, np.complex64), TypeError)]:
        try:
            f(bad)
        except exc as e:
            assert "argument 'x'" in str(e), e
        else:
            raise AssertionError(f"{backend}: {bad!r} was accepted")
    view = np.arange(8, dtype=np.float32)[::2]
    assert np.array_equal(f(view), view * 2)
    swapped = np.arange(4, dtype=">f4")
    assert np.array_equal(f(swapped), np.arange(4, dtype=np.float32) * 2)
print("ok")
'''


def run_child(code: str, fast: bool, *args: str, timeout: float = 120):
    """Run ``code`` in a fresh interpreter on this checkout (a crash is a test failure, not the
    end of the test run)."""
    import os
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    env.pop("SYMGRAPH_NO_FASTCALL", None)
    if not fast:
        env["SYMGRAPH_NO_FASTCALL"] = "1"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=root, capture_output=True,
                          text=True, timeout=timeout)


def test_trust_input_never_reads_out_of_bounds(path):
    """trust_input=True keeps the checks that protect memory: an int8 array for a float32
    input is converted (it used to make the native code read four times past its end), an
    unsafe dtype or a wrong rank raises the usual error, odd layouts are copied."""
    r = run_child(CHILD_CHECKS, path == "fast")
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stdout, r.stderr[-3000:])


CHILD_INTERRUPTS = r'''
import json, signal, sys, time
import numpy as np
import symgraph as sg

def hammer(backend, n_shared, seconds):
    """Call a function updating n_shared variables while SIGALRM fires at random moments (0 to
    twice a call's duration apart); its handler raises KeyboardInterrupt during a call."""
    shared = [sg.shared(np.int64(0), name=f"s{i}") for i in range(n_shared)]
    x = sg.scalar("x", "int64")
    f = sg.compile([x], [], updates=[(s, s + x) for s in shared], backend=backend, threads=1)
    one = np.ones((), np.int64)  # an ndarray: the C path takes it
    f(one)
    f(one)
    t0 = time.perf_counter()
    for _ in range(20):
        f(one)
    call_time = [(time.perf_counter() - t0) / 20]  # a running mean of uninterrupted calls
    done = 22
    armed = [False]
    rng = np.random.default_rng(0)

    def handler(signum, frame):
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.05, 2.0) * call_time[0])
        if armed[0]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, handler)
    counts = {"calls": 0, "interrupted": 0, "done": 0, "all": 0, "none": 0, "torn": 0}
    signal.setitimer(signal.ITIMER_REAL, call_time[0])
    start = time.perf_counter()
    # at least `seconds` and 100 interruptions (a loaded machine is slow), at most 3 * seconds
    while (time.perf_counter() - start < seconds or counts["interrupted"] < 100) \
            and time.perf_counter() - start < 3 * seconds:
        interrupted = False
        t0 = time.perf_counter()
        try:
            armed[0] = True
            f(one)
            armed[0] = False
        except KeyboardInterrupt:
            armed[0] = False  # no eval-breaker check between the catch and this store
            interrupted = True
        if not interrupted:
            call_time[0] = 0.9 * call_time[0] + 0.1 * (time.perf_counter() - t0)
        counts["calls"] += 1
        values = {int(s.get_value()) for s in shared}
        if values == {done + 1}:
            done += 1
            counts["all" if interrupted else "done"] += 1
        elif values == {done} and interrupted:
            counts["none"] += 1
        else:
            counts["torn"] += 1
            done = max(values)
            for s in shared:
                s.set_value(np.int64(done))
        counts["interrupted"] += interrupted
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    counts["fast_calls"] = getattr(f._caller, "fast_calls", 0) if f._caller is not None else 0
    return counts

jobs = json.loads(sys.argv[1])
print(json.dumps([hammer(*job) for job in jobs]))
'''


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs signal.setitimer")
def test_updates_are_all_or_nothing_under_keyboard_interrupts(path):
    """Thousands of KeyboardInterrupts, raised at arbitrary bytecodes by a SIGALRM handler,
    hit calls that update 40 shared variables (20 on llvm too, which the C path runs when it
    is built): after each call every variable was updated, or none was."""
    import json
    jobs = [["llvm", 40, 1.5], ["llvm", 20, 1.0], ["reference", 40, 1.5]]
    r = run_child(CHILD_INTERRUPTS, path == "fast", json.dumps(jobs))
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    results = json.loads(r.stdout.strip().splitlines()[-1])
    for job, counts in zip(jobs, results):
        assert counts["torn"] == 0, (job, counts)
        assert counts["interrupted"] >= 30, (job, counts)  # the test did interrupt calls
        if not counts["fast_calls"]:  # (a C call is never interrupted: its handler runs after)
            assert counts["none"] > 0, (job, counts)  # interrupts did land before the install
    if path == "fast":
        assert results[1]["fast_calls"] > 0  # 20 updates: the C path ran those calls


@pytest.mark.skipif(not hasattr(__import__("signal"), "setitimer"), reason="needs signal.setitimer")
@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interrupt_while_waiting_for_a_busy_target_installs_nothing(path, backend):
    """While another thread holds one target's lock the call waits for it before installing
    anything; a KeyboardInterrupt during that wait leaves every target as it was."""
    import signal
    a = sg.shared(np.zeros(2, np.float32), name="a")
    b = sg.shared(np.zeros(2, np.float32), name="b")
    x = sg.vector("x")
    f = sg.compile([x], [], updates=[(a, a + x), (b, b + x)], backend=backend, threads=1)
    f(np.ones(2, np.float32))
    holding, release = threading.Event(), threading.Event()

    def hold():
        with b._lock:
            holding.set()
            release.wait(10)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(5)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            f(np.ones(2, np.float32))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.set()
        t.join()
    np.testing.assert_array_equal(a.get_value(), np.ones(2, np.float32))
    np.testing.assert_array_equal(b.get_value(), np.ones(2, np.float32))
    assert a._version == 1 and b._version == 1
    f(np.ones(2, np.float32))
    np.testing.assert_array_equal(a.get_value(), np.full(2, 2, np.float32))
    assert a._version == 2 and b._version == 2
    if path == "fast" and backend == "llvm":
        assert f._caller.fast_calls == 1  # the last call ran in C (an interrupted one counts not)
