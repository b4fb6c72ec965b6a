"""``AllReduce``: the graph op that reduces tensors over all MPI ranks inside a compiled call.

One node reduces a *bucket*: several tensors of one dtype, packed into one buffer and reduced
by one MPI call.  The reference backend runs ``MPI_Allreduce`` through mpi4py (the oracle); the
llvm backend packs the bucket, starts ``MPI_Iallreduce`` from the generated code and waits
only before the first kernel that reads a result, so the reduction overlaps the kernels
scheduled in between (the rest of the backward pass).
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..graph.basic import Apply, Op, as_variable
from . import _mpi

MAX_COUNT = 2**31 - 1  # MPI counts are C ints


class AllReduce(Op):
    """``op`` (sum / max / min) of every input over all ranks; outputs match the inputs."""

    __props__ = ("op",)
    nondeterministic = True  # never constant-folded or merged: every call communicates
    overlaps = True  # the lowering schedules its readers after all other work (see codegen/lower/schedule.py)

    def __init__(self, op: str = "sum"):
        if op not in _mpi.NATIVE_OPS:
            raise ValueError(f"allreduce: op must be one of {_mpi.NATIVE_OPS}, got {op!r}")
        self.op = op

    def __str__(self) -> str:
        return f"AllReduce{{{self.op}}}"

    def make_node(self, *xs) -> Apply:
        _mpi.init()  # a step holding this op can only run with MPI up (and its library loaded)
        xs = [as_variable(x) for x in xs]
        if not xs:
            raise ValueError("allreduce: give at least one tensor")
        dtypes = {x.dtype for x in xs}
        if len(dtypes) > 1:
            raise TypeError(f"allreduce: one bucket holds one dtype, got {sorted(dtypes)}")
        return Apply(self, xs, [x.type for x in xs])

    def perform(self, node, inputs):
        flat = np.concatenate([np.ascontiguousarray(x).reshape(-1) for x in inputs])
        out = _mpi.allreduce_array(flat, self.op)
        results, start = [], 0
        for x in inputs:
            x = np.asarray(x)
            results.append(out[start:start + x.size].reshape(x.shape))
            start += x.size
        return results

    def L_op(self, node, inputs, outputs, output_grads):
        if self.op != "sum":
            return super().L_op(node, inputs, outputs, output_grads)
        # d/dx_r of sum_r' x_r' is the sum of every rank's output gradient
        grads = AllReduce("sum")(*output_grads)
        return list(grads) if isinstance(grads, list) else [grads]

    def _layout(self, lw, node) -> tuple[list[tuple], list[int], int]:
        """The inputs' shapes, sizes and their total (the bucket's element count)."""
        shapes = [tuple(lw.shape_of[id(v)]) for v in node.inputs]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        total = sum(sizes)
        if total > MAX_COUNT:
            raise CompileError(f"allreduce: a bucket of {total} elements is over MPI's int count "
                               f"({MAX_COUNT}); split it (sg.distributed.reduce_gradients buckets)")
        return shapes, sizes, total

    def place(self, lw, node) -> None:
        """Before anything is lowered: make the bucket's buffer and have each input that only
        this node reads written straight into its part of it (no packing copy)."""
        from ..codegen.kernel_ir import View, contiguous_strides
        shapes, sizes, total = self._layout(lw, node)
        bucket = lw.temp(node.outputs[0].dtype, (max(total, 1),))
        lw.buffers[id(node)] = bucket
        start, seen = 0, set()
        for v, shape, size in zip(node.inputs, shapes, sizes):
            if size and v.owner is not None and id(v) not in seen and lw.readers(v) == 1:
                lw.place(v, View(bucket.storage, shape, contiguous_strides(shape), start))
            seen.add(id(v))
            start += size

    def lower(self, lw, node) -> None:
        """Copy into the bucket the inputs not already written there (see ``place``), start
        the reduction in place (the outputs are views of the bucket), test it after every
        following kernel (progress) and defer the wait to the first reader."""
        from ..codegen.kernel_ir import Collective, View, contiguous_strides
        dtype = node.outputs[0].dtype
        shapes, sizes, total = self._layout(lw, node)
        try:
            datatype, op, comm = _mpi.native_handles(dtype, self.op)
        except NotImplementedError as e:
            raise CompileError(str(e)) from None
        bucket = lw.buffers.get(id(node)) or lw.temp(dtype, (max(total, 1),))
        start = 0
        for v, o, shape, size in zip(node.inputs, node.outputs, shapes, sizes):
            part = View(bucket.storage, shape, contiguous_strides(shape), start)
            if size and not _is_at(lw.view(v), part):
                lw.copy(lw.view(v), part)
            lw.env[id(o)] = part
            start += size
        if not total:
            return
        requests = lw.temp("int32", (2,))  # the request and MPI_Test's flag
        call = dict(send=bucket.storage, recv=bucket.storage, count=total, datatype=datatype, op=op,
                    comm=comm, requests=requests.storage)
        names = [repr(bucket.storage)]
        lw.emit("mpi_allreduce_start", [Collective("start", **call)], total, names, names)
        progress = Collective("test", **call)
        lw.in_flight.append(progress)

        def wait():
            current, lw.current = lw.current, node
            lw.in_flight.remove(progress)
            lw.emit("mpi_allreduce_wait", [Collective("wait", **call)], total, names, names)
            lw.current = current

        lw.defer(node.outputs, wait)


def _is_at(view, part) -> bool:
    """Whether ``view`` already holds its elements where ``part`` (contiguous) puts them."""
    return view.storage is part.storage and view.offset == part.offset and view.is_contiguous
