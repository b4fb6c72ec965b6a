"""The kernel IR: a backend-neutral description of the native code for one compiled call.

A ``Program`` is a list of ``Kernel``s run in order over ``Storage``s (flat typed memory:
the caller's inputs and outputs, a planned scratch arena, constants).  Graph values are
``View``s of storages (shape, strides and offset in elements), so transposes, broadcasts,
reshapes of contiguous data and basic slices cost no kernel.

A kernel body is a small structured statement list:

* ``For(var, extent, body, parallel)`` a counted loop; a kernel whose body is a single
  parallel ``For`` may be split across threads (each thread runs a sub-range).
* ``Assign(local, value, reduction)`` sets a mutable scalar local (accumulators);
  ``reduction=True`` allows a renderer to reassociate (vectorised reductions).
* ``Store(storage, index, value, accumulate)`` writes ``storage[index]`` (``+=`` when
  ``accumulate`` is ``"add"``).
* ``If(cond, body)`` and ``Gemm(...)`` (a BLAS matrix product call).
* ``Collective(...)`` a call into the MPI library (``sg.distributed``: start or wait for an
  all-reduce of one gradient bucket).

Values and indices are scalar-IR DAGs (``symgraph.scalar.SExpr``) with four extra leaf or
node kinds: ``var`` (a loop variable, int64), ``load`` (``value`` = storage id, one
argument = the element index), ``local`` (read a local) and the integer bit operations
``xor``, ``shr`` (a logical shift), ``shl``, plus ``checked`` (an index read from run-time
data, verified against a bound: see ``checked``) and ``dim`` (run-time size number
``value`` of a shape-generic program, read from its dims table).

Every extent, stride, offset, storage size and GEMM size is a Python int where the size was
known when code was generated, else a ``symdim.SymInt``: a polynomial over the run-time sizes
of ``Program.dims``, valid for every call that satisfies ``Program.guards``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._scalar import S
from .storage_fields import StorageMethods
from .symdim import SymInt, as_size, known_equal, static_is, to_expr
from .symdim import prod as size_prod

EXTRA_OPS = ("var", "load", "local", "xor", "shr", "shl", "checked", "dim")


# --- storage and views ---------------------------------------------------------------------

@dataclass(eq=False)
class Storage(StorageMethods):
    """A flat typed memory block.  ``kind``: input / output / temp / const."""

    sid: int
    kind: str
    dtype: str
    size: int  # elements
    slot: int = -1  # position among the program's inputs or outputs
    value: np.ndarray | None = None  # const storages
    name: str = ""
    shape: tuple = ()  # the shape of the value it was created for (documentation, export)


def contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        # a symbolic size is used as it is: when it is 0 there is no element to address
        acc = acc * d if isinstance(d, SymInt) else acc * max(int(d), 1)
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    """An n-d window onto a storage: element ``i`` is at ``offset + sum(i_k * strides[k])``."""

    storage: Storage
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def full(storage: Storage, shape) -> View:
        shape = tuple(as_size(d) for d in shape)
        return View(storage, shape, contiguous_strides(shape), 0)

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self):
        return size_prod(self.shape)

    @property
    def is_contiguous(self) -> bool:
        # symbolic strides and sizes are compared as polynomials: "not known contiguous"
        # costs a copy, a guard would cost generality
        return all(known_equal(st, c) or static_is(d, 1) for d, st, c in
                   zip(self.shape, self.strides, contiguous_strides(self.shape)))

    @property
    def is_whole(self) -> bool:
        """A contiguous view covering its whole storage from offset 0."""
        return (static_is(self.offset, 0) and self.is_contiguous
                and known_equal(self.size, self.storage.size))

    def index(self, idx) -> S.SExpr:
        """The flat element index for the multi-index ``idx`` (int64 expressions)."""
        expr = iconst(self.offset)
        for i, st, d in zip(idx, self.strides, self.shape):
            if not static_is(d, 1) and not static_is(st, 0):
                expr = iadd(expr, imul(i, iconst(st)))
        return expr

    def load(self, idx) -> S.SExpr:
        return load(self.storage, self.index(idx))

    # zero-copy transformations
    def permute(self, order) -> View:
        return View(self.storage, tuple(self.shape[o] for o in order),
                    tuple(self.strides[o] for o in order), self.offset)

    def broadcast(self, shape) -> View:
        """Right-aligned NumPy broadcasting to ``shape`` (stride 0 on broadcast axes)."""
        shape = tuple(shape)
        lead = len(shape) - self.ndim
        strides = [0] * lead
        for d, st, want in zip(self.shape, self.strides, shape[lead:]):
            strides.append(st if known_equal(d, want) or (not static_is(d, 1) and d == want) else 0)
        return View(self.storage, shape, tuple(strides), self.offset)

    def reshape(self, shape) -> View | None:
        """A view with a new shape, or None when the data is not laid out contiguously."""
        if not self.is_contiguous:
            return None
        shape = tuple(as_size(d) for d in shape)
        return View(self.storage, shape, contiguous_strides(shape), self.offset)


# --- expression helpers --------------------------------------------------------------------

def var(name: str) -> S.SExpr:
    return S.SExpr("var", (), name, "int64")


def local(name: str, dtype: str) -> S.SExpr:
    return S.SExpr("local", (), name, dtype)


def load(storage: Storage, index: S.SExpr) -> S.SExpr:
    return S.SExpr("load", (index,), storage.sid, storage.dtype)


def checked(index: S.SExpr, site: int, lo: int, hi: int, extremes: bool = False) -> S.SExpr:
    """``index`` (int64), which must lie in ``[lo, hi)``; ``site`` numbers the
    ``checks.CheckSite`` in ``Program.checks`` that describes it for the error message.

    Renderers evaluate it to ``index`` clamped into ``[lo, hi - 1]`` (so memory accesses stay
    in bounds whatever the data) and record what they saw in the error words
    (``checks.py``): the largest ``index - lo`` as unsigned, and with ``extremes`` also the
    smallest and largest value.  A value outside the range makes the call fail with
    ``checks.STATUS_INDEX_ERROR``.  The node has a side effect, so renderers never hoist or
    share it as a pure expression.
    """
    return S.SExpr("checked", (index,), (int(site), int(lo), as_size(hi), bool(extremes)), "int64")


def checked_sites(body: list) -> list[int]:
    """The check sites used in ``body``, in first-use order."""
    found: dict[int, None] = {}
    for st in walk(body):
        for e in stmt_exprs(st):
            for n in S.topo([e]):
                if n.op == "checked":
                    found.setdefault(n.value[0], None)
    return list(found)


def iconst(v) -> S.SExpr:
    """An int64 constant, or the expression of a symbolic size."""
    if isinstance(v, SymInt):
        return to_expr(v)
    return S.const(int(v), "int64")


def iadd(a: S.SExpr, b: S.SExpr) -> S.SExpr:
    if S.is_const(a, 0):
        return b
    if S.is_const(b, 0):
        return a
    if a.op == "const" and b.op == "const":
        return iconst(a.value + b.value)
    return S.apply("add", a, b)


def imul(a: S.SExpr, b: S.SExpr) -> S.SExpr:
    if S.is_const(a, 1):
        return b
    if S.is_const(b, 1):
        return a
    if S.is_const(a, 0) or S.is_const(b, 0):
        return iconst(0)
    if a.op == "const" and b.op == "const":
        return iconst(a.value * b.value)
    return S.apply("mul", a, b)


def bitop(op: str, a: S.SExpr, b: S.SExpr) -> S.SExpr:
    assert op in ("xor", "shr", "shl")
    return S.SExpr(op, (a, b), None, a.dtype)


# --- statements ----------------------------------------------------------------------------

@dataclass
class For:
    var: str
    extent: int
    body: list
    parallel: bool = False


@dataclass
class Assign:
    local: str
    value: S.SExpr
    reduction: bool = False


@dataclass
class Store:
    storage: Storage
    index: S.SExpr
    value: S.SExpr
    accumulate: str | None = None  # None or "add"


@dataclass
class If:
    cond: S.SExpr
    body: list


@dataclass
class Gemm:
    """``C[c_off:] = alpha * op(A) @ op(B) + beta * C`` (row-major, BLAS leading dimensions)."""

    dtype: str
    trans_a: bool
    trans_b: bool
    m: int
    n: int
    k: int
    a: Storage
    a_off: S.SExpr
    lda: int
    b: Storage
    b_off: S.SExpr
    ldb: int
    c: Storage
    c_off: S.SExpr
    ldc: int
    alpha: float = 1.0
    beta: float = 0.0


@dataclass
class Collective:
    """A call into the MPI library (``sg.distributed``), on the calling thread.

    ``kind="start"``: ``MPI_Iallreduce(send, recv, count, datatype, op, comm, &requests[slot])``
    (``MPI_IN_PLACE`` as the send buffer when ``send is recv``: the buffer is reduced in place);
    ``kind="test"``: ``MPI_Test(&requests[slot], &requests[slot + 1], MPI_STATUS_IGNORE)`` (lets
    the library advance the reduction between kernels: MPICH progresses only inside MPI calls);
    ``kind="wait"``: ``MPI_Wait(&requests[slot], MPI_STATUS_IGNORE)``.  ``datatype``, ``op`` and
    ``comm`` are the MPI library's handles (MPICH ABI: 32-bit ints).  A test or wait names the
    same storages as its start, so the arena planner keeps them alive while the reduction runs."""

    kind: str
    send: Storage
    recv: Storage
    count: int
    datatype: int
    op: int
    comm: int
    requests: Storage
    slot: int = 0


@dataclass
class Kernel:
    """One unit of generated code: ``body`` over ``storages``; ``ops`` names its graph nodes."""

    name: str
    body: list
    ops: list[str]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    work: int = 0  # elements touched, for the threading threshold

    @property
    def parallel(self) -> bool:
        return len(self.body) == 1 and isinstance(self.body[0], For) and self.body[0].parallel

    def storages(self, table: list[Storage]) -> list[Storage]:
        """Every storage the body touches, in first-use order (``table`` maps sid -> storage)."""
        found: dict[int, Storage] = {}
        for st in walk(self.body):
            for s in stmt_storages(st, table):
                found.setdefault(s.sid, s)
        return list(found.values())


@dataclass
class Program:
    """A whole compiled call: storages, kernels in order, and where each output lives."""

    storages: list[Storage]
    kernels: list[Kernel]
    inputs: list[Storage]
    outputs: list[Storage]
    output_shapes: list[tuple]
    output_map: list[int]  # graph output i -> index into ``outputs``
    arena_offsets: dict[int, int] = field(default_factory=dict)  # temp sid -> byte offset
    arena_size: int = 0
    checks: list = field(default_factory=list)  # checks.CheckSite per ``checked`` site id
    # shape-generic programs: per run-time size, where the caller reads it ((input slot, axis)),
    # and the guards (symdim) a call's sizes must satisfy for this code to serve it
    dims: list = field(default_factory=list)
    guards: list = field(default_factory=list)

    @property
    def generic(self) -> bool:
        return bool(self.dims)


def walk(body: list):
    """Every statement in ``body``, depth first."""
    for st in body:
        yield st
        if isinstance(st, (For, If)):
            yield from walk(st.body)


def stmt_exprs(st) -> list[S.SExpr]:
    if isinstance(st, Assign):
        return [st.value]
    if isinstance(st, Store):
        return [st.index, st.value]
    if isinstance(st, If):
        return [st.cond]
    if isinstance(st, Gemm):
        return [st.a_off, st.b_off, st.c_off]
    return []


def stmt_storages(st, table: list[Storage]) -> list[Storage]:
    out = []
    if isinstance(st, Store):
        out.append(st.storage)
    if isinstance(st, Gemm):
        out += [st.a, st.b, st.c]
    if isinstance(st, Collective):
        out += [st.send, st.recv, st.requests]
    for e in stmt_exprs(st):
        for n in S.topo([e]):
            if n.op == "load":
                out.append(table[n.value])
    return out


# --- printing ------------------------------------------------------------------------------

def expr_text(e: S.SExpr) -> str:
    memo: dict[int, str] = {}
    for n in S.topo([e]):
        a = [memo[id(x)] for x in n.args]
        if n.op == "var" or n.op == "local":
            s = str(n.value)
        elif n.op == "dim":
            s = f"d{n.value}"
        elif n.op == "load":
            s = f"s{n.value}[{a[0]}]"
        elif n.op == "const":
            s = repr(n.value)
        elif n.op == "cast":
            s = f"{n.dtype}({a[0]})"
        elif n.op == "checked":
            s = f"check{n.value[0]}({a[0]} in {n.value[1]}..{n.value[2]}{', extremes' if n.value[3] else ''})"
        elif n.op in ("xor", "shr", "shl"):
            s = f"({a[0]} {dict(xor='^', shr='>>', shl='<<')[n.op]} {a[1]})"
        else:
            prim = S.PRIMITIVES[n.op]
            if prim.symbol and prim.nin == 2:
                s = f"({a[0]} {prim.symbol} {a[1]})"
            elif prim.symbol and prim.nin == 1:
                s = f"{prim.symbol}{a[0]}"
            else:
                s = f"{n.op}({', '.join(a)})"
        memo[id(n)] = s
    return memo[id(e)]


def body_text(body: list, indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    for st in body:
        if isinstance(st, For):
            lines.append(f"{pad}for {st.var} in 0..{st.extent}{' parallel' if st.parallel else ''}:")
            lines.append(body_text(st.body, indent + 1))
        elif isinstance(st, If):
            lines.append(f"{pad}if {expr_text(st.cond)}:")
            lines.append(body_text(st.body, indent + 1))
        elif isinstance(st, Assign):
            op = "<-" if st.reduction else "="
            lines.append(f"{pad}{st.local} {op} {expr_text(st.value)}")
        elif isinstance(st, Store):
            op = "+=" if st.accumulate else "="
            lines.append(f"{pad}s{st.storage.sid}[{expr_text(st.index)}] {op} {expr_text(st.value)}")
        elif isinstance(st, Gemm):
            lines.append(f"{pad}gemm<{st.dtype}>(ta={int(st.trans_a)}, tb={int(st.trans_b)}, "
                         f"m={st.m}, n={st.n}, k={st.k}, A=s{st.a.sid}+{expr_text(st.a_off)} "
                         f"lda={st.lda}, B=s{st.b.sid}+{expr_text(st.b_off)} ldb={st.ldb}, "
                         f"C=s{st.c.sid}+{expr_text(st.c_off)} ldc={st.ldc}, alpha={st.alpha}, "
                         f"beta={st.beta})")
        elif isinstance(st, Collective):
            lines.append(f"{pad}mpi_{st.kind}(send=s{st.send.sid}, recv=s{st.recv.sid}, count={st.count}, "
                         f"datatype={st.datatype:#x}, op={st.op:#x}, comm={st.comm:#x}, "
                         f"request=s{st.requests.sid}[{st.slot}])")
    return "\n".join(lines)


def kernel_text(k: Kernel) -> str:
    head = f"kernel {k.name}  # from {', '.join(k.ops)}"
    return head + "\n" + body_text(k.body, 1)
