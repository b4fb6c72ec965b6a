"""Constant folding: a node whose inputs are all constants becomes a constant computed by the
op's reference ``perform``; ``Shape`` of a statically shaped tensor becomes a constant."""

from __future__ import annotations

import numpy as np

from ..graph.basic import Apply, Constant
from ..ops.indexing import Subtensor, getitem
from ..ops.shape import MakeVector, Shape, dim_source
from .engine import RewriteContext, local_rewrite

MAX_FOLD_ELEMENTS = 1_000_000  # larger results stay computed at run time


@local_rewrite("fold", "canonicalize", "specialize", "fuse")
def constant_fold(node: Apply, ctx: RewriteContext):
    """op(constants...) -> Constant (skips random draws and results over 1e6 elements)."""
    if node.op.nondeterministic or not node.inputs:
        return None
    if not all(isinstance(i, Constant) for i in node.inputs):
        return None
    for out in node.outputs:
        if out.type.fully_static and int(np.prod(out.type.shape, dtype=np.int64)) > MAX_FOLD_ELEMENTS:
            return None
    try:
        values = node.op.perform(node, [i.value for i in node.inputs])
    except Exception:  # an error is reported at run time, with the user's line
        return None
    if any(np.size(v) > MAX_FOLD_ELEMENTS for v in values):
        return None
    return [Constant(np.asarray(v), dtype=o.dtype) for v, o in zip(values, node.outputs)]


@local_rewrite("fold", "canonicalize", tracks=(Shape,))
def shape_of_static(node: Apply, ctx: RewriteContext):
    """Shape(x) with a fully static type -> a constant vector."""
    x = node.inputs[0]
    if x.type.fully_static:
        return Constant(np.array(x.type.shape, dtype=np.int64))
    return None


@local_rewrite("canonicalize", "specialize", tracks=(Subtensor,))
def shape_entry(node: Apply, ctx: RewriteContext):
    """An entry of a computed shape vector (``shape(y)[0]``, ``shape(y)[:-1][0]``) that
    symbolic shapes trace to a constant or to a graph input's dim -> that constant, or
    ``shape(input)[axis]`` (shape arithmetic then folds, and merges with the user's
    ``x.shape[i]``)."""
    out = node.outputs[0]
    if out.ndim != 0 or len(node.inputs) != 1 or node.inputs[0].ndim != 1:
        return None
    value = ctx.shapes.scalar_value(out)
    if isinstance(value, int):
        return Constant(np.array(value, dtype=out.dtype))
    found = ctx.shapes.variable_of(value)
    if found is None:
        return None
    src = dim_source(out)
    if src is not None and src[0] is found[0]:
        return None  # already dim ``axis`` of that input
    return getitem(Shape()(found[0]), found[1])


@local_rewrite("canonicalize", tracks=(MakeVector,))
def make_vector_of_shape(node: Apply, ctx: RewriteContext):
    """MakeVector(x.shape[0], 3, x.shape[2]) spelling out every dim of one ``x`` in order ->
    Shape(x) (``sg.zeros((x.shape[0], x.shape[1]))`` reads x's shape as one vector)."""
    source = None
    for axis, part in enumerate(node.inputs):
        src = dim_source(part)
        if src is not None:
            if src[1] != axis or (source is not None and src[0] is not source):
                return None
            source = src[0]
    if source is None or source.ndim != len(node.inputs):
        return None
    for part, d in zip(node.inputs, source.type.shape):
        if dim_source(part) is None and not (d is not None and isinstance(part, Constant)
                                             and int(part.value) == d):
            return None
    return Shape()(source)
