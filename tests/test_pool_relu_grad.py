"""The max-pool gradient fused with the ReLU gradient before it (``rewrite/pool_grad.py``,
``MaxPool2dGrad(relu=True)``): values and gradients of conv -> bias -> ReLU -> max pool
against PyTorch (float64) on the llvm and reference backends, bit-equality with the unfused
graph on ties, NaN and all-negative windows, the fused kernel in ``f.kernels`` (llvm and
cuda), when the rewrite must not fire, and the fused op's own derivatives."""

from __future__ import annotations

import helpers
import numpy as np
import pytest

import symgraph as sg
from symgraph.ops.nn import MaxPool2dGrad

REWRITE = "max_pool_relu_grad"

# (batch, channels, out channels, height, width, kernel, conv stride, padding, pool, pool stride)
CASES = [
    (3, 2, 5, 10, 10, 3, 1, 1, 2, None),  # W4's pattern: 2x2 windows tiling the input
    (2, 1, 4, 11, 9, 3, 1, 1, 2, None),  # odd sizes: a row and a column no window covers
    (2, 3, 6, 12, 13, 3, 2, 1, (3, 2), None),  # conv stride, rectangular windows
    (1, 4, 3, 9, 8, 2, 1, 0, 3, 2),  # overlapping windows (the scatter path)
    (4, 17, 20, 8, 8, 3, 1, 1, 2, None),  # many channels (the direct convolution paths)
]


def rewrite_disabled():
    """Compile without the rewrite."""
    return helpers.rewrite_disabled(REWRITE)


def _net(case, dtype="float64"):
    n, c, o, h, w, k, cs, pad, pool, ps = case
    xs = sg.tensor("x", (n, c, h, w), dtype=dtype)
    ws = sg.tensor("w", (o, c, k, k), dtype=dtype)
    bs = sg.tensor("b", (o,), dtype=dtype)
    hidden = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(xs, ws, stride=cs, padding=pad) + bs[None, :, None, None]),
                              pool, stride=ps)
    loss = sg.sum(hidden * hidden)
    return [xs, ws, bs], [hidden] + sg.grad(loss, [xs, ws, bs])


def _values(case, seed=0):
    n, c, o, h, w, k = case[:6]
    rng = np.random.default_rng(seed + sum(case[:6]))
    return [rng.standard_normal((n, c, h, w)), rng.standard_normal((o, c, k, k)), rng.standard_normal(o)]


def _kernel_names(f) -> list[str]:
    return [k.name for k in f.kernels]


@pytest.mark.parametrize("backend", ["llvm", "reference"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_conv_relu_pool_step_matches_torch(backend, case):
    torch = pytest.importorskip("torch")
    ins, outs = _net(case)
    f = sg.compile(ins, outs, backend=backend)
    vals = _values(case)
    got = f(*vals)
    _, _, _, _, _, _, cs, pad, pool, ps = case
    tx, tw, tb = (torch.tensor(v, requires_grad=True) for v in vals)
    th = torch.nn.functional.max_pool2d(
        torch.relu(torch.nn.functional.conv2d(tx, tw, stride=cs, padding=pad) + tb[None, :, None, None]),
        pool, stride=ps)
    (th * th).sum().backward()
    for a, t in zip(got, (th.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-10, atol=1e-10)
    assert any(r.rewrite == REWRITE for r in f.rewrite_log)
    if backend == "llvm":
        names = _kernel_names(f)
        assert any(nm.startswith("max_pool_relu_grad_") for nm in names)
        assert not any(nm.startswith("max_pool_grad_") for nm in names)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]], ids=lambda c: "x".join(map(str, c[:5])))
def test_fused_equals_unfused_bit_for_bit_on_ties_nan_and_dead_windows(dtype, case):
    # small integers give ties in the windows and windows whose values are all <= 0; the bias
    # moves whole channels below zero; NaN in the input poisons some windows
    ins, outs = _net(case, dtype)
    rng = np.random.default_rng(3)
    x, w, b = _values(case)
    x = rng.integers(-2, 3, x.shape).astype(dtype)
    w = rng.integers(-1, 2, w.shape).astype(dtype)
    b = np.linspace(-4, 1, b.size).astype(dtype)
    x.flat[rng.choice(x.size, 2, replace=False)] = np.nan
    fused = sg.compile(ins, outs, backend="llvm")
    with rewrite_disabled():
        apart = sg.compile(ins, outs, backend="llvm")
    assert not any(nm.startswith("max_pool_relu_grad_") for nm in _kernel_names(apart))
    got, want = fused(x, w, b), apart(x, w, b)
    for a, e in zip(got, want):
        np.testing.assert_array_equal(a, e)
    ref = sg.compile(ins, outs, backend="reference")(x, w, b)
    for a, e in zip(got, ref):
        np.testing.assert_array_equal(a, e)


def test_no_fusion_when_the_pooling_gradient_has_another_use():
    x = sg.tensor("x", (2, 3, 6, 6), dtype="float64")
    s = x * 2.0
    h = sg.relu(s)
    loss = sg.sum(sg.nn.max_pool2d(h, 2) ** 2)
    gh, gx = sg.grad(loss, [h, x])  # the routed gradient is an output as well
    f = sg.compile([x], [gh, gx], backend="llvm")
    assert not any(r.rewrite == REWRITE for r in f.rewrite_log)
    torch = pytest.importorskip("torch")
    xv = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    tx = torch.tensor(xv, requires_grad=True)
    th = torch.relu(tx * 2.0)
    th.retain_grad()
    (torch.nn.functional.max_pool2d(th, 2) ** 2).sum().backward()
    for a, t in zip(f(xv), (th.grad, tx.grad)):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size,stride", [((2, 2), (2, 2)), ((3, 3), (2, 2))])
def test_fused_op_derivatives(size, stride):
    # linear in g: its gradient and JVP go through MaxPoolSelect of the masked cotangent
    x = sg.tensor("x", (2, 2, 7, 7), dtype="float64")
    g = sg.tensor("g", (2, 2) + sg.nn.max_pool2d(x, size, stride=stride).type.shape[2:], dtype="float64")
    v = sg.tensor("v", g.type.shape, dtype="float64")
    fused = MaxPool2dGrad(size, stride, relu=True)(x, g)
    apart = sg.where(x <= 0, 0.0, MaxPool2dGrad(size, stride)(x, g))
    c = sg.tensor("c", x.type.shape, dtype="float64")
    outs = [fused, apart, sg.grad(sg.sum(fused * c), g), sg.grad(sg.sum(apart * c), g),
            sg.Rop([fused], [g], [v])[0], sg.Rop([apart], [g], [v])[0]]
    f = sg.compile([x, g, c, v], outs, backend="reference")
    rng = np.random.default_rng(1)
    xv = rng.integers(-2, 3, x.type.shape).astype("float64")
    got = f(xv, *(rng.standard_normal(t.type.shape) for t in (g, c, v)))
    for a, b in zip(got[::2], got[1::2]):
        np.testing.assert_array_equal(a, b)


def test_cuda_convnet_step_uses_the_fused_kernel(monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
    ins, outs = _net(CASES[0], "float32")
    f = sg.compile(ins, outs, backend="cuda")
    f.program.codegen.module([v.type.shape for v in ins])
    kernels = f.program.codegen.last.kernels
    fused = [k for k in kernels if k.name.startswith("max_pool_relu_grad_")]
    assert fused and all(k.mode == "grid" for k in fused)
    assert not any(k.name.startswith("max_pool_grad_") for k in kernels)
