"""The rewrite engine: a registry of named rewrites in ordered groups, and the drivers.

Two kinds of rewrite:

* a **local rewrite** is a small function ``fn(node, ctx) -> replacements | None`` that looks at
  one apply node and returns a variable (or a list, one per output, ``None`` = keep) computing
  the same values.  A group's local rewrites run to a fixed point with a worklist: every node
  is visited once, and after a replacement only the new nodes and the clients of the new
  variables are visited again, so the cost is linear in the graph plus the work done;
* a **global pass** ``fn(ctx)`` walks the whole graph once (merge, fusion, memory planning).

Groups run in the order of ``GROUPS``; inside a group, global passes run first, then the
local rewrites.  Every replacement is logged (``RewriteRecord``) and the replaced node's
user trace (``Apply.trace``) is copied onto every new node, so errors still name the user's line.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..graph.basic import Apply, Variable
from ..graph.fgraph import FunctionGraph, toposort

GROUPS: tuple[str, ...] = ("merge", "fold", "canonicalize", "stabilize", "specialize", "fuse",
                           "memory")


class RewriteRecord:
    """One entry of ``f.rewrite_log``: which rewrite replaced what by what.

    ``rewrite`` is the rewrite's name (``name/rule`` when finer scalar rules fired), ``group``
    its group, ``replaced`` and ``by`` describe the old and new variables (built on first use:
    describing every replacement of a big graph eagerly would cost more than rewriting it).
    It unpacks like a tuple ``(rewrite, group, replaced, by)``.
    """

    __slots__ = ("rewrite", "group", "_old", "_new", "_text")

    def __init__(self, rewrite: str, group: str, old, new):
        self.rewrite, self.group, self._old, self._new, self._text = rewrite, group, old, new, None

    def _describe(self) -> tuple[str, str]:
        if self._text is None:
            self._text = tuple(o if isinstance(o, str) else _describe(o) for o in (self._old, self._new))
            self._old = self._new = None
        return self._text

    @property
    def replaced(self) -> str:
        return self._describe()[0]

    @property
    def by(self) -> str:
        return self._describe()[1]

    def __iter__(self):
        return iter((self.rewrite, self.group, self.replaced, self.by))

    def __getitem__(self, i):
        return tuple(self)[i]

    def __len__(self) -> int:
        return 4

    def __eq__(self, other) -> bool:
        return tuple(self) == tuple(other)

    __hash__ = None

    def __repr__(self) -> str:
        return (f"RewriteRecord(rewrite={self.rewrite!r}, group={self.group!r}, "
                f"replaced={self.replaced!r}, by={self.by!r})")


@dataclass
class LocalRewrite:
    name: str
    fn: Callable
    groups: tuple[str, ...]
    tracks: tuple[type, ...] | None  # op classes it can match (None: every node)


@dataclass
class GlobalPass:
    name: str
    fn: Callable
    group: str


class Registry(dict):
    """A table of rewrites by name that knows which registered ones are missing now (removed
    with ``pop`` or ``del`` and not put back): the warm-start cache's key sees the symgraph
    sources, not this table, so a process running without one of its rewrites compiles from
    the graph (``backends/llvm_warm.usable``)."""

    def __init__(self):
        super().__init__()
        self.missing: set[str] = set()

    def __setitem__(self, name, value):
        self.missing.discard(name)
        super().__setitem__(name, value)

    def __delitem__(self, name):
        super().__delitem__(name)
        self.missing.add(name)

    def pop(self, name, *default):
        if name in self:
            self.missing.add(name)
        return super().pop(name, *default)


LOCAL: Registry = Registry()  # name -> LocalRewrite
GLOBAL: Registry = Registry()  # name -> GlobalPass


@contextlib.contextmanager
def disabled(name: str):
    """Compile without the registered rewrite ``name`` inside the ``with`` block (to compare a
    graph with and without it); afterwards it is back in its place in the run order, so the
    rewrites that follow it still see the graph it left them."""
    table = LOCAL if name in LOCAL else GLOBAL
    names = list(table)
    saved = table.pop(name)
    try:
        yield
    finally:
        later = {n: table.pop(n) for n in names[names.index(name) + 1:] if n in table}
        table[name] = saved
        for n, rewrite in later.items():
            table[n] = rewrite


def local_rewrite(*groups: str, tracks: Sequence[type] | None = None, name: str | None = None):
    """Register ``fn(node, ctx)`` as a local rewrite in ``groups`` (decorator)."""
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"unknown rewrite group {g!r}")

    def deco(fn):
        n = name or fn.__name__
        if n in LOCAL or n in GLOBAL:
            raise ValueError(f"rewrite {n!r} registered twice")
        LOCAL[n] = LocalRewrite(n, fn, tuple(groups), tuple(tracks) if tracks else None)
        return fn
    return deco


def global_pass(group: str, name: str | None = None):
    """Register ``fn(ctx)`` as a whole-graph pass of ``group`` (decorator)."""
    if group not in GROUPS:
        raise ValueError(f"unknown rewrite group {group!r}")

    def deco(fn):
        n = name or fn.__name__
        if n in LOCAL or n in GLOBAL:
            raise ValueError(f"rewrite {n!r} registered twice")
        GLOBAL[n] = GlobalPass(n, fn, group)
        return fn
    return deco


def _describe(v: Variable) -> str:
    if v.owner is None:
        return v.label()
    return f"{v.owner.op}({', '.join(i.label() for i in v.owner.inputs)})"


def backend_capabilities(backend: str) -> dict:
    """What a backend can run fused: ``REWRITE_CAPABILITIES`` of its module, else defaults.

    The reference backend runs every fused op; a backend module that can run
    ``MatMulEpilogue`` declares ``REWRITE_CAPABILITIES = {"matmul_epilogue": True}``.
    """
    caps = {"matmul_epilogue": backend == "reference", "conv_epilogue": backend == "reference",
            "fused_reduce": True}
    from ..compile import BACKENDS
    modname = BACKENDS.get(backend)
    if modname is not None and backend != "reference":
        try:
            mod = importlib.import_module(modname)
        except Exception:  # a backend that cannot load gets no fused extras
            mod = None
        caps.update(getattr(mod, "REWRITE_CAPABILITIES", {}) or {})
    return caps


@dataclass
class RewriteContext:
    """What a rewrite sees: the graph, the backend's capabilities, the log, symbolic shapes."""

    fgraph: FunctionGraph
    backend: str = "reference"
    capabilities: dict = field(default_factory=dict)
    log: list = field(default_factory=list)
    group: str = ""
    protected: set = field(default_factory=set)  # ids of variables that must stay in the graph
    _shapes: object = None
    _pushed: list = field(default_factory=list)
    _detail: list = field(default_factory=list)
    version: int = 0  # bumped by every replacement
    _order: tuple = (None, -1)

    def toposort(self) -> list[Apply]:
        """``fgraph.toposort()``, cached while the graph does not change."""
        order, version = self._order
        if version != self.version:
            order = self.fgraph.toposort()
            self._order = (order, self.version)
        return order

    def note(self, rules) -> None:
        """Name the finer rules (e.g. scalar rules) behind the next replacement, for the log."""
        self._detail = [r for r in dict.fromkeys(rules)]

    @property
    def shapes(self):
        """Symbolic-shape analysis (lazily built, shared by all rewrites)."""
        if self._shapes is None:
            from .shapes import ShapeInfo
            self._shapes = ShapeInfo()
        return self._shapes

    def is_output(self, v: Variable) -> bool:
        return any(c == "output" for c, _ in self.fgraph.clients.get(v, ()))

    def clients(self, v: Variable) -> list:
        return self.fgraph.clients.get(v, [])

    def commit(self, node: Apply, outs: Sequence[Variable | None], name: str) -> list[Apply] | None:
        """Replace ``node``'s outputs by ``outs``; copy its trace to new nodes; log it."""
        fg = self.fgraph
        pairs = [(o, n) for o, n in zip(node.outputs, outs) if n is not None and n is not o]
        if not pairs or any(id(o) in self.protected for o, _ in pairs):
            return None
        new_nodes: list[Apply] = []
        seen: set[int] = set()
        stack = [n for _, n in pairs]
        while stack:
            v = stack.pop()
            owner = v.owner
            if owner is None or owner in fg.nodes or id(owner) in seen:
                continue
            seen.add(id(owner))
            owner.trace = node.trace
            new_nodes.append(owner)
            stack.extend(owner.inputs)
        if self._detail:
            name = f"{name}/{'+'.join(self._detail)}"
            self._detail = []
        for old, new in pairs:
            if new.type.dtype != old.type.dtype or new.type.ndim != old.type.ndim:
                raise TypeError(f"rewrite {name!r} changed type {old.type} -> {new.type}")
            self.log.append(RewriteRecord(name, self.group, old, new))
            self.version += 1
            fg.replace(old, new, reason=name)
        self._pushed.extend(new_nodes)
        for _, new in pairs:
            for client, _ in fg.clients.get(new, ()):
                if client != "output":
                    self._pushed.append(client)
        return new_nodes


def remove_dead(fgraph: FunctionGraph) -> None:
    """Drop nodes that no output needs (and their client entries)."""
    live = set(fgraph.toposort())
    for node in list(fgraph.nodes):
        if node in live:
            continue
        fgraph.nodes.discard(node)
        for o in node.outputs:
            fgraph.clients.pop(o, None)
        for i, inp in enumerate(node.inputs):
            uses = fgraph.clients.get(inp)
            if uses and (node, i) in uses:
                uses.remove((node, i))


def run_local(ctx: RewriteContext, rewrites: Sequence[LocalRewrite], max_factor: int = 10) -> None:
    """Apply ``rewrites`` to a fixed point with a worklist."""
    if not rewrites:
        return
    fg = ctx.fgraph
    dispatch: dict[type, list[LocalRewrite]] = {}

    def candidates(op_type: type) -> list[LocalRewrite]:
        found = dispatch.get(op_type)
        if found is None:
            found = [r for r in rewrites
                     if r.tracks is None or any(issubclass(op_type, t) for t in r.tracks)]
            dispatch[op_type] = found
        return found

    order = ctx.toposort()
    queue: deque[Apply] = deque(order)
    queued: set[int] = {id(n) for n in order}
    budget = max_factor * (len(order) + 10)
    steps = 0
    while queue:
        node = queue.popleft()
        queued.discard(id(node))
        if node not in fg.nodes:
            continue
        steps += 1
        if steps > budget:
            warnings.warn(f"rewrite group {ctx.group!r} did not reach a fixed point; stopping",
                          stacklevel=2)
            return
        for rw in candidates(type(node.op)):
            ctx._detail = []
            result = rw.fn(node, ctx)
            if result is None:
                continue
            outs = [result] if isinstance(result, Variable) else list(result)
            ctx._pushed = []
            if ctx.commit(node, outs, rw.name) is None:
                continue
            for n in ctx._pushed:
                if id(n) not in queued and n in fg.nodes:
                    queued.add(id(n))
                    queue.append(n)
            ctx._pushed = []
            break


def run_group(ctx: RewriteContext, group: str) -> None:
    """Run one group: its global passes, then its local rewrites to a fixed point."""
    ctx.group = group
    for gp in GLOBAL.values():
        if gp.group == group:
            gp.fn(ctx)
    run_local(ctx, [r for r in LOCAL.values() if group in r.groups])


def privatize(fgraph: FunctionGraph) -> None:
    """Give ``fgraph`` its own copies of its apply nodes.

    Rewrites edit apply nodes in place; the nodes of the user's graph must not change (the user
    may differentiate or compile it again), so ``rewrite_graph`` works on copies.
    """
    memo: dict[int, Variable] = {}
    for node in toposort(fgraph.outputs):
        new = object.__new__(Apply)  # a plain copy: types were inferred when it was built
        new.__dict__.update(node.__dict__)
        new.inputs = [memo.get(id(i), i) for i in node.inputs]
        outs = []
        for old in node.outputs:
            out = object.__new__(type(old))
            out.__dict__.update(old.__dict__)
            out.owner = new
            memo[id(old)] = out
            outs.append(out)
        new.outputs = outs
    outputs = [memo.get(id(o), o) for o in fgraph.outputs]
    listeners = fgraph.listeners
    fgraph.__init__(fgraph.inputs, outputs)
    fgraph.listeners = listeners


def run_groups(fgraph: FunctionGraph, groups: Sequence[str], backend: str = "reference",
               protected: Sequence[Variable] = ()) -> list[RewriteRecord]:
    """Run the named groups, in the given order, on ``fgraph`` (in place); returns the log."""
    from . import load_all
    load_all()
    ctx = RewriteContext(fgraph, backend, backend_capabilities(backend),
                         protected={id(v) for v in protected})
    for group in groups:
        n_log = len(ctx.log)
        run_group(ctx, group)
        if group in ("fold", "canonicalize", "stabilize", "specialize") and len(ctx.log) > n_log:
            ctx.group = "merge"
            GLOBAL["merge"].fn(ctx)
    remove_dead(fgraph)
    return ctx.log
