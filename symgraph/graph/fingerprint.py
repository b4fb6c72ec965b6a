"""A structural fingerprint of an (unrewritten) FunctionGraph, stable across processes.

Two graphs get the same fingerprint when they have the same inputs (types and names), the
same nodes (op class, every attribute of the op, input wiring, output types), the same
constants (dtype, shape, bytes) and the same outputs.  Shared variables count by type and
name only: their values are inputs.  Used as the key of the llvm backend's warm-start cache,
so a warm process can find its compiled code before rewriting or lowering anything.

Anything the encoder does not know how to write down exactly (a function, an arbitrary
object, an op class defined outside symgraph) makes the graph unfingerprintable:
``fingerprint`` then returns None and the caller takes the ordinary path.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .basic import Constant, Op, SharedVariable, Variable
from .fgraph import FunctionGraph
from .types import TensorType


class Unencodable(Exception):
    """A value whose identity cannot be written down exactly."""


class _Encoder:
    def __init__(self):
        self.h = hashlib.sha256()
        self.exprs: dict[int, int] = {}  # id(SExpr) -> index (DAG sharing kept, linear time)
        self.keep: list = []  # keeps encoded SExprs alive so their ids stay unique

    def w(self, text: str) -> None:
        self.h.update(text.encode())

    def value(self, v) -> None:
        from ..scalar import SExpr
        t = type(v)
        if v is None:
            self.w("N")
        elif t is bool:
            self.w("T" if v else "F")
        elif t is int:
            self.w(f"i{v};")
        elif t is float:
            self.w(f"f{v!r};")
        elif t is str:
            self.w(f"s{len(v)}:{v}")
        elif t is bytes:
            self.w(f"y{len(v)}:")
            self.h.update(v)
        elif t is tuple or t is list:
            self.w("(" if t is tuple else "[")
            for x in v:
                self.value(x)
            self.w(")")
        elif t is dict:
            self.w("{")
            for k in sorted(v, key=repr):
                self.value(k)
                self.value(v[k])
            self.w("}")
        elif t is frozenset or t is set:
            self.w("<")
            for x in sorted(v, key=repr):
                self.value(x)
            self.w(">")
        elif t is slice:
            self.w("S")
            self.value((v.start, v.stop, v.step))
        elif isinstance(v, SExpr):
            self.expr(v)
        elif isinstance(v, TensorType):
            self.type(v)
        elif isinstance(v, Op):
            self.op(v)
        elif isinstance(v, np.dtype):
            self.w(f"d{v.str};")
        elif isinstance(v, np.ndarray):
            self.array(v)
        elif isinstance(v, np.generic):
            self.w("g")
            self.array(np.asarray(v))
        elif isinstance(v, type):
            self.w(f"C{v.__module__}.{v.__qualname__};")
        else:
            raise Unencodable(type(v).__name__)

    def array(self, a: np.ndarray) -> None:
        if a.dtype.hasobject:
            raise Unencodable("object array")
        self.w(f"a{a.dtype.str}{a.shape};")
        self.h.update(np.ascontiguousarray(a).tobytes())

    def type(self, t: TensorType) -> None:
        self.w(f"t{t.dtype}{t.shape};")

    def expr(self, e) -> None:
        from ..scalar import topo
        for node in topo([e]):
            if id(node) in self.exprs:
                continue
            self.w(f"x{node.op}|{node.dtype}|{node.value!r}|")
            self.w(",".join(str(self.exprs[id(a)]) for a in node.args))
            self.w(";")
            self.exprs[id(node)] = len(self.exprs)
            self.keep.append(node)
        self.w(f"X{self.exprs[id(e)]};")

    def op(self, op: Op) -> None:
        cls = type(op)
        if not cls.__module__.startswith("symgraph."):
            # code outside symgraph may change without symgraph's sources changing
            raise Unencodable(f"op class {cls.__module__}.{cls.__qualname__}")
        self.w(f"O{cls.__module__}.{cls.__qualname__}{{")
        # every attribute, not only __props__: whatever the op holds may steer the rewriter
        # or the code generator
        attrs = vars(op) if hasattr(op, "__dict__") else {}
        for name in sorted(attrs):
            self.w(f"{name}=")
            self.value(attrs[name])
        for name in getattr(cls, "__slots__", ()):
            if name not in attrs and hasattr(op, name):
                self.w(f"{name}=")
                self.value(getattr(op, name))
        self.w("}")


def fingerprint(fgraph: FunctionGraph, extra: tuple = ()) -> str | None:
    """Hex digest of the graph's structure (plus ``extra``), or None if it has something the
    encoder cannot write down exactly."""
    enc = _Encoder()
    index: dict[int, int] = {}

    def leaf(v: Variable) -> None:
        if isinstance(v, Constant):
            enc.w("K")
            enc.array(v.value)
        elif isinstance(v, SharedVariable):
            enc.w("V")
        elif type(v) is Variable and v.owner is None:
            enc.w("I")
        else:
            raise Unencodable(type(v).__name__)
        enc.type(v.type)
        enc.value(v.name)
        index[id(v)] = len(index)

    try:
        enc.value(extra)
        enc.w(f"#{len(fgraph.inputs)}")
        for v in fgraph.inputs:
            leaf(v)
        for node in fgraph.toposort():
            for v in node.inputs:
                if id(v) not in index:
                    if v.owner is not None:
                        raise Unencodable("input produced outside the graph")
                    leaf(v)
            enc.w("n")
            enc.op(node.op)
            enc.w(",".join(str(index[id(v)]) for v in node.inputs))
            enc.w("->")
            for out in node.outputs:
                enc.type(out.type)
                enc.value(out.name)
                index[id(out)] = len(index)
        enc.w("=>")
        for v in fgraph.outputs:
            if id(v) not in index:
                leaf(v)  # an output that is an input or a constant
            enc.w(f"{index[id(v)]},")
    except Unencodable:
        return None
    return enc.h.hexdigest()
