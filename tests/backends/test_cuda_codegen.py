"""The CUDA backend without a GPU: the CUDA C generated for every op, for the fused MLP
training step and for the convnet step compiles with ``nvcc -ptx`` for sm_80 and sm_90;
the kernels are mapped onto the GPU the intended way; export writes a compilable program."""

from __future__ import annotations

import os

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import cuda_compiler
from symgraph.backends.cuda import CudaCodegen
from symgraph.codegen.cuda_render import module_source
from symgraph.compile import build_fgraph
from symgraph.rewrite import rewrite_graph
from tests.gpu.cases import CASES, convnet_step, mlp_step

needs_nvcc = pytest.mark.skipif(cuda_compiler.find_nvcc() is None, reason="nvcc is not installed")
ARCHS = ("sm_80", "sm_90")


def render(case, use_cublas=False):
    """The rendered module of a case at the shapes of its example values."""
    fg, ins, shared, _, _, _ = build_fgraph(case.inputs, case.outputs, case.updates)
    rewrite_graph(fg, backend="cuda")
    shapes = [np.shape(v) for v in case.values] + [s.shape for s in shared]
    return CudaCodegen(fg, ins + shared, use_cublas).module(shapes)


@pytest.fixture(scope="module")
def modules():
    return {name: render(make()) for name, make in CASES.items()}


@pytest.fixture(scope="module")
def steps():
    return {"mlp_step": render(mlp_step()), "convnet_step": render(convnet_step())}


@needs_nvcc
def test_every_op_and_the_training_steps_compile_with_nvcc(modules, steps):
    # one translation unit holding the kernels of every case and of both training steps, one
    # nvcc call per architecture, both running at once (cicc at -O0: this checks that the code
    # compiles for the target, not how fast it is)
    from concurrent.futures import ThreadPoolExecutor

    from tests.gpu.host_emulation import renamed_source, symbol
    kernels = {}
    for mod in list(modules.values()) + list(steps.values()):
        for k in mod.kernels:
            if k.mode != "cublas":
                kernels.setdefault(symbol(k), renamed_source(k))  # a name may be reused for another body
    source = module_source([]) + "\n" + "\n".join(kernels.values())
    with ThreadPoolExecutor(len(ARCHS)) as pool:
        ptxs = list(pool.map(lambda arch: cuda_compiler.nvcc_compile(source, arch, "ptx", ("-Xcicc", "-O0"))
                             .decode(), ARCHS))
    for arch, ptx in zip(ARCHS, ptxs):
        assert f".target {arch}" in ptx
        missing = [name for name in kernels if f".entry {name}(" not in ptx]
        assert not missing, (arch, missing)
    # whole training steps (forward, backward, updates), several bias + ReLU and SGD updates
    # fused into the generated GEMMs' stores
    assert len(steps["mlp_step"].kernels) >= 10 and len(steps["convnet_step"].kernels) >= 15
    assert any("fused into its stores" in k.source for k in steps["mlp_step"].kernels)


def test_every_case_renders_for_cublas_too():
    for make in CASES.values():
        mod = render(make(), use_cublas=True)
        gemms = [k for k in mod.kernels if k.mode in ("gemm", "cublas")]
        assert all(k.mode == "cublas" for k in gemms if all(
            d in ("float32", "float64") for d in _gemm_dtypes(k)))


def _gemm_dtypes(k):
    from symgraph.codegen.kernel_ir import Gemm, walk
    return [st.dtype for st in walk(k.ir.body) if isinstance(st, Gemm)]


def test_kernels_map_onto_the_gpu_as_intended(modules):
    # long rows: one block per row with warp-shuffle reductions
    soft = [k for k in modules["big_reductions"].kernels if "Softmax" in k.ops[0]]
    assert soft and all(k.mode == "block" for k in soft)
    src = modules["big_reductions"].source
    assert "sg_block_reduce(" in src and "__shfl_down_sync" in src
    # a sum over the leading axis runs one thread per output column, not one thread in all
    mod = modules["big_reductions"]
    assert not any(k.mode == "serial" and k.ir is not None and "Sum{axes=[0]}" in k.ops[0]
                   for k in mod.kernels)
    # a long vector reduced to one value: many blocks, combined by the last one
    whole = modules["whole_reductions"]
    assert [k.mode for k in whole.kernels
            if k.ops[0].startswith(("Sum", "Max", "FusedSum", "FusedMax"))] == ["grid_reduce"] * 4
    # elementwise kernels are grid-stride loops over the flattened output
    unary = modules["elementwise_unary"]
    assert all(k.mode == "grid" for k in unary.kernels)
    assert all("gridDim.x * blockDim.x" in k.source for k in unary.kernels)
    # scatter-add with integer-array indices runs in parallel with atomics
    idx = modules["shapes_and_indexing"]
    scat = [k for k in idx.kernels if k.name.startswith("scatter_add")]
    assert scat and all(k.mode == "promoted" and "sg_atomic_add(" in k.source for k in scat)


def test_matmul_epilogue_runs_inside_the_generated_gemm(modules):
    mod = modules["matmuls"]
    fused = [k for k in mod.kernels if "fused into its stores" in k.source]
    assert len(fused) == 1 and "sg_gemm_epi<float, float>(" in fused[0].source
    assert not any(k.name.startswith("epilogue_") for k in mod.kernels)
    # with cuBLAS the product comes from the library and the epilogue is the next kernel
    from tests.gpu.cases import matmuls
    with_cublas = render(matmuls(), use_cublas=True)
    assert any(k.name.startswith("epilogue_") and k.mode == "grid" for k in with_cublas.kernels)


def test_generated_code_is_readable(modules):
    k = modules["elementwise_unary"].kernels[0]
    assert k.source.startswith(f"// {k.name}: grid kernel from ")
    assert 'extern "C" __global__ void' in k.source
    mod = modules["matmuls"]
    assert any("sg_gemm<float, float>(" in k.source for k in mod.kernels)


@needs_nvcc
def test_compile_module_caches_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("SYMGRAPH_CUDA_NVRTC", "0")
    src = 'extern "C" __global__ void k(float *x) { x[threadIdx.x] += 1.0f; }\n'
    first = cuda_compiler.compile_module(src, "sm_80", "ptx")
    files = list(tmp_path.rglob("*.ptx"))
    assert len(files) == 1 and files[0].read_bytes().endswith(first)
    assert cuda_compiler.compile_module(src, "sm_80", "ptx") == first
    assert cuda_compiler.compile_module(src, "sm_90", "ptx") != first
    assert len(list(tmp_path.rglob("*.ptx"))) == 2


def test_nvcc_errors_become_compile_errors():
    if cuda_compiler.find_nvcc() is None:
        pytest.skip("nvcc is not installed")
    with pytest.raises(sg.CompileError, match="nvcc failed"):
        cuda_compiler.nvcc_compile("this is not CUDA", "sm_80", "ptx")


def _no_gpu() -> bool:
    from symgraph.backends.cuda_runtime import gpu_available
    return not gpu_available()


@pytest.mark.skipif(not _no_gpu(), reason="a GPU is available here")
def test_compile_without_gpu_names_what_is_missing(monkeypatch):
    monkeypatch.delenv("SYMGRAPH_CUDA_CODEGEN_ONLY", raising=False)
    x = sg.vector("x")
    with pytest.raises(sg.CompileError, match="pycuda|driver|GPU"):
        sg.compile([x], sg.exp(x), backend="cuda")


@needs_nvcc
def test_codegen_only_function_shows_and_exports_its_code(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    case = mlp_step(batch=8, n_in=6, hidden=5, n_out=3)
    x, y = case.inputs
    f = sg.compile([x, y], case.outputs[0], updates=case.updates, backend="cuda")
    assert f.kernels == []
    with pytest.raises(sg.CompileError, match="call the function once"):
        f.source()
    with pytest.raises(sg.CompileError, match="CODEGEN_ONLY"):
        f(*case.values)
    files = f.export(str(tmp_path / "mlp_step"), example_inputs=case.values)
    assert {k: os.path.basename(p) for k, p in files.items()} == {
        "source": "mlp_step.cu", "header": "mlp_step.h", "ptx": "mlp_step.ptx"}
    header = (tmp_path / "mlp_step.h").read_text()
    # the llvm export's API (tests/backends/test_cuda_export.py builds and links it)
    assert "int32_t mlp_step_run(mlp_step_ctx *ctx, const float *x, const int64_t *y, float *out0);" in header
    assert "int32_t mlp_step_create(mlp_step_ctx **ctx);" in header
    assert "#define MLP_STEP_ABI_VERSION 1" in header and "MLP_STEP_ERR_NULL = 1," in header
    assert "#define MLP_STEP_OUT0_SIZE 1" in header and "#define MLP_STEP_PARAM_W1_SIZE 30" in header
    assert "return MLP_STEP_ERR_NULL;" in (tmp_path / "mlp_step.cu").read_text()
    assert ".entry" in (tmp_path / "mlp_step.ptx").read_text()
    assert len(f.kernels) > 10 and "extern \"C\" __global__" in f.source()
    assert ".version" in f.asm()


@needs_nvcc
def test_cuda_export_refuses_a_name_that_collides_with_libm(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
    x = sg.tensor("x", (4,))
    f = sg.compile([x], sg.exp(x), backend="cuda")
    with pytest.raises(ValueError, match="libm.so.6 already defines 'exp'"):
        f.export(str(tmp_path / "exp"))


def test_cuda_export_checks_the_architecture_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
    x = sg.tensor("x", (4,))
    f = sg.compile([x], sg.exp(x), backend="cuda")
    with pytest.raises(ValueError, match="arch must look like 'sm_80', got 'ampere'"):
        f.export(str(tmp_path / "model"), arch="ampere")
    assert list(tmp_path.iterdir()) == []


def test_shapes_are_static_when_declared(monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CUDA_CODEGEN_ONLY", "1")
    x = sg.tensor("x", (4, 3))
    f = sg.compile([x], sg.tanh(x) * 2, backend="cuda")
    assert "tanhf(" in f.source()
    assert f.kernels and all(k.mode == "grid" for k in f.kernels)
