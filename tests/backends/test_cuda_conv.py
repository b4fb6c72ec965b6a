"""2-d convolution on the CUDA backend without a GPU: which path the shared lowering takes for
the cuda target (``conv.conv_path``: im2col + GEMM / cuBLAS, never the CPU-shaped direct
loops), how its kernels map onto the GPU, and the values of both paths (the direct one forced
through ``conv.FORCE_PATH``) under the host emulation of the generated CUDA C, against NumPy
and PyTorch (float64); the kernels compile with nvcc, and a convnet step with many channels
trains on the fake device like the reference backend."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import cuda_compiler
from symgraph.backends.cuda import CudaCodegen
from symgraph.codegen.cuda_render import module_source
from symgraph.codegen.lower import conv as conv_lowering
from symgraph.compile import build_fgraph
from symgraph.rewrite import rewrite_graph
from tests.backends.test_cuda_fake_device import fake_device  # noqa: F401 (a fixture)
from tests.backends.test_llvm_conv import numpy_conv
from tests.gpu.cases import Case, _r
from tests.gpu.host_emulation import (
    CXX,
    host_library,
    renamed_source,
    run_on_host,
    run_threaded,
    symbol,
    threaded_library,
)

needs_cxx = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")
PATHS = ("im2col", "direct")

# (batch, channels, out channels, height, width, kernel, stride, padding)
SHAPES = [
    (2, 1, 3, 7, 9, (3, 3), (1, 1), (0, 0)),  # one input channel
    (3, 2, 5, 8, 7, (3, 2), (2, 1), (1, 2)),  # odd sizes, strides, padding per axis
    (1, 4, 9, 11, 10, (5, 5), (2, 3), (2, 1)),  # batch 1
    (5, 3, 1, 6, 6, (1, 1), (1, 1), (0, 0)),  # one output channel, 1x1 window
    (2, 17, 20, 5, 13, (2, 4), (1, 2), (1, 0)),  # many channels (the cpu rule picks direct)
]
# W4's two convolutions (5x5, 1 -> 32 and 32 -> 64 channels) at a small batch
W4_LAYERS = [(2, 1, 32, 28, 28, (5, 5), (1, 1), (2, 2)), (2, 32, 64, 14, 14, (5, 5), (1, 1), (2, 2))]


def _ids(shape) -> str:
    return "x".join(map(str, shape[:5]))


def _conv_case(shape) -> Case:
    """Forward, input gradient and weight gradient of ``sum(conv2d(x, w) * g)`` (float64)."""
    n, c, o, h, wd, k, stride, padding = shape
    x = sg.tensor("x", (n, c, h, wd), dtype="float64")
    w = sg.tensor("w", (o, c) + k, dtype="float64")
    y = sg.nn.conv2d(x, w, stride=stride, padding=padding)
    g = sg.tensor("g", y.type.shape, dtype="float64")
    gx, gw = sg.grad(sg.sum(y * g), [x, w])
    seed = sum(shape[:5])
    vals = [_r(n, c, h, wd, seed=seed, dtype="float64"), _r(o, c, *k, seed=seed + 1, dtype="float64"),
            _r(*y.type.shape, seed=seed + 2, dtype="float64")]
    return Case([x, w, g], [y, gx, gw], vals)


def _render(case: Case, use_cublas: bool = False):
    fg, ins, shared, _, _, _ = build_fgraph(case.inputs, case.outputs, case.updates)
    rewrite_graph(fg, backend="cuda")
    return CudaCodegen(fg, ins + shared, use_cublas).module([np.shape(v) for v in case.values])


def _rendered(path: str | None, shapes) -> dict:
    old = conv_lowering.FORCE_PATH
    conv_lowering.FORCE_PATH = path
    try:
        return {_ids(s): (_conv_case(s), _render(_conv_case(s))) for s in shapes}
    finally:
        conv_lowering.FORCE_PATH = old


@pytest.fixture(scope="module")
def modules() -> dict:
    """``{path: {shape id: (case, module)}}``: ``None`` is the selection rule's own choice."""
    return {path: _rendered(path, SHAPES + W4_LAYERS) for path in (None, *PATHS)}


@pytest.fixture(scope="module")
def lib(modules):
    return host_library([mod for by_shape in modules.values() for _, mod in by_shape.values()])


def _conv_kernels(mod) -> list:
    return [k for k in mod.kernels if any("Conv2d" in op for op in k.ops)]


@pytest.mark.parametrize("shape", SHAPES + W4_LAYERS, ids=_ids)
def test_cuda_target_takes_im2col_and_parallel_kernels(modules, shape):
    case, mod = modules[None][_ids(shape)]
    kinds = {k.name.rsplit("_", 1)[0] for k in mod.kernels}
    assert not any(name.startswith(("conv_direct", "conv_pad", "conv_grad_weight_sum")) for name in kinds)
    assert {"im2col", "conv_gemm", "conv_grad_weight", "conv_grad_input_gemm"} <= kinds
    convs = _conv_kernels(mod)
    assert convs and all(k.mode in ("grid", "gemm") for k in convs)
    # the grid kernels (im2col, col2im) run one thread per element: as many as the patch matrix
    n, c, o, h, wd, (kh, kw), _, _ = shape
    oh, ow = case.outputs[0].type.shape[2:]
    im2col = [k for k in convs if k.name.startswith("im2col")]
    assert all(k.grid[0] * k.block >= min(n * c * kh * kw * oh * ow, 1 << 20) for k in im2col)


@pytest.mark.parametrize("shape", W4_LAYERS, ids=_ids)
def test_cpu_target_takes_the_direct_path_for_the_same_shapes(shape):
    # the contrast that makes the test above mean something: the llvm backend's rule differs
    n, c, o, h, wd, (kh, kw), _, _ = shape
    spatial = (h, wd, h, wd)
    assert conv_lowering.conv_path("forward", c, o, kh, kw, spatial) == "direct"
    assert conv_lowering.conv_path("forward", c, o, kh, kw, spatial, "cuda") == "im2col"


def _check(case: Case, got: list) -> None:
    x, w, g = case.values
    stride, padding = case.outputs[0].owner.op.stride, case.outputs[0].owner.op.padding
    for a, b in zip(got, numpy_conv(x, w, g, stride, padding)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
    torch = pytest.importorskip("torch")
    tx, tw = (torch.tensor(v, requires_grad=True) for v in (x, w))
    ty = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=padding)
    (ty * torch.tensor(g)).sum().backward()
    for a, b in zip(got, (ty.detach(), tx.grad, tw.grad)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-11, atol=1e-11)


@needs_cxx
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES + W4_LAYERS[:1], ids=_ids)
def test_both_paths_match_numpy_and_torch_under_host_emulation(modules, lib, path, shape):
    case, mod = modules[path][_ids(shape)]
    if path == "direct":
        assert any(k.name.startswith("conv_direct") for k in mod.kernels)
    _check(case, run_on_host(mod, case.values, lib))


@needs_cxx
@pytest.mark.parametrize("path", PATHS)
def test_both_paths_with_concurrent_threads_and_atomics(modules, path):
    # the scatter kernels (col2im, the direct gradients' partial sums) add with atomics from
    # several real threads at once here
    case, mod = modules[path][_ids(SHAPES[1])]
    assert any("sg_atomic_add(" in k.source for k in mod.kernels)
    _check(case, run_threaded(mod, case.values, threaded_library([mod])))


@pytest.mark.skipif(cuda_compiler.find_nvcc() is None, reason="nvcc is not installed")
def test_both_paths_compile_with_nvcc(modules):
    kernels = {}
    for by_shape in modules.values():
        for _, mod in by_shape.values():
            for k in mod.kernels:
                kernels.setdefault(symbol(k), renamed_source(k))
    source = module_source([]) + "\n" + "\n".join(kernels.values())
    ptx = cuda_compiler.nvcc_compile(source, "sm_80", "ptx", ("-Xcicc", "-O0")).decode()
    missing = [name for name in kernels if f".entry {name}(" not in ptx]
    assert not missing
    assert any(name.startswith("conv_direct") for name in kernels)


def _convnet16(batch: int = 4, lr: float = 0.05) -> Case:
    """A convnet step whose convolution has 16 output channels (the cpu rule's direct case)."""
    x = sg.tensor("x", (None, 3, 8, 8))
    y = sg.tensor("y", (None,), dtype="int64")
    wc = sg.nn.init.he_normal((16, 3, 3, 3), seed=0, name="wc")
    bc = sg.nn.init.zeros((16,), name="bc")
    wd = sg.nn.init.glorot_uniform((16 * 4 * 4, 10), seed=1, name="wd")
    params = [wc, bc, wd]
    h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(x, wc, padding=1) + bc.reshape((1, 16, 1, 1))), 2)
    loss = sg.nn.cross_entropy(sg.flatten(h, 2) @ wd, y)
    grads = sg.grad(loss, params)
    vals = [_r(batch, 3, 8, 8), np.random.default_rng(1).integers(0, 10, batch)]
    return Case([x, y], [loss], vals, [(p, p - lr * g) for p, g in zip(params, grads)])


@needs_cxx
def test_convnet_step_with_many_channels_on_the_fake_device(fake_device):  # noqa: F811
    losses = {}
    for backend in ("reference", "llvm", "cuda"):
        case = _convnet16()
        f = sg.compile(case.inputs, case.outputs[0], updates=case.updates, backend=backend)
        losses[backend] = [float(f(*case.values)) for _ in range(3)]
        if backend == "llvm":
            assert any(k.name.startswith("conv_direct") for k in f.kernels)
        if backend == "cuda":
            assert not any(k.name.startswith("conv_direct") for k in f.kernels)
            assert all(k.mode in ("grid", "gemm") for k in _conv_kernels(f.program.codegen.last))
    np.testing.assert_allclose(losses["cuda"], losses["reference"], rtol=1e-5)
    np.testing.assert_allclose(losses["llvm"], losses["reference"], rtol=1e-5)
