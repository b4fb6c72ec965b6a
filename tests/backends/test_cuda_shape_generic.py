"""Shape-generic code on the cuda backend: a dim unknown at build time is a kernel argument, so
one module serves every size.  Run on the stand-in device (``tests/gpu/fake_device.py``: the
generated CUDA C compiled for the host) and compiled to PTX with nvcc where it is installed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import cuda_compiler
from symgraph.errors import ShapeError
from tests.backends.test_shape_generic import _mlp_step, _numpy_step
from tests.gpu.cases import convnet_step
from tests.gpu.fake_device import FakeDriver, NumpyCublas, install
from tests.gpu.host_emulation import CXX

pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")

BATCHES = (1, 7, 64, 500)


@pytest.fixture
def fake_device(monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")  # these tests count code generations
    return install(monkeypatch)


def _loaded_modules() -> int:
    return len(FakeDriver.compiled)


def test_training_step_generates_one_module_for_every_batch_size(fake_device):
    f, params = _mlp_step((None, 20), (None,), backend="cuda")
    rng = np.random.default_rng(1)
    loaded = _loaded_modules()
    for n in BATCHES:
        x = rng.standard_normal((n, 20)).astype("float32")
        y = rng.integers(0, 5, n)
        loss_ref, p_ref, new_ref = _numpy_step([p.get_value() for p in params], x, y)
        loss, probs = f(x, y)
        np.testing.assert_allclose(loss, loss_ref, rtol=2e-5)
        np.testing.assert_allclose(probs, p_ref, rtol=2e-5, atol=1e-6)
        for p, want in zip(params, new_ref):
            np.testing.assert_allclose(p.get_value(), want, rtol=2e-5, atol=1e-6)
    codegen = f.program.codegen
    assert codegen.generations == 1 and len(codegen.families) == 1
    assert _loaded_modules() == loaded + 1  # one module loaded on the device
    assert len(f.program._specs) == len(BATCHES)  # one specialisation (sizes, grids) per shape
    assert "const long long sg_d0" in f.program.source()


def test_launch_grids_follow_the_call_sizes(fake_device):
    x = sg.tensor("x", (None,))
    f = sg.compile([x], sg.exp(x) * 2, backend="cuda")
    for n in (3, 300, 70000):
        xs = np.linspace(-1, 1, n, dtype=np.float32)
        np.testing.assert_allclose(f(xs), np.exp(xs) * 2, rtol=1e-6)
    (k,) = [k for k in f.kernels if k.mode == "grid"]
    specs = list(f.program._specs.values())
    assert [sp.grids[f.kernels.index(k)][0] for sp in specs] == [1, 2, (70000 + 255) // 256]
    assert f.program.codegen.generations == 1


def test_empty_batch_and_unequal_unknown_dims(fake_device):
    x = sg.tensor("x", (None, None))
    w = sg.tensor("w", (None, 3))
    f = sg.compile([x, w], sg.tanh(x @ w).sum(axis=0), backend="cuda")
    rng = np.random.default_rng(2)
    for rows, inner in ((4, 5), (0, 2), (9, 1), (2, 40)):
        xs = rng.standard_normal((rows, inner)).astype("float32")
        ws = rng.standard_normal((inner, 3)).astype("float32")
        np.testing.assert_allclose(f(xs, ws), np.tanh(xs.astype("float64") @ ws).sum(axis=0),
                                   rtol=1e-5, atol=1e-6)
    assert f.program.codegen.generations == 1


def test_convnet_step_with_unknown_batch_matches_the_reference(fake_device):
    results = {}
    for backend in ("reference", "cuda"):
        case = convnet_step()
        f = sg.compile(case.inputs, case.outputs[0], updates=case.updates, backend=backend)
        rng = np.random.default_rng(4)
        losses = []
        for n in (8, 3, 1, 8):
            x = rng.standard_normal((n, 1, 8, 8)).astype("float32")
            losses.append(f(x, rng.integers(0, 10, n)))
        results[backend] = (losses, [t.get_value() for t, _ in case.updates])
        if backend == "cuda":
            assert f.program.codegen.generations == 1
    np.testing.assert_allclose(results["cuda"][0], results["reference"][0], rtol=1e-5)
    for got, want in zip(results["cuda"][1], results["reference"][1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_cublas_calls_take_the_call_sizes(fake_device):
    fake_device.cublas = NumpyCublas()
    x = sg.tensor("x", (None, 64))
    w = sg.shared(np.random.default_rng(0).standard_normal((64, 48)).astype("float32"), name="w")
    f = sg.compile([x], sg.relu(x @ w), backend="cuda")
    for n in (96, 33):
        xs = np.random.default_rng(n).standard_normal((n, 64)).astype("float32")
        np.testing.assert_allclose(f(xs), np.maximum(xs @ w.get_value(), 0), rtol=1e-5, atol=1e-6)
    assert any(k.mode == "cublas" for k in f.kernels) and fake_device.cublas.calls >= 2
    assert f.program.codegen.generations == 1


def test_shape_errors_and_index_errors_name_the_call_shapes(fake_device):
    x = sg.tensor("x", (None, 3))
    y = sg.tensor("y", (None, 3))
    f = sg.compile([x, y], x + y, backend="cuda")
    np.testing.assert_array_equal(f(np.ones((2, 3), "float32"), np.ones((2, 3), "float32")), 2)
    with pytest.raises(ShapeError, match=r"\(4, 3\).*\(5, 3\)|\(5, 3\).*\(4, 3\)"):
        f(np.ones((4, 3), "float32"), np.ones((5, 3), "float32"))
    table = sg.tensor("table", (None, 2))
    i = sg.tensor("i", (None,), dtype="int64")
    g = sg.compile([table, i], table[i], backend="cuda")
    np.testing.assert_array_equal(g(np.arange(10, dtype="float32").reshape(5, 2), np.array([4, 0])),
                                  [[8, 9], [0, 1]])
    with pytest.raises(IndexError, match=r"index 7 is out of bounds for axis 0 with size 6"):
        g(np.zeros((6, 2), "float32"), np.array([1, 7, 2]))
    assert g.program.codegen.generations == 1


def test_shape_generic_off_generates_a_module_per_shape(fake_device, monkeypatch):
    monkeypatch.setenv("SYMGRAPH_SHAPE_GENERIC", "0")
    x = sg.tensor("x", (None,))
    f = sg.compile([x], sg.exp(x), backend="cuda")
    for n in (3, 4):
        f(np.ones(n, "float32"))
    assert f.program.codegen.generations == 2 and not f.program.codegen.families
    assert "sg_d0" not in f.program.source()


def test_export_of_generic_code_writes_the_call_shapes(fake_device, tmp_path):
    x = sg.tensor("x", (None, 4))
    f = sg.compile([x], sg.exp(x).sum(axis=1), backend="cuda")
    f(np.ones((3, 4), "float32"))
    paths = f.export(str(tmp_path / "lib"))
    source = open(paths["source"]).read()
    assert "sg_d0" not in source  # fixed shapes: the latest call's
    assert "sg_d0" in f.program.source()


@pytest.mark.skipif(shutil.which("nvcc") is None and not cuda_compiler.nvrtc_available(),
                    reason="no CUDA compiler")
@pytest.mark.parametrize("make", ["mlp", "convnet"])
def test_generic_modules_compile_to_ptx(fake_device, make):
    if make == "mlp":
        f, _ = _mlp_step((None, 20), (None,), backend="cuda")
        f(np.ones((3, 20), "float32"), np.zeros(3, "int64"))
    else:
        case = convnet_step(batch=2)
        f = sg.compile(case.inputs, case.outputs[0], updates=case.updates, backend="cuda")
        f(*case.values)
    source = f.program.source()
    assert "const long long sg_d0" in source
    ptx = cuda_compiler.compile_module(source, "sm_80", "ptx").decode()
    assert ".entry" in ptx and ".param .u64" in ptx


def test_matmul_epilogue_fuses_into_the_gemm_with_run_time_sizes(fake_device):
    from tests.gpu.cases import matmuls
    case = matmuls()
    f = sg.compile(case.inputs, case.outputs, backend="cuda")
    ref = sg.compile(case.inputs, case.outputs, backend="reference")
    rng = np.random.default_rng(5)
    for rows in (40, 57):
        values = list(case.values)
        values[0] = rng.standard_normal((rows, 30)).astype("float32")
        for got, want in zip(f(*values), ref(*values)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    fused = [k for k in f.kernels if "fused into its stores" in k.source]
    assert len(fused) == 1 and "sg_gemm_epi<float, float>(" in fused[0].source
    assert "sg_d0" in fused[0].source and f.program.codegen.generations == 1


def test_sizes_from_unknown_dims_random_draws_arange_zeros_one_hot(fake_device):
    def build(backend):
        x = sg.tensor("x", (None, 4))
        rng = sg.RandomStream(0)
        n = x.shape[0]
        return sg.compile([x], [x * rng.bernoulli(x.shape, 0.5), rng.uniform(x.shape), sg.arange(n),
                                sg.cast(n // 2, "float32"), sg.zeros((n, 3)) + 1,
                                sg.one_hot(sg.arange(n) % 4, 4)], backend=backend)
    f, g = build("cuda"), build("llvm")
    for k in (1, 5, 9):
        xs = np.ones((k, 4), "float32")
        got = f(xs)
        for a, b in zip(got, g(xs)):  # the same counter-based generator on both backends
            np.testing.assert_allclose(a, b, rtol=1e-6)
        masked, u, r, half, z, oh = got
        assert masked.shape == (k, 4) and set(np.unique(masked)) <= {0.0, 1.0}
        np.testing.assert_array_equal(r, np.arange(k))
        assert half == k // 2
        np.testing.assert_array_equal(z, np.ones((k, 3)))
        np.testing.assert_array_equal(oh, np.eye(4)[np.arange(k) % 4])
    assert f.program.codegen.generations == 1
