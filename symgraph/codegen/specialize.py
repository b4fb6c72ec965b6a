"""Shape specialisation: concrete shapes for every variable of a graph, given input shapes.

Small integer values that only depend on shapes (``Shape``, ``MakeVector``, arithmetic on
them, ``ARange``) are computed here, so the generated code sees them as constants.
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..graph.basic import Constant, Variable
from ..graph.fgraph import FunctionGraph
from ..graph.types import TensorType

FOLD_LIMIT = 1 << 12  # fold nodes whose inputs and outputs are this small


def specialize(fgraph: FunctionGraph, roots: list, shapes: list[tuple]):
    """Returns ``(nodes, shape_of, value_of)`` keyed by ``id(variable)``."""
    from ..ops.shape import Shape
    shape_of: dict[int, tuple] = {}
    value_of: dict[int, np.ndarray] = {}
    for v, shp in zip(roots, shapes):
        shape_of[id(v)] = tuple(int(d) for d in shp)
    nodes = fgraph.toposort()

    def info(v):
        if id(v) not in shape_of:
            if isinstance(v, Constant):
                shape_of[id(v)] = v.value.shape
                value_of[id(v)] = v.value
            else:  # pragma: no cover - compile() checks the inputs
                raise CompileError(f"no shape for {v}")
        return shape_of[id(v)]

    for node in nodes:
        in_shapes = [info(v) for v in node.inputs]
        op = node.op
        if isinstance(op, Shape):
            val = np.array(in_shapes[0], dtype=np.int64)
            shape_of[id(node.outputs[0])] = val.shape
            value_of[id(node.outputs[0])] = val
            continue
        small = all(int(np.prod(s, dtype=np.int64)) <= FOLD_LIMIT for s in in_shapes)
        if (small and all(id(v) in value_of for v in node.inputs)
                and not getattr(op, "nondeterministic", False)):
            outs = op.perform(node, [value_of[id(v)] for v in node.inputs])
            for o, val in zip(node.outputs, outs):
                val = np.asarray(val, dtype=o.dtype)
                shape_of[id(o)] = val.shape
                if val.size <= FOLD_LIMIT:
                    value_of[id(o)] = val
            continue
        placeholders = []
        for v, s in zip(node.inputs, in_shapes):
            if id(v) in value_of:
                placeholders.append(Constant(value_of[id(v)]))
            else:
                placeholders.append(Variable(TensorType(v.dtype, s)))
        try:
            new = op.make_node(*placeholders)
        except Exception as e:
            raise CompileError(f"{op}: cannot specialise for input shapes "
                               f"{', '.join(map(str, in_shapes))}: {e}") from e
        for o, no in zip(node.outputs, new.outputs):
            if not no.type.fully_static:
                raise CompileError(f"{op}: the output shape {no.type.shape} depends on runtime "
                                   "values; the llvm backend needs shapes known from input shapes")
            shape_of[id(o)] = tuple(no.type.shape)
    return nodes, shape_of, value_of
