"""The cuda runtime end to end on a stand-in device (no GPU): ``CudaProgram`` with its uploads,
device-resident shared variables, pointer-swap updates, arena, constants and downloads, on a
fake driver whose "device memory" is host memory and whose kernels are the generated CUDA C
compiled for the host (``tests/gpu/fake_device.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from tests.gpu.cases import convnet_step, mlp_step
from tests.gpu.fake_device import NumpyCublas, install
from tests.gpu.host_emulation import CXX

pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")


@pytest.fixture
def fake_device(monkeypatch):
    return install(monkeypatch)


def _train(make, backend, steps=3):
    case = make()
    f = sg.compile(case.inputs, case.outputs[0], updates=case.updates, backend=backend)
    losses = [f(*case.values) for _ in range(steps)]
    return case, f, losses


@pytest.mark.parametrize("make", [mlp_step, convnet_step])
def test_training_steps_on_the_fake_device_match_the_reference(fake_device, make):
    ref_case, _, ref_losses = _train(make, "reference")
    case, f, losses = _train(make, "cuda")
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    if make is mlp_step:  # bias + ReLU and the SGD updates run in the generated GEMMs' stores
        assert any("fused into its stores" in k.source for k in f.kernels)
    targets = [t for t, _ in case.updates]
    assert all("cuda" in t.device_state and t.__dict__["_pull"] is not None for t in targets)
    for t, (rt, _) in zip(targets, ref_case.updates):
        np.testing.assert_allclose(t.get_value(), rt.get_value(), rtol=1e-5, atol=1e-6)
    assert all(t.__dict__["_pull"] is None for t in targets)  # pulled once, now on the host too


@pytest.mark.parametrize("make", [mlp_step, convnet_step])
def test_cublas_path_matches_the_generated_gemm(fake_device, make):
    """With cuBLAS, a matmul's bias + ReLU or SGD-update epilogue is the kernel after the call."""
    fake_device.cublas = NumpyCublas()
    ref_case, _, ref_losses = _train(make, "reference")
    case, f, losses = _train(make, "cuda")
    assert f.program.codegen.use_cublas and fake_device.cublas.calls > 0
    assert any(k.mode == "cublas" for k in f.kernels)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for (t, _), (rt, _) in zip(case.updates, ref_case.updates):
        np.testing.assert_allclose(t.get_value(), rt.get_value(), rtol=1e-5, atol=1e-6)


def test_set_value_and_new_shapes(fake_device):
    w = sg.shared(np.ones(4, np.float32), name="w")
    x = sg.matrix("x")
    f = sg.compile([x], (x * w).sum(axis=1), updates=[(w, w * 2)], backend="cuda", profile=True)
    np.testing.assert_array_equal(f(np.ones((2, 4), np.float32)), [4, 4])
    np.testing.assert_array_equal(f(np.ones((3, 4), np.float32)), [8, 8, 8])  # a second specialisation
    assert len(f.program._specs) == 2
    w.set_value(np.full(4, 0.5, np.float32))
    np.testing.assert_array_equal(f(np.ones((2, 4), np.float32)), [2, 2])
    np.testing.assert_array_equal(w.get_value(), np.ones(4, np.float32))
    assert all(s["calls"] >= 1 for s in f.stats() if s["kernel"])


def test_device_array_arguments_are_used_in_place(fake_device):
    x = sg.vector("x")
    f = sg.compile([x], sg.exp(x), backend="cuda")
    host = np.linspace(-1, 1, 7).astype(np.float32)

    class OnDevice:
        __cuda_array_interface__ = {"shape": (7,), "typestr": "<f4", "data": (host.ctypes.data, False),
                                    "strides": None, "version": 3}
    np.testing.assert_allclose(f(OnDevice()), np.exp(host), rtol=1e-6)
    assert fake_device.synced == []

    class OnAnotherStream:  # e.g. a CuPy array made on a non-default stream
        __cuda_array_interface__ = {**OnDevice.__cuda_array_interface__, "stream": 0x5000}
    np.testing.assert_allclose(f(OnAnotherStream()), np.exp(host), rtol=1e-6)
    assert fake_device.synced == [0x5000]


def test_outputs_that_alias_inputs_or_each_other(fake_device):
    x = sg.vector("x")
    y = sg.exp(x)
    f = sg.compile([x], [y, x, y], backend="cuda")
    xs = np.arange(3, dtype=np.float32)
    a, b, c = f(xs)
    np.testing.assert_allclose(a, np.exp(xs), rtol=1e-6)
    np.testing.assert_array_equal(b, xs)
    np.testing.assert_array_equal(a, c)
    a[0] = -1  # outputs are independent arrays
    assert c[0] != -1


def test_out_of_range_indices_raise_and_change_nothing(fake_device):
    rng = np.random.default_rng(3)
    emb = sg.shared(rng.standard_normal((6, 3)).astype(np.float32), name="emb")
    w = sg.shared(rng.standard_normal((3, 4)).astype(np.float32), name="w")
    i, t = sg.vector("i", "int64"), sg.vector("t", "int64")
    loss = sg.nn.cross_entropy(emb[i] @ w, t)
    f = sg.compile([i, t], loss, updates=sg.nn.sgd(loss, [emb, w], lr=0.5), backend="cuda")
    before = [emb.get_value().copy(), w.get_value().copy()]
    with pytest.raises(IndexError, match=r"index 6 is out of bounds for axis 0 with size 6 .*\(6, 3\)"):
        f(np.array([0, 6]), np.array([1, 2]))
    with pytest.raises(IndexError, match=r"labels must be in \[0, 4\), got values in \[-3, -3\]"):
        f(np.array([0, -6]), np.array([1, -3]))  # on the GPU only bad values are recorded
    np.testing.assert_array_equal(emb.get_value(), before[0])
    np.testing.assert_array_equal(w.get_value(), before[1])
    ref = sg.compile([i, t], loss, backend="reference")(np.array([-1, 2]), np.array([3, 0]))
    np.testing.assert_allclose(f(np.array([-1, 2]), np.array([3, 0])), ref, rtol=1e-5)
    assert not np.array_equal(emb.get_value(), before[0])
