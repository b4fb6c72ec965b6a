"""``x.shape``: ints where the size is static, symbolic int64 scalars (``x.shape[i]``) where it
is only known at call time; shape arithmetic; what the rewrites prove about equal sizes; the
errors where a Python int is needed but the size is unknown."""

from __future__ import annotations

import io
import pickle
import re
from contextlib import redirect_stdout

import numpy as np
import pytest

import symgraph as sg
from symgraph.graph.basic import Variable

BACKENDS = ["reference", "llvm"]
ROWS = (1, 4, 7)


def x_rows(k: int, cols: int = 3) -> np.ndarray:
    return np.arange(k * cols, dtype=np.float32).reshape(k, cols) / 7


def compiled_ops(f) -> list[str]:
    """The op names of ``f``'s compiled graph, one per apply node (from ``sg.debugprint``)."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        sg.debugprint(f)
    seen, names = set(), []
    for line in buf.getvalue().splitlines():
        m = re.match(r"[ |]*(\S+?)(?:\{.*?\}|\[.*?\])?(?: '.*?')? id (\w+)", line)
        if m and m.group(2) not in seen:
            seen.add(m.group(2))
            names.append(m.group(1))
    return names


# --- what x.shape returns ------------------------------------------------------------------

def test_static_dims_stay_python_ints():
    x = sg.tensor("x", shape=(2, 3))
    assert x.shape == (2, 3) and all(type(d) is int for d in x.shape)
    y = sg.tensor("y", shape=(None, 3))
    assert type(y.shape[1]) is int and y.shape[1] == 3
    assert y.shape[1] * 2 + 1 == 7  # arithmetic on static sizes stays Python ints


def test_unknown_dims_are_int64_scalars_named_after_the_variable():
    x = sg.tensor("x", shape=(None, 3, None))
    n, _, m = x.shape
    for d in (n, m):
        assert isinstance(d, Variable) and d.dtype == "int64" and d.ndim == 0
    assert n.name == "x.shape[0]" and m.name == "x.shape[2]"
    assert x.type.shape == (None, 3, None)
    assert x.ndim == 3


def test_the_same_dim_variable_each_time():
    x = sg.tensor("x", shape=(None, None))
    assert x.shape[0] is x.shape[0] and x.shape[1] is x.shape[1]
    assert sg.shape(x) is sg.shape(x)
    assert x.shape[0].owner.inputs[0] is sg.shape(x)


def test_a_copy_gets_its_own_dims():
    x = sg.tensor("x", shape=(None, 3))
    n = x.shape[0]
    c = x.clone()
    assert c.shape[0] is not n and c.shape[0].owner.inputs[0].owner.inputs[0] is c
    back = pickle.loads(pickle.dumps(x))
    assert back.shape[0].owner.inputs[0].owner.inputs[0] is back


def test_debugprint_names_the_dim():
    x = sg.tensor("x", shape=(None, 3))
    buf = io.StringIO()
    with redirect_stdout(buf):
        sg.debugprint(x.shape[0] * 2)
    assert "'x.shape[0]'" in buf.getvalue()


def test_size_is_symbolic_when_a_dim_is_unknown():
    assert sg.tensor("s", shape=(2, 3)).size == 6
    x = sg.tensor("x", shape=(None, 3))
    f = sg.compile([x], x.size)
    assert int(f(x_rows(5))) == 15


def test_len_with_a_static_first_dim():
    assert len(sg.tensor("x", shape=(4, None))) == 4


# --- shape arithmetic, compiled ------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_arithmetic_matches_python(backend):
    x = sg.tensor("x", shape=(None, 3))
    n = x.shape[0]
    exprs = {
        "n + 1": (n + 1, lambda k: k + 1),
        "2 * n - 1": (2 * n - 1, lambda k: 2 * k - 1),
        "10 - n": (10 - n, lambda k: 10 - k),
        "n // 2": (n // 2, lambda k: k // 2),
        "n % 3": (n % 3, lambda k: k % 3),
        "n * x.shape[1]": (n * x.shape[1], lambda k: k * 3),
        "minimum": (sg.minimum(n, 4), lambda k: min(k, 4)),
        "maximum": (sg.maximum(n, 4), lambda k: max(k, 4)),
        "n > 3": (n > 3, lambda k: k > 3),
        "n == 4": (sg.eq(n, 4), lambda k: k == 4),
    }
    for _, (e, _) in exprs.items():
        assert e.ndim == 0
    assert (n // 2).dtype == "int64" and (n > 3).dtype == "bool"
    f = sg.compile([x], [e for e, _ in exprs.values()], backend=backend)
    for k in ROWS:
        got = f(x_rows(k))
        for (name, (_, want)), value in zip(exprs.items(), got):
            assert value.item() == want(k), (name, k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_symbolic_sizes_build_tensors(backend):
    x = sg.tensor("x", shape=(None, 3))
    n = x.shape[0]
    outs = [sg.arange(n), sg.arange(n // 2), sg.zeros((n, 3)) + x, x.reshape((n, -1)),
            x.reshape((-1, n)), x.reshape(sg.shape(x)) * 2]
    f = sg.compile([x], outs, backend=backend)
    for k in ROWS:
        a = x_rows(k)
        want = [np.arange(k), np.arange(k // 2), np.zeros((k, 3)) + a, a.reshape(k, -1),
                a.reshape(-1, k), a * 2]
        for got, w in zip(f(a), want):
            np.testing.assert_allclose(got, w, rtol=1e-6)
            assert got.shape == w.shape


def test_reshape_works_out_minus_one_from_the_symbolic_dims():
    x = sg.tensor("x", shape=(None, 3, 4))
    assert x.reshape((x.shape[0], -1)).type.shape == (None, 12)
    assert x.reshape((x.shape[0], 2, -1)).type.shape == (None, 2, 6)
    assert x.reshape((-1, x.shape[0])).type.shape == (12, None)
    y = sg.tensor("y", shape=(None, None, 4))
    assert y.reshape((y.shape[1], y.shape[0], -1)).type.shape == (None, None, 4)
    assert y.reshape((y.shape[0], -1)).type.shape == (None, None)  # y.shape[1] is unknown


@pytest.mark.parametrize("backend", BACKENDS)
def test_reshape_minus_one_with_a_symbolic_dim_runs(backend):
    x = sg.tensor("x", shape=(None, 3, 4))
    f = sg.compile([x], x.reshape((x.shape[0], 2, -1)), backend=backend)
    for k in ROWS:
        a = np.arange(k * 12, dtype=np.float32).reshape(k, 3, 4)
        np.testing.assert_array_equal(f(a), a.reshape(k, 2, 6))


def test_shape_arithmetic_of_static_sizes_folds_to_a_constant():
    x = sg.tensor("x", shape=(None, 3))
    f = sg.compile([x], (sg.shape(x)[1] + 1) * 2)
    assert compiled_ops(f) == []
    assert int(f(x_rows(2))) == 8


def test_shape_arithmetic_folds_when_givens_make_the_size_static():
    x = sg.tensor("x", shape=(None, 3))
    s = sg.shared(np.ones((4, 3), np.float32), name="s")
    f = sg.compile([], [x.shape[0] * 2 + 1, sg.arange(x.shape[0] // 2)], givens={x: s})
    assert compiled_ops(f) == []
    nine, rng = f()
    assert int(nine) == 9 and rng.tolist() == [0, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_shape_of_a_computed_value_reads_the_inputs_shape(backend):
    # the size of tanh(x) is x's: the tanh itself is never computed for it
    x = sg.tensor("x", shape=(None, None))
    n = sg.shape(sg.tanh(x) * 2)[0] * 2 + sg.shape(sg.exp(x))[1]
    f = sg.compile([x], n, backend=backend)
    assert not {"tanh", "exp", "mul"} & set(compiled_ops(f)), compiled_ops(f)
    for k in ROWS:
        assert int(f(x_rows(k, 5))) == 2 * k + 5


# --- equal unknown sizes in the rewritten graph ----------------------------------------------

def _mlp_grads():
    x = sg.tensor("x", shape=(None, 6))
    y = sg.tensor("y", shape=(None,), dtype="int64")
    rng = np.random.default_rng(0)
    W = sg.shared(rng.standard_normal((6, 4)).astype(np.float32), name="W")
    b = sg.shared(rng.standard_normal(4).astype(np.float32), name="b")
    loss = sg.nn.cross_entropy(x @ W + b, y)
    return x, y, W, b, loss, sg.grad(loss, [W, b])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_gradient_needs_no_sum_to_shape(backend):
    x, y, W, b, loss, grads = _mlp_grads()
    f = sg.compile([x, y], [loss, *grads], backend=backend)
    ops = compiled_ops(f)
    assert "SumToShape" not in ops, ops
    # the batch size of the mean is read from x, not from an intermediate's shape
    assert ops.count("Shape") == 1
    torch = pytest.importorskip("torch")
    for k in ROWS:
        a = np.random.default_rng(k).standard_normal((k, 6)).astype(np.float32)
        labels = np.arange(k) % 4
        tw = torch.tensor(W.get_value().astype(np.float64), requires_grad=True)
        tb = torch.tensor(b.get_value().astype(np.float64), requires_grad=True)
        tl = torch.nn.functional.cross_entropy(torch.tensor(a, dtype=torch.float64) @ tw + tb,
                                               torch.tensor(labels))
        tl.backward()
        got = f(a, labels)
        np.testing.assert_allclose(got[0], tl.item(), rtol=1e-5)
        np.testing.assert_allclose(got[1], tw.grad.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got[2], tb.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reshape_with_symbolic_dims_leaves_only_the_arithmetic(backend):
    a = sg.tensor("a", shape=(None, 3))
    z = a.reshape((a.shape[0], -1)) * 2
    f = sg.compile([a], sg.grad((z * a).sum(), a), backend=backend)
    ops = compiled_ops(f)
    assert not {"SumToShape", "Reshape", "Shape"} & set(ops), ops
    assert len(ops) == 1
    for k in ROWS:
        v = x_rows(k)
        np.testing.assert_allclose(f(v), 4 * v, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unrelated_unknown_sizes_still_sum_a_broadcast_gradient(backend):
    # a may be (1, 3) at call time: its gradient must still be summed over the rows
    a = sg.tensor("a", shape=(None, 3))
    c = sg.tensor("c", shape=(None, 3))
    f = sg.compile([a, c], sg.grad((a * c).sum(), a), backend=backend)
    cv = x_rows(4)
    np.testing.assert_allclose(f(np.ones((1, 3), np.float32), cv), cv.sum(0, keepdims=True),
                               rtol=1e-6)
    np.testing.assert_allclose(f(np.ones((4, 3), np.float32), cv), cv, rtol=1e-6)


# --- errors where a Python int is needed --------------------------------------------------

def _unknown():
    return sg.tensor("x", shape=(None, 3))


@pytest.mark.parametrize("use", [
    pytest.param(lambda x: int(x.shape[0]), id="int"),
    pytest.param(lambda x: range(x.shape[0]), id="range"),
    pytest.param(lambda x: np.zeros(x.shape), id="np.zeros"),
    pytest.param(lambda x: [0, 1][x.shape[0]], id="list-index"),
])
def test_a_python_int_from_an_unknown_dim_names_it_and_the_fix(use):
    with pytest.raises(TypeError) as e:
        use(_unknown())
    msg = str(e.value)
    assert "x.shape[0]" in msg and "unknown until call time" in msg
    assert "Pass x.shape[0] itself" in msg and "sg.shape(x)" in msg
    assert "x.type.shape[0] is None" in msg


def test_none_as_a_size_says_to_pass_the_symbolic_one():
    x = _unknown()
    with pytest.raises(TypeError, match=r"position 0 of \(None, 3\) is None.*unknown size.*"
                                        r"x\.shape\[i\].*sg\.shape\(x\)"):
        sg.zeros((x.type.shape[0], 3))


def test_truth_value_of_a_shape_comparison_is_a_clear_error():
    x = _unknown()
    with pytest.raises(TypeError, match=r"x\.shape\[0\] > 3 \(bool\[\]\) as a truth value.*"
                                        r"x\.shape\[0\], which is unknown until call time.*"
                                        r"sg\.where"):
        bool(x.shape[0] > 3)
    with pytest.raises(TypeError, match=r"truth value.*sg\.minimum / sg\.maximum"):
        min(x.shape[0], 4)


def test_int_of_shape_arithmetic_names_the_dims_it_uses():
    x = sg.tensor("x", shape=(None, None))
    with pytest.raises(TypeError, match=r"x\.shape\[0\] \* x\.shape\[1\] \(int64\[\]\) as a "
                                        r"Python int: it is computed from x\.shape\[0\], "
                                        r"x\.shape\[1\], which are unknown until call time"):
        int(x.shape[0] * x.shape[1])


def test_len_of_an_unknown_first_dim_names_it():
    with pytest.raises(TypeError, match=r"x\.shape\[0\] is unknown until call time; use "
                                        r"x\.shape\[0\]"):
        len(_unknown())


def test_int_of_another_symbolic_value_says_it_is_computed_at_run_time():
    x = _unknown()
    with pytest.raises(TypeError, match=r"symbolic value .* only known when a compiled "
                                        r"function runs"):
        int(x.sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_shape_spelled_out_dim_by_dim_is_read_as_one_vector(backend):
    t = sg.tensor("t", shape=(None, 3, None))
    z = sg.zeros((t.shape[0], t.shape[1], t.shape[2])) + t
    f = sg.compile([t], z, backend=backend)
    ops = compiled_ops(f)
    assert "MakeVector" not in ops and ops.count("Shape") == 1, ops
    for k in ROWS:
        v = np.arange(k * 3 * 2, dtype=np.float32).reshape(k, 3, 2)
        np.testing.assert_array_equal(f(v), v)


def test_a_symbolic_size_is_not_none():
    x = _unknown()
    assert (x.shape[0] == None) is False and (x.shape[0] != None) is True  # noqa: E711
    assert (x.shape == (None, 3)) is False  # a tuple compare, not an error
    assert x.shape[1:] == (3,)
    with pytest.raises(TypeError, match=r"x\.shape\[0\] == 5 \(bool\[\]\) as a truth value"):
        x.shape == (5, 3)  # noqa: B015


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_shape_with_other_sizes_is_not_taken_for_the_inputs_shape(backend):
    x = sg.tensor("x", shape=(None, None, None))
    f = sg.compile([x], x.reshape((x.shape[0], 2, -1)), backend=backend)
    v = np.arange(4 * 3 * 4, dtype=np.float32).reshape(4, 3, 4)
    np.testing.assert_array_equal(f(v), v.reshape(4, 2, 6))
