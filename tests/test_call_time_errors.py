"""Shapes known only at call time that do not fit together: every backend raises the same
exception type (``ShapeError``, ``IndexError``...; never ``CompileError``) with the same text,
naming the inputs, their shapes and the user's line that built the op."""

from __future__ import annotations

import inspect
import os
import re

import numpy as np
import pytest

import symgraph as sg

HERE = os.path.basename(__file__)
F32 = np.float32


def line_of(marker: str) -> int:
    """The line number in this file of the source line containing ``marker``."""
    for i, text in enumerate(inspect.getsource(inspect.getmodule(line_of)).splitlines(), start=1):
        if marker in text and "line_of(" not in text and "CASES" not in text:
            return i
    raise AssertionError(marker)


def ones(*shape, dtype=F32):
    return np.ones(shape, dtype)


# each builder returns (inputs, output); the op under test carries a marker comment


def matmul():
    a, b = sg.matrix("a"), sg.matrix("b")
    return [a, b], a @ b  # @matmul


def batched_matmul():
    a, b = sg.tensor3("a"), sg.tensor3("b")
    return [a, b], sg.matmul(a, b)  # @batched


def matmul_bias():
    x, w, b = sg.matrix("x"), sg.matrix("w"), sg.vector("b")
    return [x, w, b], sg.relu(x @ w + b)  # @bias


def elementwise():
    a, b = sg.vector("a"), sg.vector("b")
    return [a, b], a * b  # @mul


def fused_chain():
    a, b = sg.vector("a"), sg.vector("b")
    return [a, b], sg.exp(a) * 2 + b  # @fused


def where():
    c, a = sg.vector("c", "bool"), sg.vector("a")
    return [c, a], sg.where(c, a, 0.0)  # @where


def conv():
    x, w = sg.tensor4("x"), sg.tensor4("w")
    return [x, w], sg.nn.conv2d(x, w)  # @conv


def max_pool():
    x = sg.tensor4("x")
    return [x], sg.nn.max_pool2d(x, 4)  # @maxpool


def avg_pool():
    x = sg.tensor4("x")
    return [x], sg.nn.avg_pool2d(x, 3)  # @avgpool


def reshape():
    x = sg.matrix("x")
    return [x], x.reshape((5, 5))  # @reshape


def reshape_symbolic():
    x = sg.matrix("x")
    return [x], x.reshape((sg.shape(x)[0] * 2, 4))  # @reshape-sym


def concatenate():
    a, b = sg.matrix("a"), sg.matrix("b")
    return [a, b], sg.concatenate([a, b], axis=0)  # @concat


def broadcast_to():
    a = sg.vector("a")
    return [a], sg.broadcast_to(a, (4, 3))  # @bto


def cross_entropy():
    z, y = sg.matrix("z"), sg.vector("y", "int64")
    return [z, y], sg.nn.cross_entropy(z, y)  # @xent


def index_int():
    x = sg.matrix("x")
    return [x], x[5]  # @x5


def index_negative():
    x = sg.matrix("x")
    return [x], x[-4] * 2  # @xneg


def index_column():
    x = sg.matrix("x")
    return [x], x[:, 7]  # @x7


def take_constant():
    x = sg.matrix("x")
    return [x], sg.take(x, np.array([0, 9]), 0)  # @take


def take_constant_negative():
    x = sg.matrix("x")
    return [x], sg.take(x, np.array([1, -9]), 1)  # @take-neg


def gather_data():
    x, i = sg.matrix("x"), sg.vector("i", "int64")
    return [x, i], x[i]  # @gather


CASES = [  # builder, marker, arguments, exception, texts the message must contain
    (matmul, "@matmul", [ones(2, 3), ones(4, 5)], sg.ShapeError, ["a: (2, 3)", "b: (4, 5)"]),
    (batched_matmul, "@batched", [ones(2, 3, 4), ones(3, 4, 5)], sg.ShapeError,
     ["a: (2, 3, 4)", "b: (3, 4, 5)"]),
    (matmul_bias, "@bias", [ones(2, 3), ones(3, 4), ones(5)], sg.ShapeError, ["b: (5,)", "(2, 4)"]),
    (elementwise, "@mul", [ones(3), ones(4)], sg.ShapeError, ["a: (3,)", "b: (4,)"]),
    (fused_chain, "@fused", [ones(3), ones(4)], sg.ShapeError, ["b: (4,)", "(3,)"]),
    (where, "@where", [ones(3, dtype=bool), ones(4)], sg.ShapeError, ["c: (3,)", "a: (4,)"]),
    (conv, "@conv", [ones(1, 3, 8, 8), ones(2, 2, 3, 3)], sg.ShapeError,
     ["x: (1, 3, 8, 8)", "w: (2, 2, 3, 3)"]),
    (max_pool, "@maxpool", [ones(1, 3, 2, 2)], sg.ShapeError, ["x: (1, 3, 2, 2)", "(4, 4)"]),
    (avg_pool, "@avgpool", [ones(1, 1, 2, 2)], sg.ShapeError, ["x: (1, 1, 2, 2)", "(3, 3)"]),
    (reshape, "@reshape", [ones(2, 3)], sg.ShapeError, ["x: (2, 3)", "(5, 5)"]),
    (reshape_symbolic, "@reshape-sym", [ones(3, 5)], sg.ShapeError, ["x: (3, 5)", "(6, 4)"]),
    (concatenate, "@concat", [ones(2, 3), ones(4, 5)], sg.ShapeError, ["a: (2, 3)", "b: (4, 5)"]),
    (broadcast_to, "@bto", [ones(5)], sg.ShapeError, ["a: (5,)", "(4, 3)"]),
    (cross_entropy, "@xent", [ones(3, 4), np.zeros(2, np.int64)], sg.ShapeError,
     ["z: (3, 4)", "y: (2,)"]),
    (index_int, "@x5", [ones(3, 2)], IndexError, ["index 5", "axis 0 with size 3", "x: (3, 2)"]),
    (index_negative, "@xneg", [ones(3, 2)], IndexError, ["index -4", "size 3", "x: (3, 2)"]),
    (index_column, "@x7", [ones(3, 2)], IndexError, ["index 7", "axis 1 with size 2", "x: (3, 2)"]),
    (take_constant, "@take", [ones(3, 2)], IndexError, ["index 9", "axis 0 with size 3", "x: (3, 2)"]),
    (take_constant_negative, "@take-neg", [ones(3, 2)], IndexError,
     ["index -9", "axis 1 with size 2", "x: (3, 2)"]),
    (gather_data, "@gather", [ones(3, 2), np.array([1, 7])], IndexError,
     ["index 7", "size 3", "x: (3, 2), i: (2,)"]),
]


def call_error(build, args, backend: str) -> BaseException:
    """What calling the compiled ``build()`` on ``args`` raises with ``backend``."""
    inputs, out = build()
    f = sg.compile(inputs, out, backend=backend)
    with pytest.raises(Exception) as info:
        f(*args)
    return info.value


def cuda_codegen_error(build, args, monkeypatch) -> BaseException:
    """What the cuda backend's code generation (no GPU needed) raises for ``args``' shapes."""
    monkeypatch.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
    inputs, out = build()
    f = sg.compile(inputs, out, backend="cuda")
    with pytest.raises(Exception) as info:
        f.program.codegen.module([np.shape(a) for a in args])
    return info.value


@pytest.mark.parametrize("build,marker,args,kind,texts", CASES, ids=[c[1] for c in CASES])
def test_call_time_shape_errors_agree_across_backends(build, marker, args, kind, texts, monkeypatch):
    errors = {b: call_error(build, args, b) for b in ("reference", "llvm")}
    if build is not gather_data:  # data-dependent indices are checked by the running kernels
        errors["cuda"] = cuda_codegen_error(build, args, monkeypatch)
    ref = errors["reference"]
    for backend, err in errors.items():
        assert type(err) is kind, (backend, type(err), str(err))
        assert not isinstance(err, sg.CompileError)
        assert str(err) == str(ref), backend
    msg = str(ref)
    assert re.search(rf"built at .*{re.escape(HERE)}:{line_of(marker)} ", msg), msg
    for text in texts:
        assert text in msg, (text, msg)


def test_llvm_call_time_error_leaves_the_function_usable():
    """The failed specialisation is not kept: good shapes afterwards work, bad ones fail again."""
    inputs, out = matmul()
    f = sg.compile(inputs, out, backend="llvm")
    for _ in range(2):
        with pytest.raises(sg.ShapeError):
            f(ones(2, 3), ones(4, 5))
    np.testing.assert_allclose(f(ones(2, 3), ones(3, 5)), np.full((2, 5), 3, F32))


def test_label_error_of_a_training_step_names_the_cross_entropy_line():
    """The forward and its gradient are fused into one node; a bad label is the forward's
    error, so it names the line of ``cross_entropy``, not the line that took the gradient."""
    messages = []
    for backend in ("reference", "llvm"):
        emb = sg.shared(np.zeros((10, 4), F32), name="emb")
        i, t = sg.vector("i", "int64"), sg.vector("t", "int64")
        loss = sg.nn.cross_entropy(emb[i], t)  # @xent-step
        step = [(emb, emb - 0.1 * sg.grad(loss, emb))]
        f = sg.compile([i, t], loss, updates=step, backend=backend)
        with pytest.raises(IndexError) as info:
            f(np.array([3, 1]), np.array([0, 4]))
        messages.append(str(info.value))
        np.testing.assert_array_equal(emb.get_value(), 0)  # no update was installed
    assert messages[0] == messages[1]
    assert "labels must be in [0, 4), got values in [0, 4]" in messages[0]
    assert re.search(rf"built at .*{re.escape(HERE)}:{line_of('@xent-step')} ", messages[0]), messages[0]
