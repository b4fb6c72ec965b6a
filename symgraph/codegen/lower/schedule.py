"""Node order for overlapping non-blocking collectives with the rest of the work."""

from __future__ import annotations

from ...graph.basic import Apply


def overlap_schedule(nodes: list[Apply]) -> list[Apply]:
    """``nodes`` (a topological order) with every node that reads the result of an
    ``overlaps`` op (a non-blocking collective) moved after all the nodes that do not: the
    collectives start as soon as their inputs are ready and run while the rest of the work (the
    backward pass) is computed; what consumes their results (the optimiser's updates) comes
    last.  Relative order is kept within both groups, so the order stays topological."""
    waiting: set[int] = set()
    early, late = [], []
    for node in nodes:
        after = any(id(v) in waiting for v in node.inputs)
        if after or getattr(node.op, "overlaps", False):
            waiting.update(id(o) for o in node.outputs)
        (late if after else early).append(node)
    return early + late
