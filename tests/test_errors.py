"""Errors: build-time ShapeErrors name the shapes and the user's line; call-time argument
errors name the input and change no shared value; runtime errors name the op and the line."""

from __future__ import annotations

import inspect
import os
import re

import numpy as np
import pytest

import symgraph as sg

HERE = os.path.basename(__file__)


def line_of(marker: str) -> int:
    """The line number in this file of the source line containing ``marker``."""
    for i, text in enumerate(inspect.getsource(inspect.getmodule(line_of)).splitlines(), start=1):
        if marker in text and "line_of(" not in text:
            return i
    raise AssertionError(marker)


def assert_names_line(err: Exception, marker: str) -> None:
    msg = str(err)
    assert "built at" in msg, msg
    assert re.search(rf"{re.escape(HERE)}:{line_of(marker)}\b", msg), msg


# --- construction-time shape errors ------------------------------------------------------

def build_broadcast():
    a, b = sg.tensor("a", (2, 3)), sg.tensor("b", (4, 3))
    return a + b  # @broadcast


def build_matmul():
    return sg.tensor("a", (3, 4)) @ sg.tensor("b", (5, 6))  # @matmul


def build_concat():
    return sg.concatenate([sg.tensor("a", (2, 3)), sg.tensor("b", (2, 5))], axis=0)  # @concat


def build_reshape():
    return sg.reshape(sg.tensor("a", (2, 3)), (7, -1))  # @reshape


def build_conv():
    return sg.nn.conv2d(sg.tensor("x", (8, 3, 9, 9)), sg.tensor("w", (4, 5, 3, 3)))  # @conv


def build_where():
    return sg.where(sg.tensor("c", (3,), "bool"), sg.tensor("a", (4,)), 0.0)  # @where


def build_stack():
    return sg.stack([sg.tensor("a", (2,)), sg.tensor("b", (3,))])  # @stack


def build_broadcast_to():
    return sg.broadcast_to(sg.tensor("a", (3, 2)), (3, 4))  # @broadcast_to


def build_cross_entropy():
    return sg.nn.cross_entropy(sg.tensor("z", (5, 10)), sg.tensor("y", (4,), "int64"))  # @xent


def build_reduce_axis():
    return sg.sum(sg.tensor("a", (2, 3)), axis=3)  # @axis


BUILD_ERRORS = [
    (build_broadcast, "@broadcast", ["(2, 3)", "(4, 3)"]),
    (build_matmul, "@matmul", ["(3, 4)", "(5, 6)"]),
    (build_concat, "@concat", ["(2, 3)", "(2, 5)"]),
    (build_reshape, "@reshape", ["(2, 3)", "(7, -1)"]),
    (build_conv, "@conv", ["(8, 3, 9, 9)", "(4, 5, 3, 3)"]),
    (build_where, "@where", ["(3,)", "(4,)"]),
    (build_stack, "@stack", ["(2,)", "(3,)"]),
    (build_broadcast_to, "@broadcast_to", ["(3, 2)", "(3, 4)"]),
    (build_cross_entropy, "@xent", ["(5, 10)", "(4,)"]),
    (build_reduce_axis, "@axis", ["axis 3"]),
]


@pytest.mark.parametrize("build,marker,shapes", BUILD_ERRORS, ids=[m for _, m, _ in BUILD_ERRORS])
def test_build_errors_name_shapes_and_user_line(build, marker, shapes):
    with pytest.raises(sg.ShapeError) as info:
        build()
    for s in shapes:
        assert s in str(info.value), str(info.value)
    assert_names_line(info.value, marker)
    assert isinstance(info.value, ValueError)


def test_unknown_dims_defer_the_check_to_call_time():
    a, b = sg.tensor("a", (None, 3)), sg.tensor("b", (4, None))
    c = a + b  # @deferred
    assert c.shape == (4, 3)
    f = sg.compile([a, b], c, backend="reference")
    with pytest.raises(sg.ShapeError) as info:
        f(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32))
    msg = str(info.value)
    assert "add" in msg and "(2, 3)" in msg and "(4, 3)" in msg
    assert_names_line(info.value, "@deferred")


def test_runtime_error_in_graph_names_op_and_line():
    x = sg.matrix("x")
    y = x.reshape(5, -1)  # @runtime-reshape
    f = sg.compile([x], y * 2, backend="reference")
    with pytest.raises(ValueError) as info:
        f(np.zeros((3, 4), np.float32))
    assert "eshape" in str(info.value)
    assert_names_line(info.value, "@runtime-reshape")
    i = sg.vector("i", "int64")
    g = sg.compile([x, i], x[i] + 1, backend="reference")  # @runtime-index
    with pytest.raises(IndexError) as info:
        g(np.zeros((3, 4), np.float32), np.array([7]))
    assert "Subtensor" in str(info.value)
    assert_names_line(info.value, "@runtime-index")


def test_runtime_error_after_rewrite_keeps_user_line():
    a, b = sg.vector("a"), sg.vector("b")
    out = sg.exp(a) * 2 + b  # @fusable
    f = sg.compile([a, b], out, backend="reference")
    with pytest.raises(ValueError) as info:
        f(np.zeros(3, np.float32), np.zeros(4, np.float32))
    assert_names_line(info.value, "@fusable")


# --- call-time argument errors ----------------------------------------------------------

@pytest.fixture
def step():
    """A training step with updates on two shared variables."""
    w = sg.shared(np.arange(6, dtype=np.float32).reshape(3, 2), name="w")
    b = sg.shared(np.zeros(2, np.float32), name="b")
    x = sg.tensor("x", (None, 3))
    y = sg.tensor("y", (None,), "int64")
    loss = sg.nn.cross_entropy(x @ w + b, y)
    gw, gb = sg.grad(loss, [w, b])
    f = sg.compile([x, y], loss, updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)], backend="reference")
    return f, w, b


def _unchanged(w, b):
    np.testing.assert_array_equal(w.get_value(), np.arange(6, dtype=np.float32).reshape(3, 2))
    np.testing.assert_array_equal(b.get_value(), np.zeros(2, np.float32))


X = np.ones((4, 3), np.float32)
Y = np.array([0, 1, 1, 0])

BAD_CALLS = [
    ("too few", (X,), TypeError, r"takes 2 arguments.*got 1"),
    ("too many", (X, Y, Y), TypeError, r"takes 2 arguments.*got 3"),
    ("rank", (np.ones(3, np.float32), Y), ValueError, r"'x'.*rank"),
    ("static dim", (np.ones((4, 5), np.float32), Y), ValueError, r"'x'.*dimension 1 must be 3"),
    ("float64 to float32", (X.astype(np.float64), Y), TypeError, r"'x'.*float64"),
    ("float to int", (X, Y.astype(np.float32)), TypeError, r"'y'.*float32"),
    ("python float to int", (X, 1.5), TypeError, r"'y'"),
    ("labels rank", (X, Y[:, None]), ValueError, r"'y'.*rank"),
]


@pytest.mark.parametrize("args,exc,pattern", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_raise_and_change_nothing(step, args, exc, pattern):
    f, w, b = step
    with pytest.raises(exc, match=pattern):
        f(*args)
    _unchanged(w, b)


def test_failure_inside_graph_changes_no_shared_value(step):
    f, w, b = step
    with pytest.raises(IndexError):
        f(X, np.array([0, 1, 2, 0]))  # label 2 is out of range for 2 classes
    _unchanged(w, b)
    with pytest.raises(ValueError):
        f(X, np.array([0, 1]))  # 4 rows, 2 labels
    _unchanged(w, b)
    f(X, Y)  # a good call does update
    assert not np.array_equal(w.get_value(), np.arange(6, dtype=np.float32).reshape(3, 2))


def test_safe_casts_are_accepted(step):
    f, w, b = step
    f(X.astype(np.float16), Y.astype(np.int32))
    f([[1, 2, 3]], [1])  # Python lists
    f(X.astype(np.int8), Y.astype(np.uint8))


def test_scalar_arguments():
    s = sg.scalar("s")
    n = sg.scalar("n", "int64")
    f = sg.compile([s, n], s * n, backend="reference")
    assert f(2.5, 3) == 7.5
    assert f(np.float32(2.0), np.int32(2)) == 4.0
    with pytest.raises(TypeError, match="'n'"):
        f(1.0, 2.5)
    with pytest.raises(TypeError, match="'s'"):
        f(np.float64(1.0), 1)


# --- shared variables ---------------------------------------------------------------------

def test_shared_get_value_is_a_copy_and_set_value_checks():
    init = np.ones((2, 3), np.float32)
    w = sg.shared(init, name="w")
    init[0, 0] = 5  # the shared variable took a copy
    v = w.get_value()
    v[0, 0] = 7
    np.testing.assert_array_equal(w.get_value(), np.ones((2, 3), np.float32))
    new = np.full((2, 3), 2.0, np.float32)
    w.set_value(new)
    new[0, 0] = 9
    np.testing.assert_array_equal(w.get_value(), np.full((2, 3), 2.0, np.float32))
    with pytest.raises(ValueError, match=r"'w'.*\(2, 3\)"):
        w.set_value(np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="'w'"):
        w.set_value(np.ones((2, 3), np.complex64))
    i = sg.shared(np.zeros(3, np.int64), name="i")
    with pytest.raises(TypeError, match="'i'"):
        i.set_value(np.ones(3, np.float32))
    w.set_value(np.ones((2, 3), np.float64))  # same kind: stored as float32
    assert w.get_value().dtype == np.float32


SET_VALUE_REFUSED = [
    ("int64 2**40 into int32", np.int32, np.array([2**40, 1]), ValueError, r"1099511627776 does not fit"),
    ("uint16 256 into uint8", np.uint8, np.array([256, 1], np.uint16), ValueError, r"256 does not fit"),
    ("signed into uint8", np.uint8, np.array([1, 1]), TypeError, r"cannot store a int64"),
    ("int64 300 into int8", np.int8, np.array([300, 1], np.int64), ValueError, r"300 does not fit in int8"),
    ("1e300 into float32", np.float32, np.array([1e300, 1.0]), ValueError, r"1e\+300 overflows float32"),
    ("python float into float32", np.float32, [1e39, 1.0], ValueError, r"1e\+39 overflows float32"),
    ("int into int16", np.int16, np.array([1, 10**6]), ValueError, r"1000000 does not fit in int16"),
    ("float into int", np.int32, np.array([1.0, 2.0]), TypeError, r"cannot store a float64"),
    ("complex into float", np.float32, np.array([1j, 2]), TypeError, r"cannot store a complex128"),
]


@pytest.mark.parametrize("dtype,value,exc,pattern", [c[1:] for c in SET_VALUE_REFUSED],
                         ids=[c[0] for c in SET_VALUE_REFUSED])
def test_set_value_refuses_values_that_do_not_survive_the_cast(dtype, value, exc, pattern):
    """set_value casts only what fits: a wrapped integer or a finite float that would become
    inf raises, naming the variable, and changes nothing (value, version)."""
    v = sg.shared(np.array([3, 4], dtype), name="v")
    with pytest.raises(exc, match=r"shared variable 'v': " + pattern):
        v.set_value(value)
    np.testing.assert_array_equal(v.get_value(), np.array([3, 4], dtype))
    assert v._version == 0


def test_set_value_keeps_what_fits_and_non_finite_inputs():
    f32 = sg.shared(np.zeros(4, np.float32), name="f32")
    f32.set_value(np.array([np.inf, -np.inf, np.nan, 3e38]))  # already non-finite: kept
    got = f32.get_value()
    assert np.isposinf(got[0]) and np.isneginf(got[1]) and np.isnan(got[2]) and got[3] == np.float32(3e38)
    f32.set_value(np.array([2**60, 1, 2, 3]))  # large but finite: precision loss only
    assert f32.get_value()[0] == np.float32(2**60)
    i32 = sg.shared(np.zeros(2, np.int32), name="i32")
    i32.set_value(np.array([2**31 - 1, -2**31]))
    np.testing.assert_array_equal(i32.get_value(), [2**31 - 1, -2**31])
    u8 = sg.shared(np.zeros(2, np.uint8), name="u8")
    u8.set_value(np.array([255, True], np.uint16))
    np.testing.assert_array_equal(u8.get_value(), [255, 1])
    assert f32._version == 2 and i32._version == 1 and u8._version == 1


def test_no_value_of_another_shape_or_dtype_is_ever_installed():
    """The internal assignment every host-side install goes through refuses a value compiled
    code would read out of bounds."""
    w = sg.shared(np.zeros(3, np.float32), name="w")
    for bad in (np.zeros(4, np.float32), np.zeros(3, np.float64), np.zeros((3, 1), np.float32)):
        with pytest.raises(ValueError, match="'w'"):
            w._assign(bad)
    assert w._version == 0 and w.get_value().shape == (3,)


def test_compile_time_errors():
    x = sg.vector("x")
    w = sg.shared(np.zeros(3, np.float32), name="w")
    with pytest.raises(TypeError, match="shared"):
        sg.compile([w], w * 2, backend="reference")
    with pytest.raises(sg.CompileError, match="y"):
        sg.compile([x], x + sg.vector("y"), backend="reference")
    with pytest.raises(ValueError, match="twice"):
        sg.compile([x, x], x, backend="reference")
    with pytest.raises(ValueError, match="'w'"):
        sg.compile([x], x, updates=[(w, sg.matrix("m").sum(0)[:2, None])], backend="reference")
    with pytest.raises(TypeError):
        sg.compile([x], x, updates=[(x, x + 1)], backend="reference")
    with pytest.raises(ValueError, match="backend"):
        sg.compile([x], x, backend="nope")


def test_update_with_wrong_runtime_shape_changes_nothing():
    w = sg.shared(np.zeros(3, np.float32), name="w")
    c = sg.shared(np.zeros(2, np.float32), name="c")
    v = sg.vector("v")
    f = sg.compile([v], [], updates=[(c, c + 1), (w, v * 2)], backend="reference")
    with pytest.raises(ValueError, match="'w'"):
        f(np.ones(4, np.float32))
    np.testing.assert_array_equal(c.get_value(), np.zeros(2, np.float32))
    f(np.ones(3, np.float32))
    np.testing.assert_array_equal(c.get_value(), np.ones(2, np.float32))
