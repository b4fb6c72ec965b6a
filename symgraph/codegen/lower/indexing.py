"""Lowering of indexing: Subtensor (basic slicing is a view; integer-array indices a
``gather`` kernel) and IndexAdd / IndexSet (a single-threaded ``scatter`` kernel), both through
one index plan that maps an output multi-index to an element of the indexed array and checks
run-time indices."""

from __future__ import annotations

import numpy as np

from ...errors import CompileError
from ...graph.types import broadcast_shapes
from .._scalar import S
from ..kernel_ir import Store, View, iadd, iconst, imul, load
from ..symdim import slice_indices
from .helpers import _idx, _loops


class IndexingLowering:
    """``op_*`` methods of ``Lowerer`` for symgraph.ops.indexing."""

    def op_Subtensor(self, node, op):
        x = self.view(node.inputs[0])
        out_shape = self.shape_of[id(node.outputs[0])]
        plan = _index_plan(op.spec, x, [self.shape_of[id(v)] for v in node.inputs[1:]], out_shape,
                           self.check_index)
        if not op.advanced:
            self.env[id(node.outputs[0])] = View(x.storage, tuple(out_shape), plan.strides, plan.offset)
            return
        out = self.out_view(node.outputs[0])
        arrays = [self.view(v) for v in node.inputs[1:]]
        idx = _idx(len(out_shape))
        body = _loops(out_shape, [Store(out.storage, out.index(idx),
                                        load(x.storage, plan.source_index(idx, arrays)))])
        self.env[id(node.outputs[0])] = out
        self.emit("gather", body, out.size, [repr(x.storage)], [repr(out.storage)])

    def op_IndexAdd(self, node, op):
        self._scatter(node, op, "add")

    def op_IndexSet(self, node, op):
        self._scatter(node, op, None)

    def _scatter(self, node, op, accumulate: str | None) -> None:
        """``out = x; out[key] (+)= y`` in index order (one thread: repeated indices add up,
        or the last write wins, as in NumPy)."""
        x, y = self.view(node.inputs[0]), self.view(node.inputs[1])
        out = self.out_view(node.outputs[0])
        self.copy(x, out)
        arrays = [self.view(v) for v in node.inputs[2:]]
        sub_shape = _subtensor_shape(op.spec, out, [v.shape for v in arrays])
        plan = _index_plan(op.spec, out, [v.shape for v in arrays], sub_shape, self.check_index)
        yb = y.broadcast(sub_shape)
        idx = _idx(len(sub_shape))
        body = _loops(sub_shape, [Store(out.storage, plan.source_index(idx, arrays), yb.load(idx),
                                        accumulate=accumulate)], parallel=False)
        self.emit("scatter_add" if accumulate else "scatter", body, yb.size, [repr(y.storage)],
                  [repr(out.storage)])
        self.env[id(node.outputs[0])] = out


class _IndexPlan:
    """How an output multi-index of ``x[spec]`` maps to an element of ``x``."""

    def __init__(self, offset, strides, terms, adv_pos, adv_ndim, adv_shape, adv_entries, x,
                 check):
        self.offset, self.strides, self.terms = offset, tuple(strides), terms
        self.adv_pos, self.adv_ndim, self.adv_shape = adv_pos, adv_ndim, adv_shape
        self.adv_entries, self.x = adv_entries, x
        self.check = check  # Lowerer.check_index

    def source_index(self, idx, arrays: list[View]) -> S.SExpr:
        expr = iconst(self.offset)
        for pos, st in self.terms:
            expr = iadd(expr, imul(idx[pos], iconst(st)))
        if self.adv_entries:
            aidx = idx[self.adv_pos:self.adv_pos + self.adv_ndim]
            for j, axis, axis_len, st in self.adv_entries:
                arr = arrays[j].broadcast(self.adv_shape)
                # NumPy: -len <= k < len, negative indices count from the end
                k = S.cast(arr.load(aidx), "int64")
                k = S.apply("where", S.apply("lt", k, iconst(0)), S.apply("add", k, iconst(axis_len)), k)
                if not _known_within(arrays[j], -axis_len, axis_len):
                    k = self.check(k, 0, axis_len, axis=axis, wrapped=True)
                expr = iadd(expr, imul(k, iconst(st)))
        return expr


def _known_within(v: View, lo: int, hi: int) -> bool:
    """A constant index array whose values all lie in ``[lo, hi)`` needs no run-time check."""
    st = v.storage
    if st.kind != "const" or st.value is None:
        return False
    vals = np.asarray(st.value)
    return vals.size == 0 or (int(vals.min()) >= lo and int(vals.max()) < hi)


def _index_plan(spec, x: View, idx_shapes, out_shape, check) -> _IndexPlan:
    spec = list(spec)
    consumed = sum(1 for e in spec if e[0] != "n")
    spec += [("s", None, None, None)] * (x.ndim - consumed)
    advanced = any(e[0] == "a" for e in spec)
    adv_shape = tuple(broadcast_shapes(*idx_shapes)) if advanced else ()
    adv_positions = [p for p, e in enumerate(spec) if e[0] == "a" or (advanced and e[0] == "i")]
    adjacent = bool(adv_positions) and adv_positions == list(range(adv_positions[0], adv_positions[-1] + 1))
    offset = x.offset
    strides, terms, adv_entries = [], [], []
    out_axis = 0
    axis = 0
    adv_pos = 0
    if advanced and not adjacent:
        out_axis = len(adv_shape)
        strides += [0] * len(adv_shape)
    placed = not advanced or not adjacent
    for e in spec:
        if e[0] == "n":
            strides.append(0)
            out_axis += 1
            continue
        d, st = x.shape[axis], x.strides[axis]
        if e[0] in ("i", "a") and advanced and not placed:
            adv_pos = out_axis
            strides += [0] * len(adv_shape)
            out_axis += len(adv_shape)
            placed = True
        if e[0] == "i":
            k = e[1] + d if e[1] < 0 else e[1]
            offset += k * st
        elif e[0] == "s":
            start, _stop, step, _len = slice_indices(e[1], e[2], e[3], d)
            offset += start * st
            strides.append(st * step)
            terms.append((out_axis, st * step))
            out_axis += 1
        else:
            adv_entries.append((e[1], axis, d, st))
        axis += 1
    if len(strides) != len(out_shape):  # pragma: no cover - shape inference disagrees
        raise CompileError(f"internal error: index plan for {spec} has rank {len(strides)}, "
                           f"expected {len(out_shape)}")
    return _IndexPlan(offset, strides, terms, adv_pos, len(adv_shape), adv_shape, adv_entries, x,
                      check)


def _subtensor_shape(spec, x: View, idx_shapes) -> tuple:
    from ...ops.indexing import _infer_shape
    return tuple(_infer_shape(spec, x.shape, idx_shapes))
