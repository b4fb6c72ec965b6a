"""Shape ops against NumPy: reshape, transpose, broadcast_to, concatenate, stack, squeeze,
expand_dims, flatten; static shapes with unknown dims, and build-time shape errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, evaluate, noncontiguous, rand

import symgraph as sg

X = rand(np.random.default_rng(31), (2, 3, 4), "float32")

CASES = {
    "reshape": (lambda v: sg.reshape(v, (6, 4)), lambda x: x.reshape(6, 4)),
    "reshape-1": (lambda v: sg.reshape(v, (-1, 4)), lambda x: x.reshape(-1, 4)),
    "reshape-1mid": (lambda v: v.reshape(2, -1, 2), lambda x: x.reshape(2, -1, 2)),
    "reshape_flat": (lambda v: v.reshape(-1), lambda x: x.reshape(-1)),
    "reshape_to_rank0": (lambda v: v[:1, :1, :1].reshape(()), lambda x: x[:1, :1, :1].reshape(())),
    "reshape_sym": (lambda v: sg.reshape(v, (sg.shape(v)[0], -1)), lambda x: x.reshape(x.shape[0], -1)),
    "transpose": (sg.transpose, np.transpose),
    "transpose_axes": (lambda v: sg.transpose(v, (1, 0, 2)), lambda x: x.transpose(1, 0, 2)),
    "transpose_neg": (lambda v: v.transpose(-1, 0, 1), lambda x: x.transpose(-1, 0, 1)),
    "T": (lambda v: v.T, lambda x: x.T),
    "broadcast_to": (lambda v: sg.broadcast_to(v, (5, 2, 3, 4)), lambda x: np.broadcast_to(x, (5, 2, 3, 4))),
    "broadcast_to_1": (lambda v: sg.broadcast_to(v[:, :1], (2, 7, 4)),
                       lambda x: np.broadcast_to(x[:, :1], (2, 7, 4))),
    "concatenate0": (lambda v: sg.concatenate([v, v * 2], axis=0), lambda x: np.concatenate([x, x * 2], 0)),
    "concatenate-1": (lambda v: sg.concatenate([v, v[..., :1], v], axis=-1),
                      lambda x: np.concatenate([x, x[..., :1], x], -1)),
    "stack0": (lambda v: sg.stack([v, v + 1]), lambda x: np.stack([x, x + 1])),
    "stack-1": (lambda v: sg.stack([v, v + 1, v], axis=-1), lambda x: np.stack([x, x + 1, x], axis=-1)),
    "stack2": (lambda v: sg.stack([v, v], axis=2), lambda x: np.stack([x, x], axis=2)),
    "squeeze": (lambda v: sg.squeeze(sg.expand_dims(v, (0, 2))), lambda x: x),
    "squeeze_axis": (lambda v: sg.squeeze(v[:1, :, :1], axis=0), lambda x: np.squeeze(x[:1, :, :1], axis=0)),
    "squeeze_neg": (lambda v: sg.squeeze(v[:, :, :1], axis=-1), lambda x: np.squeeze(x[:, :, :1], axis=-1)),
    "expand_dims0": (lambda v: sg.expand_dims(v, 0), lambda x: np.expand_dims(x, 0)),
    "expand_dims-1": (lambda v: sg.expand_dims(v, -1), lambda x: np.expand_dims(x, -1)),
    "expand_dims_tuple": (lambda v: sg.expand_dims(v, (0, 3)), lambda x: np.expand_dims(x, (0, 3))),
    "expand_dims_neg_tuple": (lambda v: sg.expand_dims(v, (-1, 1)), lambda x: np.expand_dims(x, (-1, 1))),
    "flatten": (sg.flatten, lambda x: x.reshape(-1)),
    "flatten2": (lambda v: sg.flatten(v, 2), lambda x: x.reshape(x.shape[0], -1)),
    "flatten3": (lambda v: v.flatten(3), lambda x: x),
}


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_shape_op_matches_numpy(name, static):
    fn, ref = CASES[name]
    for x in (X, X.astype(np.float64), noncontiguous(X)):
        assert_matches(evaluate(fn, x, static=static), np.array(ref(x), order="C"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_static_shape_inference_agrees(name):
    fn, ref = CASES[name]
    out = fn(sg.tensor("x", X.shape, "float32"))
    assert out.shape == ref(X).shape


def test_shape_ops_on_rank0_and_size1():
    s = np.float32(3.0)
    assert_matches(evaluate(lambda v: sg.reshape(v, (1, 1)), np.asarray(s)), np.reshape(s, (1, 1)))
    assert_matches(evaluate(lambda v: sg.expand_dims(v, 0), np.asarray(s)), np.expand_dims(s, 0))
    assert_matches(evaluate(lambda v: sg.broadcast_to(v, (2, 3)), np.asarray(s)), np.broadcast_to(s, (2, 3)))
    assert_matches(evaluate(lambda v: sg.stack([v, v]), np.asarray(s)), np.stack([s, s]))
    assert_matches(evaluate(sg.flatten, np.asarray(s)), np.reshape(s, (1,)))
    one = np.ones((1, 1, 1), np.float32)
    assert_matches(evaluate(sg.squeeze, one, static=True), np.squeeze(one))
    assert_matches(evaluate(lambda v: sg.transpose(v), one), one.T)
    big = rand(np.random.default_rng(32), (1023,), "float32")
    assert_matches(evaluate(lambda v: v.reshape(3, 341).T, big), big.reshape(3, 341).T.copy())


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_flatten_of_zero_size_tensors(static, backend):
    """flatten keeps the leading axes of an empty tensor (NumPy's reshape(..., -1) cannot)."""
    x = np.zeros((0, 2, 1, 4), np.float32)
    v = sg.tensor("x", x.shape if static else (None,) * 4)
    f = sg.compile([v], [sg.flatten(v, 3), sg.flatten(v, 2), sg.flatten(v, 4), sg.flatten(v)],
                   backend=backend)
    assert [o.shape for o in f(x)] == [(0, 2, 4), (0, 8), (0, 2, 1, 4), (0,)]


def test_concatenate_promotes_and_mixes_unknown_dims():
    a = rand(np.random.default_rng(33), (2, 3), "float32")
    b = rand(np.random.default_rng(34), (4, 3), "float64")
    assert_matches(evaluate(lambda u, v: sg.concatenate([u, v]), a, b), np.concatenate([a, b]))
    u = sg.tensor("u", (None, 3))
    v = sg.tensor("v", (4, None))
    assert sg.concatenate([u, v]).type.shape == (None, 3)
    assert sg.concatenate([sg.tensor("p", (2, 3)), sg.tensor("q", (4, 3))]).type.shape == (6, 3)
    assert sg.stack([u, u], axis=1).type.shape == (None, 2, 3)


def test_stack_of_int_scalars_makes_a_vector():
    n, m = sg.scalar("n", "int64"), sg.scalar("m", "int64")
    f = sg.compile([n, m], sg.stack([n, m, n]), backend="reference")
    assert_matches(f(2, 5), np.array([2, 5, 2], dtype=np.int64))


def test_symbolic_shape():
    x = sg.tensor("x", (None, 3, None))
    f = sg.compile([x], sg.shape(x), backend="reference")
    assert_matches(f(np.zeros((2, 3, 5), np.float32)), np.array([2, 3, 5], dtype=np.int64))
    assert isinstance(sg.shape(sg.tensor("y", (2, 3))), sg.Constant)


def test_reshape_with_unknown_input_dims():
    x = sg.tensor("x", (None, 4))
    y = x.reshape(-1, 2)
    assert y.type.shape == (None, 2)
    f = sg.compile([x], y, backend="reference")
    assert_matches(f(X.reshape(-1, 4)), X.reshape(-1, 2))
    with pytest.raises(ValueError, match="reshape"):
        sg.compile([x], x.reshape(5, -1), backend="reference")(np.zeros((3, 4), np.float32))


SHAPE_ERRORS = [
    ("reshape", lambda: sg.reshape(sg.tensor("x", (2, 3)), (4, 2)), [r"\(2, 3\)", r"\(4, 2\)"]),
    ("reshape-1", lambda: sg.reshape(sg.tensor("x", (2, 3)), (4, -1)), [r"\(2, 3\)", r"\(4, -1\)"]),
    ("two -1", lambda: sg.reshape(sg.tensor("x", (2, 3)), (-1, -1)), [r"-1"]),
    ("broadcast_to", lambda: sg.broadcast_to(sg.tensor("x", (2, 3)), (4, 3)), [r"\(2, 3\)", r"4"]),
    ("broadcast_to rank", lambda: sg.broadcast_to(sg.tensor("x", (2, 3)), (3,)), [r"\(2, 3\)"]),
    ("concatenate", lambda: sg.concatenate([sg.tensor("a", (2, 3)), sg.tensor("b", (2, 4))]),
     [r"\(2, 3\)", r"\(2, 4\)"]),
    ("concatenate rank", lambda: sg.concatenate([sg.tensor("a", (2, 3)), sg.tensor("b", (2,))]),
     [r"\(2, 3\)", r"\(2,\)"]),
    ("stack", lambda: sg.stack([sg.tensor("a", (2, 3)), sg.tensor("b", (3, 2))]), [r"\(2, 3\)", r"\(3, 2\)"]),
    ("squeeze", lambda: sg.squeeze(sg.tensor("x", (2, 3)), axis=1), [r"\(2, 3\)"]),
    ("transpose", lambda: sg.transpose(sg.tensor("x", (2, 3)), (0, 0)), [r"permutation"]),
    ("expand_dims", lambda: sg.expand_dims(sg.tensor("x", (2, 3)), 4), [r"out of bounds"]),
    ("expand_dims repeated", lambda: sg.expand_dims(sg.tensor("x", (2, 3)), (0, -4)), [r"repeated"]),
]


@pytest.mark.parametrize("name,build,patterns", SHAPE_ERRORS, ids=[c[0] for c in SHAPE_ERRORS])
def test_shape_errors_at_build_time(name, build, patterns):
    with pytest.raises(sg.ShapeError) as info:
        build()
    for p in patterns:
        assert info.match(p)


@pytest.mark.parametrize("backend", ["llvm", "reference"])
def test_zeros_ones_full_and_likes_with_symbolic_sizes(backend):
    x = sg.matrix("x")
    outs = [sg.zeros(sg.shape(x)), sg.ones((2, 3), "int32"), sg.full(sg.shape(x)[0], 7.0),
            sg.ones_like(x), sg.full_like(x, 3, "int64"), sg.zeros_like(x)]
    got = sg.compile([x], outs, backend=backend)(np.zeros((4, 5), np.float32))
    want = [np.zeros((4, 5), np.float32), np.ones((2, 3), np.int32), np.full(4, 7.0, np.float32),
            np.ones((4, 5), np.float32), np.full((4, 5), 3, np.int64), np.zeros((4, 5), np.float32)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
