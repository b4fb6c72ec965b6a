"""Symbolic shapes: which variables are sure to have the same runtime shape.

Each dimension is an ``int`` when static, else a hashable symbol: ``("in", id, axis)`` for an
unknown dim of a graph input, or ``("node", id, axis)`` for a dim that nothing relates to
another.  Elementwise broadcasting, reductions, dimshuffles, matmul and the shape-vector
inputs of reshape / broadcast_to / sum_to are followed, so ``sum_to(grad, x)`` is provably a
no-op when the gradient was computed elementwise from ``x``.  Sound for programs that run
(a broadcast of ``a`` with ``b`` is ``b`` when ``a`` is 1 or equal to ``b``).

Variables are never mutated, and rewrites replace a variable only by one of equal value, so
the memo (keyed by variable identity) stays valid while a graph is rewritten.
"""

from __future__ import annotations

from ..graph.basic import Constant, Variable
from ..ops.elemwise import Elemwise
from ..ops.fused import FusedReduce, MatMulEpilogue
from ..ops.indexing import Subtensor
from ..ops.linalg import MatMul
from ..ops.nn import LogSoftmax, Softmax, SoftmaxCrossEntropy
from ..ops.reduce import Reduce
from ..ops.shape import BroadcastTo, DimShuffle, MakeVector, Reshape, Shape, SumToShape

Dim = object


class ShapeInfo:
    """Memoised symbolic shapes of variables."""

    def __init__(self):
        self._memo: dict[int, tuple[Variable, tuple]] = {}

    def shape(self, v: Variable) -> tuple:
        hit = self._memo.get(id(v))
        if hit is not None and hit[0] is v:
            return hit[1]
        # iterative: compute missing ancestors first (graphs can be deep)
        stack = [v]
        while stack:
            top = stack[-1]
            hit = self._memo.get(id(top))
            if hit is not None and hit[0] is top:
                stack.pop()
                continue
            deps = self._deps(top)
            missing = [d for d in deps if not self._known(d)]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            self._memo[id(top)] = (top, self._compute(top))
        return self._memo[id(v)][1]

    def same(self, a: Variable, b: Variable) -> bool:
        """True when ``a`` and ``b`` are sure to have the same runtime shape."""
        return a.ndim == b.ndim and self.shape(a) == self.shape(b)

    def _known(self, v: Variable) -> bool:
        hit = self._memo.get(id(v))
        return hit is not None and hit[0] is v

    @staticmethod
    def _deps(v: Variable) -> list[Variable]:
        node = v.owner
        if node is None:
            return []
        deps = [i for i in node.inputs if i.ndim <= 8]
        if isinstance(node.op, (Reshape, BroadcastTo, SumToShape)):
            vec = node.inputs[1]
            if vec.owner is not None and isinstance(vec.owner.op, Shape):
                deps.append(vec.owner.inputs[0])
        return deps

    def vector_value(self, vec: Variable) -> tuple | None:
        """Symbolic value of an int64 shape vector (entries int or symbols), if known."""
        if isinstance(vec, Constant):
            return tuple(int(x) for x in vec.value.reshape(-1))
        node = vec.owner
        if node is None:
            return None
        if isinstance(node.op, Shape):
            return self.shape(node.inputs[0])
        if isinstance(node.op, MakeVector):
            parts = []
            for p in node.inputs:
                if isinstance(p, Constant):
                    parts.append(int(p.value))
                elif (p.owner is not None and isinstance(p.owner.op, Subtensor)
                      and len(p.owner.inputs) == 1 and p.owner.op.spec[0][0] == "i"
                      and len(p.owner.op.spec) == 1 and p.owner.inputs[0].owner is not None
                      and isinstance(p.owner.inputs[0].owner.op, Shape)):
                    parts.append(self.shape(p.owner.inputs[0].owner.inputs[0])[p.owner.op.spec[0][1]])
                else:
                    parts.append(("val", id(p)))
            return tuple(parts)
        return None

    def _compute(self, v: Variable) -> tuple:
        static = v.type.shape
        node = v.owner
        fresh = tuple(d if d is not None else ("node", id(v), a) for a, d in enumerate(static))
        if node is None:
            return tuple(d if d is not None else ("in", id(v), a) for a, d in enumerate(static))
        op = node.op
        out: tuple | None = None
        if isinstance(op, Elemwise):
            out = broadcast([self.shape(i) for i in node.inputs], v)
        elif isinstance(op, (Reduce, FusedReduce)):
            if isinstance(op, Reduce):
                base = self.shape(node.inputs[0])
            else:
                base = broadcast([self.shape(i) for i in node.inputs], None)
            if op.keepdims:
                out = tuple(1 if a in op.axes else d for a, d in enumerate(base))
            else:
                out = tuple(d for a, d in enumerate(base) if a not in op.axes)
        elif isinstance(op, DimShuffle):
            base = self.shape(node.inputs[0])
            out = tuple(1 if o == "x" else base[o] for o in op.order)
        elif isinstance(op, (Softmax, LogSoftmax)):
            out = self.shape(node.inputs[0])
        elif isinstance(op, SoftmaxCrossEntropy):
            out = self.shape(node.inputs[0])[:-1]
        elif isinstance(op, (MatMul, MatMulEpilogue)):
            a, b = self.shape(node.inputs[0]), self.shape(node.inputs[1])
            batch = broadcast([a[:-2], b[:-2]], None)
            out = batch + (a[-2], b[-1])
            if isinstance(op, MatMulEpilogue):
                out = broadcast([out] + [self.shape(e) for e in node.inputs[2:]], None)
        elif isinstance(op, (Reshape, BroadcastTo, SumToShape)):
            val = self.vector_value(node.inputs[1])
            if val is not None and len(val) == v.ndim and -1 not in val:
                out = val
        if out is None or len(out) != v.ndim:
            return fresh
        # static information always wins
        return tuple(s if s is not None else d for s, d in zip(static, out))


def broadcast(shapes: list[tuple], v: Variable | None = None) -> tuple:
    """NumPy broadcasting on symbolic dims; unrelated symbols give a fresh symbol."""
    ndim = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for axis in range(ndim):
        dims = {s[axis] for s in padded} - {1}
        ints = [d for d in dims if isinstance(d, int)]
        if ints:
            out.append(ints[0])
        elif not dims:
            out.append(1)
        elif len(dims) == 1:
            out.append(next(iter(dims)))
        else:
            out.append(("bcast", frozenset(dims)))  # a function of the operands' dims
    return tuple(out)
