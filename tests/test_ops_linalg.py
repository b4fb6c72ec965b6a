"""dot / matmul / outer against NumPy: batched, broadcast batch dims, rank-1 operands, dtypes."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from helpers import assert_matches, evaluate, noncontiguous, rand

import symgraph as sg

MATMUL_SHAPES = [
    ((3, 4), (4, 5)), ((1, 1), (1, 1)), ((7, 1), (1, 7)), ((2, 3, 4), (4, 5)),
    ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)), ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 3, 4), (6, 4, 2)), ((6, 3, 4), (1, 4, 2)), ((5,), (2, 5, 3)), ((2, 3, 5), (5,)),
    ((1023,), (1023, 1)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_matches_numpy(shapes, dtype):
    rng = np.random.default_rng(21)
    a, b = rand(rng, shapes[0], dtype), rand(rng, shapes[1], dtype)
    want = np.matmul(a, b)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert_matches(evaluate(sg.matmul, a, b), want, rtol=rtol, atol=1e-5)
    assert_matches(evaluate(operator.matmul, a, b, static=True), want, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("dtypes", [("float32", "float64"), ("int32", "float32"), ("int64", "int64"),
                                    ("int32", "int64")], ids=str)
def test_matmul_promotes_like_numpy(dtypes):
    rng = np.random.default_rng(22)
    a, b = rand(rng, (3, 4), dtypes[0]), rand(rng, (4, 2), dtypes[1])
    assert_matches(evaluate(sg.matmul, a, b), a @ b, rtol=1e-5)


def test_matmul_noncontiguous():
    rng = np.random.default_rng(23)
    a, b, c = rand(rng, (5, 4)), rand(rng, (4, 6)), rand(rng, (5, 3))
    assert_matches(evaluate(sg.matmul, noncontiguous(a), noncontiguous(b)), a @ b, rtol=1e-5)
    assert_matches(evaluate(lambda u, v: u.T @ v, a, c), a.T @ c, rtol=1e-5)
    assert_matches(evaluate(sg.matmul, a[::2], b[:, ::-1]), a[::2] @ b[:, ::-1], rtol=1e-5)


@pytest.mark.parametrize("shapes", [((), ()), ((3,), ()), ((), (2, 3)), ((3,), (3,)), ((2, 3), (3,)),
                                    ((2, 3), (3, 4)), ((4,), (4, 2)), ((2, 3, 4), (4,)),
                                    ((2, 3, 4), (4, 5))], ids=str)
def test_dot_matches_numpy(shapes):
    rng = np.random.default_rng(24)
    a, b = rand(rng, shapes[0], "float64"), rand(rng, shapes[1], "float64")
    assert_matches(evaluate(sg.dot, a, b), np.asarray(np.dot(a, b)))
    assert_matches(evaluate(lambda u, v: u.dot(v), a, b), np.asarray(np.dot(a, b)))


@pytest.mark.parametrize("shapes", [((3,), (4,)), ((1,), (1,)), ((2, 3), (4,)), ((7,), (2, 2))], ids=str)
def test_outer_matches_numpy(shapes):
    rng = np.random.default_rng(25)
    a, b = rand(rng, shapes[0]), rand(rng, shapes[1])
    assert_matches(evaluate(sg.outer, a, b), np.outer(a, b))


def test_matmul_static_shapes():
    a = sg.tensor("a", (None, 3, 4))
    b = sg.tensor("b", (4, None))
    assert (a @ b).type.shape == (None, 3, None)
    assert sg.matmul(sg.tensor("v", (4,)), b).type.shape == (None,)
    assert sg.matmul(sg.tensor("v", (4,)), sg.tensor("w", (4,))).shape == ()
    assert sg.matmul(sg.tensor("p", (1, 3, 4)), sg.tensor("q", (6, 4, 2))).shape == (6, 3, 2)


def test_matmul_shape_errors_name_shapes():
    with pytest.raises(sg.ShapeError, match=r"\(3, 4\).*\(5, 2\)"):
        sg.matmul(sg.tensor("a", (3, 4)), sg.tensor("b", (5, 2)))
    with pytest.raises(sg.ShapeError, match="batch"):
        sg.matmul(sg.tensor("a", (2, 3, 4)), sg.tensor("b", (3, 4, 2)))
    with pytest.raises(sg.ShapeError):
        sg.matmul(sg.scalar("s"), sg.matrix("m"))


def test_matmul_runtime_mismatch_is_reported():
    a, b = sg.matrix("a"), sg.matrix("b")
    f = sg.compile([a, b], a @ b, backend="reference")
    with pytest.raises(ValueError, match="matmul"):
        f(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))
