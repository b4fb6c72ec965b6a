"""debugprint and to_dot: op names, shapes, dtypes, shared names; compiled functions print
their rewritten graph."""

from __future__ import annotations

import io
import re

import numpy as np

import symgraph as sg


def model():
    x = sg.tensor("x", (None, 3))
    w = sg.shared(np.ones((3, 4), np.float32), name="weights")
    h = sg.tanh(x @ w)
    return x, w, sg.nn.softmax(h + 1.5)


def test_debugprint_shows_ops_shapes_dtypes_and_names():
    x, w, y = model()
    buf = io.StringIO()
    text = sg.debugprint(y, file=buf)
    assert buf.getvalue() == text
    lines = text.splitlines()
    assert lines[0].startswith("Softmax") and "float32[?, 4]" in lines[0]
    assert any(line.strip(" |").startswith("tanh") for line in lines)
    assert any("MatMul" in line and "float32[?, 4]" in line for line in lines)
    assert any("input x float32[?, 3]" in line for line in lines)
    assert any("shared weights float32[3, 4]" in line for line in lines)
    assert "1.5" in text  # the constant folded into the add shows in its formula
    assert text.rstrip().endswith("(4 apply nodes)")
    # indentation follows depth
    depth = {line.strip(" |").split()[0]: line.count("|") for line in lines[:-1]}
    assert depth["Softmax"] < depth["tanh"] < depth["MatMul"]


def test_debugprint_shared_subtrees_are_printed_once():
    x = sg.vector("x")
    e = sg.exp(x)
    text = sg.debugprint(e * e + e, file=False)
    assert text.count("exp id") == 3
    assert text.count("(see above)") == 2
    assert text.count("input x") == 1


def test_debugprint_dtypes_of_mixed_graph():
    i = sg.vector("i", "int32")
    text = sg.debugprint([sg.argmax(sg.vector("v", "float64")), i > 0, i.astype("float64")], file=False)
    assert "int64[]" in text and "bool[?,]" in text and "float64[?,]" in text and "int32[?,]" in text
    assert "output 0:" in text and "output 2:" in text
    assert "float64" not in sg.debugprint(i * 2, file=False, print_type=False)


def test_debugprint_compiled_function_shows_rewritten_graph_and_updates():
    x, w, y = model()
    loss = sg.stop_gradient(y).sum()
    assert "StopGradient" in sg.debugprint(loss, file=False)
    f = sg.compile([x], loss, updates=[(w, w * 0.5)], backend="reference")
    text = sg.debugprint(f, file=False)
    assert "StopGradient" not in text  # removed by the rewriter
    assert "output 0:" in text and "update of weights:" in text
    assert "shared weights float32[3, 4]" in text and "input x float32[?, 3]" in text
    assert text.rstrip().endswith(f"({len(f.fgraph.toposort())} apply nodes)")
    for node in f.fgraph.toposort():  # every node of the rewritten graph is printed
        assert str(node.op).split("{")[0] in text


def test_to_dot():
    x, w, y = model()
    dot = sg.to_dot(y)
    assert dot.startswith("digraph symgraph {") and dot.rstrip().endswith("}")
    assert 'label="Softmax"' in dot and 'label="MatMul"' in dot
    assert "shared weights\\nfloat32[3, 4]" in dot
    assert "input x\\nfloat32[?, 3]" in dot
    # every edge joins declared nodes
    declared = set(re.findall(r"^\s+(\w+) \[", dot, re.M))
    for a, b in re.findall(r"^\s+(\w+) -> (\w+)", dot, re.M):
        assert a in declared and b in declared
    assert dot.count("->") >= 8
    f = sg.compile([x], [y.sum()], updates=[(w, w + 1)], backend="reference")
    fdot = sg.to_dot(f)
    assert 'label="output 0"' in fdot and 'label="update of weights"' in fdot


def test_labels_with_quotes_are_escaped():
    v = sg.vector('my "quoted" name')
    dot = sg.to_dot(sg.exp(v))
    assert 'my \\"quoted\\" name' in dot


def test_shared_subexpressions_print_once():
    """A fused formula with shared sub-expressions prints in linear, not exponential, size."""
    from symgraph.ops.elemwise import Elemwise
    from symgraph.scalar import apply, inp
    e = apply("exp", inp(0, "float32"))
    expr = apply("mul", e, e)
    for _ in range(60):
        expr = apply("add", expr, expr)
    text = sg.debugprint(Elemwise(expr, 1, name="fused")(sg.vector("x")), file=False)
    assert len(text) < 5000
    assert "t0 = exp(in0)" in text
