"""Memory planning: which intermediate buffers can share storage, which ops may run in place.

Computed once per compiled function, after fusion, over ``fgraph.toposort()``, and stored as
``fgraph.memory_plan`` (a ``MemoryPlan``) for the backends:

* ``order``: the node order the plan is valid for (run nodes in this order);
* ``storage_of(var)``: a storage index for every intermediate (not for graph inputs, shared
  variables or constants); two variables with the same index never hold live data at once,
  except a view and the buffer it views, or the input and output of an in-place node;
* ``inplace_input(node)``: the input position whose buffer an elementwise node may overwrite
  with its result (that input dies at this node and has the output's dtype and shape), or None;
* ``views``: variables that are views of their input's buffer (transpose / expand / reshape);
* ``interval(var)``: (step where its buffer is written, last step that reads it).

Buffers are reused only between variables of the same dtype and the same symbolic shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph.basic import Apply, Variable
from ..ops.elemwise import Elemwise
from ..ops.shape import DimShuffle, Reshape
from .engine import RewriteContext, global_pass

VIEW_OPS = (DimShuffle, Reshape)


@dataclass
class MemoryPlan:
    """Storage sharing and in-place decisions for one rewritten graph (see module doc)."""

    order: list[Apply]
    storage: dict[int, int] = field(default_factory=dict)  # id(var) -> storage index
    inplace: dict[int, int] = field(default_factory=dict)  # id(node) -> input position
    intervals: dict[int, tuple[int, int]] = field(default_factory=dict)  # id(var) -> (def, last)
    views: set[int] = field(default_factory=set)  # ids of view variables
    n_storage: int = 0
    n_intermediates: int = 0
    _keep: list = field(default_factory=list, repr=False)  # keeps the ids above valid

    def storage_of(self, v: Variable) -> int | None:
        return self.storage.get(id(v))

    def inplace_input(self, node: Apply) -> int | None:
        return self.inplace.get(id(node))

    def interval(self, v: Variable) -> tuple[int, int] | None:
        return self.intervals.get(id(v))

    def summary(self) -> str:
        return (f"{self.n_intermediates} intermediates in {self.n_storage} buffers, "
                f"{len(self.inplace)} in-place nodes")


def plan_memory(fgraph, shapes, order: list[Apply] | None = None) -> MemoryPlan:
    """Liveness over the toposort, then greedy reuse of freed buffers of the same kind."""
    order = list(order) if order is not None else fgraph.toposort()
    end = len(order)
    plan = MemoryPlan(order=order)
    last_use: dict[int, int] = {}
    for i, node in enumerate(order):
        for v in node.inputs:
            last_use[id(v)] = i
    for v in fgraph.outputs:
        last_use[id(v)] = end  # results outlive the program
    # alias groups: a view belongs to the group of the buffer it views
    group: dict[int, int] = {}          # id(var) -> group id (id of the buffer's first var)
    group_last: dict[int, int] = {}     # group -> last step any member is read
    group_def: dict[int, int] = {}
    for i, node in enumerate(order):
        for o in node.outputs:
            plan._keep.append(o)
            src = node.inputs[0] if isinstance(node.op, VIEW_OPS) else None
            if src is not None and id(src) in group:
                g = group[id(src)]
                plan.views.add(id(o))
            elif src is not None:
                continue  # a view of a graph input: no buffer of its own
            else:
                g = id(o)
                group_def[g] = i
            group[id(o)] = g
            group_last[g] = max(group_last.get(g, i), last_use.get(id(o), i))
    free: dict[tuple, list[int]] = {}
    storage_of_group: dict[int, int] = {}
    kind_of_storage: dict[int, tuple] = {}
    release_at: dict[int, list[int]] = {}

    def kind(v: Variable) -> tuple:
        return (v.dtype, shapes.shape(v))

    for i, node in enumerate(order):
        slot = _inplace_slot(node, i, group, group_last, plan.views, shapes)
        for o in node.outputs:
            if id(o) not in group:
                continue
            g = group[id(o)]
            if g != id(o):  # a view: shares its source's storage
                plan.storage[id(o)] = storage_of_group[g]
                continue
            if slot is not None:
                src = group[id(node.inputs[slot])]
                s = storage_of_group[src]
                plan.inplace[id(node)] = slot
                # the output continues the input's buffer: release it when the output dies
                release_at[group_last[src]].remove(s)
            else:
                bucket = free.get(kind(o))
                if bucket:
                    s = bucket.pop()
                else:
                    s = plan.n_storage
                    plan.n_storage += 1
                    kind_of_storage[s] = kind(o)
            storage_of_group[g] = s
            plan.storage[id(o)] = s
            release_at.setdefault(group_last[g], []).append(s)
        for s in release_at.pop(i, []):
            free.setdefault(kind_of_storage[s], []).append(s)
    for v_id, g in group.items():
        plan.intervals[v_id] = (group_def[g], group_last[g])
    plan.n_intermediates = sum(1 for v_id, g in group.items() if g == v_id)
    return plan


def _inplace_slot(node: Apply, step: int, group, group_last, views, shapes) -> int | None:
    """An input position whose buffer this elementwise node may overwrite, or None."""
    if not isinstance(node.op, Elemwise) or len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    for k, v in enumerate(node.inputs):
        g = group.get(id(v))
        if g is None or g != id(v) or id(v) in views:
            continue  # graph inputs, constants and views are never overwritten
        if group_last[g] != step:
            continue  # read again later (or a graph output)
        if v.dtype != out.dtype or not shapes.same(v, out):
            continue
        # another input reading the same buffer at other positions (a view) forbids it
        if any(group.get(id(w)) == g and w is not v for w in node.inputs):
            continue
        return k
    return None


@global_pass("memory", name="plan_memory")
def memory_planning(ctx: RewriteContext) -> None:
    """Store the plan as ``fgraph.memory_plan``."""
    ctx.fgraph.memory_plan = plan_memory(ctx.fgraph, ctx.shapes, ctx.toposort())
