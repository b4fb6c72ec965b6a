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

    def lower(self, lw, node) -> None:
        """Pack the inputs into a send buffer, start the reduction into a receive buffer (the
        outputs are views of it), and defer the wait to the first reader."""
        from ..codegen.kernel_ir import Collective, View, contiguous_strides
        dtype = node.outputs[0].dtype
        shapes = [tuple(lw.shape_of[id(v)]) for v in node.inputs]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        total = sum(sizes)
        if total > MAX_COUNT:
            raise CompileError(f"allreduce: a bucket of {total} elements is over MPI's int count "
                               f"({MAX_COUNT}); split it (sg.distributed.reduce_gradients buckets)")
        try:
            datatype, op, comm = _mpi.native_handles(dtype, self.op)
        except NotImplementedError as e:
            raise CompileError(str(e)) from None
        send = lw.temp(dtype, (max(total, 1),))
        recv = lw.temp(dtype, (max(total, 1),))
        start = 0
        for v, shape, size in zip(node.inputs, shapes, sizes):
            part = View(send.storage, shape, contiguous_strides(shape), start)
            if size:
                lw.copy(lw.view(v), part)
            start += size
        start = 0
        for o, shape, size in zip(node.outputs, shapes, sizes):
            lw.env[id(o)] = View(recv.storage, shape, contiguous_strides(shape), start)
            start += size
        if not total:
            return
        requests = lw.temp("int32", (1,))
        call = dict(send=send.storage, recv=recv.storage, count=total, datatype=datatype, op=op,
                    comm=comm, requests=requests.storage)
        names = [repr(send.storage)]
        lw.emit("mpi_allreduce_start", [Collective("start", **call)], total, names, [repr(recv.storage)])

        def wait():
            current, lw.current = lw.current, node
            lw.emit("mpi_allreduce_wait", [Collective("wait", **call)], total, names, [repr(recv.storage)])
            lw.current = current

        lw.defer(node.outputs, wait)
