"""Code for the fused softmax cross-entropy + gradient: one row kernel, vectorised on the CPU,
one block per row (or one thread per short row) on the GPU."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import host_vector_registers

import symgraph as sg
from symgraph.codegen._scalar import S
from symgraph.codegen.kernel_ir import For, Store, stmt_exprs, walk
from symgraph.codegen.lower import lower
from symgraph.compile import build_fgraph
from symgraph.rewrite import rewrite_graph


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path / "cache"))


def _w6(rows, classes, dense=False):
    z = sg.tensor("z", (None, None))
    t = sg.tensor("t", (None, None)) if dense else sg.tensor("t", (None,), dtype="int64")
    loss = sg.nn.cross_entropy(z, t)
    vals = [np.zeros((rows, classes), np.float32),
            np.zeros((rows, classes), np.float32) if dense else np.zeros(rows, np.int64)]
    return [z, t], [loss, sg.grad(loss, z)], vals


def _fused_kernels(ins, outs, vals, backend="llvm"):
    fg, roots, shared, *_ = build_fgraph(ins, outs)
    rewrite_graph(fg, backend=backend)
    prog = lower(fg, roots + shared, [np.shape(v) for v in vals])
    return prog, [k for k in prog.kernels if "SoftmaxCrossEntropyWithGrad" in k.ops[0]]


def _loads_of(body, sid):
    return [n for st in walk(body) for e in stmt_exprs(st) for n in S.topo([e])
            if n.op == "load" and n.value == sid]


@pytest.mark.parametrize("dense", [False, True])
def test_one_parallel_row_kernel_reading_the_logits_in_two_loops(dense):
    ins, outs, vals = _w6(64, 300, dense)
    prog, (k,) = _fused_kernels(ins, outs, vals)
    assert k.parallel and k.body[0].extent == 64
    row = k.body[0].body
    loops = [st for st in row if isinstance(st, For)]
    logits_sid = prog.inputs[0].sid
    # pass 1 (max), pass 2 (exp, stored and summed), pass 3 (scale): the logits are read by
    # passes 1 and 2 only (and the dense loss in pass 3); exp is computed once per element
    reading = [i for i, lp in enumerate(loops) if _loads_of(lp.body, logits_sid)]
    exps = {n for st in walk(row) for e in stmt_exprs(st) for n in S.topo([e]) if n.op == "exp"}
    assert len(loops) == 3
    assert reading == ([0, 1, 2] if dense else [0, 1]) and len(exps) == 1  # one (hash-consed) exp
    stores = [st for st in walk(row) if isinstance(st, Store)]
    assert len({st.storage.sid for st in stores}) == 2  # the losses and the gradient


@pytest.mark.parametrize("dense", [False, True])
def test_row_traffic_is_one_logits_stream_and_one_gradient_stream(dense):
    """Per row, memory sees the logits read (pass 1; pass 2 and the label find the row in
    cache) and the gradient row written: it is stored (pass 2) before any load of it (pass 3
    and the label's element read it back from cache), so no read of stale gradient memory adds
    a stream.  Each row loop stores to the gradient at most once."""
    ins, outs, vals = _w6(64, 301, dense)
    prog, (k,) = _fused_kernels(ins, outs, vals)
    row = k.body[0].body
    grad_sid = prog.outputs[[st.size for st in prog.outputs].index(64 * 301)].sid
    order = []  # (kind, loop number) of every gradient access, in program order
    for i, st in enumerate(row):
        for s2 in walk([st]):
            reads = _loads_of([s2], grad_sid) and not isinstance(s2, For)
            if reads or (isinstance(s2, Store) and s2.storage.sid == grad_sid and s2.accumulate):
                order.append(("load", i))
            if isinstance(s2, Store) and s2.storage.sid == grad_sid:
                order.append(("store", i))
    assert order and order[0][0] == "store"
    loops = [st for st in row if isinstance(st, For)]
    for lp in loops:
        assert sum(isinstance(s2, Store) and s2.storage.sid == grad_sid for s2 in walk(lp.body)) <= 1
    logits_sid = prog.inputs[0].sid
    assert sum(bool(_loads_of(lp.body, logits_sid)) for lp in loops) <= (3 if dense else 2)


def _function_asm(asm: str, prefix: str) -> str:
    m = re.search(rf"^({prefix}_\w+):(.*?)^\.Lfunc_end", asm, re.S | re.M)
    assert m, f"{prefix} kernel missing from the assembly"
    return m.group(2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_llvm_kernel_is_vectorised_and_calls_nothing(dtype):
    z = sg.tensor("z", (64, 1000), dtype=dtype)
    t = sg.tensor("t", (64,), dtype="int64")
    loss = sg.nn.cross_entropy(z, t)
    f = sg.compile([z, t], [loss, sg.grad(loss, z)], backend="llvm")
    body = _function_asm(f.asm(), "softmax_ce_grad")
    assert not re.search(r"\bcall", body), re.findall(r"call.*", body)[:3]  # exp inlined
    registers = host_vector_registers()
    if registers is None:
        pytest.skip("host CPU has no AVX2: vector width not checked")
    suffix = "ps" if dtype == "float32" else "pd"
    for insn in ("vmax", "vmul", "vfmadd", "vmovu"):  # max, exp, scale, stores: all full-width
        assert re.search(rf"{insn}\w*{suffix}\s.*{registers}", body), insn


def test_cuda_block_per_long_row_and_thread_per_short_row():
    from symgraph.backends.cuda import CudaCodegen
    for rows, classes, mode in ((5, 300, "block"), (6, 10, "grid")):
        for dense in (False, True):
            ins, outs, vals = _w6(rows, classes, dense)
            fg, roots, shared, *_ = build_fgraph(ins, outs)
            rewrite_graph(fg, backend="cuda")
            mod = CudaCodegen(fg, roots + shared, False).module([np.shape(v) for v in vals])
            (k,) = [k for k in mod.kernels if "SoftmaxCrossEntropyWithGrad" in k.ops[0]]
            assert k.mode == mode
            if mode == "block":
                assert "sg_block_reduce(l_mx, SgMax()" in k.source
                assert "sg_block_reduce(l_s, SgAdd()" in k.source


def test_losses_keep_their_precision_at_huge_logits():
    # loss = log(sum) - (x[label] - max): with max = 1e30 the form log(sum) + max - x[label]
    # cancels to 0 instead of log(n)
    z = sg.tensor("z", (None, 9))
    t = sg.tensor("t", (None,), dtype="int64")
    p = sg.tensor("p", (None, 9))
    per_row = [sg.ops.nn.SoftmaxCrossEntropy(True)(z, t), sg.ops.nn.SoftmaxCrossEntropy(False)(z, p)]
    Z = np.full((2, 9), 1e30, np.float32)
    T = np.array([0, 4])
    P = np.full((2, 9), 1 / 9, np.float32)
    for outs in (per_row, per_row + [sg.grad(sg.sum(per_row[0]) + sg.sum(per_row[1]), z)]):
        got = sg.compile([z, t, p], outs, backend="llvm")(Z, T, P)
        np.testing.assert_allclose(got[0], np.log(9), rtol=1e-6)
        np.testing.assert_allclose(got[1], np.log(9), rtol=1e-6)
