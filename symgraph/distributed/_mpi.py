"""The MPI state of this process: mpi4py (imported on first use only), the communicator,
the MPI library loaded for generated code, the native handles, the failure paths."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

import numpy as np

from ..forksafe import renew_locks_after_fork

_state: dict = {}
_lock = threading.Lock()
renew_locks_after_fork(sys.modules[__name__], "_lock")  # a fork while another thread holds it

NATIVE_OPS = ("sum", "max", "min")


def mpi():
    """``mpi4py.MPI``, with a clear error when the ``[mpi]`` extra is not installed."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("sg.distributed needs mpi4py and an MPI library: "
                          "pip install 'symgraph[mpi]' (mpi4py and mpich)") from e
    return MPI


def initialized() -> bool:
    return "comm" in _state


def init(timeout: float | None = None, abort_on_error: bool = True):
    """Initialise MPI once; returns the communicator symgraph uses: ``COMM_WORLD``, whose
    handle is an ABI constant (the same on every rank, at every job size), so compiled code
    that names it can be cached and shared between ranks and runs."""
    with _lock:
        if "comm" in _state:
            if timeout is not None:
                start_watchdog(timeout)
            return _state["comm"]
        MPI = mpi()
        world = MPI.COMM_WORLD
        _state["comm"] = world
        if abort_on_error and world.Get_size() > 1:
            install_excepthook()
    # before any compiled step is loaded, which may come from the disk cache without lowering
    load_library()
    if timeout is not None:
        start_watchdog(timeout)
    return _state["comm"]


def comm():
    return _state["comm"] if "comm" in _state else init()


# --- failure paths --------------------------------------------------------------------------

def abort(message: str, code: int = 1) -> None:
    """Print ``message`` on stderr and end every process of the job (``MPI_Abort``)."""
    rank = mpi().COMM_WORLD.Get_rank()
    sys.stderr.write(f"[symgraph.distributed rank {rank}] {message}\n")
    sys.stderr.flush()
    mpi().COMM_WORLD.Abort(code)


def install_excepthook() -> None:
    """An uncaught exception on any rank prints its traceback, then aborts the whole job, so
    the other ranks (waiting in a collective) fail within seconds instead of hanging."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        abort(f"uncaught {kind.__name__} on this rank: aborting all ranks")

    sys.excepthook = hook
    if hasattr(threading, "excepthook"):
        previous_thread = threading.excepthook

        def thread_hook(args):
            previous_thread(args)
            abort(f"uncaught {args.exc_type.__name__} in thread {args.thread.name}: aborting all ranks")

        threading.excepthook = thread_hook


def heartbeat() -> None:
    """Tell the watchdog this rank is making progress (``shard`` calls it for every batch)."""
    _state["beat"] = time.monotonic()


def start_watchdog(timeout: float) -> None:
    """Abort the job when ``timeout`` seconds pass without a ``heartbeat()`` on this rank (a
    rank stuck in a collective that another rank never joins)."""
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    _state["timeout"] = float(timeout)
    heartbeat()
    if _state.get("watchdog") is not None:
        return

    def watch():
        while True:
            limit = _state["timeout"]
            idle = time.monotonic() - _state["beat"]
            if idle > limit:
                abort(f"watchdog: no progress for {idle:.0f} s (timeout {limit:g} s): another rank "
                      "probably died or is stuck; aborting all ranks")
                return
            time.sleep(min(1.0, limit / 4))

    t = threading.Thread(target=watch, name="symgraph-mpi-watchdog", daemon=True)
    _state["watchdog"] = t
    t.start()


# --- native code ------------------------------------------------------------------------------

def library_path() -> str:
    """The MPI shared library mpi4py loaded (from ``/proc/self/maps``)."""
    mpi()
    with open("/proc/self/maps") as fh:
        paths = {line.split()[-1] for line in fh if "/libmpi" in line}
    for p in sorted(paths):
        name = os.path.basename(p)
        if name.startswith(("libmpi.so", "libmpi_")) or name.startswith("libmpich"):
            return p
    if paths:
        return sorted(paths)[0]
    raise RuntimeError("sg.distributed: cannot find the MPI library mpi4py loaded in /proc/self/maps")


def load_library() -> str:
    """Make the MPI library's symbols visible to generated code (both the ELF loader, which
    looks in the global scope, and MCJIT)."""
    with _lock:
        return _load_library()


def _load_library() -> str:
    if "library" in _state:
        return _state["library"]
    path = library_path()
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    from ..backends import llvm_jit
    llvm_jit.llvm().load_library_permanently(path)
    _state["library"] = path
    return path


def _check_abi(MPI) -> None:
    if not MPI.Get_library_version().startswith(("MPICH", "Intel(R) MPI")) or \
            not 0 < MPI._handleof(MPI.COMM_WORLD) < 2**32:
        raise NotImplementedError(
            "sg.distributed: the llvm backend's all-reduce calls MPI through the MPICH ABI (MPICH, "
            f"Intel MPI, Cray MPICH); this MPI is {MPI.Get_library_version().splitlines()[0]!r}. "
            "Use backend='reference' or an MPICH-ABI library.")


_DATATYPES = {"float32": "FLOAT", "float64": "DOUBLE", "int64": "INT64_T", "int32": "INT32_T",
              "int16": "INT16_T", "int8": "INT8_T", "uint8": "UINT8_T", "bool": "C_BOOL"}


def mpi_op(op: str, dtype: str):
    """The ``mpi4py`` reduction for ``op`` on ``dtype`` (bool: any / all)."""
    MPI = mpi()
    if dtype == "bool":
        return MPI.LAND if op == "min" else MPI.LOR
    return {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]


def mpi_datatype(dtype: str):
    return getattr(mpi(), _DATATYPES[dtype])


def native_handles(dtype: str, op: str) -> tuple[int, int, int]:
    """``(datatype, op, comm)`` handles for generated code (loads the library first)."""
    MPI = mpi()
    _check_abi(MPI)
    load_library()
    return (MPI._handleof(mpi_datatype(dtype)), MPI._handleof(mpi_op(op, dtype)),
            MPI._handleof(comm()))


def start_allreduce(send: np.ndarray, recv: np.ndarray, op_handle: int):
    """``MPI_Iallreduce`` of ``send`` into ``recv`` (in place when they are the same array) with
    the reduction whose native handle is ``op_handle``; returns the request."""
    MPI = mpi()
    op = next(o for o in (MPI.SUM, MPI.MAX, MPI.MIN, MPI.LAND, MPI.LOR) if MPI._handleof(o) == op_handle)
    datatype = mpi_datatype(send.dtype.name)
    if send is recv:
        return comm().Iallreduce(MPI.IN_PLACE, [recv, datatype], op=op)
    return comm().Iallreduce([send, datatype], [recv, datatype], op=op)


def allreduce_array(x: np.ndarray, op: str) -> np.ndarray:
    """``x`` reduced over all ranks with ``op`` (sum / max / min), through mpi4py."""
    shape = np.shape(x)
    x = np.ascontiguousarray(x)  # (at least 1-d)
    out = np.empty_like(x)
    if x.size:
        comm().Allreduce([x, mpi_datatype(x.dtype.name)], [out, mpi_datatype(x.dtype.name)],
                         op=mpi_op(op, x.dtype.name))
    return out.reshape(shape)
