"""Data-parallel training over MPI processes (the ``[mpi]`` extra: mpi4py and an MPI library).

Launch N copies of the script (``mpiexec -n 2 python train.py``); each process builds the same
graph, ``broadcast`` gives every process the same starting weights, ``shard`` hands each its
part of every global batch, and ``data_parallel`` / ``reduce_gradients`` average the gradients
over all processes *inside* the compiled step (``allreduce`` is a graph op).  mpi4py is
imported only when one of these functions is called; ``import symgraph`` never imports it.
See docs/distributed.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..graph.basic import SharedVariable, Variable
from . import _mpi
from ._mpi import heartbeat
from .ops import AllReduce

# a message's latency (microseconds) is small against moving 4 MiB (a millisecond or more), and the
# last layers' bucket starts while most of the backward pass is still to run
DEFAULT_BUCKET_BYTES = 4 << 20


def init(timeout: float | None = None, abort_on_error: bool = True):
    """Initialise MPI (once) and return the communicator symgraph uses.

    ``abort_on_error``: an uncaught exception on any rank aborts the whole job (``MPI_Abort``),
    so the others fail within seconds instead of waiting forever in a collective.
    ``timeout``: also abort when this rank makes no progress (no ``heartbeat()``, which
    ``shard`` calls for every batch) for that many seconds."""
    return _mpi.init(timeout=timeout, abort_on_error=abort_on_error)


def rank() -> int:
    """This process's rank, 0 to ``size() - 1``."""
    return _mpi.comm().Get_rank()


def size() -> int:
    """The number of processes."""
    return _mpi.comm().Get_size()


def is_main() -> bool:
    """Whether this is rank 0 (the rank that prints, saves checkpoints, ...)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank reaches this point."""
    _mpi.comm().Barrier()


# --- consistency across ranks -----------------------------------------------------------------

def _signature(values: Sequence) -> list[tuple[str, tuple, str]]:
    out = []
    for i, v in enumerate(values):
        name = v.label() if isinstance(v, Variable) and v.name else f"#{i}"
        shape = tuple(np.shape(v.get_value())) if isinstance(v, SharedVariable) else tuple(v.type.shape)
        out.append((name, shape, v.dtype))
    return out


def check_same(values: Sequence, what: str = "parameter") -> None:
    """Raise ``ValueError`` on every rank, naming the first ``what`` whose name, shape or dtype
    differs from rank 0's (an all-gather of the signatures, so no rank is left waiting)."""
    mine = _signature(values)
    everyone = _mpi.comm().allgather(mine)
    ref = everyone[0]
    for r, sig in enumerate(everyone):
        if len(sig) != len(ref):
            raise ValueError(f"sg.distributed: rank {r} has {len(sig)} {what}s but rank 0 has {len(ref)}")
        for (n0, s0, d0), (n, s, d) in zip(ref, sig):
            if (s0, d0) != (s, d) or n0 != n:
                raise ValueError(f"sg.distributed: {what} {n!r} is {d}{list(s)} on rank {r} but rank 0 "
                                 f"has {n0!r} {d0}{list(s0)}: every rank must build the same graph")


def broadcast(params: Sequence[SharedVariable], root: int = 0) -> None:
    """Give every rank ``root``'s values of ``params`` (shared variables), so all processes
    start from the same weights.  Checks first that every rank has the same parameters."""
    params = list(params)
    check_same(params)
    c = _mpi.comm()
    for p in params:
        value = np.ascontiguousarray(p.get_value())
        c.Bcast([value, _mpi.mpi_datatype(value.dtype.name)], root=root)
        if c.Get_rank() != root:
            p.set_value(value)


# --- reductions in the graph -------------------------------------------------------------------

def allreduce(x, op: str = "mean") -> Variable:
    """``x`` reduced over all ranks (``op``: mean, sum, max, min) as a graph op: the reduction
    runs inside the compiled function's call (generated code calls the MPI library)."""
    init()
    if op == "mean":
        y = AllReduce("sum")(x)
        if not y.dtype.startswith("float"):
            raise TypeError(f"allreduce: op='mean' needs a float tensor, got {y.dtype}")
        from ..ops import elemwise as E
        return E.mul(y, np.asarray(1.0 / size(), dtype=y.dtype))
    return AllReduce(op)(x)


def _buckets(values: list, bucket_bytes: int) -> list[list[int]]:
    """Indices of ``values`` grouped into buckets of one dtype, about ``bucket_bytes`` each,
    from the last value to the first (the order backpropagation produces gradients in)."""
    buckets: list[list[int]] = []
    open_: dict[str, tuple[list[int], int]] = {}
    for i in reversed(range(len(values))):
        v = values[i]
        nbytes = (v.size or 0) * np.dtype(v.dtype).itemsize
        idx, used = open_.get(v.dtype, (None, 0))
        if idx is None or (used and used + nbytes > bucket_bytes):
            idx, used = [], 0
            buckets.append(idx)
        idx.append(i)
        open_[v.dtype] = (idx, used + nbytes)
    return buckets


def reduce_gradients(grads: Sequence[Variable], params: Sequence[SharedVariable] | None = None,
                     op: str = "mean", bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[Variable]:
    """``grads`` averaged (``op="mean"``) or summed over all ranks, in buckets of about
    ``bucket_bytes``: one ``allreduce`` per bucket, started as soon as its gradients are
    computed.  With ``params``, first checks that every rank has the same parameters (the
    error names the first that differs).  Pass the result as an optimiser's ``grads=``."""
    grads = list(grads)
    init()
    check_same(list(params) if params is not None else grads,
               "parameter" if params is not None else "gradient")
    if op not in ("mean", "sum"):
        raise ValueError(f"reduce_gradients: op must be 'mean' or 'sum', got {op!r}")
    out: list[Variable | None] = [None] * len(grads)
    n = size()
    from ..ops import elemwise as E
    for bucket in _buckets(grads, bucket_bytes):
        reduced = AllReduce("sum")(*[grads[i] for i in bucket])
        reduced = reduced if isinstance(reduced, list) else [reduced]
        for i, r in zip(bucket, reduced):
            if op == "mean":
                if not r.dtype.startswith("float"):
                    raise TypeError(f"reduce_gradients: gradient {i} is {r.dtype}; op='mean' needs floats")
                r = E.mul(r, np.asarray(1.0 / n, dtype=r.dtype))
            out[i] = r
    return out  # type: ignore[return-value]


def data_parallel(updates, grads: Sequence[Variable], params: Sequence[SharedVariable] | None = None,
                  op: str = "mean", bucket_bytes: int = DEFAULT_BUCKET_BYTES):
    """``updates`` (a list of ``(shared, new_value)`` or an optimiser) rebuilt with ``grads``
    reduced over all ranks (see ``reduce_gradients``): a single-process training step becomes
    data-parallel.  ``grads`` are the variables the updates were built from."""
    from ..graph.fgraph import clone_replace
    from ..nn.optimizers import Optimizer
    grads = list(grads)
    reduced = reduce_gradients(grads, params, op=op, bucket_bytes=bucket_bytes)
    pairs = list(updates)
    new = clone_replace([v for _, v in pairs], dict(zip(grads, reduced)))
    rebuilt = [(p, v) for (p, _), v in zip(pairs, new)]
    if isinstance(updates, Optimizer):
        return Optimizer(updates.name, rebuilt, updates.state, updates.params, updates.lr)
    return rebuilt


# --- data, metrics, checkpoints ---------------------------------------------------------------

def shard(*arrays: np.ndarray, batch_size: int, shuffle: bool = True, seed: int | None = None,
          drop_last: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """This rank's part of every global minibatch of ``batch_size`` rows.

    Every rank draws the same permutation (``seed``; None: rank 0 picks one and broadcasts it)
    through ``sg.nn.minibatches`` and takes rows ``[r*b, (r+1)*b)`` of each global batch, with
    ``b = batch_size // size()``.  So N processes see exactly the batches one process would, and
    a mean loss averaged over ranks equals the single-process mean.  ``batch_size`` must be a
    multiple of ``size()``; a final short batch is split as evenly as possible (ranks may differ
    by a row) and dropped when it has fewer rows than ranks."""
    from ..nn.training import minibatches
    n = size()
    if batch_size % n:
        raise ValueError(f"shard: batch_size {batch_size} is not a multiple of the {n} processes")
    if shuffle and seed is None:
        seed = _mpi.comm().bcast(int(np.random.SeedSequence().entropy % 2**63), root=0)
    r = rank()
    for batch in minibatches(*arrays, batch_size=batch_size, shuffle=shuffle, seed=seed,
                             drop_last=drop_last):
        rows = len(batch[0])
        if rows < n:
            continue
        bounds = np.linspace(0, rows, n + 1).round().astype(int) if rows % n else \
            np.arange(n + 1) * (rows // n)
        heartbeat()
        yield tuple(a[bounds[r]:bounds[r + 1]] for a in batch)


def allreduce_value(value, op: str = "sum") -> np.ndarray:
    """A NumPy value reduced over all ranks (``sum``, ``max``, ``min`` or ``mean``), in Python:
    for metrics and bookkeeping outside a compiled function."""
    arr = np.asarray(value)
    if op == "mean":
        return _mpi.allreduce_array(arr.astype(np.float64), "sum") / size()
    return _mpi.allreduce_array(arr, op)


def reduce_metrics(metrics: dict[str, float], weight: float = 1.0) -> dict[str, float]:
    """Metrics (mean loss, accuracy...) averaged over ranks, each rank weighted by ``weight``
    (e.g. its number of examples), so the result is the mean over all examples."""
    keys = sorted(metrics)
    local = np.array([float(metrics[k]) * weight for k in keys] + [float(weight)], dtype=np.float64)
    total = _mpi.allreduce_array(local, "sum")
    return {k: float(total[i] / total[-1]) for i, k in enumerate(keys)}


def save_checkpoint(path, params: Sequence[SharedVariable], optimizer=None, **extra) -> None:
    """``sg.nn.save_checkpoint`` on the main rank only (every rank holds the same values), then
    a barrier so no rank reads the file before it is written."""
    from ..nn.training import save_checkpoint as save
    if is_main():
        save(path, params, optimizer, **extra)
    barrier()


def load_checkpoint(path, params: Sequence[SharedVariable], optimizer=None) -> dict:
    """``sg.nn.load_checkpoint`` on the main rank, then its values broadcast to every rank (the
    file need only be readable there); returns the ``extra`` entries on every rank."""
    from ..nn.training import load_checkpoint as load
    extra = load(path, params, optimizer) if is_main() else None
    broadcast(list(params) + (list(optimizer.state) if optimizer is not None else []))
    return _mpi.comm().bcast(extra, root=0)


__all__ = ["init", "rank", "size", "is_main", "barrier", "broadcast", "check_same", "allreduce",
           "reduce_gradients", "data_parallel", "shard", "allreduce_value", "reduce_metrics",
           "save_checkpoint", "load_checkpoint", "heartbeat", "AllReduce"]
