"""Shape specialisation: concrete shapes for every variable of a graph, given input shapes.

Small integer values that only depend on shapes (``Shape``, ``MakeVector``, arithmetic on
them, ``ARange``) are computed here, so the generated code sees them as constants.

A node that rejects the concrete shapes raises the error ``checks.node_error`` builds (a
``ShapeError``, ``IndexError``... naming the inputs and the user's line).  ``first_error``
runs the same inference on the graph as the user built it (before rewriting), so every
backend reports a call-time shape error with the same type and text.
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..graph.basic import Apply, Constant, Variable, executing_graph
from ..graph.fgraph import FunctionGraph, toposort
from ..graph.types import TensorType
from .checks import node_error

FOLD_LIMIT = 1 << 12  # fold nodes whose inputs and outputs are this small


def specialize(fgraph: FunctionGraph, roots: list, shapes: list[tuple]):
    """Returns ``(nodes, shape_of, value_of)`` keyed by ``id(variable)``."""
    shape_of, value_of = _seed(roots, shapes)
    nodes = fgraph.toposort()
    with executing_graph():
        for node in nodes:
            if not _infer(node, shape_of, value_of):
                out = next(o for o in node.outputs if id(o) not in shape_of)
                raise CompileError(f"{node.op}: the output shape {out.type.shape} depends on "
                                   "runtime values; the llvm backend needs shapes known from "
                                   "input shapes")
    return nodes, shape_of, value_of


def first_error(roots: list, outputs: list, shapes: list[tuple]) -> Exception | None:
    """The error of the first node computing ``outputs`` that rejects the root ``shapes``, or
    None when every node accepts them (or the shapes cannot be followed to the end)."""
    shape_of, value_of = _seed(roots, shapes)
    with executing_graph():
        for node in toposort(outputs):
            try:
                if not _infer(node, shape_of, value_of):
                    return None
            except CompileError:
                return None
            except (ValueError, IndexError, TypeError) as e:
                return e
    return None


def _seed(roots: list, shapes: list[tuple]) -> tuple[dict, dict]:
    shape_of: dict[int, tuple] = {}
    for v, shp in zip(roots, shapes):
        shape_of[id(v)] = tuple(int(d) for d in shp)
    return shape_of, {}


def _shape(v, shape_of: dict, value_of: dict) -> tuple:
    if id(v) not in shape_of:
        if not isinstance(v, Constant):  # pragma: no cover - compile() checks the inputs
            raise CompileError(f"no shape for {v}")
        shape_of[id(v)] = v.value.shape
        value_of[id(v)] = v.value
    return shape_of[id(v)]


def _infer(node: Apply, shape_of: dict, value_of: dict) -> bool:
    """Record the shapes (and small values) of ``node``'s outputs; False when an output's
    shape depends on run-time values.  Raises ``node_error``'s error when the node rejects its
    inputs."""
    from ..ops.shape import Shape
    in_shapes = [_shape(v, shape_of, value_of) for v in node.inputs]
    op = node.op
    if isinstance(op, Shape):
        val = np.array(in_shapes[0], dtype=np.int64)
        shape_of[id(node.outputs[0])] = val.shape
        value_of[id(node.outputs[0])] = val
        return True
    small = all(int(np.prod(s, dtype=np.int64)) <= FOLD_LIMIT for s in in_shapes)
    if (small and all(id(v) in value_of for v in node.inputs)
            and not getattr(op, "nondeterministic", False)):
        try:
            outs = op.perform(node, [value_of[id(v)] for v in node.inputs])
        except Exception as e:  # the op's own shape check says it better than NumPy
            _make(node, in_shapes, value_of)
            raise node_error(node, in_shapes, e) from None
        for o, val in zip(node.outputs, outs):
            val = np.asarray(val, dtype=o.dtype)
            shape_of[id(o)] = val.shape
            if val.size <= FOLD_LIMIT:
                value_of[id(o)] = val
        return True
    new = _make(node, in_shapes, value_of)
    for o, no in zip(node.outputs, new.outputs):
        if not no.type.fully_static:
            return False
        shape_of[id(o)] = tuple(no.type.shape)
    return True


def _make(node: Apply, in_shapes: list[tuple], value_of: dict) -> Apply:
    """``node``'s op applied to placeholders of the concrete shapes (constants where the
    value is known), which runs the op's shape checks."""
    placeholders = []
    for v, s in zip(node.inputs, in_shapes):
        if id(v) in value_of:
            placeholders.append(Constant(value_of[id(v)]))
        else:
            placeholders.append(Variable(TensorType(v.dtype, s)))
    try:
        return node.op.make_node(*placeholders)
    except Exception as e:
        raise node_error(node, in_shapes, e) from None


def lower_for_call(fgraph: FunctionGraph, roots: list, shapes: list, built_outputs: list | None):
    """``lower.lower`` for one call's input shapes (the native backends).  When a node of
    the rewritten ``fgraph`` rejects the shapes, the error is the one the graph as the user
    built it (``built_outputs``) reports: the user's op, inputs and line, the same on every
    backend."""
    from .lower import lower
    try:
        return lower(fgraph, roots, [list(s) for s in shapes])
    except (ValueError, IndexError, TypeError):
        err = first_error(roots, built_outputs, shapes) if built_outputs is not None else None
        if err is None:
            raise
        raise err from None
