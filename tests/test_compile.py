"""compile(): updates from pre-call values, givens, output forms, no aliasing, threads,
pickling, profiling."""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
from helpers import run_in_threads

import symgraph as sg


def ref(inputs, outputs, **kw):
    return sg.compile(inputs, outputs, backend="reference", **kw)


def test_updates_use_values_from_before_the_call():
    a = sg.shared(np.array([1.0, 2.0], np.float32), name="a")
    b = sg.shared(np.array([3.0, 4.0], np.float32), name="b")
    n = sg.shared(np.int64(0), name="n")
    f = ref([], [a + b], updates=[(a, b), (b, a), (n, n + 1)])
    (s,) = f()
    np.testing.assert_array_equal(s, [4.0, 6.0])
    np.testing.assert_array_equal(a.get_value(), [3.0, 4.0])
    np.testing.assert_array_equal(b.get_value(), [1.0, 2.0])
    f()
    np.testing.assert_array_equal(a.get_value(), [1.0, 2.0])
    assert n.get_value() == 2


def test_outputs_see_pre_update_values_and_dict_updates():
    w = sg.shared(np.float32(1.0), name="w")
    f = ref([], w * 10, updates={w: w + 1})
    assert f() == 10.0 and f() == 20.0
    assert w.get_value() == 3.0


@pytest.mark.parametrize("backend", ["llvm", "reference"])
def test_update_casts_to_the_shared_dtype_only_when_safe(backend):
    """A float64 update of a float32 variable is refused at build time (as Theano does),
    naming the variable and the user's line; ``.astype`` says the narrowing is intended; a
    safe cast (int32 into float64) is made silently."""
    w = sg.shared(np.zeros(2, np.float32), name="w")
    x = sg.vector("x", "float64")
    with pytest.raises(TypeError, match=r"'w' \(float32\) has dtype float64.*astype\('float32'\)"
                       r"(.|\n)*test_compile.py"):
        sg.compile([x], [], updates=[(w, w + x)], backend=backend)
    f = sg.compile([x], [], updates=[(w, (w + x).astype("float32"))], backend=backend)
    assert f(np.array([0.5, 1.5])) == []
    assert w.get_value().dtype == np.float32
    np.testing.assert_array_equal(w.get_value(), [0.5, 1.5])
    d = sg.shared(np.zeros(2), name="d")
    n = sg.vector("n", "int32")
    g = sg.compile([n], [], updates=[(d, n)], backend=backend)
    g(np.array([1, 2], np.int32))
    assert d.get_value().dtype == np.float64
    np.testing.assert_array_equal(d.get_value(), [1.0, 2.0])


def test_givens():
    x, y = sg.vector("x"), sg.vector("y")
    w = sg.shared(np.array([1.0, 2.0, 3.0], np.float32), name="w")
    out = (x * w).sum()
    f = ref([y], out, givens={x: y * 2})
    assert f(np.ones(3, np.float32)) == 12.0
    data = sg.shared(np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], np.float32), name="data")
    i = sg.scalar("i", "int64")
    g = ref([i], out, givens=[(x, data[i])])
    assert g(1) == 12.0 and g(0) == 6.0


def test_single_output_vs_list():
    x = sg.vector("x")
    v = np.arange(3, dtype=np.float32)
    single = ref([x], x * 2)(v)
    assert isinstance(single, np.ndarray)
    as_list = ref([x], [x * 2])(v)
    assert isinstance(as_list, list) and len(as_list) == 1
    pair = ref([x], (x * 2, x.sum()))(v)
    assert isinstance(pair, list) and len(pair) == 2
    np.testing.assert_array_equal(pair[0], v * 2)
    assert ref([x], [])(v) == []


def test_outputs_never_alias_inputs_or_shared_storage():
    w = sg.shared(np.arange(4, dtype=np.float32), name="w")
    x = sg.vector("x")
    f = ref([x], [x, w, w.reshape(2, 2), x.T, w[1:], x * 1, x, sg.stop_gradient(w)])
    arg = np.ones(4, np.float32)
    outs = f(arg)
    for o in outs:
        o[...] = -7
    np.testing.assert_array_equal(arg, np.ones(4, np.float32))
    np.testing.assert_array_equal(w.get_value(), np.arange(4, dtype=np.float32))
    assert outs[0] is not outs[6]
    again = f(arg)
    np.testing.assert_array_equal(again[1], np.arange(4, dtype=np.float32))
    for o in again:
        assert o.flags.writeable


def test_output_equal_to_update_value_is_independent():
    w = sg.shared(np.zeros(3, np.float32), name="w")
    new = w + 1
    f = ref([], new, updates=[(w, new)])
    out = f()
    out[...] = 100
    np.testing.assert_array_equal(w.get_value(), np.ones(3, np.float32))


def test_constant_output():
    f = ref([], sg.constant(np.array([1.0, 2.0], np.float32)))
    out = f()
    out[0] = 5
    np.testing.assert_array_equal(f(), [1.0, 2.0])


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_threads_calling_one_function(backend):
    x = sg.matrix("x")
    w = sg.shared(np.eye(8, dtype=np.float32) * 2, name="w")
    f = sg.compile([x], sg.tanh(x @ w).sum(axis=1), backend=backend)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((16, 8)).astype(np.float32) for _ in range(8)]
    expected = [np.tanh(a @ (np.eye(8, dtype=np.float32) * 2)).sum(axis=1) for a in inputs]
    results = [None] * len(inputs)

    def work(k):
        for _ in range(20):
            results[k] = f(inputs[k])
            np.testing.assert_allclose(results[k], expected[k], rtol=1e-5, atol=1e-6)

    errors = run_in_threads(work, len(inputs))
    assert not errors, errors


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_threads_with_updates_count_every_call(backend):
    n = sg.shared(np.int64(0), name="n")
    f = sg.compile([], n, updates=[(n, n + 1)], backend=backend)
    threads = [threading.Thread(target=lambda: [f() for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert n.get_value() == 200


def test_pickle_keeps_shared_values_and_works():
    w = sg.shared(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), name="w")
    x = sg.matrix("x")
    loss = ((x @ w) ** 2).mean()
    f = ref([x], loss, updates=[(w, w - 0.01 * sg.grad(loss, w))])
    data = np.ones((3, 2), np.float32)
    f(data)
    g = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(g.shared[0].get_value(), w.get_value())
    a, b = f(data), g(data)
    assert a == b
    np.testing.assert_array_equal(g.shared[0].get_value(), w.get_value())
    w.set_value(np.zeros((2, 2), np.float32))  # the copy has its own state
    assert g(data) != 0.0


def test_profile_stats():
    x = sg.vector("x")
    f = ref([x], sg.exp(x).sum(), profile=True)
    for _ in range(3):
        f(np.ones(5, np.float32))
    stats = f.stats()
    assert stats and all(s["calls"] == 3 for s in stats)
    assert all(s["seconds"] >= 0.0 for s in stats)
    assert [s["kernel"] for s in stats] == [k.name for k in f.kernels]
    with pytest.raises(RuntimeError, match="profile"):
        ref([x], x * 2).stats()


def test_trust_input_skips_checks():
    x = sg.vector("x")
    f = ref([x], x * 2, trust_input=True)
    np.testing.assert_array_equal(f(np.array([1.0, 2.0], np.float32)), [2.0, 4.0])


def test_kernels_and_source_on_reference():
    x = sg.vector("x")
    f = ref([x], sg.exp(x) + 1)
    assert f.kernels and all(k.name and k.source for k in f.kernels)
    assert all(k.source in f.source() for k in f.kernels)
    with pytest.raises(sg.CompileError):
        f.asm()
    assert "reference" in repr(f)


def test_same_shapes_reused_and_new_shapes_work():
    x = sg.matrix("x")
    f = ref([x], x.sum(axis=0))
    for shape in [(2, 3), (5, 1), (2, 3), (1, 7)]:
        v = np.ones(shape, np.float32)
        np.testing.assert_array_equal(f(v), v.sum(axis=0))
