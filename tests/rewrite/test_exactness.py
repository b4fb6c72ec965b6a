"""A rewrite fires only where it holds for every value of the user's expression: no clamp is
assumed never to bind, no guard assumed always true, no integer sum assumed not to wrap.
Values are checked against NumPy / PyTorch float64 on both CPU backends."""

import numpy as np
import pytest
import torch

import symgraph as sg

BACKENDS = ("llvm", "reference")


def expit(x):
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def stabilize_log(f) -> set:
    return {part for r in f.rewrite_log if r.group == "stabilize"
            for part in r.rewrite.replace("+", "/").split("/")}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_clamp_of_a_softplus_written_by_the_user_is_kept(backend):
    y = sg.vector("y", dtype="float64")
    ys = np.array([100.0, 59.0, 1.0, -100.0])
    for clamp in (-60.0, -50.0, -100.0):
        f = sg.compile([y], sg.maximum(-sg.softplus(y), clamp), backend=backend)
        np.testing.assert_allclose(f(ys), np.maximum(-np.logaddexp(0, ys), clamp), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_guards_on_an_underflowed_sigmoid_are_kept(backend):
    z = sg.vector("z")
    zs = np.array([-1000.0, -120.0, 0.0, 30.0, 1000.0], np.float32)
    p = sg.sigmoid(z)
    outs = [sg.where(p > 0, 1.0, 2.0), sg.where(p < 1, 1.0, 2.0),
            sg.where(p < 1, 1 / (1 - p), -1.0)]
    got = sg.compile([z], outs, backend=backend)(zs)
    p32 = expit(zs.astype(np.float64)).astype(np.float32)  # 0 below -104, 1 above 17
    with np.errstate(divide="ignore"):
        want = [np.where(p32 > 0, 1.0, 2.0), np.where(p32 < 1, 1.0, 2.0),
                np.where(p32 < 1, 1 / (1 - p32), -1.0)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_of_a_guarded_sigmoid_keeps_the_guard_and_is_accurate(backend):
    z = sg.vector("z", dtype="float64")
    zs = np.array([-1000.0, -700.0, -50.0, 0.0, 50.0])
    p = sg.sigmoid(z)
    lp = sg.log(sg.where(p > 0, p, 1.0))
    f = sg.compile([z], [lp, sg.grad(sg.sum(lp), z)], backend=backend)
    v, g = f(zs)
    picked = expit(zs) > 0  # False only where float64 sigmoid underflows (z = -1000)
    np.testing.assert_allclose(v, np.where(picked, -np.logaddexp(0, -zs), 0.0), rtol=1e-12)
    np.testing.assert_allclose(g, np.where(picked, expit(-zs), 0.0), rtol=1e-12)
    assert "log_of_select" in stabilize_log(f)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_cross_entropy_of_other_probabilities_keeps_pytorchs_clamp(backend):
    p, t = sg.vector("p", dtype="float64"), sg.vector("t", dtype="float64")
    ps = np.array([0.0, 1.0, 0.25, 1e-60, 1.0])
    ts = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    loss = sg.nn.binary_cross_entropy(sg.sqrt(p * p), t, from_logits=False)
    got = sg.compile([p, t], loss, backend=backend)(ps, ts)
    want = torch.nn.functional.binary_cross_entropy(torch.tensor(ps), torch.tensor(ts))
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_cross_entropy_of_a_sigmoid_is_the_logits_form(backend):
    # documented: probabilities sigmoid(z) are taken from their logits, without clamp
    z, t = sg.vector("z", dtype="float64"), sg.vector("t", dtype="float64")
    zs = np.array([1000.0, -1000.0, 30.0, -0.5])
    ts = np.array([0.0, 1.0, 0.0, 1.0])
    loss = sg.nn.binary_cross_entropy(sg.sigmoid(z), t, from_logits=False)
    got = sg.compile([z, t], loss, backend=backend)(zs, ts)
    want = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(zs), torch.tensor(ts))
    np.testing.assert_allclose(got, want.item(), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_of_one_plus_an_integer_that_wraps_is_not_log1p(backend):
    x = sg.vector("x", dtype="int32")
    xs = np.array([2**31 - 1, 3], np.int32)
    got = sg.compile([x], sg.log(1 + x), backend=backend)(xs)
    with np.errstate(invalid="ignore"):
        want = np.log(xs + np.int32(1))
    np.testing.assert_allclose(got, want, rtol=1e-12)
