"""``sg.verify_grad`` itself: it passes correct gradients and catches wrong ones, naming the
input and the worst element."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.graph.basic import Apply, Constant, Op, as_variable
from symgraph.ops import elemwise as E

RNG = np.random.default_rng(9)


class SquareWithBadGradient(Op):
    """``x ** 2`` whose L_op is off by ``error`` at one element (a deliberately wrong op)."""

    __props__ = ("bad_index", "error")

    def __init__(self, bad_index: tuple, error: float):
        self.bad_index, self.error = bad_index, error

    def make_node(self, x) -> Apply:
        x = as_variable(x)
        return Apply(self, [x], [x.type])

    def perform(self, node, inputs):
        return [np.square(inputs[0])]

    def L_op(self, node, inputs, outputs, output_grads):
        (x,), (g,) = inputs, output_grads
        wrong = np.zeros(x.shape)
        wrong[self.bad_index] = self.error
        return [E.mul(g, E.add(E.mul(2.0, x), Constant(wrong)))]


def test_correct_gradients_pass():
    sg.verify_grad(lambda a, b: sg.tanh(a @ b).sum(axis=0), [RNG.standard_normal((3, 4)),
                                                             RNG.standard_normal((4, 2))])
    sg.verify_grad(lambda a: a * 3.0, [2.5])  # Python scalars become rank-0 inputs
    sg.verify_grad(lambda a: a ** 2, [[1.0, 2.0, -3.0]])


def test_wrong_gradient_names_the_input_and_the_worst_element():
    bad = SquareWithBadGradient((1, 2), 0.5)
    a, b = RNG.standard_normal((3, 4)), RNG.standard_normal((2, 3, 4))
    with pytest.raises(sg.GradientError) as info:
        sg.verify_grad(lambda a, b: b * bad(a), [a, b])
    err = info.value
    assert err.input_index == 0
    assert err.worst_index == (1, 2)
    assert "input 0" in str(err) and "(1, 2)" in str(err)
    # the reported numbers are the per-element derivatives of the weighted cost
    assert err.analytic != pytest.approx(err.numeric, abs=1e-3)
    assert isinstance(err, ValueError)


def test_wrong_gradient_in_a_later_input():
    bad = SquareWithBadGradient((3,), -0.2)
    with pytest.raises(sg.GradientError, match=r"input 1 .*worst element \(3,\)") as info:
        sg.verify_grad(lambda a, b: sg.exp(a) + bad(b), [RNG.standard_normal(5), RNG.standard_normal(5)])
    assert info.value.input_index == 1


def test_tolerances_are_honoured():
    bad = SquareWithBadGradient((0,), 1e-3)
    x = np.array([1.0, 0.5, -0.7])
    with pytest.raises(sg.GradientError):
        sg.verify_grad(bad, [x])
    sg.verify_grad(bad, [x], rtol=1e-2, atol=1e-2)


def test_misuse_is_reported():
    with pytest.raises(TypeError, match="symbolic"):
        sg.verify_grad(lambda a: np.ones(3), [np.ones(3)])
    with pytest.raises(ValueError, match="static shape"):
        sg.verify_grad(lambda a: a[sg.arange(sg.argmax(a) + 1)], [np.ones(3)])


def test_worst_element_found_in_a_large_input():
    bad = SquareWithBadGradient((47, 93), 0.3)
    x = RNG.standard_normal((60, 100))  # 6000 elements: located by bisection
    with pytest.raises(sg.GradientError) as info:
        sg.verify_grad(lambda a: bad(a) * 0.5, [x])
    assert info.value.worst_index == (47, 93)
