"""Merge (common subexpression elimination): equal constants, and nodes applying the same op
to the same inputs, are kept once.  Random draws (``Op.nondeterministic``) are never merged."""

from __future__ import annotations

from ..graph.basic import Constant, SharedVariable
from .engine import RewriteContext, RewriteRecord, global_pass


@global_pass("merge", name="merge")
def merge(ctx: RewriteContext) -> None:
    """One pass over the toposort: later duplicates are replaced by the first occurrence."""
    fg = ctx.fgraph
    constants: dict[tuple, Constant] = {}
    seen: dict[tuple, object] = {}
    for node in ctx.toposort():
        if node not in fg.nodes:
            continue
        for inp in list(node.inputs):
            if isinstance(inp, Constant) and not isinstance(inp, SharedVariable):
                canon = constants.setdefault(inp.signature(), inp)
                if canon is not inp:
                    ctx.log.append(RewriteRecord("merge_constants", ctx.group, inp, canon))
                    fg.replace(inp, canon, reason="merge_constants")
                    ctx.version += 1
        if node.op.nondeterministic:
            continue
        try:
            key = (node.op, tuple(id(i) for i in node.inputs))
            other = seen.get(key)
        except TypeError:  # an op with unhashable props is never merged
            continue
        if other is None:
            seen[key] = node
            continue
        ctx._pushed = []
        ctx.commit(node, other.outputs, "merge")
