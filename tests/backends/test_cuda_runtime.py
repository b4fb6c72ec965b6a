"""Parts of the cuda runtime that need no GPU: how GEMM kernels become cuBLAS calls, the
device-held shared value protocol, device-array arguments, the error without pycuda."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends.cuda import CudaCodegen, run_cublas
from symgraph.compile import InputSpec, build_fgraph
from symgraph.rewrite import rewrite_graph


class RecordingCublas:
    """Stands in for ``cuda_runtime.Cublas``: records every call."""

    def __init__(self):
        self.calls = []

    def gemm(self, dtype, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, batch=1,
             sa=0, sb=0, sc=0):
        self.calls.append(dict(dtype=dtype, ta=trans_a, tb=trans_b, m=m, n=n, k=k, a=a, lda=lda, b=b,
                               ldb=ldb, beta=beta, c=c, ldc=ldc, batch=batch, sa=sa, sb=sb, sc=sc))


def _module(inputs, outputs, shapes):
    fg, ins, shared, _, _, _ = build_fgraph(inputs, outputs)
    rewrite_graph(fg, backend="cuda")
    return CudaCodegen(fg, ins + shared, use_cublas=True).module(shapes)


def _replay(mod):
    rec = RecordingCublas()
    ptr = {st.sid: 1 << 40 | st.sid << 24 for st in mod.program.storages}
    for k in mod.kernels:
        if k.mode == "cublas":
            run_cublas(rec, k.ir, ptr)
    return rec.calls, ptr


def test_batched_matmul_is_one_strided_batched_call():
    p, q = sg.tensor3("p"), sg.tensor3("q")
    mod = _module([p, q], [p @ q], [(6, 32, 24), (6, 24, 30)])
    (call,), ptr = _replay(mod)
    assert (call["m"], call["n"], call["k"], call["batch"]) == (32, 30, 24, 6)
    assert (call["sa"], call["sb"], call["sc"]) == (32 * 24, 24 * 30, 32 * 30)
    assert call["beta"] == 0


def test_transposed_operand_uses_the_transpose_flag():
    a = sg.matrix("a")
    mod = _module([a], [a.T @ a], [(40, 30)])
    (call,), _ = _replay(mod)
    assert call["ta"] and not call["tb"] and (call["m"], call["n"], call["k"]) == (30, 30, 40)


def test_conv_weight_gradient_is_one_product_over_the_batch():
    # the weight gradient of conv2d sums over images and positions: the batch is the
    # product's k, so one call (no accumulation across calls) fills the gradient buffer
    x, w = sg.tensor4("x"), sg.tensor4("w")
    cost = sg.nn.conv2d(x, w).sum()
    mod = _module([x, w], [sg.grad(cost, w)], [(3, 2, 5, 5), (4, 2, 3, 3)])
    calls, ptr = _replay(mod)
    assert all(c["beta"] == 0.0 for c in calls)
    grad = [c for c in calls if c["k"] == 3 * 3 * 3]  # n * oh * ow
    assert len(grad) == 1 and grad[0]["batch"] == 1
    assert {grad[0]["m"], grad[0]["n"]} == {4, 2 * 3 * 3}  # o and c*kh*kw, in either order


def test_pure_gemm_kernels_render_a_cublas_comment():
    a, b = sg.matrix("a"), sg.matrix("b")
    mod = _module([a, b], [a @ b], [(40, 30), (30, 20)])
    gemm = [k for k in mod.kernels if k.mode == "cublas"]
    assert gemm and gemm[0].source.startswith(f"// {gemm[0].name}: cuBLAS calls")


def test_device_held_shared_value_is_pulled_only_when_read():
    s = sg.shared(np.zeros(3, np.float32), name="s")
    pulls = []

    def pull():
        pulls.append(1)
        return np.arange(3, dtype=np.float32)
    s._assign_device("fake", object(), pull)
    assert "fake" in s.device_state and not pulls
    np.testing.assert_array_equal(s.get_value(), [0, 1, 2])
    assert len(pulls) == 1
    s.get_value()
    assert len(pulls) == 1
    s.set_value(np.ones(3, np.float32))
    assert s.device_state == {}
    s._assign_device("fake", object(), pull)
    clone = pickle.loads(pickle.dumps(s))  # pickling brings the value home first
    np.testing.assert_array_equal(clone.get_value(), [0, 1, 2])
    assert clone.device_state == {}


class FakeDeviceArray:
    def __init__(self, shape, typestr="<f4"):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (1234, False),
                                         "strides": None, "version": 3}


def test_device_arrays_pass_argument_checks_untouched():
    spec = InputSpec(sg.tensor("x", (None, 3)), 0)
    arr = FakeDeviceArray((5, 3))
    assert spec.convert(arr) is arr
    with pytest.raises(ValueError, match="shape"):
        spec.convert(FakeDeviceArray((5, 4)))
    with pytest.raises(TypeError, match="float32"):
        spec.convert(FakeDeviceArray((5, 3), "<f8"))


def test_missing_pycuda_is_a_compile_error(monkeypatch):
    import builtins

    from symgraph.backends import cuda_runtime
    real_import = builtins.__import__

    def no_pycuda(name, *args, **kwargs):
        if name.startswith("pycuda"):
            raise ImportError("No module named 'pycuda'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_pycuda)
    with pytest.raises(sg.CompileError, match=r"pip install 'symgraph\[cuda\]'"):
        cuda_runtime.pycuda_driver()
