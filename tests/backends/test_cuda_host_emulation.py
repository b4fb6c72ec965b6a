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
from tests.gpu.host_emulation import CXX, run_on_host

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


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_matches_the_reference_on_the_host(name, tmp_path):
    case = CASES[name]()
    mod, values, expected = _render_and_reference(case)
    got = run_on_host(mod, values, tmp_path)
    names = [str(o.owner.op) if o.owner else o.label() for o in case.outputs] + ["update"] * len(case.updates)
    _compare(got, expected, case.rtol, names)


@pytest.mark.parametrize("make", [mlp_step, convnet_step])
def test_training_steps_match_the_reference_on_the_host(make, tmp_path):
    case = make()
    mod, values, expected = _render_and_reference(case)
    got = run_on_host(mod, values, tmp_path)
    _compare(got, expected, 1e-4, ["loss"] + [f"update of {t.name}" for t, _ in case.updates])


def test_random_draws_match_numpy_bit_for_bit(tmp_path):
    rng = sg.RandomStream(123)
    u = rng.uniform((1000,))
    n = rng.normal((500,), dtype="float64")
    case = type("C", (), {})()
    case.inputs, case.outputs, case.updates, case.values = [], [u, n], [], []
    fg, ins, shared, _, _, _ = build_fgraph([], [u, n], None)
    values = [s.get_value() for s in shared]
    mod = CudaCodegen(fg, shared).module([np.shape(v) for v in values])
    got = run_on_host(mod, values, tmp_path)
    from symgraph.backends.reference import ReferenceProgram
    expected = ReferenceProgram(fg, shared)(values)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)
