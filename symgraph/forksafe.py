"""Locks that a forked child gets afresh.

A lock another thread of the parent held when the process forked stays locked in the child,
where that thread does not exist, so the child's first call through it would wait forever.
Objects register their lock attributes with ``renew_locks_after_fork``; in a child made by
``os.fork`` or ``multiprocessing`` (fork start method) each of them is replaced by a new,
unlocked lock before any other code of the child runs (a module registers itself for its
module-level lock: ``distributed/_mpi.py``, ``backends/cuda_runtime.py``).  The C call path's
``ArenaLock``s do the same on their own (``_fastcall.c``), and the module-level locks of
``backends/llvm_jit.py`` and ``backends/blas_threads.py`` are renewed by their own fork hooks.
"""

from __future__ import annotations

import os
import threading
import weakref

_holders: dict[int, tuple[weakref.ref, tuple[str, ...]]] = {}


def renew_locks_after_fork(obj, *attrs: str) -> None:
    """Give ``obj``'s ``threading.Lock`` attributes ``attrs`` new locks in every forked child
    (for as long as ``obj`` lives)."""
    key = id(obj)

    def forget(_ref, key=key):
        _holders.pop(key, None)
    _holders[key] = (weakref.ref(obj, forget), attrs)


def _renew_in_child() -> None:
    for ref, attrs in list(_holders.values()):
        obj = ref()
        if obj is not None:
            for name in attrs:
                if name in obj.__dict__:
                    obj.__dict__[name] = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_in_child)
