"""Kernel-IR lowering: views cost no kernel, loops collapse, memory is reused, fused ops lower."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.codegen.kernel_ir import For, Gemm, Store, View, kernel_text, walk
from symgraph.codegen.lower import collapse, lower, plan_memory
from symgraph.compile import build_fgraph
from symgraph.ops.fused import FusedReduce, MatMulEpilogue

S = __import__("importlib").import_module("symgraph.scalar")


def _program(inputs, outputs, shapes):
    fg, ins, shared, *_ = build_fgraph(inputs, outputs)
    return lower(fg, ins + shared, shapes)


def test_views_make_no_kernels():
    x = sg.tensor3("x")
    y = sg.exp(x.reshape((8, 4)).T[1:, None, ::2])
    prog = _program([x], [y], [(2, 4, 4)])
    assert len(prog.kernels) == 1
    (k,) = prog.kernels
    assert "exp" in k.name


def test_contiguous_elementwise_is_one_flat_parallel_loop():
    x = sg.tensor3("x")
    prog = _program([x], [sg.tanh(x) + 1], [(3, 5, 7)])
    loops = [s for s in walk(prog.kernels[-1].body) if isinstance(s, For)]
    assert [(f.extent, f.parallel) for f in loops] == [(105, True)]


def test_collapse_merges_only_contiguous_axes():
    shape, strides = collapse([2, 3, 4], [[12, 4, 1], [0, 4, 1]])
    assert shape == [2, 12] and strides == [[12, 1], [0, 1]]
    shape, strides = collapse([2, 1, 4], [[4, 4, 1]])
    assert shape == [8] and strides == [[1]]


def test_column_sum_accumulates_into_the_output():
    x = sg.matrix("x")
    prog = _program([x], [x.sum(axis=0)], [(16, 9)])
    text = kernel_text(prog.kernels[0])
    assert "acc" not in text  # no scalar accumulator: vectorises over the kept axis
    stores = [s for s in walk(prog.kernels[0].body) if isinstance(s, Store)]
    assert len(stores) == 2  # init + update


def test_memory_plan_reuses_dead_temporaries():
    x = sg.vector("x")
    y = x
    for _ in range(6):
        y = sg.exp(y) * 0.5 + sg.tanh(y)
    prog = _program([x], [y], [(1000,)])
    temps = [s for s in prog.storages if s.kind == "temp"]
    assert len(temps) > 6
    assert prog.arena_size < sum(s.nbytes for s in temps)
    plan_memory(prog)
    # two temporaries touched by the same kernel never overlap
    for k in prog.kernels:
        live = [s for s in k.storages(prog.storages) if s.kind == "temp"]
        spans = sorted((prog.arena_offsets[s.sid], prog.arena_offsets[s.sid] + s.nbytes) for s in live)
        for (_a0, a1), (b0, _b1) in zip(spans, spans[1:]):
            assert a1 <= b0


def test_matmul_uses_gemm_with_transpose_flags():
    a = sg.matrix("a")
    prog = _program([a], [a.T @ a], [(64, 40)])
    gemms = [s for k in prog.kernels for s in walk(k.body) if isinstance(s, Gemm)]
    assert len(gemms) == 1 and gemms[0].trans_a and not gemms[0].trans_b
    assert (gemms[0].m, gemms[0].n, gemms[0].k) == (40, 40, 64)


def test_small_products_are_loops():
    a = sg.matrix("a")
    v = sg.vector("v")
    prog = _program([a, v], [a.T @ v, v @ a, a.T @ a], [(32, 16), (32,)])
    assert not [s for k in prog.kernels for s in walk(k.body) if isinstance(s, Gemm)]


def test_kernel_names_are_stable():
    x = sg.vector("x")
    names = [[k.name for k in _program([x], [sg.exp(x) * 2], [(9,)]).kernels] for _ in range(2)]
    assert names[0] == names[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_ops_lower_and_run(dtype, monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path))
    a = sg.matrix("a", dtype=dtype)
    b = sg.matrix("b", dtype=dtype)
    bias = sg.vector("bias", dtype=dtype)
    p = S.inp(0, dtype)
    epi = S.apply("tanh", S.apply("add", p, S.inp(1, dtype)))
    y = MatMulEpilogue(epi, 2)(a, b, bias)
    red = S.apply("exp", S.apply("sub", S.inp(0, dtype), S.inp(1, dtype)))
    z = FusedReduce("sum", (1,), False, red, 2)(y, sg.expand_dims(bias, 0))
    vals = [np.random.default_rng(1).standard_normal(s).astype(dtype) for s in ((4, 6), (6, 5), (5,))]
    f = sg.compile([a, b, bias], [y, z], backend="llvm")
    r = sg.compile([a, b, bias], [y, z], backend="reference")
    for got, want in zip(f(*vals), r(*vals)):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    names = [k.name for k in f.kernels]
    assert any(n.startswith(("gemm", "matmul_loops")) for n in names) and any("epilogue" in n for n in names)


def test_view_reshape_refuses_non_contiguous():
    from symgraph.codegen.kernel_ir import Storage
    st = Storage(0, "temp", "float32", 12)
    v = View.full(st, (3, 4)).permute((1, 0))
    assert v.reshape((12,)) is None
    assert View.full(st, (3, 4)).reshape((2, 6)).strides == (6, 1)
