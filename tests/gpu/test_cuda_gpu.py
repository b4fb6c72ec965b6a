"""The cuda backend on a real GPU: every op and random graphs against the reference backend,
training steps with the parameters kept on the device, the digits MLP's accuracy.

Marked ``gpu``: skipped where pycuda, the NVIDIA driver or a GPU is missing.  Run them with
``python -m pytest -m gpu tests/gpu`` on a machine with an NVIDIA GPU (docs/gpu.md).
"""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends.cuda_runtime import cublas_available, gpu_available
from tests.gpu.cases import CASES, convnet_step, mlp_step

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not gpu_available(), reason="needs pycuda, the NVIDIA driver and a GPU")]

CUBLAS = [False] + ([True] if cublas_available() else [])


def _compile(case, backend, cublas=None):
    f = sg.compile(case.inputs, case.outputs, updates=case.updates, backend=backend)
    if backend == "cuda" and cublas is not None and f.program.codegen.use_cublas != cublas:
        from symgraph.backends.cuda import CudaCodegen
        f.program.codegen = CudaCodegen(f.fgraph, f.program.roots, cublas)
    return f


def _check(got, expected, rtol):
    for g, e in zip(got, expected):
        g, e = np.asarray(g), np.asarray(e)
        assert g.shape == e.shape and g.dtype == e.dtype
        if e.dtype.kind == "f":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol)
        else:
            np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("cublas", CUBLAS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_matches_the_reference(name, cublas):
    case = CASES[name]()
    ref = _compile(case, "reference")(*case.values)
    case = CASES[name]()  # fresh shared state (random streams)
    got = _compile(case, "cuda", cublas)(*case.values)
    _check(got, ref, case.rtol)


@pytest.mark.parametrize("cublas", CUBLAS)
@pytest.mark.parametrize("make", [mlp_step, convnet_step])
def test_training_steps_keep_parameters_on_the_gpu(make, cublas):
    ref_case, gpu_case = make(), make()
    ref = _compile(ref_case, "reference")
    gpu = _compile(gpu_case, "cuda", cublas)
    for _ in range(3):
        expected = ref(*ref_case.values)
        got = gpu(*gpu_case.values)
        np.testing.assert_allclose(got, expected, rtol=1e-4)
    targets = [t for t, _ in gpu_case.updates]
    # the new values live on the device; the host copy is fetched only when read
    assert all("cuda" in t.device_state and t.__dict__["_pull"] is not None for t in targets)
    for t_gpu, (t_ref, _) in zip(targets, ref_case.updates):
        np.testing.assert_allclose(t_gpu.get_value(), t_ref.get_value(), rtol=1e-4, atol=1e-5)


def test_set_value_reaches_the_gpu():
    w = sg.shared(np.ones(4, np.float32), name="w")
    x = sg.vector("x")
    f = sg.compile([x], (x * w).sum(), updates=[(w, w * 2)], backend="cuda")
    assert f(np.ones(4, np.float32)) == 4.0
    assert f(np.ones(4, np.float32)) == 8.0
    w.set_value(np.full(4, 0.5, np.float32))
    assert f(np.ones(4, np.float32)) == 2.0
    np.testing.assert_array_equal(w.get_value(), np.ones(4, np.float32))


def test_gpuarray_inputs_skip_the_copy():
    import pycuda.gpuarray as gpuarray
    x = sg.matrix("x")
    f = sg.compile([x], sg.tanh(x) * 2, backend="cuda")
    host = np.random.default_rng(0).standard_normal((64, 33)).astype(np.float32)
    np.testing.assert_allclose(f(gpuarray.to_gpu(host)), np.tanh(host) * 2, rtol=1e-5, atol=1e-6)


def test_big_elementwise_and_rows():
    x = sg.matrix("x")
    y = sg.vector("y", dtype="int64")
    f = sg.compile([x, y], [sg.gelu(x), sg.nn.cross_entropy(x, y), sg.grad(sg.nn.cross_entropy(x, y), x)],
                   backend="cuda")
    r = sg.compile([x, y], [sg.gelu(x), sg.nn.cross_entropy(x, y), sg.grad(sg.nn.cross_entropy(x, y), x)],
                   backend="reference")
    xs = np.random.default_rng(1).standard_normal((512, 3000)).astype(np.float32)
    ys = np.random.default_rng(2).integers(0, 3000, 512)
    _check(f(xs, ys), r(xs, ys), 1e-4)


def test_random_graphs_match_the_reference():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    unary = [sg.exp, sg.tanh, sg.sigmoid, sg.relu, sg.square, sg.sin, lambda v: v * 0.5 - 1]
    binary = [sg.add, sg.sub, sg.mul, sg.maximum, lambda a, b: sg.where(a > b, a, b * 2)]

    @hypothesis.settings(max_examples=25, deadline=None)
    @hypothesis.given(st.lists(st.tuples(st.integers(0, len(unary) - 1), st.integers(0, len(binary) - 1),
                                         st.integers(0, 3)), min_size=1, max_size=6),
                      st.sampled_from([(7, 5), (1, 5), (33, 129)]), st.sampled_from([None, 0, 1]))
    def check(program, shape, axis):
        x, y = sg.matrix("x"), sg.vector("y")
        vals = [x, y]
        for u, b, k in program:
            a = unary[u](vals[k % len(vals)])
            vals.append(binary[b](a, vals[(k + 1) % len(vals)]))
        out = [vals[-1], vals[-1].sum(axis=axis), vals[-1].max(axis=axis)]
        xs = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        ys = np.random.default_rng(1).uniform(-1, 1, shape[1:]).astype(np.float32)
        got = sg.compile([x, y], out, backend="cuda")(xs, ys)
        ref = sg.compile([x, y], out, backend="reference")(xs, ys)
        _check(got, ref, 1e-3)
    check()


def test_digits_mlp_trains_to_the_cpu_accuracy():
    pytest.importorskip("sklearn")
    from examples.digits_mlp import build_model, load_data
    (xtr, ytr), (xte, yte) = load_data()
    accuracies = {}
    for backend in ("reference", "cuda"):
        x = sg.tensor("x", (None, 64))
        y = sg.tensor("y", (None,), dtype="int64")
        params = build_model()
        logits = sg.relu(x @ params[0] + params[1]) @ params[2] + params[3]
        loss = sg.nn.cross_entropy(logits, y)
        grads = sg.grad(loss, params)
        step = sg.compile([x, y], loss, updates=[(p, p - 0.1 * g) for p, g in zip(params, grads)],
                          backend=backend)
        predict = sg.compile([x], sg.argmax(logits, axis=1), backend=backend)
        for _epoch in range(10):
            for i in range(0, len(xtr) - 63, 64):
                step(xtr[i:i + 64], ytr[i:i + 64])
        accuracies[backend] = float(np.mean(predict(xte) == yte))
    assert accuracies["cuda"] > 0.9
    assert abs(accuracies["cuda"] - accuracies["reference"]) <= 0.02


def test_exported_library_takes_host_and_device_pointers(tmp_path):
    # the C API of docs/deployment.md; tests/backends/test_cuda_export.py runs a C program
    import ctypes
    import subprocess

    import pycuda.gpuarray as gpuarray

    from symgraph.backends.cuda_compiler import find_nvcc
    x = sg.tensor("x", (4, 6))
    w = sg.shared(np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32), name="w")
    y = sg.nn.softmax(x @ w)
    y.name = "probs"
    f = sg.compile([x], y, backend="cuda")
    files = f.export(str(tmp_path / "smx"))
    so = tmp_path / "smx.so"
    subprocess.run([find_nvcc(), "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
                    f"-arch={f.program.dev.arch}", "-o", str(so), files["source"]], check=True)
    lib = ctypes.CDLL(str(so))
    ctx, p = ctypes.c_void_p(), ctypes.c_void_p
    assert lib.smx_create(ctypes.byref(ctx)) == 0
    xs = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    host = np.zeros((4, 3), np.float32)
    assert lib.smx_run(ctx, p(xs.ctypes.data), p(host.ctypes.data)) == 0
    np.testing.assert_allclose(host, f(xs), rtol=1e-5, atol=1e-6)
    xd, out = gpuarray.to_gpu(xs), gpuarray.empty((4, 3), np.float32)
    assert lib.smx_run(ctx, p(int(xd.gpudata)), p(int(out.gpudata))) == 0
    np.testing.assert_allclose(out.get(), f(xs), rtol=1e-5, atol=1e-6)
    doubled = w.get_value() * 2
    assert lib.smx_set_w(ctx, p(doubled.ctypes.data), ctypes.c_int64(doubled.size)) == 0
    wd = gpuarray.empty((6, 3), np.float32)
    assert lib.smx_get_w(ctx, p(int(wd.gpudata)), ctypes.c_int64(18)) == 0
    np.testing.assert_array_equal(wd.get(), doubled)
    assert lib.smx_run(ctx, None, p(host.ctypes.data)) == 1
    lib.smx_destroy(ctx)


def test_out_of_range_indices_raise_and_keep_parameters():
    rng = np.random.default_rng(5)
    emb = sg.shared(rng.standard_normal((6, 3)).astype(np.float32), name="emb")
    w = sg.shared(rng.standard_normal((3, 4)).astype(np.float32), name="w")
    i, t = sg.vector("i", "int64"), sg.vector("t", "int64")
    loss = sg.nn.cross_entropy(emb[i] @ w, t)
    f = sg.compile([i, t], loss, updates=sg.nn.sgd(loss, [emb, w], lr=0.5), backend="cuda")
    before = [emb.get_value().copy(), w.get_value().copy()]
    big = np.arange(50000) % 6
    big[49000] = 17  # many threads and blocks; one bad value
    with pytest.raises(IndexError, match="index 17 is out of bounds for axis 0 with size 6"):
        f(big, big % 4)
    with pytest.raises(IndexError, match=r"labels must be in \[0, 4\)"):
        f(big % 6, np.where(big == 17, 4, big % 4))
    np.testing.assert_array_equal(emb.get_value(), before[0])
    np.testing.assert_array_equal(w.get_value(), before[1])
    good = np.arange(50000) % 6
    ref = sg.compile([i, t], loss, backend="reference")(good, good % 4)
    np.testing.assert_allclose(f(good, good % 4), ref, rtol=1e-4)


def test_one_module_serves_every_batch_size(monkeypatch):
    """Shape-generic code on the GPU: sizes as kernel arguments, grids per call (one module)."""
    from tests.backends.test_shape_generic import _mlp_step, _numpy_step
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")
    f, params = _mlp_step((None, 20), (None,), backend="cuda")
    rng = np.random.default_rng(1)
    for n in (1, 7, 64, 500, 70000):
        x = rng.standard_normal((n, 20)).astype("float32")
        y = rng.integers(0, 5, n)
        loss_ref, _, new_ref = _numpy_step([p.get_value() for p in params], x, y)
        loss, _ = f(x, y)
        np.testing.assert_allclose(loss, loss_ref, rtol=1e-4)
        for p, want in zip(params, new_ref):
            np.testing.assert_allclose(p.get_value(), want, rtol=1e-4, atol=1e-5)
    assert f.program.codegen.generations == 1
