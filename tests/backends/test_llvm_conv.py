"""2-d convolution on the LLVM backend, on every path the per-shape selection can choose
(``symgraph.codegen.lower.conv``: im2col + GEMM, direct loops), forced through
``conv.FORCE_PATH``: forward, input gradient and weight gradient against NumPy and PyTorch
(float64), the bias / ReLU / pooling that follow a convolution, and shape-generic code."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.codegen.lower import conv as conv_lowering
from symgraph.codegen.symdim import leaf

PATHS = ("im2col", "direct")

# (batch, channels, out channels, height, width, kernel, stride, padding)
CASES = [
    (2, 1, 3, 7, 9, (3, 3), (1, 1), (0, 0)),  # one input channel
    (3, 2, 5, 8, 7, (3, 2), (2, 1), (1, 2)),  # odd sizes, strides, padding per axis
    (1, 4, 9, 11, 10, (5, 5), (2, 3), (2, 1)),  # batch 1, more outputs than a vector block
    (5, 3, 1, 6, 6, (1, 1), (1, 1), (0, 0)),  # one output channel, 1x1 window
    (2, 17, 6, 5, 13, (2, 4), (1, 2), (1, 0)),  # many channels, pixels not a block multiple
    (256, 2, 3, 5, 4, (3, 3), (1, 1), (1, 1)),  # batch 256 (kept cheap)
]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setattr(conv_lowering, "FORCE_PATH", request.param)
    return request.param


def _windows(xp, kh, kw, sh, sw):
    v = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return v[:, :, ::sh, ::sw]


def numpy_conv(x, w, g, stride, padding):
    """Forward, input gradient and weight gradient of ``sum(conv2d(x, w) * g)`` in NumPy."""
    (sh, sw), (ph, pw) = stride, padding
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = _windows(xp, kh, kw, sh, sw)
    y = np.einsum("ncyxij,ocij->noyx", win, w)
    gw = np.einsum("ncyxij,noyx->ocij", win, g)
    gxp = np.zeros_like(xp)
    oh, ow = g.shape[2:]
    contrib = np.einsum("noyx,ocij->ncijyx", g, w)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw] += contrib[:, :, i, j]
    return y, gxp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]], gw


def _compile_conv(shape_x, shape_w, stride, padding, dtype, batch_dim=None):
    x = sg.tensor("x", (batch_dim,) + tuple(shape_x[1:]) if batch_dim is not None else shape_x, dtype=dtype)
    w = sg.tensor("w", shape_w, dtype=dtype)
    y = sg.nn.conv2d(x, w, stride=stride, padding=padding)
    g = sg.tensor("g", (batch_dim,) + tuple(y.type.shape[1:]) if batch_dim is not None else y.type.shape,
                  dtype=dtype)
    gx, gw = sg.grad(sg.sum(y * g), [x, w])
    return sg.compile([x, w, g], [y, gx, gw], backend="llvm")


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])))
def test_conv_matches_numpy_and_torch(path, case):
    n, c, o, h, wd, k, stride, padding = case
    rng = np.random.default_rng(sum(case[:5]))
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((o, c) + k)
    f = _compile_conv(x.shape, w.shape, stride, padding, "float64")
    oh = (h + 2 * padding[0] - k[0]) // stride[0] + 1
    ow = (wd + 2 * padding[1] - k[1]) // stride[1] + 1
    g = rng.standard_normal((n, o, oh, ow))
    got = f(x, w, g)
    want = numpy_conv(x, w, g, stride, padding)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding)
    (ty * torch.tensor(g)).sum().backward()
    for a, b in zip(got, (ty.detach(), tx.grad, tw.grad)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-11, atol=1e-11)


def test_conv_float32_paths_agree_with_float64(path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6, 9, 9))
    w = rng.standard_normal((8, 6, 3, 3))
    g = rng.standard_normal((4, 8, 5, 5))
    f = _compile_conv(x.shape, w.shape, (2, 2), (1, 1), "float32")
    got = f(*(a.astype(np.float32) for a in (x, w, g)))
    for a, b in zip(got, numpy_conv(x, w, g, (2, 2), (1, 1))):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_conv_bias_relu_pool_step(path):
    """Conv, bias, ReLU and 2x2 max pooling with their gradients (the graph W4 repeats)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 2, 10, 10))
    w = rng.standard_normal((5, 2, 3, 3))
    b = rng.standard_normal(5)
    xs, ws, bs = (sg.tensor(nm, a.shape, dtype="float64") for nm, a in (("x", x), ("w", w), ("b", b)))
    h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(xs, ws, padding=1) + bs[None, :, None, None]), 2)
    loss = sg.sum(h * h)
    f = sg.compile([xs, ws, bs], [h] + sg.grad(loss, [xs, ws, bs]), backend="llvm")
    got = f(x, w, b)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    th = torch.nn.functional.max_pool2d(
        torch.relu(torch.nn.functional.conv2d(tx, tw, padding=1) + tb[None, :, None, None]), 2)
    (th * th).sum().backward()
    for a, t in zip(got, (th.detach(), tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride,padding", [((1, 1), (0, 0)), ((2, 1), (1, 2))])
def test_conv_shape_generic_batch_generates_code_once(path, stride, padding, monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")  # a warm start would generate nothing
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 3, 3, 3)).astype("float32")
    f = _compile_conv((None, 3, 9, 8), w.shape, stride, padding, "float32", batch_dim=None)
    for n in (1, 5, 16):
        x = rng.standard_normal((n, 3, 9, 8)).astype("float32")
        oh = (9 + 2 * padding[0] - 3) // stride[0] + 1
        ow = (8 + 2 * padding[1] - 3) // stride[1] + 1
        g = rng.standard_normal((n, 6, oh, ow)).astype("float32")
        for a, b in zip(f(x, w, g), numpy_conv(x.astype(np.float64), w.astype(np.float64),
                                               g.astype(np.float64), stride, padding)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(np.abs(b).max(), 1))
    assert f.program.generations == 1


def test_conv_path_selection_rule(monkeypatch):
    monkeypatch.setattr(conv_lowering, "FORCE_PATH", None)
    choose = conv_lowering.conv_path
    # W4's two convolutions: one input channel; 32 channels with a 5x5 window
    assert choose("forward", 1, 32, 5, 5, (28, 28, 24, 24)) == "direct"
    assert choose("forward", 32, 64, 5, 5, (12, 12, 8, 8)) == "direct"
    assert choose("forward", 256, 256, 3, 3, (14, 14, 14, 14)) == "im2col"
    assert choose("grad_weight", 32, 64, 5, 5, (12, 12, 8, 8)) == "direct"
    assert choose("grad_input", 32, 64, 5, 5, (12, 12, 8, 8)) == "im2col"  # depth o*kh*kw
    assert choose("grad_input", 64, 64, 3, 3, (16, 16, 16, 16)) == "direct"
    assert choose("grad_input", 3, 16, 3, 3, (32, 32, 32, 32)) == "im2col"  # 3 lanes (c)
    assert choose("forward", 3, 4, 3, 3, (32, 32, 32, 32)) == "im2col"  # 4 lanes (o)
    # never a guard on a symbolic size: a symbolic channel count takes im2col
    sym = leaf(0, 4)
    assert choose("forward", sym, 8, 3, 3, (8, 8, 6, 6)) == "im2col"
    monkeypatch.setattr(conv_lowering, "FORCE_PATH", "direct")
    assert choose("forward", 256, 256, 3, 3, (14, 14, 14, 14)) == "direct"


def test_conv_results_do_not_depend_on_the_thread_count(path):
    """The weight gradient's batch partial sums are fixed groups, so 1 and 2 threads agree
    bit for bit (as does every other convolution kernel)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((19, 3, 8, 8)).astype("float32")
    w = rng.standard_normal((16, 3, 3, 3)).astype("float32")
    g = rng.standard_normal((19, 16, 6, 6)).astype("float32")
    outs = []
    for threads in (1, 2):
        xs, ws, gs = (sg.tensor(nm, a.shape) for nm, a in (("x", x), ("w", w), ("g", g)))
        y = sg.nn.conv2d(xs, ws)
        f = sg.compile([xs, ws, gs], [y] + sg.grad(sg.sum(y * gs), [xs, ws]), backend="llvm",
                       threads=threads)
        outs.append(f(x, w, g))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


# --- the CUDA lowering shares the kernel IR: each path renders and runs as CUDA C ----------

def _cuda_modules():
    from symgraph.backends.cuda import CudaCodegen
    from symgraph.compile import build_fgraph
    from symgraph.rewrite import rewrite_graph
    from tests.gpu.cases import convnet_step, convolution
    out = []
    for case in (convolution(), convnet_step()):
        fg, ins, shared, _, _, _ = build_fgraph(case.inputs, case.outputs, case.updates)
        rewrite_graph(fg, backend="cuda")
        roots = ins + shared
        values = list(case.values) + [s.get_value() for s in shared]
        mod = CudaCodegen(fg, roots).module([np.shape(v) for v in values])
        from symgraph.backends.reference import ReferenceProgram
        out.append((case, mod, values, ReferenceProgram(fg, roots)(values)))
    return out


def test_conv_paths_run_as_cuda_c_on_the_host(path):
    from tests.gpu.host_emulation import CXX, host_library, run_on_host
    if CXX is None:
        pytest.skip("no host C++ compiler")
    rendered = _cuda_modules()
    names = {k.name.rsplit("_", 1)[0] for _, mod, _, _ in rendered for k in mod.kernels}
    assert ("conv_direct" in names) == (path == "direct") and ("im2col" in names) == (path == "im2col")
    lib = host_library([mod for _, mod, _, _ in rendered])
    for case, mod, values, expected in rendered:
        got = run_on_host(mod, values, lib)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, np.asarray(b), rtol=case.rtol, atol=case.rtol)


def test_direct_conv_kernels_compile_with_nvcc(monkeypatch):
    from symgraph.backends import cuda_compiler
    from symgraph.codegen.cuda_render import module_source
    from tests.gpu.host_emulation import renamed_source, symbol
    if cuda_compiler.find_nvcc() is None:
        pytest.skip("nvcc is not installed")
    monkeypatch.setattr(conv_lowering, "FORCE_PATH", "direct")
    kernels = {}
    for _, mod, _, _ in _cuda_modules():
        for k in mod.kernels:
            if k.mode != "cublas" and "conv" in k.name:
                kernels.setdefault(symbol(k), renamed_source(k))
    assert any("conv_direct_grad_input" in name for name in kernels)
    source = module_source([]) + "\n" + "\n".join(kernels.values())
    ptx = cuda_compiler.nvcc_compile(source, "sm_80", "ptx", ("-Xcicc", "-O0")).decode()
    missing = [name for name in kernels if f".entry {name}(" not in ptx]
    assert not missing


@pytest.mark.parametrize("n,c,o", [(0, 3, 16), (2, 0, 16), (2, 3, 0)])
def test_conv_zero_size_axes(path, n, c, o):
    f = _compile_conv((n, c, 6, 6), (o, c, 3, 3), (1, 1), (1, 1), "float32")
    x, w, g = (np.ones(s, "float32") for s in ((n, c, 6, 6), (o, c, 3, 3), (n, o, 6, 6)))
    for a, b in zip(f(x, w, g), numpy_conv(x, w, g, (1, 1), (1, 1))):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
