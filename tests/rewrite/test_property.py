"""Property: rewriting never changes values or gradients (random graphs, reference backend)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symgraph as sg

UNARY = {
    "tanh": sg.tanh, "sigmoid": sg.sigmoid, "exp_tanh": lambda v: sg.exp(sg.tanh(v)),
    "square": sg.square, "neg": lambda v: -v, "log_abs": lambda v: sg.log(abs(v) + 1.0),
    "sin": sg.sin, "relu": sg.relu, "gelu": sg.gelu, "softplus": sg.softplus,
    "scale": lambda v: v * 0.5 + 1.0, "times_one": lambda v: (v * 1.0 - 0.0) / 1.0,
    "double_neg": lambda v: sg.ops.neg(sg.ops.neg(v)), "log1p_form": lambda v: sg.log(1.0 + sg.sigmoid(v)),
}
BINARY = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "sub": lambda a, b: a - b,
          "max": sg.maximum}


def shape_of(v, actual):
    return actual[id(v)]


@st.composite
def graphs(draw):
    x = sg.tensor("x", (None, 4), dtype="float64")
    y = sg.tensor("y", (4,), dtype="float64")
    s = sg.tensor("s", (), dtype="float64")
    w = sg.tensor("w", (4, None), dtype="float64")
    inputs = [x, y, s, w]
    actual = {id(x): (3, 4), id(y): (4,), id(s): (), id(w): (4, 2)}
    pool = list(inputs)
    for _ in range(draw(st.integers(2, 9))):
        kind = draw(st.sampled_from(["unary", "unary", "binary", "binary", "reduce", "shape",
                                     "matmul"]))
        a = draw(st.sampled_from(pool))
        sa = actual[id(a)]
        if kind == "unary":
            out = UNARY[draw(st.sampled_from(sorted(UNARY)))](a)
            so = sa
        elif kind == "binary":
            b = draw(st.sampled_from(pool))
            try:
                so = np.broadcast_shapes(sa, actual[id(b)])
            except ValueError:
                continue
            out = BINARY[draw(st.sampled_from(sorted(BINARY)))](a, b)
        elif kind == "reduce":
            if not sa:
                continue
            axis = draw(st.integers(0, len(sa) - 1))
            keep = draw(st.booleans())
            fn = draw(st.sampled_from([sg.sum, sg.mean, sg.max]))
            out = fn(a, axis=axis, keepdims=keep)
            so = tuple(1 if i == axis else d for i, d in enumerate(sa)) if keep else \
                tuple(d for i, d in enumerate(sa) if i != axis)
        elif kind == "shape":
            if len(sa) == 2:
                out, so = a.T, sa[::-1]
            elif len(sa) <= 1:
                out, so = sg.broadcast_to(a, (3, 4) if sa in ((), (4,), (1,)) else (3,) + sa), None
                so = np.broadcast_shapes(sa, (3, 4)) if sa in ((), (4,), (1,)) else (3,) + sa
            else:
                continue
        else:
            if len(sa) != 2 or sa[1] != 4:
                continue
            out, so = a @ w, (sa[0], 2)
        actual[id(out)] = tuple(so)
        pool.append(out)
    chosen = [v for v in pool[4:]] or [x]
    cost = sum((sg.sum(v) for v in chosen[-3:]), sg.constant(np.float64(0.0)))
    return inputs, cost, actual


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(), st.integers(0, 2**31 - 1))
def test_rewritten_graph_gives_the_same_values_and_gradients(graph, seed):
    inputs, cost, actual = graph
    grads = sg.grad(cost, inputs, disconnected="ignore")
    rng = np.random.default_rng(seed)
    values = [rng.uniform(-1.5, 1.5, actual[id(v)]) for v in inputs]
    f0 = sg.compile(inputs, [cost] + grads, backend="reference", rewrite=False)
    f1 = sg.compile(inputs, [cost] + grads, backend="reference")
    for a, b in zip(f0(*values), f1(*values)):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9)
    assert len(f1.fgraph.toposort()) <= len(f0.fgraph.toposort())
