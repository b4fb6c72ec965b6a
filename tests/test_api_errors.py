"""Mistakes at the public entry points (sg.tensor / constant / shared, sg.compile's arguments,
calling a compiled function, one_hot, reshape) raise the right exception type with a message
that names the argument, what was expected and what was given."""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import pytest

import symgraph as sg

HERE = os.path.basename(__file__)
F32 = np.float32


# --- calling a compiled function ------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "llvm"])
@pytest.mark.parametrize("dtype,value", [("int32", 2 ** 40), ("int32", -2 ** 31 - 1),
                                         ("int32", 2 ** 70), ("uint8", 256), ("uint8", -1),
                                         ("int64", 2 ** 63)])
def test_python_int_out_of_range_names_the_argument(backend, dtype, value):
    s = sg.scalar("count", dtype)
    f = sg.compile([s], s + 1, backend=backend)
    with pytest.raises(TypeError, match=rf"argument 'count': the Python integer {value} does not "
                                        rf"fit in {dtype} \(range \[-?\d+, \d+\]\)"):
        f(value)
    info = np.iinfo(dtype)
    assert f(int(info.max) - 1) == info.max  # the edges still fit


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_keyword_arguments_bind_by_input_name(backend):
    x, y = sg.vector("x"), sg.vector("y")
    f = sg.compile([x, y], x - y, backend=backend)
    a, b = np.arange(3, dtype=F32), np.ones(3, F32)
    np.testing.assert_array_equal(f(y=b, x=a), a - b)
    np.testing.assert_array_equal(f(a, y=b), a - b)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'z' \(inputs that can be "
                                        r"passed by name: x, y\)"):
        f(a, z=b)
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        f(a, x=a, y=b)
    with pytest.raises(TypeError, match="missing argument 'y'"):
        f(x=a)
    with pytest.raises(TypeError, match=r"takes 2 arguments \(x, y\), got 3"):
        f(a, b, a, x=a)


def test_keyword_arguments_with_an_ambiguous_name_are_refused():
    x1, x2 = sg.vector("x"), sg.vector("x")
    f = sg.compile([x1, x2], x1 - x2, backend="reference")
    with pytest.raises(TypeError, match=r"inputs \[0, 1\] are all named 'x'; pass them by position"):
        f(x=np.ones(2, F32))


def test_python_fallback_call_binds_keywords(monkeypatch):
    """Without the C extension, ``FunctionBase`` (fastcall.py) passes keywords to ``_call``."""
    import importlib

    import symgraph.fastcall as fastcall
    monkeypatch.setitem(sys.modules, "symgraph._fastcall", None)  # the extension "is missing"
    fallback = importlib.reload(fastcall).FunctionBase
    monkeypatch.undo()
    importlib.reload(fastcall)
    seen = []

    class Fn(fallback):
        _caller = staticmethod(lambda args: seen.append(("caller", args)))  # the positional path

        def _call(self, *args, **kwargs):
            seen.append(("call", args, kwargs))

    fn = Fn()
    fn(1, 2)
    fn(1, y=2)
    assert seen == [("caller", (1, 2)), ("call", (1,), {"y": 2})]


# --- sg.compile's arguments -------------------------------------------------------------------

def test_compile_inputs_must_be_a_list():
    x = sg.vector("x")
    with pytest.raises(TypeError, match=r"compile: inputs must be a list of symbolic variables, "
                                        r"got Variable; write \[x\] for a single input"):
        sg.compile(x, x * 2)
    with pytest.raises(TypeError, match="inputs must be a list.*got NoneType"):
        sg.compile(None, x * 2)


@pytest.mark.parametrize("outputs,match", [
    ("x", r"compile: outputs is str 'x', not a symbolic value"),
    ({"a": 1}, r"compile: outputs is dict"),
    ("LIST_WITH_NONE", r"compile: outputs\[1\] is NoneType None, not a symbolic value"),
])
def test_compile_outputs_of_the_wrong_kind(outputs, match):
    x = sg.vector("x")
    if outputs == "LIST_WITH_NONE":
        outputs = [x, None]
    with pytest.raises(TypeError, match=match):
        sg.compile([x], outputs)


def test_compile_updates_must_be_pairs():
    w = sg.shared(np.zeros(3, F32), name="w")
    v = sg.vector("v")
    with pytest.raises(TypeError, match=r"compile: updates\[0\] must be a \(shared variable, new "
                                        r"value\) pair, got a tuple of 3 items"):
        sg.compile([v], v, updates=[(w, v, 3)])
    with pytest.raises(TypeError, match=r"updates\[0\] must be a \(shared variable, new value\) "
                                        r"pair, got SharedVariable\(w"):
        sg.compile([v], v, updates=[w])
    with pytest.raises(TypeError, match=r"compile: the new value of 'w' \(updates\[0\]\) is str"):
        sg.compile([v], v, updates=[(w, "v")])
    with pytest.raises(TypeError, match="updates must be a dict or a list of"):
        sg.compile([v], v, updates=3)


def test_compile_givens_keys_are_variables():
    x, y = sg.vector("x"), sg.vector("y")
    with pytest.raises(TypeError, match=r"compile: givens key 'x' is a str, not a symbolic "
                                        r"variable \(pass the variable itself, not its name"):
        sg.compile([y], x * 2, givens={"x": y})
    with pytest.raises(TypeError, match=r"compile: givens\[0\] must be a \(variable, replacement\) "
                                        r"pair, got Variable\(x"):
        sg.compile([y], x * 2, givens=[x])
    with pytest.raises(TypeError, match="the replacement of x in givens is str 'y'"):
        sg.compile([y], x * 2, givens={x: "y"})
    f = sg.compile([y], x * 2, givens=[(x, y + 1)], backend="reference")  # pairs still work
    np.testing.assert_array_equal(f(np.ones(2, F32)), [4, 4])


@pytest.mark.parametrize("threads,kind,match", [
    (0, ValueError, "threads must be at least 1, got 0"),
    (-2, ValueError, "threads must be at least 1, got -2"),
    ("4", TypeError, "threads must be an int or None, got str '4'"),
    (2.0, TypeError, "threads must be an int or None, got float 2.0"),
])
def test_compile_threads_is_checked(threads, kind, match):
    x = sg.vector("x")
    with pytest.raises(kind, match=match):
        sg.compile([x], x * 2, threads=threads)


def test_float16_is_refused_when_the_graph_is_built():
    """No backend computes in float16: declaring or casting to it says so at build time (not a
    KeyError from inside a code generator)."""
    match = r"float16 is not supported .*use float32"
    with pytest.raises(TypeError, match=match):
        sg.tensor("s", (3,), "float16")
    with pytest.raises(TypeError, match=match):
        sg.vector("x").astype("float16")


# --- declaring values ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape,match", [
    ("abc", r"tensor: shape must be a tuple of ints and None \(unknown\), got str 'abc'"),
    ((3.5,), r"tensor: shape: dimension 0 is float 3.5; each dimension must be an int or None"),
    ((2, True), r"dimension 1 is bool True"),
    ((None, "4"), r"dimension 1 is str '4'"),
    (None, r"shape must be a tuple of ints and None \(unknown\), got NoneType"),
])
def test_tensor_shape_must_be_ints_or_none(shape, match):
    with pytest.raises(TypeError, match=match):
        sg.tensor("x", shape)


def test_tensor_shape_accepts_numpy_ints_and_a_single_int():
    assert sg.tensor("x", (np.int64(3), None)).type.shape == (3, None)
    assert sg.tensor("x", 4).type.shape == (4,)


def test_negative_tensor_dim_is_a_shape_error_at_the_users_line():
    with pytest.raises(sg.ShapeError) as info:
        sg.tensor("x", (2, -1))  # @negative-dim
    msg = str(info.value)
    assert "tensor: shape: dimension 1 is negative (-1)" in msg
    line = next(i for i, t in enumerate(open(__file__).read().splitlines(), 1)
                if "# @negative-dim" in t and "next(" not in t)
    assert re.search(rf"built at .*{re.escape(HERE)}:{line} ", msg), msg


@pytest.mark.parametrize("make", [sg.tensor, sg.vector, sg.matrix, sg.scalar])
def test_a_name_that_is_not_a_string_is_refused(make):
    with pytest.raises(TypeError, match=r"name must be a str or None, got tuple \(3, 4\) \(the "
                                        r"first argument is the name: pass the shape as shape=...\)"):
        make((3, 4))


def test_unknown_dtype_names_itself():
    with pytest.raises(TypeError, match=r"unknown dtype 'float7'; symgraph supports bool, .*float64"):
        sg.vector("x", "float7")


@pytest.mark.parametrize("value,match", [
    ("abc", r"cannot make a constant from str 'abc': unsupported dtype 'str'"),
    ({"a": 1}, r"cannot make a constant from dict \{'a': 1\}: it is not a number or an array"),
    (None, r"cannot make a constant from NoneType None: it is not a number"),
    ([1, [2, 3]], r"cannot make a constant from list \[1, \[2, 3\]\]: .*inhomogeneous"),
])
def test_constant_of_a_non_number(value, match):
    with pytest.raises(TypeError, match=match):
        sg.constant(value)


def test_constant_of_a_symbolic_value_says_why():
    x = sg.vector("x")
    with pytest.raises(TypeError, match=r"cannot make a constant from the symbolic value x "
                                        r"\(float32\[\?,\]\); its value is only known"):
        sg.constant(x)


@pytest.mark.parametrize("value,match", [
    (None, r"cannot make a shared variable from NoneType None: it is not a number"),
    ([1, "a"], r"cannot make a shared variable from list \[1, 'a'\]: unsupported dtype 'str'"),
    (np.zeros(2, np.complex64), r"shared variable from ndarray .*unsupported dtype 'complex64'"),
])
def test_shared_of_a_non_number(value, match):
    with pytest.raises(TypeError, match=match):
        sg.shared(value)


def test_shared_and_constant_names_are_strings():
    with pytest.raises(TypeError, match="shared: name must be a str or None, got int 3"):
        sg.shared(np.zeros(2, F32), 3)
    with pytest.raises(TypeError, match="constant: name must be a str or None, got float 1.5"):
        sg.constant(1.0, 1.5)


# --- ops with arguments that are not tensors ---------------------------------------------------

@pytest.mark.parametrize("n,kind,match", [
    (-3, ValueError, r"one_hot: n \(the number of classes\) must be at least 1, got -3"),
    (0, ValueError, r"must be at least 1, got 0"),
    (2.5, TypeError, r"one_hot: n \(the number of classes\) must be an int or an int scalar, "
                    r"got float 2.5"),
])
def test_one_hot_class_count(n, kind, match):
    with pytest.raises(kind, match=match):
        sg.one_hot(sg.vector("l", "int64"), n)


def test_reshape_refuses_negative_dims_other_than_minus_one():
    x = sg.vector("x")
    with pytest.raises(sg.ShapeError, match=r"reshape: negative dimension in \(-2, 3\); each "
                                            r"dimension must be >= 0, or -1 \(once\)"):
        x.reshape((-2, 3))


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_reshape_to_a_negative_size_computed_at_call_time(backend):
    """A symbolic dim that comes out below -1 fails with the same message on every backend."""
    x = sg.vector("x")
    y = x.reshape((sg.shape(x)[0] - 5, -1))
    f = sg.compile([x], y, backend=backend)
    with pytest.raises(sg.ShapeError, match=r"reshape: negative dimension in \(-2, -1\)"):
        f(np.ones(3, F32))


@pytest.mark.parametrize("shape,match", [
    ((2.5,), r"a shape's entries must be ints or int scalars, got float 2.5 at position 0"),
    ((2, True), r"got bool True at position 1"),
])
def test_reshape_shape_entries_are_ints(shape, match):
    with pytest.raises(TypeError, match=match):
        sg.vector("x").reshape(shape)
    with pytest.raises(TypeError, match="got float32"):
        sg.vector("x").reshape((sg.scalar("s"),))


@pytest.mark.parametrize("value,match", [
    ("abc", r"argument 'x': expected a float32 array or number, got str 'abc'"),
    (None, r"argument 'x': expected a float32 array or number, got NoneType None"),
    ({"a": 1}, r"argument 'x': expected a float32 array or number, got dict \{'a': 1\}"),
    ([1, [2, 3]], r"argument 'x': cannot convert list to an array: .*inhomogeneous"),
])
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_call_with_something_that_is_not_numbers(backend, value, match):
    x = sg.vector("x")
    f = sg.compile([x], x * 2, backend=backend)
    with pytest.raises(TypeError, match=match):
        f(value)


def test_int_list_beyond_int64_names_the_argument():
    i = sg.vector("i", "int32")
    f = sg.compile([i], i + 1, backend="reference")
    with pytest.raises(TypeError, match=r"argument 'i': expected an int32 array or number, got "
                                        r"list \[1180591620717411303424\]"):
        f([2 ** 70])


def test_compile_refuses_a_constant_input():
    c = sg.constant(np.ones(3, F32))
    with pytest.raises(TypeError, match=r"compile: inputs\[0\] \(\[1.,1.,1.\]\) is a constant; "
                                        "constants are part of the graph"):
        sg.compile([c], c * 2)


@pytest.mark.parametrize("cost", ["abc", np.ones(3), 3.0])
def test_grad_of_something_that_is_not_symbolic(cost):
    x = sg.vector("x")
    with pytest.raises(TypeError, match=r"grad: cost must be a symbolic scalar \(built from the "
                                        rf"variables in wrt\), got {type(cost).__name__}"):
        sg.grad(cost, x)


def test_grad_known_grads_must_be_a_dict():
    x = sg.vector("x")
    with pytest.raises(TypeError, match=r"grad: known_grads must be a dict \{variable: gradient\}, "
                                        "got list"):
        sg.grad(sg.sum(x), x, known_grads=[x])


@pytest.mark.parametrize("axis", ["0", 1.0, (0, "1")])
def test_reduction_axis_must_be_ints(axis):
    with pytest.raises(TypeError, match=rf"sum: axis must be an int, a tuple of ints or None, got "
                                        rf"{type(axis).__name__}"):
        sg.sum(sg.matrix("m"), axis=axis)


@pytest.mark.parametrize("join", [sg.concatenate, sg.stack])
def test_join_needs_a_list_of_tensors(join):
    x = sg.matrix("x")
    with pytest.raises(TypeError, match=rf"{join.__name__}: expected a list of tensors, got "
                                        r"Variable; write \[x, y\]"):
        join(x)


def test_compile_input_and_update_mistakes_name_the_variable():
    """Already clear before this suite existed; kept so that they stay so."""
    x, v = sg.vector("x"), sg.vector("v")
    w = sg.shared(np.zeros(3, F32), name="w")
    with pytest.raises(ValueError, match=r"compile: inputs\[1\] \(x\) is listed twice"):
        sg.compile([x, x], x)
    with pytest.raises(TypeError, match=r"compile: inputs\[0\] \(w\) is a shared variable; shared "
                                        "variables are implicit inputs"):
        sg.compile([w], w * 2)
    with pytest.raises(TypeError, match=r"compile: updates\[0\] targets Variable\(v: float32\[\?,\]\), "
                                        "which is not a shared variable"):
        sg.compile([v], v, updates=[(v, v * 2)])
    with pytest.raises(ValueError, match="compile: shared variable 'w' is updated twice"):
        sg.compile([v], v, updates=[(w, v), (w, v * 2)])
    with pytest.raises(TypeError, match=r"grad: wrt\[1\] is NoneType, not a symbolic variable"):
        sg.grad(sg.sum(x), [x, None])
    with pytest.raises(TypeError, match="grad: wrt is str, not a symbolic variable"):
        sg.grad(sg.sum(x), "x")
