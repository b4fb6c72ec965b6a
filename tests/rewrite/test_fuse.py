"""Fusion: elementwise chains, reductions, softmax paths and matmul epilogues."""

import numpy as np
import pytest

import symgraph as sg
from symgraph.ops.fused import FusedReduce, MatMulEpilogue

from .helpers import check_same, fired, nodes, op_names

RNG = np.random.default_rng(0)


def vec(n=6):
    return RNG.standard_normal(n).astype(np.float32)


def test_sum_exp_tanh_is_one_fused_reduction():
    x = sg.vector("x")
    cost = sg.sum(sg.exp(sg.tanh(2 * x + 1)) - x)
    f = check_same([x], cost, [vec()])
    (node,) = nodes(f)
    assert isinstance(node.op, FusedReduce) and node.inputs == [x]


def test_gradient_of_sum_exp_tanh_is_one_fused_node():
    x = sg.vector("x")
    g = sg.grad(sg.sum(sg.exp(sg.tanh(2 * x + 1)) - x), x)
    f = check_same([x], g, [vec()])
    (node,) = nodes(f)
    assert isinstance(node.op, sg.ops.Elemwise) and node.op.is_fused and node.inputs == [x]


def test_gradient_of_tanh_gelu_is_one_fused_node():
    x = sg.matrix("x")
    g = sg.grad(sg.sum(sg.gelu(x)), x)
    f = check_same([x], g, [RNG.standard_normal((3, 4)).astype(np.float32)])
    (node,) = nodes(f)
    assert isinstance(node.op, sg.ops.Elemwise) and node.inputs == [x]


def test_broadcasting_chain_fuses_into_one_elemwise():
    x, b = sg.matrix("x"), sg.vector("b")
    out = sg.sigmoid(x * 3.0 + b) * sg.tanh(b) - x
    f = check_same([x, b], out, [RNG.standard_normal((3, 4)).astype(np.float32), vec(4)])
    (node,) = nodes(f)
    assert set(map(id, node.inputs)) == {id(x), id(b)}


def test_repeated_subexpressions_are_computed_once_in_the_dag():
    x = sg.vector("x")
    t = sg.tanh(x)
    out = sg.exp(t) + sg.exp(t) * t
    f = check_same([x], out, [vec()])
    (node,) = nodes(f)
    ops = [n.op for n in node.op.expr.topo() if n.op not in ("input", "const")]
    assert ops.count("tanh") == 1 and ops.count("exp") == 1


def test_expensive_shared_result_is_not_computed_twice():
    x = sg.vector("x")
    e = sg.exp(sg.tanh(x))
    f = check_same([x], [e * 2.0, e + 1.0], [vec()])
    exps = sum(1 for n in nodes(f) for s in n.op.expr.topo() if s.op == "exp")
    assert exps == 1 and len(nodes(f)) == 3


def test_cheap_shared_result_is_recomputed_instead_of_stored():
    x = sg.vector("x")
    h = x * 2.0
    f = check_same([x], [sg.exp(h), sg.tanh(h)], [vec()])
    assert len(nodes(f)) == 2 and all(n.inputs == [x] for n in nodes(f))


def test_normalised_exp_with_shared_exp_keeps_exp_once():
    # not a softmax (that becomes the Softmax op): the exp feeds a sum and a division
    x = sg.matrix("x")
    e = sg.exp(x - sg.max(x, axis=1, keepdims=True))
    out = e / (sg.sum(e, axis=1, keepdims=True) + 1.0)
    f = check_same([x], out, [RNG.standard_normal((3, 5)).astype(np.float32)])
    exps = sum(1 for n in nodes(f) for s in getattr(n.op, "expr", S_NONE).topo() if s.op == "exp")
    assert exps == 1


class _NoExpr:
    def topo(self):
        return []


S_NONE = _NoExpr()


def test_softmax_cross_entropy_forward_and_backward_node_count():
    z = sg.matrix("z")
    y = sg.vector("y", dtype="int64")
    loss = sg.nn.cross_entropy(z, y)
    f = check_same([z, y], [loss, sg.grad(loss, z)],
                   [RNG.standard_normal((4, 5)).astype(np.float32), np.array([0, 1, 2, 3])])
    names = op_names(f)
    # the forward and the gradient are one node (softmax_ce_grad), no softmax of its own
    assert names.count("SoftmaxCrossEntropyWithGrad") == 1 and "Softmax" not in names
    elem = [n for n in nodes(f) if type(n.op).__name__ in ("Elemwise", "FusedReduce")]
    assert len(elem) <= 2  # the mean and the upstream gradient 1 / N


def test_softmax_backward_is_a_fused_reduction_and_one_elemwise():
    z = sg.tensor("z", (3, 4))
    w = sg.tensor("w", (3, 4))
    cost = sg.sum(sg.nn.softmax(z) * w)
    f = check_same([z, w], sg.grad(cost, z), [RNG.standard_normal((3, 4)).astype(np.float32),
                                             RNG.standard_normal((3, 4)).astype(np.float32)])
    assert sorted(op_names(f)) == ["Elemwise", "FusedReduce", "Softmax"]


def test_bias_and_activation_become_the_matmul_epilogue():
    x, w, b = sg.matrix("x"), sg.tensor("w", (4, 5)), sg.tensor("b", (5,))
    out = sg.relu(x @ w + b)
    f = check_same([x, w, b], out, [RNG.standard_normal((3, 4)).astype(np.float32),
                                    RNG.standard_normal((4, 5)).astype(np.float32), vec(5)])
    (node,) = nodes(f)
    assert isinstance(node.op, MatMulEpilogue) and fired(f, "fuse_matmul_epilogue")


def test_no_epilogue_for_a_backend_that_cannot_run_it():
    from symgraph.graph.fgraph import FunctionGraph
    from symgraph.rewrite import engine, rewrite_graph
    x, w = sg.matrix("x"), sg.matrix("w")
    fg = FunctionGraph([x, w], [sg.tanh(x @ w)])
    saved = engine.backend_capabilities
    engine.backend_capabilities = lambda backend: {"matmul_epilogue": False, "fused_reduce": True}
    try:
        rewrite_graph(fg, backend="reference")
    finally:
        engine.backend_capabilities = saved
    assert sorted(type(n.op).__name__ for n in fg.toposort()) == ["Elemwise", "MatMul"]


def test_product_used_twice_is_not_an_epilogue():
    x, w = sg.matrix("x"), sg.matrix("w")
    p = x @ w
    f = check_same([x, w], [sg.tanh(p), p], [RNG.standard_normal((2, 3)).astype(np.float32),
                                            RNG.standard_normal((3, 2)).astype(np.float32)])
    assert "MatMulEpilogue" not in op_names(f)


def test_mlp_training_step_shrinks():
    x = sg.tensor("x", (None, 8))
    y = sg.vector("y", dtype="int64")
    w1 = sg.shared(RNG.standard_normal((8, 16)).astype(np.float32) * 0.3, name="w1")
    b1 = sg.shared(np.zeros(16, np.float32), name="b1")
    w2 = sg.shared(RNG.standard_normal((16, 3)).astype(np.float32) * 0.3, name="w2")
    b2 = sg.shared(np.zeros(3, np.float32), name="b2")
    params = [w1, b1, w2, b2]
    loss = sg.nn.cross_entropy(sg.relu(x @ w1 + b1) @ w2 + b2, y)
    updates = [(p, p - 0.1 * g) for p, g in zip(params, sg.grad(loss, params))]
    xs, ys = RNG.standard_normal((5, 8)).astype(np.float32), np.array([0, 1, 2, 1, 0])
    f0 = sg.compile([x, y], loss, updates=updates, backend="reference", rewrite=False)
    before = {p.name: p.get_value() for p in params}
    l0 = f0(xs, ys)
    after0 = {p.name: p.get_value() for p in params}
    for p in params:
        p.set_value(before[p.name])
    f1 = sg.compile([x, y], loss, updates=updates, backend="reference")
    np.testing.assert_allclose(f1(xs, ys), l0, rtol=1e-5)
    for p in params:
        np.testing.assert_allclose(p.get_value(), after0[p.name], rtol=1e-5, atol=1e-6)
    n0 = len(nodes(f0))
    n1 = len(nodes(f1))
    assert n1 < 0.6 * n0
    assert f"({n1} apply nodes)" in sg.debugprint(f1, file=False)


def test_long_chains_are_cut_into_bounded_kernels():
    from symgraph.ops.elemwise import Elemwise
    from symgraph.ops.elemwise import S as S_  # the scalar IR module
    from symgraph.rewrite.fuse import MAX_FUSED_OPS

    x = sg.vector("x", dtype="float64")
    y = x
    for i in range(400):
        y = sg.tanh(y) * 1.01 if i % 2 else y + 0.5
    fused = sg.compile([x], y, backend="reference")
    plain = sg.compile([x], y, backend="reference", rewrite=False)
    sizes = [S_.count_ops([n.op.expr]) for n in fused.fgraph.nodes if isinstance(n.op, Elemwise)]
    assert len(sizes) > 1 and max(sizes) <= MAX_FUSED_OPS
    a = np.linspace(-2, 2, 7)
    np.testing.assert_allclose(fused(a), plain(a), rtol=1e-12)


@pytest.mark.parametrize("after_conv", [False, True])
def test_chains_longer_than_the_recursion_limit_fuse(after_conv):
    """Whether a node may be copied into several kernels looks a few nodes back for a matmul or
    convolution it could be the epilogue of, never down the whole chain (a 3000-op chain
    once exceeded Python's recursion limit)."""
    import sys
    x = sg.tensor4("x") if after_conv else sg.vector("x")
    y = sg.nn.conv2d(x, np.ones((1, 1, 1, 1), np.float32)) if after_conv else x
    for i in range(max(3000, sys.getrecursionlimit() + 100)):
        y = y * 1.0001 + 0.5 if i % 2 else sg.maximum(y, -1e30)
    f = sg.compile([x], y)
    v = np.linspace(-1, 1, 6, dtype=np.float32).reshape((1, 1, 2, 3) if after_conv else (6,))
    want = v.astype(np.float64)
    for i in range(max(3000, sys.getrecursionlimit() + 100)):
        want = want * 1.0001 + 0.5 if i % 2 else np.maximum(want, -1e30)
    np.testing.assert_allclose(f(v), want, rtol=1e-4)
