"""Node order for overlapping non-blocking collectives with the rest of the work."""

from __future__ import annotations

from collections.abc import Callable

from ...graph.basic import Apply


def overlap_schedule(nodes: list[Apply], cost: Callable[[Apply], int] = lambda node: 1) -> list[Apply]:
    """``nodes`` (a topological order) reordered so that non-blocking collectives (ops with
    ``overlaps``) start as early as possible and their waits come as late as possible:

    * each collective, with the nodes it needs that are not yet placed, goes as soon as it
      can: repeatedly, the collective whose unplaced ancestors ``cost`` least (in a backward
      pass: the bucket of the last layers, whose gradients exist first);
    * the other nodes that read no collective's result follow (the rest of the backward pass,
      run while the reductions are in flight);
    * what reads a result (the optimiser's updates) comes last, grouped by the collective it
      waits for in the order they started, so the first reduction is consumed while the later
      ones are still in flight.

    Relative order is kept within each group, so the order stays topological."""
    early, late = _split_readers(nodes)
    early = _collectives_first(early, cost)
    started = {id(n): i for i, n in enumerate(n for n in early if _overlaps(n))}
    keys = _wait_keys(early + late, started)
    late.sort(key=lambda n: keys[id(n)])  # stable: topological within a key, keys increase along edges
    return early + late


def _overlaps(node: Apply) -> bool:
    return bool(getattr(node.op, "overlaps", False))


def _split_readers(nodes: list[Apply]) -> tuple[list[Apply], list[Apply]]:
    """(nodes that read no collective's result, nodes that do), each in the given order."""
    waiting: set[int] = set()
    early, late = [], []
    for node in nodes:
        after = any(id(v) in waiting for v in node.inputs)
        if after or _overlaps(node):
            waiting.update(id(o) for o in node.outputs)
        (late if after else early).append(node)
    return early, late


def _collectives_first(nodes: list[Apply], cost: Callable[[Apply], int]) -> list[Apply]:
    """``nodes`` with each collective and its not-yet-placed ancestors moved to the front,
    greedily: next, the collective whose unplaced ancestors cost least."""
    pos = {id(n): i for i, n in enumerate(nodes)}
    producer = {id(o): n for n in nodes for o in n.outputs}

    def ancestors(node: Apply) -> set[int]:
        seen: set[int] = set()
        stack = [node]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            stack += [producer[id(v)] for v in n.inputs if id(v) in producer]
        return seen

    costs = {id(n): cost(n) for n in nodes}
    todo = {id(n): ancestors(n) for n in nodes if _overlaps(n)}
    placed: set[int] = set()
    order: list[Apply] = []
    while todo:
        nxt = min(todo, key=lambda c: (sum(costs[i] for i in todo[c] - placed), pos[c]))
        new = sorted(todo.pop(nxt) - placed, key=pos.__getitem__)
        order += [nodes[pos[i]] for i in new]
        placed.update(new)
    return order + [n for n in nodes if id(n) not in placed]


def _wait_keys(nodes: list[Apply], started: dict[int, int]) -> dict[int, int]:
    """For each node: the latest-started collective whose result it (transitively) reads
    (-1 for none)."""
    key_of_var: dict[int, int] = {}
    keys: dict[int, int] = {}
    for node in nodes:
        k = max((key_of_var[id(v)] for v in node.inputs if id(v) in key_of_var), default=-1)
        if id(node) in started:
            k = max(k, started[id(node)])
        keys[id(node)] = k
        if k >= 0:
            key_of_var.update((id(o), k) for o in node.outputs)
    return keys
