"""Memory planning: storage sharing never clobbers a live value; in place only when legal."""

import numpy as np

import symgraph as sg
from symgraph.ops import Elemwise
from symgraph.rewrite.memory import MemoryPlan

RNG = np.random.default_rng(0)


def simulate(fgraph, plan: MemoryPlan) -> None:
    """Walk the plan: every read must find its own value still in its storage."""
    content: dict[int, set[int]] = {}
    for step, node in enumerate(plan.order):
        for v in node.inputs:
            s = plan.storage_of(v)
            if s is not None:
                assert id(v) in content[s], f"step {step}: {v} was overwritten before {node.op} read it"
        for o in node.outputs:
            s = plan.storage_of(o)
            if s is None:
                continue
            if id(o) in plan.views:
                content[s].add(id(o))
            else:
                content[s] = {id(o)}
    for v in fgraph.outputs:
        s = plan.storage_of(v)
        if s is not None:
            assert id(v) in content[s], "an output was overwritten"


def mlp_step():
    x = sg.tensor("x", (None, 8))
    y = sg.vector("y", dtype="int64")
    w1 = sg.shared(RNG.standard_normal((8, 16)).astype(np.float32), name="w1")
    b1 = sg.shared(np.zeros(16, np.float32), name="b1")
    w2 = sg.shared(RNG.standard_normal((16, 3)).astype(np.float32), name="w2")
    params = [w1, b1, w2]
    loss = sg.nn.cross_entropy(sg.tanh(x @ w1 + b1) @ w2, y)
    updates = [(p, p - 0.1 * g) for p, g in zip(params, sg.grad(loss, params))]
    return sg.compile([x, y], loss, updates=updates, backend="reference")


def test_plan_is_stored_and_valid_for_an_mlp_step():
    f = mlp_step()
    plan = f.fgraph.memory_plan
    assert plan.order == f.fgraph.toposort()
    assert plan.n_storage < plan.n_intermediates  # some buffers are shared
    simulate(f.fgraph, plan)


def test_no_two_live_buffers_share_storage():
    f = mlp_step()
    plan = f.fgraph.memory_plan
    by_storage: dict[int, list[tuple[int, int]]] = {}
    for node in plan.order:
        for o in node.outputs:
            if plan.storage_of(o) is None or id(o) in plan.views:
                continue
            by_storage.setdefault(plan.storage_of(o), []).append(plan.interval(o))
    for intervals in by_storage.values():
        intervals.sort()
        for (_, a1), (b0, _) in zip(intervals, intervals[1:]):
            assert a1 <= b0  # an in-place successor starts where its input ends


def test_in_place_only_when_the_input_dies_and_matches():
    x = sg.vector("x")
    a = sg.exp(x) * 2.0                # exp's result: read twice -> not in place for the first
    b = sg.sqrt(sg.abs(a)) + a         # a dies here
    c = sg.cast(b, "float64") * 3.0    # dtype change: never in place
    f = sg.compile([x], [c, sg.tanh(b)], backend="reference")
    plan = f.fgraph.memory_plan
    index = {id(n): i for i, n in enumerate(plan.order)}
    clients = f.fgraph.clients
    for node in plan.order:
        k = plan.inplace_input(node)
        if k is None:
            continue
        v, out = node.inputs[k], node.outputs[0]
        assert isinstance(node.op, Elemwise)
        assert v.owner is not None and v.dtype == out.dtype and v.shape == out.shape
        assert all(c != "output" and index[id(c)] <= index[id(node)] for c, _ in clients[v])
    simulate(f.fgraph, plan)


def test_chain_of_separate_kernels_runs_in_place():
    x = sg.vector("x")
    e = sg.exp(x)
    t = sg.tanh(e)  # expensive and used twice below: stays its own kernel
    out = sg.sum(t * 2.0) + sg.log(t + 1.0)
    f = sg.compile([x], [out, e * t], backend="reference")
    plan = f.fgraph.memory_plan
    assert plan.inplace, plan.summary()
    simulate(f.fgraph, plan)


def test_graph_inputs_are_never_written():
    x = sg.vector("x")
    f = sg.compile([x], sg.exp(x) + 1.0, backend="reference")
    plan = f.fgraph.memory_plan
    assert plan.storage_of(x) is None and not plan.inplace
