"""The engine: groups, registry, log records, traces, private copies, worklist speed-independence."""

import numpy as np
import pytest

import symgraph as sg
from symgraph.graph.fgraph import FunctionGraph
from symgraph.rewrite import GROUPS, RewriteRecord, registered, rewrite_graph
from symgraph.rewrite.engine import LocalRewrite, RewriteContext, run_local

from .helpers import check_same, fired


def test_groups_are_ordered_and_every_rewrite_is_registered_in_one():
    assert GROUPS == ("merge", "fold", "canonicalize", "stabilize", "specialize", "fuse", "memory")
    reg = registered()
    assert "merge" in reg["merge"]
    assert "constant_fold" in reg["fold"]
    assert "log_softmax" in reg["stabilize"]
    assert reg["fuse"][:4] == ["fuse_elemwise", "fuse_matmul_epilogue", "fuse_conv_epilogue", "fuse_reduce"]
    assert reg["memory"] == ["plan_memory"]


def test_log_records_name_what_and_by_what_in_order():
    x = sg.vector("x")
    f = check_same([x], sg.sum(sg.exp(x) * 1.0 + 0.0), [np.arange(3, dtype=np.float32)])
    assert all(isinstance(r, RewriteRecord) for r in f.rewrite_log)
    names = [r.rewrite.split("/")[0] for r in f.rewrite_log]
    assert names.index("elemwise_simplify") < names.index("fuse_reduce")
    rec = next(r for r in f.rewrite_log if r.rewrite == "fuse_reduce")
    assert rec.group == "fuse" and "Sum" in rec.replaced and "FusedSum" in rec.by


def test_fused_kernel_error_names_the_users_line():
    x, y = sg.vector("x"), sg.vector("y")
    s = sg.tanh(x + y) * 2.0  # THE-USER-LINE
    f = sg.compile([x, y], sg.exp(s), backend="reference")
    (node,) = f.fgraph.toposort()
    assert node.op.is_fused
    with pytest.raises(ValueError) as err:
        f(np.ones(3, np.float32), np.ones(4, np.float32))
    assert "test_engine.py" in str(err.value)
    assert "THE-USER-LINE" in str(err.value) or "sg.exp(s)" in str(err.value)


def test_every_new_node_gets_the_replaced_nodes_trace():
    x = sg.vector("x")
    out = sg.sum(sg.exp(x - 1.0))
    fg = FunctionGraph([x], [out])
    traces = {n.trace for n in fg.toposort()}
    rewrite_graph(fg)
    for node in fg.toposort():
        assert node.trace in traces


def test_rewriting_does_not_modify_the_users_graph():
    x = sg.vector("x")
    z = sg.stop_gradient(x * 1.0) + sg.exp(x)
    before = [(n.op, list(n.inputs)) for n in sg.graph.fgraph.toposort([z])]
    sg.compile([x], z, backend="reference")
    after = [(n.op, list(n.inputs)) for n in sg.graph.fgraph.toposort([z])]
    assert len(before) == len(after)
    for (op0, in0), (op1, in1) in zip(before, after):
        assert op0 == op1 and all(a is b for a, b in zip(in0, in1))
    # and it can still be differentiated as written (the StopGradient is still there)
    g = sg.compile([x], sg.grad(sg.sum(z), x), backend="reference")
    np.testing.assert_allclose(g(np.zeros(2, np.float32)), [1.0, 1.0])


def test_random_draws_are_never_merged_or_folded():
    rng = sg.RandomStream(1)
    a = rng.uniform((3,))
    b = rng.uniform((3,))
    f = sg.compile([], [a, b], backend="reference")
    u, v = f()
    assert not np.allclose(u, v)
    draws = [n for n in f.fgraph.toposort() if n.op.nondeterministic]
    assert len(draws) == 2


def test_worklist_revisits_clients_after_a_replacement():
    # a rewrite that fires deep in the graph must let its clients fire again: x*1*1*1 -> x
    x = sg.vector("x")
    y = x
    for _ in range(5):
        y = sg.tanh(y * 1.0)
    fg = FunctionGraph([x], [y])
    from symgraph.rewrite.engine import privatize
    privatize(fg)
    ctx = RewriteContext(fg)
    from symgraph.rewrite import load_all
    from symgraph.rewrite.engine import LOCAL
    load_all()
    run_local(ctx, [LOCAL["elemwise_simplify"]])
    assert sum(1 for r in ctx.log if r.rewrite == "elemwise_simplify/mul_one") == 5
    assert all(n.op.expr.op == "tanh" for n in fg.toposort())


def test_a_local_rewrite_runs_to_a_fixed_point_and_is_logged_once_per_firing():
    x = sg.vector("x")
    y = sg.ops.neg(sg.ops.neg(sg.ops.neg(sg.ops.neg(x))))
    fg = FunctionGraph([x], [sg.exp(y)])
    calls = []

    def peel(node, ctx):
        e = node.op.expr
        if e.op == "neg" and node.inputs[0].owner is not None and \
                node.inputs[0].owner.op.expr.op == "neg":
            calls.append(node)
            return node.inputs[0].owner.inputs[0]
        return None

    ctx = RewriteContext(fg)
    run_local(ctx, [LocalRewrite("peel", peel, ("canonicalize",), (sg.ops.Elemwise,))])
    assert len(ctx.log) == 2
    assert [n.op.expr.op for n in fg.toposort()] == ["exp"]


def test_rewrite_false_keeps_the_graph():
    x = sg.vector("x")
    f = sg.compile([x], x * 1.0, backend="reference", rewrite=False)
    assert f.rewrite_log == [] and len(f.fgraph.toposort()) == 1
    assert fired(sg.compile([x], x * 1.0, backend="reference"), "elemwise_simplify")


def test_a_disabled_rewrite_comes_back_in_its_place():
    """Comparing a graph with and without a rewrite must not reorder the others: with
    ``relu_grad_from_output`` put back last, ``max_pool_relu_grad`` would take the ReLU mask
    first and it would never fire again in that process."""
    from symgraph.rewrite import engine, load_all
    load_all()
    before = list(engine.LOCAL)
    with engine.disabled("relu_grad_from_output"):
        assert "relu_grad_from_output" not in engine.LOCAL
        assert engine.LOCAL.missing == {"relu_grad_from_output"}
    assert list(engine.LOCAL) == before and not engine.LOCAL.missing
    before = list(engine.GLOBAL)
    with engine.disabled("fuse_conv_epilogue"):
        assert "fuse_conv_epilogue" not in engine.GLOBAL
    assert list(engine.GLOBAL) == before and not engine.GLOBAL.missing
