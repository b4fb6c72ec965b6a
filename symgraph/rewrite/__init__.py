"""Graph rewrites applied by ``compile`` between graph building and code generation.

``rewrite_graph`` runs the groups of ``engine.GROUPS`` in order (merge, fold, canonicalize,
stabilize, specialize, fuse, memory) and returns the log; see ``docs/rewrites.md``.
"""

from __future__ import annotations

import gc

from ..graph.fgraph import FunctionGraph
from .engine import GLOBAL, GROUPS, LOCAL, RewriteRecord, global_pass, local_rewrite, run_groups

_loaded = False


def load_all() -> None:
    """Import the modules that register rewrites (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import (  # noqa: F401
        canonicalize,
        fold,
        fuse,
        memory,
        merge,
        pool_grad,
        relu_grad,
        softmax_ce,
        specialize,
        stabilize,
    )


def rewrite_graph(fgraph: FunctionGraph, backend: str = "reference",
                  groups=GROUPS) -> list[RewriteRecord]:
    """Rewrite ``fgraph`` in place (on private copies of its nodes); returns the log.

    Afterwards ``fgraph.memory_plan`` holds the buffer plan (when the memory group ran).
    """
    from .engine import privatize
    # Rewriting allocates many small objects while the whole graph is alive; the cyclic
    # garbage collector would rescan the graph again and again (half the time on big graphs).
    enabled = gc.isenabled()
    gc.disable()
    try:
        privatize(fgraph)
        return run_groups(fgraph, list(groups), backend=backend)
    finally:
        if enabled:
            gc.enable()


def registered() -> dict[str, list[str]]:
    """Names of the registered rewrites by group, in run order."""
    load_all()
    out: dict[str, list[str]] = {g: [] for g in GROUPS}
    for gp in GLOBAL.values():
        out[gp.group].append(gp.name)
    for lr in LOCAL.values():
        for g in lr.groups:
            out[g].append(lr.name)
    return out


__all__ = ["rewrite_graph", "registered", "RewriteRecord", "local_rewrite", "global_pass",
           "GROUPS", "load_all"]
