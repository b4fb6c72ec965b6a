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
from ..ops.fused import Conv2dEpilogue, FusedReduce, MatMulEpilogue, SoftmaxCrossEntropyWithGrad
from ..ops.indexing import IndexWrite, Subtensor
from ..ops.linalg import MatMul
from ..ops.nn import ARange, Conv2d, LogSoftmax, Softmax, SoftmaxCrossEntropy
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
            return tuple(self.scalar_value(p) for p in node.inputs)
        if isinstance(node.op, Subtensor) and len(node.inputs) == 1:
            spec = node.op.spec
            whole = self.vector_value(node.inputs[0])
            if whole is not None and len(spec) == 1 and spec[0][0] == "s":
                return whole[slice(*spec[0][1:])]
        return None

    def scalar_value(self, p: Variable) -> Dim:
        """Symbolic value of an int scalar: an int, a dim of a shape (``x.shape[i]``), an
        elementwise expression of those, else a symbol of its own."""
        if isinstance(p, Constant):
            return int(p.value) if p.ndim == 0 else ("val", id(p))
        node = p.owner
        if node is None or p.ndim != 0:
            return ("val", id(p))
        if isinstance(node.op, Subtensor) and len(node.inputs) == 1 and len(node.op.spec) == 1 \
                and node.op.spec[0][0] == "i":
            vec = self.vector_value(node.inputs[0])
            k = node.op.spec[0][1]
            if vec is not None and -len(vec) <= k < len(vec):
                return vec[k]
        if isinstance(node.op, Elemwise) and all(i.ndim == 0 for i in node.inputs):
            return ("expr", node.op, tuple(self.scalar_value(i) for i in node.inputs))
        return ("val", id(p))

    def variable_of(self, dim: Dim) -> tuple[Variable, int] | None:
        """``(input, axis)`` for the symbol of an unknown dim of a graph input seen so far."""
        if isinstance(dim, tuple) and len(dim) == 3 and dim[0] == "in":
            hit = self._memo.get(dim[1])
            if hit is not None:
                return hit[0], dim[2]
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
        elif isinstance(op, (Conv2d, Conv2dEpilogue)):  # (images, output channels, oh, ow)
            out = (self.shape(node.inputs[0])[0], self.shape(node.inputs[1])[0]) + fresh[2:]
            if isinstance(op, Conv2dEpilogue):
                out = broadcast([out] + [self.shape(e) for e in node.inputs[2:]], None)
        elif isinstance(op, (Reshape, BroadcastTo, SumToShape)):
            val = self.vector_value(node.inputs[1])
            if val is not None and -1 in val and isinstance(op, Reshape):
                val = resolve_minus_one(self.shape(node.inputs[0]), val)
            if val is not None and len(val) == v.ndim and -1 not in val:
                out = val
        elif isinstance(op, SoftmaxCrossEntropyWithGrad):
            logits = self.shape(node.inputs[0])
            out = logits[:-1] if v.index == 0 else logits
        elif isinstance(op, IndexWrite):
            out = self.shape(node.inputs[0])
        elif isinstance(op, ARange):
            out = (self.scalar_value(node.inputs[0]),)
        if out is None or len(out) != v.ndim:
            return fresh
        # static information always wins
        return tuple(s if s is not None else d for s, d in zip(static, out))


def resolve_minus_one(source: tuple, target: tuple) -> tuple | None:
    """``target`` (a reshape of ``source``, one entry -1) with the -1 worked out, when the
    entries that are not ints are dims of ``source`` and the rest of ``source`` is static."""
    left = list(source)
    rest = 1
    for d in target:
        if d == -1:
            continue
        if isinstance(d, int):
            rest *= d
        elif d in left:
            left.remove(d)
        else:
            return None
    if not all(isinstance(d, int) for d in left) or rest == 0:
        return None
    total = 1
    for d in left:
        total *= d
    if total % rest:
        return None
    return tuple(total // rest if d == -1 else d for d in target)


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
