"""Graph rewrites applied by ``compile`` between graph building and code generation."""

from __future__ import annotations

from ..graph.fgraph import FunctionGraph


def rewrite_graph(fgraph: FunctionGraph, backend: str = "reference") -> list:
    """Rewrite ``fgraph`` in place; returns the log of the rewrites applied."""
    from ..grad import StopGradient
    log = []
    for node in fgraph.toposort():
        if isinstance(node.op, StopGradient):
            fgraph.replace(node.outputs[0], node.inputs[0], reason="remove_stop_gradient")
            log.append(("remove_stop_gradient", str(node.op)))
    return log
