"""Specialisation: general forms replaced by cheaper special ones (x ** 2 -> x * x, ...)."""

from __future__ import annotations

from ..graph.basic import Apply
from ..ops.elemwise import Elemwise
from . import scalar_rules as R
from .elemwise_util import info, make_elemwise
from .engine import RewriteContext, local_rewrite


@local_rewrite("specialize", tracks=(Elemwise,))
def elemwise_specialize(node: Apply, ctx: RewriteContext):
    """Powers with constant exponents 2, 1, 0.5, -1 become multiplications, sqrt, division."""
    if "pow" not in info(node.op.expr).ops:
        return None
    expr, fired = R.rewrite_expr(node.op.expr, R.SPECIALIZE)
    if not fired:
        return None
    ctx.note(fired)
    return make_elemwise(expr, node.inputs)
