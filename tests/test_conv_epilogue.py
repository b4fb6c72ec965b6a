"""The bias and activation after a convolution fused into it (``rewrite/fuse.py``
``fuse_conv_epilogue``, ``Conv2dEpilogue``): on the llvm backend the direct convolution applies
them as it stores each output element, the im2col path as one map over the GEMM's result.
Values (and W4's training step's gradients) against PyTorch (float64) on both paths and the
reference backend, the kernels that disappear, and when the rewrite must not fire."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import symgraph as sg
from symgraph.codegen.lower import conv as conv_lowering

# (batch, channels, out channels, height, width, kernel, stride, padding)
CASES = [
    (3, 2, 5, 10, 10, 3, 1, 1),
    (2, 3, 6, 11, 9, (3, 2), (2, 1), (1, 0)),  # odd sizes, strides and padding per axis
    (1, 17, 20, 8, 8, 3, 1, 1),  # many channels: the direct path's own choice
    (4, 1, 1, 5, 6, 1, 1, 0),  # one channel each way, 1x1 window
]
ACTIVATIONS = {
    "relu": (lambda z: sg.relu(z), torch.relu),
    "tanh": (lambda z: sg.tanh(z) * 2.0, lambda z: torch.tanh(z) * 2.0),
}


@pytest.fixture(params=["direct", "im2col"])
def path(request, monkeypatch):
    monkeypatch.setattr(conv_lowering, "FORCE_PATH", request.param)
    return request.param


def _case(case, act, seed=0):
    n, c, o, h, w, k, stride, pad = case
    k = k if isinstance(k, tuple) else (k, k)
    rng = np.random.default_rng(seed + n + c + o)
    x = sg.tensor("x", (None, c, h, w), dtype="float64")
    weights = sg.shared(rng.standard_normal((o, c) + k), name="w")
    bias = sg.shared(rng.standard_normal(o), name="b")
    out = ACTIVATIONS[act][0](sg.nn.conv2d(x, weights, stride=stride, padding=pad) +
                              bias.reshape((1, -1, 1, 1)))
    return x, weights, bias, out, rng.standard_normal((n, c, h, w))


def _torch_forward(case, act, xs, wv, bv):
    stride, pad = case[6], case[7]
    return ACTIVATIONS[act][1](torch.nn.functional.conv2d(
        torch.tensor(xs), torch.tensor(wv), torch.tensor(bv), stride=stride, padding=pad)).numpy()


def _fused(f) -> bool:
    return any(r.rewrite == "fuse_conv_epilogue" for r in f.rewrite_log)


def _check_kernels(f, path) -> None:
    names = [k.name for k in f.kernels]
    if path == "direct":  # no map after the convolution: its stores do the epilogue
        at = next(i for i, n in enumerate(names) if n.startswith("conv_direct"))
        assert not any(n.startswith(("fused_", "conv_epilogue")) for n in names[at + 1:at + 2]), names
    else:
        assert any(n.startswith("conv_epilogue") for n in names), names


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("case", CASES)
def test_fused_convolution_matches_torch(case, act, path):
    x, w, b, out, xs = _case(case, act)
    f = sg.compile([x], out)
    assert _fused(f)
    np.testing.assert_allclose(f(xs), _torch_forward(case, act, xs, w.get_value(), b.get_value()),
                               rtol=1e-10, atol=1e-10)
    _check_kernels(f, path)


@pytest.mark.parametrize("case", CASES[:3])
def test_training_step_conv_bias_relu_pool_matches_torch(case, path):
    """W4's pattern: with the pooling gradient reading the ReLU's output (rewrite/pool_grad.py)
    nothing else reads the pre-activation, so the forward's bias and ReLU fuse too."""
    x, w, b, out, xs = _case(case, "relu")
    pooled = sg.nn.max_pool2d(out, 2)
    loss = sg.sum(pooled * pooled)
    f = sg.compile([x], [pooled] + sg.grad(loss, [x, w, b]))
    assert _fused(f)
    stride, pad = case[6], case[7]
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in (xs, w.get_value(), b.get_value()))
    tp = torch.nn.functional.max_pool2d(torch.relu(torch.nn.functional.conv2d(
        tx, tw, tb, stride=stride, padding=pad)), 2)
    (tp * tp).sum().backward()
    for got, want in zip(f(xs), [tp.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    _check_kernels(f, path)


def test_reference_backend_runs_the_fused_op():
    case = CASES[1]
    x, w, b, out, xs = _case(case, "tanh")
    f = sg.compile([x], out, backend="reference")
    assert _fused(f)
    np.testing.assert_allclose(f(xs), _torch_forward(case, "tanh", xs, w.get_value(), b.get_value()),
                               rtol=1e-10, atol=1e-10)


def test_not_fused_when_the_convolution_itself_is_read(path):
    case = CASES[0]
    n, c, o, h, wd, k, stride, pad = case
    x = sg.tensor("x", (None, c, h, wd), dtype="float64")
    w = sg.shared(np.random.default_rng(1).standard_normal((o, c, k, k)), name="w")
    z = sg.nn.conv2d(x, w, stride=stride, padding=pad)
    f = sg.compile([x], [sg.relu(z), z])  # the pre-activation is an output too
    assert not _fused(f)
    xs = np.random.default_rng(2).standard_normal((n, c, h, wd))
    zt = torch.nn.functional.conv2d(torch.tensor(xs), torch.tensor(w.get_value()), stride=stride,
                                    padding=pad).numpy()
    relu, zz = f(xs)
    np.testing.assert_allclose(zz, zt, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(relu, np.maximum(zt, 0), rtol=1e-10, atol=1e-10)


def test_epilogue_that_changes_the_dtype(path):
    """A float32 convolution whose epilogue casts to float64: the accumulator stays float32."""
    x = sg.tensor("x", (None, 3, 7, 7))
    w = sg.shared(np.random.default_rng(3).standard_normal((16, 3, 3, 3)).astype("float32"), name="w")
    out = sg.cast(sg.nn.conv2d(x, w, padding=1), "float64") * 0.5
    f = sg.compile([x], out)
    xs = np.random.default_rng(4).standard_normal((2, 3, 7, 7)).astype("float32")
    zt = torch.nn.functional.conv2d(torch.tensor(xs), torch.tensor(w.get_value()), padding=1).numpy()
    got = f(xs)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, zt.astype("float64") * 0.5, rtol=1e-5, atol=1e-5)
