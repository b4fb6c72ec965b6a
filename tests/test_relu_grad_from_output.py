"""The ReLU gradient's mask read from the ReLU's output (``rewrite/relu_grad.py``): the same
bits as the mask on the input for every float (NaN, signed zeros, infinities, subnormals), a
stacked conv -> ReLU -> conv training step against PyTorch (float64) with both convolutions
keeping their bias + ReLU epilogue, and when the rewrite must not fire."""

from __future__ import annotations

import helpers
import numpy as np
import pytest

import symgraph as sg
from symgraph.ops.fused import Conv2dEpilogue

REWRITE = "relu_grad_from_output"


def rewrite_disabled():
    """Compile without the rewrite."""
    return helpers.rewrite_disabled(REWRITE)


def _fired(f) -> bool:
    return any(r.rewrite == REWRITE for r in f.rewrite_log)


SPECIAL = [np.nan, -np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-310, -1e-310, 1.0, -1.0, 3e38, -3e38]


@pytest.mark.parametrize("backend", ["llvm", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_bits_as_the_mask_on_the_input(backend, dtype):
    x = sg.tensor("x", (None,), dtype=dtype)
    c = sg.tensor("c", (None,), dtype=dtype)
    h = sg.relu(x)
    outs = [h * c, sg.grad(sg.sum(h * c), x)]
    vals = [np.array(SPECIAL * 3, dtype=dtype),
            np.repeat(np.array([2.0, np.nan, -0.5], dtype=dtype), len(SPECIAL))]
    f = sg.compile([x, c], outs, backend=backend)
    with rewrite_disabled():
        g = sg.compile([x, c], outs, backend=backend)
    assert _fired(f) and not _fired(g)
    for got, want in zip(f(*vals), g(*vals)):
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


def _stacked(dtype="float64"):
    x = sg.tensor("x", (None, 2, 9, 7), dtype=dtype)
    w1, w2 = sg.tensor("w1", (5, 2, 3, 3), dtype=dtype), sg.tensor("w2", (4, 5, 3, 3), dtype=dtype)
    b1, b2 = sg.tensor("b1", (5,), dtype=dtype), sg.tensor("b2", (4,), dtype=dtype)
    h = sg.relu(sg.nn.conv2d(x, w1, padding=1) + b1[None, :, None, None])
    h = sg.relu(sg.nn.conv2d(h, w2, padding=1) + b2[None, :, None, None])
    loss = sg.sum(h * h) + sg.sum(h)
    ins = [x, w1, b1, w2, b2]
    return ins, [loss] + sg.grad(loss, ins)


def _stacked_values(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in [(3, 2, 9, 7), (5, 2, 3, 3), (5,), (4, 5, 3, 3), (4,)]]


@pytest.mark.parametrize("backend", ["llvm", "reference"])
def test_stacked_convolutions_train_as_in_torch(backend):
    torch = pytest.importorskip("torch")
    ins, outs = _stacked()
    vals = _stacked_values()
    f = sg.compile(ins, outs, backend=backend)
    assert _fired(f)
    got = f(*vals)
    tv = [torch.tensor(v, requires_grad=True) for v in vals]
    tx, tw1, tb1, tw2, tb2 = tv
    th = torch.relu(torch.nn.functional.conv2d(tx, tw1, padding=1) + tb1[None, :, None, None])
    th = torch.relu(torch.nn.functional.conv2d(th, tw2, padding=1) + tb2[None, :, None, None])
    tloss = (th * th).sum() + th.sum()
    tloss.backward()
    want = [tloss.detach().numpy()] + [t.grad.numpy() for t in tv]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_both_convolutions_keep_their_epilogue_in_training():
    """Without the rewrite the first convolution's result has two readers (its ReLU and the
    ReLU gradient's mask), so its bias and ReLU cannot be fused into it."""
    ins, outs = _stacked("float32")
    vals = [v.astype(np.float32) for v in _stacked_values(1)]
    f = sg.compile(ins, outs)
    with rewrite_disabled():
        g = sg.compile(ins, outs)

    def epilogues(fn):
        return sum(isinstance(n.op, Conv2dEpilogue) for n in fn.fgraph.toposort())

    assert epilogues(f) == 2 and epilogues(g) == 1
    for a, b in zip(f(*vals), g(*vals)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)


def test_not_fired_without_a_relu_of_the_same_input():
    s, g = sg.vector("s"), sg.vector("g")
    mask = sg.where(0 >= s, 0.0, g)  # the gradient's shape, written by hand: no relu(s) to read
    f = sg.compile([s, g], [mask, sg.relu(s * 2)])
    assert not _fired(f)
    vals = [np.array([-1.0, 0.0, 2.0, np.nan], np.float32), np.ones(4, np.float32)]
    np.testing.assert_array_equal(f(*vals)[0], [0.0, 0.0, 1.0, 1.0])


def test_pre_activation_that_is_also_an_output():
    """``s`` is returned too: its readers include the graph's output list (listed before the
    ReLU when merging two copies of ``x @ w`` rewired the ReLU to the returned one)."""
    x, w = sg.matrix("x"), sg.matrix("w")
    s = x @ w
    h = sg.relu(x @ w)
    f = sg.compile([x, w], [s, h, sg.grad(sg.sum(h * h), w)])
    assert _fired(f)
    rng = np.random.default_rng(3)
    xv, wv = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)
    sv = xv @ wv
    want = xv.T @ (2 * np.maximum(sv, 0) * (sv > 0))
    got = f(xv, wv)
    np.testing.assert_allclose(got[0], sv, rtol=1e-6)
    np.testing.assert_allclose(got[2], want, rtol=1e-5, atol=1e-6)
