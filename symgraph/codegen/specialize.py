"""Shape specialisation: concrete shapes for every variable of a graph, given input shapes.

Small integer values that only depend on shapes (``Shape``, ``MakeVector``, arithmetic on
them, ``ARange``) are computed here, so the generated code sees them as constants.

A node that rejects the concrete shapes raises the error ``checks.node_error`` builds (a
``ShapeError``, ``IndexError``... naming the inputs and the user's line).  ``first_error``
runs the same inference on the graph as the user built it (before rewriting), so every
backend reports a call-time shape error with the same type and text.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import CompileError
from ..graph.basic import Apply, Constant, SharedVariable, Variable, executing_graph
from ..graph.fgraph import FunctionGraph, toposort
from ..graph.types import TensorType, is_int
from . import symdim
from ._scalar import S
from .checks import node_error
from .symdim import SymInt, smax, smin


class SymbolicValue(Constant):
    """A placeholder for a small int value computed from symbolic sizes (an object array of
    ints and ``SymInt``s): ops read it as a constant (``static_shape_value``), so a reshape to
    ``(x.shape[0], -1)`` stays symbolic while shape-generic code is generated."""

    def __init__(self, value: np.ndarray, dtype: str):
        Variable.__init__(self, TensorType(dtype, value.shape))
        self.value = value

    def signature(self) -> tuple:
        return (self.type, repr(self.value.tolist()))


def is_symbolic_value(val) -> bool:
    return isinstance(val, np.ndarray) and val.dtype == object


def _symbolic(shape) -> bool:
    return any(isinstance(d, SymInt) for d in shape)

FOLD_LIMIT = 1 << 12  # fold nodes whose inputs and outputs are this small


def specialize(fgraph: FunctionGraph, roots: list, shapes: list[tuple], values: dict | None = None):
    """Returns ``(nodes, shape_of, value_of)`` keyed by ``id(variable)``.

    ``values`` (shape-generic code): root index -> the ``SymInt`` leaf standing for that int
    scalar input's value, so sizes computed from it (``x[i*bs:(i+1)*bs]``) stay symbolic."""
    shape_of, value_of = _seed(roots, shapes, values)
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


def _seed(roots: list, shapes: list[tuple], values: dict | None = None) -> tuple[dict, dict]:
    shape_of: dict[int, tuple] = {}
    for v, shp in zip(roots, shapes):
        shape_of[id(v)] = tuple(d if isinstance(d, SymInt) else int(d) for d in shp)
    value_of = {id(roots[slot]): np.array(leaf, dtype=object) for slot, leaf in (values or {}).items()}
    return shape_of, value_of


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
        dims = in_shapes[0]
        val = np.array(dims, dtype=object if _symbolic(dims) else np.int64).reshape(len(dims))
        shape_of[id(node.outputs[0])] = val.shape
        value_of[id(node.outputs[0])] = val
        return True
    # (an array of symbolic size is never folded: that would pin its size)
    small = all(not _symbolic(s) and int(np.prod(s, dtype=np.int64)) <= FOLD_LIMIT for s in in_shapes)
    if (small and all(id(v) in value_of for v in node.inputs)
            and not getattr(op, "nondeterministic", False)):
        values = [value_of[id(v)] for v in node.inputs]
        if any(is_symbolic_value(val) for val in values):
            outs = _fold_symbolic(node, values)
            if outs is None:  # computed at run time from the sizes (Lowerer._sizes)
                return _infer_shapes(node, in_shapes, shape_of, value_of)
            for o, val in zip(node.outputs, outs):
                shape_of[id(o)] = val.shape
                value_of[id(o)] = val
            return True
        try:
            outs = op.perform(node, values)
        except Exception as e:  # the op's own shape check says it better than NumPy
            _make(node, in_shapes, value_of)
            raise node_error(node, in_shapes, e) from None
        for o, val in zip(node.outputs, outs):
            val = _folded(val, o.dtype)
            shape_of[id(o)] = val.shape
            if val.size <= FOLD_LIMIT:
                value_of[id(o)] = val
        return True
    return _infer_shapes(node, in_shapes, shape_of, value_of)


def _infer_shapes(node: Apply, in_shapes: list[tuple], shape_of: dict, value_of: dict) -> bool:
    new = _make(node, in_shapes, value_of)
    for o, no in zip(node.outputs, new.outputs):
        if not no.type.fully_static:
            return False
        shape_of[id(o)] = tuple(no.type.shape)
    return True


# integer scalar-IR primitives that shape arithmetic on symbolic sizes may fold
_SIZE_PRIMS = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
               "floordiv": lambda a, b: a // b, "mod": lambda a, b: a % b, "neg": lambda a: -a,
               "abs": lambda a: a if a >= 0 else -a,
               # comparisons of sizes are guards (symdim.compare); a select takes one branch
               "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b,
               "ge": lambda a, b: a >= b, "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
               "and": lambda a, b: bool(a) and bool(b), "or": lambda a, b: bool(a) or bool(b),
               "not": lambda a: not a, "where": lambda c, a, b: a if c else b,
               "maximum": None, "minimum": None}


def _fold_symbolic(node: Apply, values: list):
    """``node``'s outputs computed on small values holding symbolic sizes (object arrays), or
    None when the node must run at run time (a cast to float, anything not plain integer
    arithmetic, indexing or stacking of sizes)."""
    from ..ops.elemwise import Elemwise
    from ..ops.indexing import Subtensor
    from ..ops.shape import MakeVector
    op = node.op
    if isinstance(op, (MakeVector, Subtensor)) and not getattr(op, "advanced", False):
        return [_folded(v, o.dtype) for v, o in zip(op.perform(node, values), node.outputs)]
    if not isinstance(op, Elemwise) or not all(is_int(v.dtype) or v.dtype == "bool"
                                               for v in node.inputs + node.outputs):
        return None
    nodes = S.topo([op.expr])
    if any(n.op not in ("input", "const", "cast") and n.op not in _SIZE_PRIMS for n in nodes):
        return None
    arrays = np.broadcast_arrays(*[np.asarray(v, dtype=object) for v in values])
    out = np.empty(arrays[0].shape if arrays else (), dtype=object)
    for idx in np.ndindex(out.shape):
        out[idx] = _size_expr(op.expr, [a[idx] for a in arrays])
    return [_folded(out, node.outputs[0].dtype) if node.outputs[0].dtype != "bool"
            else np.asarray(out, dtype=bool)]


def _size_expr(expr, args: list):
    """Evaluate an integer scalar-IR expression on ints and ``SymInt``s."""
    memo: dict[int, object] = {}
    for n in S.topo([expr]):
        a = [memo[id(x)] for x in n.args]
        if n.op == "input":
            v = args[n.value]
        elif n.op == "const":
            v = int(n.value)
        elif n.op == "cast":
            v = a[0]
        elif n.op == "maximum":
            v = smax(*a)
        elif n.op == "minimum":
            v = smin(*a)
        else:
            v = _SIZE_PRIMS[n.op](*a)
        memo[id(n)] = v
    return memo[id(expr)]


def _folded(val, dtype: str) -> np.ndarray:
    """A folded value: an array of ``dtype``, or an object array while it holds symbolic sizes."""
    arr = np.asarray(val)
    if arr.dtype == object and any(isinstance(x, SymInt) for x in arr.reshape(-1)):
        return arr
    return np.asarray(val, dtype=dtype)


def _make(node: Apply, in_shapes: list[tuple], value_of: dict) -> Apply:
    """``node``'s op applied to placeholders of the concrete shapes (constants where the
    value is known), which runs the op's shape checks."""
    placeholders = []
    for v, s in zip(node.inputs, in_shapes):
        if id(v) in value_of and is_symbolic_value(value_of[id(v)]):
            placeholders.append(SymbolicValue(value_of[id(v)], v.dtype))
        elif id(v) in value_of:
            placeholders.append(Constant(value_of[id(v)]))
        else:
            placeholders.append(Variable(TensorType(v.dtype, s)))
    try:
        return node.op.make_node(*placeholders)
    except Exception as e:
        raise node_error(node, in_shapes, e) from None


def lower_for_call(fgraph: FunctionGraph, roots: list, shapes: list, built_outputs: list | None,
                   target: str = "cpu"):
    """``lower.lower`` for one call's input shapes (the native backends).  When a node of
    the rewritten ``fgraph`` rejects the shapes, the error is the one the graph as the user
    built it (``built_outputs``) reports: the user's op, inputs and line, the same on every
    backend."""
    from .lower import lower
    try:
        return lower(fgraph, roots, [list(s) for s in shapes], target=target)
    except (ValueError, IndexError, TypeError):
        err = first_error(roots, built_outputs, shapes) if built_outputs is not None else None
        if err is None:
            raise
        raise err from None


# --- shape-generic programs -------------------------------------------------------------------

def shape_generic_allowed(options: dict) -> bool:
    """Whether a native backend may generate shape-generic code: the ``shape_generic``
    compile option and ``SYMGRAPH_SHAPE_GENERIC`` (``0`` turns it off)."""
    return bool(options.get("shape_generic", True)) and os.environ.get("SYMGRAPH_SHAPE_GENERIC", "1") != "0"


def int_value_slots(roots: list) -> list[int]:
    """The int scalar inputs whose values may size things (the minibatch idiom's index):
    their values become run-time sizes when code generic in shapes alone cannot be made."""
    return [i for i, v in enumerate(roots) if v.ndim == 0 and is_int(v.dtype)
            and not isinstance(v, SharedVariable)]


def generic_shapes(roots: list, key: tuple, value_slots: list = (),
                   ints: tuple = ()) -> tuple[list, list, dict]:
    """The inputs' shapes with a ``symdim`` leaf for each dim unknown at build time (its hint:
    the size in ``key``), where the caller reads each ((input slot, axis)), and with ``ints``
    (the values of the int scalar inputs at ``value_slots``) a leaf for each value (axis -1)."""
    shapes, dims, leaves = [], [], {}
    for slot, (v, actual) in enumerate(zip(roots, key)):
        row = []
        for axis, (declared, size) in enumerate(zip(v.type.shape, actual)):
            if declared is None:
                row.append(symdim.leaf(len(dims), size, f"{v.label()}.shape[{axis}]"))
                dims.append((slot, axis))
            else:
                row.append(size)
        shapes.append(tuple(row))
    for slot, value in zip(value_slots, ints):
        leaves[slot] = symdim.leaf(len(dims), value, roots[slot].label(), nonneg=False)
        dims.append((slot, -1))
    return shapes, dims, leaves


def lower_generic(fgraph: FunctionGraph, roots: list, key: tuple, value_slots: list = (),
                  ints: tuple = (), target: str = "cpu"):
    """The shape-generic kernel-IR program for calls like ``key`` (generic in the int inputs'
    values too, given ``ints``) for ``target`` (``"cpu"`` or ``"cuda"``), with its guards;
    raises when the lowering cannot make one."""
    from .lower import lower
    shapes, dims, leaves = generic_shapes(roots, key, value_slots, ints)
    with symdim.tracing() as guards:
        prog = lower(fgraph, roots, shapes, dims, leaves, target=target)
    prog.guards = list(guards)
    return prog


def dim_values(prog, key: tuple, value_slots: list = (), ints: tuple = ()) -> list[int]:
    """The run-time sizes of shape-generic ``prog`` for a call with input shapes ``key``."""
    return [ints[list(value_slots).index(slot)] if axis < 0 else key[slot][axis]
            for slot, axis in prog.dims]
