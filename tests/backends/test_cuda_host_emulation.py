"""Run the generated CUDA C on the CPU, against the reference backend (no GPU needed).

The kernels are compiled with the host C++ compiler behind a small prelude that maps the CUDA
keywords to C++ and runs each kernel with a single thread in a single block (every kernel is
a grid-stride or block-stride loop, so one thread covers all iterations).  The two helpers
that depend on many cooperating threads are replaced by host versions with the same contract:
the block reduction of one thread's partial result is that result, and the tiled GEMM is a
plain triple loop.  So this checks the renderer (index arithmetic, loop mapping, casts,
literals, NumPy semantics of every scalar op, the random generator, atomics as plain adds);
the tiled GEMM and the shuffles themselves are checked by the GPU tests.
"""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends.cuda import CudaCodegen
from symgraph.compile import build_fgraph
from symgraph.rewrite import rewrite_graph
from tests.gpu.cases import CASES, convnet_step, mlp_step
from tests.gpu.host_emulation import CXX, host_library, run_on_host, run_threaded, threaded_library

pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")


def _render_and_reference(case, shapes_from_values=True):
    fg, ins, shared, _, _, _ = build_fgraph(case.inputs, case.outputs, case.updates)
    rewrite_graph(fg, backend="cuda")
    roots = ins + shared
    values = list(case.values) + [s.get_value() for s in shared]
    mod = CudaCodegen(fg, roots).module([np.shape(v) for v in values])
    from symgraph.backends.reference import ReferenceProgram
    expected = ReferenceProgram(fg, roots)(values)
    return mod, values, expected


def _compare(got, expected, rtol, names):
    names = list(names) + ["state update"] * (len(expected) - len(names))
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        assert g.shape == e.shape, (names[i], g.shape, e.shape)
        if e.dtype.kind == "f":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol, err_msg=f"output {i}: {names[i]}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"output {i}: {names[i]}")


STEPS = {"mlp_step": mlp_step, "convnet_step": convnet_step}


@pytest.fixture(scope="module")
def rendered():
    """Every case and both training steps: (case, module, values, expected)."""
    out = {}
    for name, make in {**CASES, **STEPS}.items():
        case = make()
        out[name] = (case, *_render_and_reference(case))
    return out


@pytest.fixture(scope="module")
def lib(rendered):
    return host_library([mod for _, mod, _, _ in rendered.values()])  # one C++ compilation


@pytest.mark.parametrize("name", sorted(CASES) + sorted(STEPS))
def test_every_op_and_training_step_matches_the_reference_on_the_host(name, rendered, lib):
    case, mod, values, expected = rendered[name]
    got = run_on_host(mod, values, lib)
    names = [str(o.owner.op) if o.owner else o.label() for o in case.outputs]
    names += [f"update of {t.name}" for t, _ in case.updates]
    _compare(got, expected, case.rtol, names)


def test_random_draws_match_numpy_bit_for_bit(tmp_path):
    rng = sg.RandomStream(123)
    u = rng.uniform((1000,))
    n = rng.normal((500,), dtype="float64")
    case = type("C", (), {})()
    case.inputs, case.outputs, case.updates, case.values = [], [u, n], [], []
    fg, ins, shared, _, _, _ = build_fgraph([], [u, n], None)
    values = [s.get_value() for s in shared]
    mod = CudaCodegen(fg, shared).module([np.shape(v) for v in values])
    got = run_on_host(mod, values)
    from symgraph.backends.reference import ReferenceProgram
    expected = ReferenceProgram(fg, shared)(values)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)


def _long_rows():
    from tests.gpu.cases import Case, _r
    z = sg.matrix("z")
    y = sg.vector("y", dtype="int64")
    loss = sg.nn.cross_entropy(z, y)
    return Case([z, y], [loss, sg.grad(loss, z), sg.logsumexp(z, axis=1)],
                [_r(3, 300) * 4, np.array([0, 299, 7], dtype=np.int64)])


def _block_sums():
    from tests.gpu.cases import Case, _r
    x = sg.matrix("x")
    from symgraph.ops import reduce as R
    small = (x * 100).astype("int8")
    return Case([x], [x.sum(axis=1), x.max(axis=1), x.sum(axis=0), x.sum(), x.min(), R.any(x > 0.99, axis=1),
                      small.max(axis=1)], [_r(5, 400)], rtol=1e-3)


# scatter kernels (col2im, pooling gradients) run their atomics concurrently here
THREADED = {"block_sums": _block_sums, "matmuls": lambda: CASES["matmuls"](), "long_rows": _long_rows,
            "whole_reductions": lambda: CASES["whole_reductions"](),
            "convolution": lambda: CASES["convolution"](), "pooling": lambda: CASES["pooling"](),
            "softmax_ce_grad": lambda: CASES["softmax_ce_grad"]()}


@pytest.fixture(scope="module")
def threaded():
    cases = {}
    for name, make in THREADED.items():
        case = make()
        cases[name] = (case, *_render_and_reference(case))
    return cases, threaded_library([mod for _, mod, _, _ in cases.values()])


@pytest.mark.parametrize("name", sorted(THREADED))
def test_block_reductions_and_tiled_gemm_with_real_threads(name, threaded):
    # the real reduce.cuh / gemm.cuh: one OS thread per CUDA thread, shuffles and barriers emulated
    cases, tlib = threaded
    case, mod, values, expected = cases[name]
    assert any(k.mode in ("block", "gemm", "grid_reduce") or "sg_atomic_add" in k.source
               for k in mod.kernels)
    got = run_threaded(mod, values, tlib)
    _compare(got, expected, 1e-3, [str(o.owner.op) if o.owner else o.label() for o in case.outputs])


def _random_case(seed: int):
    """A random elementwise / broadcasting / reduction graph over a matrix and a vector."""
    from tests.gpu.cases import Case
    rng = np.random.default_rng(seed)
    unary = [sg.exp, sg.tanh, sg.sigmoid, sg.relu, sg.square, sg.sin, sg.abs, lambda v: v * 0.5 - 1,
             lambda v: v.T.T + 0.0]
    binary = [sg.add, sg.sub, sg.mul, sg.maximum, sg.minimum, lambda a, b: sg.where(a > b, a, b * 2)]
    shape = [(7, 5), (1, 5), (33, 129), (300, 3)][seed % 4]
    x, y = sg.matrix("x"), sg.vector("y")
    vals = [x, y]
    for _ in range(int(rng.integers(1, 7))):
        a = unary[int(rng.integers(len(unary)))](vals[int(rng.integers(len(vals)))])
        vals.append(binary[int(rng.integers(len(binary)))](a, vals[int(rng.integers(len(vals)))]))
    last = vals[-1]
    axis = [None, 0, -1][seed % 3]
    outs = [last, last.sum(axis=axis), last.max(axis=axis), last.mean(axis=0, keepdims=True)]
    if last.ndim == 2:
        outs.append(last.T * 1.0)
    xs = rng.uniform(-1, 1, shape).astype(np.float32)
    ys = rng.uniform(-1, 1, shape[1:]).astype(np.float32)
    return Case([x, y], outs, [xs, ys], rtol=1e-4)


def test_random_graphs_match_the_reference_on_the_host():
    cases = [_random_case(seed) for seed in range(32)]
    rendered = [(c, *_render_and_reference(c)) for c in cases]
    lib = host_library([mod for _, mod, _, _ in rendered])
    for seed, (case, mod, values, expected) in enumerate(rendered):
        got = run_on_host(mod, values, lib)
        _compare(got, expected, case.rtol, [f"seed {seed} output {i}" for i in range(len(expected))])


@pytest.mark.parametrize("runner", ["single", "threaded"])
def test_bound_checks_record_out_of_range_indices(runner):
    x, y, z, i = sg.matrix("x"), sg.vector("y"), sg.vector("z"), sg.vector("i", "int64")
    case = type("Case", (), {})()
    case.inputs, case.updates = [x, y, z, i], None
    case.outputs = [x[:, i] * 2, sg.inc_subtensor(y, i, z)]
    xv = np.arange(12, dtype=np.float32).reshape(3, 4)
    yv, zv = np.zeros(4, np.float32), np.array([1, 2, 4], np.float32)
    case.values = [xv, yv, zv, np.array([3, -4, 0])]
    mod, values, expected = _render_and_reference(case)
    run = run_on_host if runner == "single" else run_threaded
    lib = host_library([mod]) if runner == "single" else threaded_library([mod])
    for got, want in zip(run(mod, values, lib), expected):
        np.testing.assert_array_equal(got, want)
    for bad, shown in (([3, 4, 0], 4), ([-5, 0, 1], -5)):
        with pytest.raises(IndexError, match=f"index {shown} is out of bounds for axis 1 with size 4"):
            run(mod, [xv, yv, zv, np.array(bad)], lib)
