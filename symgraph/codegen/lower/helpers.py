"""Helpers shared by the lowering modules: loop nests, reduction kinds and kernel names."""

from __future__ import annotations

import math

import numpy as np

from ...graph.types import is_float
from .._scalar import S
from ..kernel_ir import For, View, var
from ..symdim import SymInt, as_size, known_equal, static_is

_INIT = {"sum": 0, "prod": 1, "any": False, "all": True}


def _init_value(kind: str, dtype: str):
    if kind in _INIT:
        return _INIT[kind]
    if is_float(dtype):
        return -math.inf if kind == "max" else math.inf
    if dtype == "bool":
        return kind == "min"
    info = np.iinfo(dtype)
    return int(info.min) if kind == "max" else int(info.max)


def combine(kind: str, acc: S.SExpr, val: S.SExpr) -> S.SExpr:
    """``acc (op) val`` for a reduction kind; max/min propagate NaN like NumPy."""
    if kind == "sum":
        return S.apply("add", acc, val)
    if kind == "prod":
        return S.apply("mul", acc, val)
    if kind == "any":
        return S.apply("or", acc, val)
    if kind == "all":
        return S.apply("and", acc, val)
    if is_float(val.dtype):  # NaN-propagating, and vectorised by the renderers
        return S.apply("maximum" if kind == "max" else "minimum", acc, val)
    take = S.apply("gt" if kind == "max" else "lt", val, acc)
    return S.apply("where", take, val, acc)


def collapse(shape, stride_lists):
    """Drop size-1 axes and merge neighbouring axes that are contiguous in every view."""
    keep = [a for a, d in enumerate(shape) if not static_is(d, 1)]
    shape = [shape[a] for a in keep]
    strides = [[st[a] for a in keep] for st in stride_lists]
    a = len(shape) - 2
    while a >= 0:
        if all(known_equal(st[a], st[a + 1] * shape[a + 1]) for st in strides):
            shape[a] *= shape[a + 1]
            del shape[a + 1]
            for st in strides:
                st[a] = st[a + 1]
                del st[a + 1]
        a -= 1
    return shape, strides


def _loops(extents, body, parallel=True, prefix="i"):
    """Nest ``body`` in loops over ``extents`` (variables ``prefix0, prefix1...``)."""
    for a in reversed(range(len(extents))):
        body = [For(f"{prefix}{a}", as_size(extents[a]), body, parallel=parallel and a == 0)]
    return body


def _summed(d, t) -> bool:
    """Whether a gradient axis of size ``d`` is summed to a target size ``t`` (1)."""
    if known_equal(d, t):
        return False
    if isinstance(t, SymInt):
        return t == 1  # a guard: the target was broadcast along this axis or not
    return t == 1 and not static_is(d, 1)  # summing a size-1 axis costs nothing wrong


def _idx(n, prefix="i"):
    return [var(f"{prefix}{a}") for a in range(n)]


def _loops_sub(shape, axes, body, parallel):
    """Loops over the given axes of ``shape`` (variables ``i<axis>``), outermost first."""
    for n, a in enumerate(reversed(axes)):
        first = n == len(axes) - 1
        body = [For(f"i{a}", as_size(shape[a]), body, parallel=parallel and first)]
    return body


def _expand_strides(out: View, full_shape, kept):
    """Strides of ``out`` (shape = kept axes) placed at the kept positions of ``full_shape``."""
    strides = [0] * len(full_shape)
    for pos, a in enumerate(kept):
        strides[a] = out.strides[pos] if pos < len(out.strides) else 0
    return strides


def _drop(shape, axes):
    return tuple(d for a, d in enumerate(shape) if a not in axes)


def _op_label(node) -> str:
    try:
        return str(node.op)
    except Exception:  # an op whose __str__ fails must not stop code generation
        return type(node.op).__name__


def _expr_name(op) -> str:
    name = getattr(op, "name", None)
    expr = op.expr
    prims = []
    for n in S.topo([expr]):
        if n.op not in ("input", "const", "cast") and n.op not in prims:
            prims.append(n.op)
    if name and name not in prims and S.count_ops([expr]) <= 1 and name.isidentifier():
        return name
    if len(prims) <= 1 and name and name.isidentifier():
        return name
    core = [p for p in prims if p not in ("add", "mul", "sub")] or prims
    return "fused_" + "_".join(core[:3]) if core else "identity"
