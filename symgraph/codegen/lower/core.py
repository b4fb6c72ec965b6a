"""The ``Lowerer``: driver and shared machinery of the lowering, and ``lower()``.

``Lowerer.run`` walks the specialised nodes in order and calls ``op_<OpName>(node, op)`` for
each (defined in the op-family modules of this package, mixed into ``Lowerer``), or the op's own
``op.lower(lowerer, node)`` for ops outside symgraph.ops (distributed).  The methods here are
what those lowerings build on: storages and views, ``emit`` (which names a kernel by a hash of
its IR text), ``check_index``, ``defer``, and the generic map / reduce / copy kernels.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ...errors import CompileError
from ...graph.basic import Apply, Constant
from ...graph.fgraph import FunctionGraph
from .._scalar import S
from ..checks import CheckSite, input_names
from ..kernel_ir import Assign, Kernel, Program, Storage, Store, View, body_text, checked, iconst, load, local
from ..specialize import specialize
from ..symdim import as_size, known_equal, static_is, to_expr
from ..symdim import prod as size_prod
from .conv import ConvLowering
from .elemwise import ElemwiseLowering
from .helpers import (
    _expand_strides,
    _idx,
    _init_value,
    _loops,
    _loops_sub,
    _op_label,
    collapse,
    combine,
)
from .indexing import IndexingLowering
from .linalg import LinalgLowering
from .memory import plan_memory
from .nn import NNLowering
from .pool import PoolLowering
from .random import RandomLowering
from .schedule import overlap_schedule
from .shape import ShapeLowering
from .slicing import SliceLowering


class Lowerer(ShapeLowering, IndexingLowering, SliceLowering, ElemwiseLowering, LinalgLowering,
              NNLowering, PoolLowering, ConvLowering, RandomLowering):
    """Builds a ``Program`` for one shape signature.

    This class holds the driver (``run``) and the machinery every lowering uses (storages,
    views, ``emit``, ``check_index``, ``defer``, the map / reduce / copy kernels); the
    ``op_<OpName>`` methods come from the op-family mixins it inherits."""

    def __init__(self, fgraph: FunctionGraph, roots: list, shapes: list[tuple], values: dict | None = None,
                 target: str = "cpu"):
        self.fgraph = fgraph
        self.target = target  # "cpu" (llvm) or "cuda": where a lowering has per-target choices
        self.nodes, self.shape_of, self.value_of = specialize(fgraph, roots, shapes, values)
        if any(getattr(n.op, "overlaps", False) for n in self.nodes):
            self.nodes = overlap_schedule(self.nodes, self._traffic)
        self.storages: list[Storage] = []
        self.kernels: list[Kernel] = []
        self.env: dict[int, View] = {}
        self.inputs = []
        for i, v in enumerate(roots):
            st = self.new_storage("input", v.dtype, self.shape_of[id(v)], name=v.label())
            st.slot = i
            self.inputs.append(st)
            self.env[id(v)] = View.full(st, self.shape_of[id(v)])
        # one output storage per distinct graph output variable
        self.outputs: list[Storage] = []
        self.out_storage: dict[int, Storage] = {}
        self.output_map = []
        for v in fgraph.outputs:
            if id(v) not in self.out_storage:
                if isinstance(v, Constant):
                    self.shape_of[id(v)] = v.value.shape
                shp = self.shape_of[id(v)]
                st = self.new_storage("output", v.dtype, shp, name=v.label())
                st.slot = len(self.outputs)
                self.outputs.append(st)
                self.out_storage[id(v)] = st
            self.output_map.append(self.out_storage[id(v)].slot)
        self.current: Apply | None = None
        self._names: set[str] = set()
        self.checks: list[CheckSite] = []
        self.deferred: dict[int, list] = {}  # variable id -> kernels to emit before its first use
        self.placed: dict[int, View] = {}  # variable id -> where its producer writes it (place())
        self.buffers: dict[int, View] = {}  # node id -> a buffer its op's place() set up
        self.in_flight: list = []  # started collectives, oldest first: progressed after every kernel (emit)
        for node in self.nodes:
            if hasattr(node.op, "place"):  # e.g. AllReduce: gradients written into its buffer
                node.op.place(self, node)

    def _traffic(self, node: Apply) -> int:
        """Elements a node reads and writes (a symbolic size counts as 1): the scheduler's
        estimate of its cost."""
        total = 0
        for v in list(node.inputs) + list(node.outputs):
            n = size_prod(self.shape_of.get(id(v), ()))
            total += n if isinstance(n, int) else 1
        return total

    def new_storage(self, kind, dtype, shape, name="", value=None) -> Storage:
        size = size_prod(shape)
        st = Storage(len(self.storages), kind, dtype, size, value=value, name=name,
                     shape=tuple(as_size(d) for d in shape))
        self.storages.append(st)
        return st

    def out_view(self, v, shape=None, dtype=None) -> View:
        """A fresh contiguous view for variable ``v``: its output storage if it is one, the
        place ``place`` gave it, or a new temp."""
        shape = tuple(self.shape_of[id(v)] if shape is None else shape)
        spot = self.placed.get(id(v))
        if spot is not None and dtype in (None, v.dtype) and tuple(spot.shape) == shape:
            return spot
        st = self.out_storage.get(id(v))
        if st is not None and dtype in (None, v.dtype) and known_equal(st.size, size_prod(shape)):
            return View.full(st, shape)
        return View.full(self.new_storage("temp", dtype or v.dtype, shape), shape)

    def temp(self, dtype, shape) -> View:
        return View.full(self.new_storage("temp", dtype, shape), shape)

    def readers(self, v) -> int:
        """How many nodes read variable ``v`` (a graph output counts as one more)."""
        n = sum(1 for node in self.nodes for x in node.inputs if x is v)
        return n + (id(v) in self.out_storage)

    def place(self, v, spot: View) -> None:
        """Have the producer of ``v`` write it into ``spot`` (when its lowering takes a fresh
        ``out_view``; otherwise ``v`` lives elsewhere and the reader copies it)."""
        self.placed[id(v)] = spot

    def check_index(self, index: S.SExpr, lo: int, hi: int, kind: str = "index",
                    axis: int = 0, wrapped: bool = False) -> S.SExpr:
        """``index`` (read from run-time data) checked to lie in ``[lo, hi)`` for the node
        being lowered; the call fails with an ``IndexError`` naming that node otherwise.

        This is the one hook every lowering that reads an index or a label from an array
        uses: wrap the int64 value right after the load, e.g. ``label = self.check_index(
        S.cast(t.load([r]), "int64"), 0, n, kind="label")``.  ``kind`` picks the message
        (``"index"``: NumPy's ``index .. is out of bounds for axis ..``; ``"label"``:
        cross-entropy's ``labels must be in [0, n), got values in [min, max]``).  For NumPy
        indices, wrap negative values first (``k + n`` for ``k < 0``) and check against
        ``[0, n)`` with ``wrapped=True``: the renderers then need a single unsigned compare.
        The result is always a safe index in ``[lo, hi - 1]``.
        """
        node = self.current
        site = CheckSite(len(self.checks), kind, int(lo), as_size(hi),
                         _op_label(node) if node is not None else "gather", int(axis),
                         tuple(tuple(self.shape_of.get(id(v), getattr(v.type, "shape", ())))
                               for v in node.inputs) if node is not None else (),
                         node.trace if node is not None else None, wrapped,
                         input_names(node.inputs) if node is not None else ())
        self.checks.append(site)
        return checked(index, site.site, lo, hi, site.extremes)

    def defer(self, variables, emit) -> None:
        """Run ``emit()`` (which emits kernels) just before the first kernel that reads one of
        ``variables``, or at the end of the program: a non-blocking collective's wait goes
        as late as possible, so the reduction overlaps the kernels in between."""
        pending = [emit]
        for v in variables:
            self.deferred[id(v)] = pending

    def finish_deferred(self, key: int | None = None) -> None:
        """Emit the deferred kernels of variable id ``key`` (all of them for None)."""
        lists = [self.deferred.get(key)] if key is not None else list(self.deferred.values())
        for pending in lists:
            while pending:
                pending.pop()()
        if key is None:
            self.deferred.clear()

    def view(self, v) -> View:
        if self.deferred and id(v) in self.deferred:
            self.finish_deferred(id(v))
        if id(v) in self.env:
            return self.env[id(v)]
        if id(v) not in self.value_of and isinstance(v, Constant):
            self.value_of[id(v)] = v.value
            self.shape_of[id(v)] = v.value.shape
        if id(v) in self.value_of and self.value_of[id(v)].dtype == object:
            return self._sizes(v, self.value_of[id(v)])
        if id(v) in self.value_of:
            val = np.asarray(self.value_of[id(v)], order="C")  # keeps 0-d values 0-d
            st = self.new_storage("const", v.dtype, val.shape, value=val, name=v.label())
            self.env[id(v)] = View.full(st, val.shape)
            return self.env[id(v)]
        raise CompileError(f"internal error: no value for {v}")  # pragma: no cover

    def _sizes(self, v, val: np.ndarray) -> View:
        """A small int value computed from run-time sizes (``x.shape[0] // 2`` in a
        shape-generic program), stored by a kernel."""
        out = self.temp(v.dtype, val.shape)
        body = [Store(out.storage, iconst(j), S.cast(to_expr(x), v.dtype))
                for j, x in enumerate(val.reshape(-1).tolist())]
        self.emit("sizes", body, 0, [], [repr(out.storage)])
        self.env[id(v)] = out
        return out

    def emit(self, base: str, body: list, work: int, inputs=(), outputs=()) -> Kernel:
        text = body_text(body)
        digest = hashlib.sha1(f"{base}\n{text}".encode()).hexdigest()[:6]
        node = self.current
        ops = [f"{_op_label(node)} -> {', '.join(o.label() for o in node.outputs)}"] if node else ["copy"]
        name = f"{base}_{digest}"
        n = 2
        while name in self._names:
            name = f"{base}_{digest}_{n}"
            n += 1
        self._names.add(name)
        k = Kernel(name, body, ops, list(inputs), list(outputs), as_size(work))
        self.kernels.append(k)
        if self.in_flight and not base.startswith("mpi_"):
            self._progress()
        return k

    def _progress(self) -> None:
        """A kernel testing the latest collective in flight: MPICH advances non-blocking
        collectives only inside MPI calls (without these the transfer waits for ``MPI_Wait``),
        and a test of an unfinished request advances all of them; the latest started is the
        last to finish, and one call per kernel keeps the cost flat in the number of buckets."""
        self.emit("mpi_progress", [self.in_flight[-1]], 0)

    # --- generic kernels -------------------------------------------------------------------
    def map_kernel(self, base: str, out: View, expr: S.SExpr, ins: list[View]) -> None:
        """``out[i] = expr(ins[0][i], ins[1][i], ...)`` with broadcasting."""
        shape = out.shape
        views = [out] + [v.broadcast(shape) for v in ins]
        cshape, cstrides = collapse(list(shape), [list(v.strides) for v in views])
        cviews = [View(v.storage, tuple(cshape), tuple(st), v.offset) for v, st in zip(views, cstrides)]
        idx = _idx(len(cshape))
        mapping = {i: cv.load(idx) for i, cv in enumerate(cviews[1:])}
        (value,) = S.substitute([expr], mapping)
        value = S.cast(value, out.dtype)
        body = _loops(cshape, [Store(out.storage, cviews[0].index(idx), value)])
        self.emit(base, body, out.size, [repr(v.storage) for v in ins], [repr(out.storage)])

    def copy(self, src: View, dst: View) -> None:
        self.map_kernel("copy", dst, S.inp(0, src.dtype), [src])

    def contiguous(self, v: View) -> View:
        if v.is_contiguous:
            return v
        out = self.temp(v.dtype, v.shape)
        self.copy(v, out)
        return out

    def reduce_kernel(self, base, kind, out: View, full_shape, red_axes, expr, ins: list[View]):
        """``out = kind over red_axes of expr(ins...)``; ``out`` has the kept axes, contiguous."""
        full_shape = tuple(full_shape)
        views = [v.broadcast(full_shape) for v in ins]
        kept = [a for a in range(len(full_shape)) if a not in red_axes]
        out_full = View(out.storage, full_shape,
                        tuple(0 if a in red_axes else s for a, s in
                              zip(range(len(full_shape)), _expand_strides(out, full_shape, kept))),
                        out.offset)
        # collapse axes of equal kind, dropping size-1 axes
        shape = list(full_shape)
        is_red = [a in red_axes for a in range(len(shape))]
        keep = [a for a, d in enumerate(shape) if not static_is(d, 1)]
        shape = [shape[a] for a in keep]
        is_red = [is_red[a] for a in keep]
        strides = [[v.strides[a] for a in keep] for v in [out_full] + views]
        a = len(shape) - 2
        while a >= 0:
            if is_red[a] == is_red[a + 1] and all(known_equal(st[a], st[a + 1] * shape[a + 1])
                                                  for st in strides):
                shape[a] *= shape[a + 1]
                del shape[a + 1], is_red[a + 1]
                for st in strides:
                    st[a] = st[a + 1]
                    del st[a + 1]
            a -= 1
        cviews = [View(v.storage, tuple(shape), tuple(st), v.offset)
                  for v, st in zip([out_full] + views, strides)]
        n = len(shape)
        idx = _idx(n)
        (value,) = S.substitute([expr], {i: cv.load(idx) for i, cv in enumerate(cviews[1:])})
        value = S.cast(value, out.dtype)
        init = S.const(_init_value(kind, out.dtype), out.dtype)
        kept_axes = [a for a in range(n) if not is_red[a]]
        red = [a for a in range(n) if is_red[a]]
        work = size_prod(full_shape)
        out_index = cviews[0].index(idx)
        if not red:  # nothing to reduce (size-1 axes): a map
            body = _loops(shape, [Store(out.storage, out_index, value)])
        elif is_red[-1]:
            # accumulate in a local; the reduced axes are the inner loops
            acc = local("acc", out.dtype)
            inner = [Assign("acc", init)]
            inner += _loops_sub(shape, red, [Assign("acc", combine(kind, acc, value), reduction=True)],
                                parallel=False)
            inner.append(Store(out.storage, out_index, acc))
            body = _loops_sub(shape, kept_axes, inner, parallel=True) if kept_axes else inner
        else:
            # the innermost axis is kept: accumulate into the output (vectorises over it)
            outer = []
            for a in range(n):
                if is_red[a]:
                    break
                outer.append(a)
            rest = list(range(len(outer), n))
            rest_kept = [a for a in rest if not is_red[a]]
            acc_val = combine(kind, load(out.storage, out_index), value)
            inner = _loops_sub(shape, rest_kept, [Store(out.storage, out_index, init)], parallel=False)
            inner += _loops_sub(shape, rest, [Store(out.storage, out_index, acc_val)], parallel=False)
            body = _loops_sub(shape, outer, inner, parallel=True) if outer else inner
        self.emit(base, body, work, [repr(v.storage) for v in ins], [repr(out.storage)])

    # --- driver ----------------------------------------------------------------------------
    def run(self) -> Program:
        for v in self.fgraph.outputs:  # outputs that are inputs or constants
            if v.owner is None:
                self._publish(v)
        for node in self.nodes:
            self.current = node
            if all(id(o) in self.value_of for o in node.outputs):
                for o in node.outputs:
                    if id(o) in self.out_storage:
                        self._publish(o)
                continue
            method = getattr(self, "op_" + type(node.op).__name__, None)
            if method is None and hasattr(node.op, "lower"):  # ops outside this module (distributed)
                method = _own_lowering(self)
            if method is None:
                raise CompileError(f"the llvm backend cannot lower {node.op} "
                                   f"({type(node.op).__name__})")
            method(node, node.op)
            for o in node.outputs:
                if id(o) in self.out_storage:
                    self._publish(o)
        self.current = None
        self.finish_deferred()
        shapes = [self.shape_of[id(self._first_out(st))] for st in self.outputs]
        return Program(self.storages, self.kernels, self.inputs, self.outputs, shapes,
                       self.output_map, checks=self.checks)

    def _first_out(self, st):
        for v in self.fgraph.outputs:
            if self.out_storage[id(v)] is st:
                return v

    def _publish(self, v) -> None:
        """Make sure the output storage of ``v`` holds its value."""
        st = self.out_storage[id(v)]
        src = self.view(v)
        if src.storage is st:
            return
        self.copy(src, View.full(st, self.shape_of[id(v)]))


def _own_lowering(lowerer: Lowerer):
    """The lowering of an op that carries its own (``op.lower(lowerer, node)``)."""
    return lambda node, op: op.lower(lowerer, node)


def lower(fgraph: FunctionGraph, roots: list, shapes: list[tuple], dims: list | None = None,
          values: dict | None = None, target: str = "cpu") -> Program:
    """Lower ``fgraph`` for inputs of the given shapes into a kernel-IR program.

    For shape-generic code, ``shapes`` hold ``symdim`` leaves where sizes are run-time values
    and ``dims`` says where the caller reads each ((input slot, axis), axis -1 for the value of
    an int scalar input, whose leaf ``values`` maps its slot to); call it inside
    ``symdim.tracing()`` and keep the guards with the program.  ``target`` (``"cpu"`` or
    ``"cuda"``) picks the per-target choices (the convolution path, ``conv.conv_path``)."""
    prog = Lowerer(fgraph, roots, shapes, values, target).run()
    prog.dims = list(dims or [])
    plan_memory(prog)
    return prog
