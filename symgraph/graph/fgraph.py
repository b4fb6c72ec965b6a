"""Graph traversal, cloning and the mutable ``FunctionGraph`` that rewrites operate on."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from .basic import Apply, Constant, SharedVariable, Variable


def toposort(outputs: Sequence[Variable]) -> list[Apply]:
    """Apply nodes needed for ``outputs``, each after the nodes that compute its inputs."""
    order: list[Apply] = []
    seen: set[int] = set()
    for out in outputs:
        if out.owner is None or id(out.owner) in seen:
            continue
        stack = [(out.owner, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for inp in reversed(node.inputs):
                if inp.owner is not None and id(inp.owner) not in seen:
                    stack.append((inp.owner, False))
    return order


def graph_inputs(outputs: Sequence[Variable]) -> list[Variable]:
    """Root variables (no owner) that the outputs depend on, in first-seen order."""
    roots, seen = [], set()
    for node in toposort(outputs):
        for inp in node.inputs:
            if inp.owner is None and id(inp) not in seen:
                seen.add(id(inp))
                roots.append(inp)
    for out in outputs:
        if out.owner is None and id(out) not in seen:
            seen.add(id(out))
            roots.append(out)
    return roots


def clone_replace(outputs: Sequence[Variable], replace: dict[Variable, Variable]) -> list[Variable]:
    """Rebuild ``outputs`` with some variables substituted (``givens``); shape checks rerun."""
    memo: dict[int, Variable] = {id(k): v for k, v in replace.items()}
    for node in toposort(outputs):
        if any(id(o) in memo for o in node.outputs):
            continue
        new_inputs = [memo.get(id(i), i) for i in node.inputs]
        if all(a is b for a, b in zip(new_inputs, node.inputs)):
            continue
        new_node = node.clone_with_new_inputs(new_inputs)
        for old, new in zip(node.outputs, new_node.outputs):
            memo[id(old)] = new
    return [memo.get(id(o), o) for o in outputs]


class FunctionGraph:
    """A graph from ``inputs`` to ``outputs`` that can be edited in place.

    Keeps, for every variable, its clients (the nodes that use it and at which input position),
    so that ``replace`` is O(uses).  Apply nodes are edited in place; listeners (``on_replace``)
    let rewrite passes keep their own bookkeeping.
    """

    def __init__(self, inputs: Sequence[Variable], outputs: Sequence[Variable]):
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.clients: dict[Variable, list[tuple[Apply | str, int]]] = {}
        self.nodes: set[Apply] = set()
        self.listeners: list[Callable[[Variable, Variable, str], None]] = []
        for node in toposort(self.outputs):
            self._import_node(node)
        for i, out in enumerate(self.outputs):
            self.clients.setdefault(out, []).append(("output", i))

    # --- bookkeeping --------------------------------------------------------------------
    def _import_node(self, node: Apply) -> None:
        if node in self.nodes:
            return
        self.nodes.add(node)
        for i, inp in enumerate(node.inputs):
            self.clients.setdefault(inp, []).append((node, i))
        for out in node.outputs:
            self.clients.setdefault(out, [])

    def _import(self, var: Variable) -> None:
        """Import the nodes computing ``var`` that are new to this graph (stops at known ones,
        so a rewrite's replacement costs O(new nodes), not O(graph))."""
        if var.owner is None or var.owner in self.nodes:
            return
        order: list[Apply] = []
        seen: set[int] = set()
        stack = [(var.owner, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen or node in self.nodes:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for inp in node.inputs:
                if inp.owner is not None and inp.owner not in self.nodes:
                    stack.append((inp.owner, False))
        for node in order:
            self._import_node(node)

    def _prune(self, var: Variable) -> None:
        """Drop the node of ``var`` (recursively) once nothing uses any of its outputs."""
        stack = [var]
        while stack:
            v = stack.pop()
            node = v.owner
            if node is None or node not in self.nodes:
                continue
            if any(self.clients.get(o) for o in node.outputs):
                continue
            self.nodes.discard(node)
            for o in node.outputs:
                self.clients.pop(o, None)
            for i, inp in enumerate(node.inputs):
                uses = self.clients.get(inp, [])
                if (node, i) in uses:
                    uses.remove((node, i))
                if not uses:
                    stack.append(inp)

    # --- editing ------------------------------------------------------------------------
    def replace(self, old: Variable, new: Variable, reason: str = "") -> None:
        """Make every user of ``old`` use ``new`` instead."""
        if old is new:
            return
        if old.type.ndim != new.type.ndim or old.type.dtype != new.type.dtype:
            raise TypeError(f"rewrite {reason!r} changed type {old.type} -> {new.type}")
        self._import(new)
        for client, i in list(self.clients.get(old, [])):
            if client == "output":
                self.outputs[i] = new
            else:
                client.inputs[i] = new
            self.clients.setdefault(new, []).append((client, i))
        self.clients[old] = []
        for listener in self.listeners:
            listener(old, new, reason)
        self._prune(old)

    def replace_all(self, pairs: Iterable[tuple[Variable, Variable]], reason: str = "") -> None:
        for old, new in pairs:
            self.replace(old, new, reason)

    # --- queries ------------------------------------------------------------------------
    def toposort(self) -> list[Apply]:
        return toposort(self.outputs)

    def variables(self) -> list[Variable]:
        seen, out = set(), []
        for node in self.toposort():
            for v in list(node.inputs) + list(node.outputs):
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)
        return out

    def shared_inputs(self) -> list[SharedVariable]:
        return [v for v in graph_inputs(self.outputs) if isinstance(v, SharedVariable)]

    def free_inputs(self) -> list[Variable]:
        """Root variables that are neither declared inputs, shared nor constant."""
        declared = {id(v) for v in self.inputs}
        return [v for v in graph_inputs(self.outputs)
                if id(v) not in declared and not isinstance(v, (Constant, SharedVariable))]

    def __len__(self) -> int:
        return len(self.nodes)
