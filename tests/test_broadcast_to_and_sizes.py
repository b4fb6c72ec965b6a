"""``broadcast_to`` with unknown dims (checked at call time, as docs/errors.md promises) and
shapes too big for any array (refused with a ShapeError naming the shape, at build time when
static, at call time otherwise), on the llvm and reference backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_matches, rand

import symgraph as sg

BACKENDS = ["llvm", "reference"]
# A shape rejected at call time: a ValueError (ShapeError) naming it, on every backend.
CALL_TIME = ValueError


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("xshape,target,value", [
    ((None,), (1,), np.array([2.5])),
    ((None,), (3, 1), np.array([2.5])),
    ((None, None), (2, 1, 4), np.ones((1, 4)) * 1.5),
    ((None, 4), (1, 4), np.arange(4.0)[None]),
    ((None,), (5,), np.arange(5.0)),
])
def test_broadcast_to_unknown_dims_build_and_run(backend, xshape, target, value):
    x = sg.tensor("x", xshape, "float64")
    y = sg.broadcast_to(x, target)  # no build-time error: the unknown dims may fit
    assert y.type.shape == target
    w = rand(np.random.default_rng(1), target, "float64")
    f = sg.compile([x], [y, sg.grad(sg.sum(y * sg.constant(w)), x)], backend=backend)
    got, gx = f(value)
    assert_matches(got, np.broadcast_to(value, target))
    xt = torch.tensor(value, requires_grad=True)
    (xt.expand(target) * torch.tensor(w)).sum().backward()
    assert_matches(gx, xt.grad.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_broadcast_to_unknown_dim_that_does_not_fit_fails_at_call_time(backend):
    x = sg.tensor("x", (None,), "float64")
    f = sg.compile([x], sg.broadcast_to(x, (2, 1)), backend=backend)
    with pytest.raises(CALL_TIME, match=r"broadcast_to: cannot broadcast \(3,\) to \(2, 1\): "
                                        r"dimension -1 is 3, must be 1"):
        f(np.ones(3))
    assert_matches(f(np.ones(1)), np.ones((2, 1)))  # the function still works


def test_broadcast_to_known_dims_that_do_not_fit_fail_at_build_time():
    with pytest.raises(sg.ShapeError, match=r"dimension -1 is 3, must be 1 or 4"):
        sg.broadcast_to(sg.tensor("x", (3,)), (4,))
    with pytest.raises(sg.ShapeError, match="the target has fewer dimensions"):
        sg.broadcast_to(sg.tensor("x", (2, 3)), (3,))


HUGE = (2**32, 2**32, 4)  # 2**66 elements: past 2**63


def test_too_big_static_shapes_are_refused_when_built():
    with pytest.raises(sg.ShapeError, match=r"shape \(4294967296, 4294967296, 4\) is too big"):
        sg.tensor("x", HUGE)
    v = sg.tensor("v", (None,), "float64")
    with pytest.raises(sg.ShapeError, match=r"broadcast_to: shape \(4294967296, 4294967296, 4\) "
                                            r"is too big"):
        sg.broadcast_to(v, HUGE)
    with pytest.raises(sg.ShapeError, match="is too big"):  # bytes, not only elements
        sg.tensor("x", (2**31, 2**31), "float64")
    with pytest.raises(sg.ShapeError, match="is too big"):  # a zero dim does not hide it (NumPy)
        sg.tensor("x", (0, 2**40, 2**40))
    with pytest.raises(sg.ShapeError, match="is too big"):  # nor do unknown dims
        sg.tensor("x", (None, 2**40, 2**40))
    assert sg.tensor("x", (2**31, 2**31), "int8").type.shape == (2**31, 2**31)  # 2**62 bytes
    with pytest.raises(sg.ShapeError, match="cannot reshape"):
        sg.tensor("x", (4,)).reshape((2**62, 4, -1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_too_big_run_time_shapes_are_refused_when_called(backend):
    v = sg.tensor("v", (None,), "float64")
    a = sg.tensor("a", (None,), "float64")
    n = sg.shape(a)[0] * 2**31  # 6 * 2**30 for three elements: a huge square
    big = sg.broadcast_to(v, (n, n, 4))
    f = sg.compile([v, a], [sg.sum(big), big.reshape(-1)[:3]], backend=backend)
    with pytest.raises(CALL_TIME, match=r"shape \(6442450944, 6442450944, 4\) is too big"):
        f(np.ones(4), np.ones(3))
