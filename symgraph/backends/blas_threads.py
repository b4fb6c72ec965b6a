"""Run OpenBLAS's parallel work on libgomp's threads (the threads of symgraph's own kernels).

NumPy's OpenBLAS keeps its own pool of worker threads, which busy-wait for a long time
(``2**28`` cycles) after each BLAS call.  A training step alternates GEMMs with symgraph's
libgomp-parallel kernels, so the two pools fought over the same cores: on two cores the W2
and W4 steps ran slower with two threads than with one.

OpenBLAS lets the program take over its threading (``openblas_set_threads_callback_function``):
it then hands each parallel section to a callback as ``numjobs`` jobs that must run
concurrently (they wait on each other).  The callback here, compiled once per process from a
few lines of LLVM IR, starts them as one libgomp team.  Nested teams are allowed, so jobs
always get their own threads even when a BLAS call happens inside a parallel region.

The callback is process-wide: NumPy's own matrix products in the same process use libgomp's
threads too, with the thread count OpenBLAS is set to.

libgomp is not fork-safe (see ``llvm_jit._after_fork_in_child``), OpenBLAS's own pool is: it
stops its threads before a fork and starts new ones on the next call.  A forked child
therefore gets OpenBLAS's own threading back (``_after_fork_in_child``), so NumPy there keeps
its threads; without that, the child's first parallel BLAS call spins forever waiting for a
job that a dead libgomp worker was meant to run.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading

from . import cache_store, llvm_elf, llvm_jit

# the context handed to every thread: job function, job array, job size, job argument, count
_IR = """
%ctx = type { ptr, ptr, i64, i32, i32 }

declare i32 @omp_get_thread_num()
declare i32 @omp_get_num_threads()
declare void @GOMP_parallel(ptr, ptr, i32, i32)

; each team thread runs jobs tid, tid + team size, ...: one job per thread in a full team
define internal void @sg_blas_team(ptr %c) {
entry:
  %tid = call i32 @omp_get_thread_num()
  %nt = call i32 @omp_get_num_threads()
  %pjob = getelementptr %ctx, ptr %c, i32 0, i32 0
  %job = load ptr, ptr %pjob
  %pdata = getelementptr %ctx, ptr %c, i32 0, i32 1
  %data = load ptr, ptr %pdata
  %psize = getelementptr %ctx, ptr %c, i32 0, i32 2
  %size = load i64, ptr %psize
  %parg = getelementptr %ctx, ptr %c, i32 0, i32 3
  %arg = load i32, ptr %parg
  %pn = getelementptr %ctx, ptr %c, i32 0, i32 4
  %n = load i32, ptr %pn
  br label %loop
loop:
  %i = phi i32 [ %tid, %entry ], [ %next, %body ]
  %more = icmp slt i32 %i, %n
  br i1 %more, label %body, label %done
body:
  %i64 = sext i32 %i to i64
  %off = mul i64 %i64, %size
  %item = getelementptr i8, ptr %data, i64 %off
  call void %job(i32 %i, ptr %item, i32 %arg)
  %next = add i32 %i, %nt
  br label %loop
done:
  ret void
}

; OpenBLAS's callback: (sync, job function, job count, job size, jobs, job argument)
define void @sg_blas_threads(i32 %sync, ptr %job, i32 %n, i64 %size, ptr %data, i32 %arg) {
entry:
  %c = alloca %ctx
  %p0 = getelementptr %ctx, ptr %c, i32 0, i32 0
  store ptr %job, ptr %p0
  %p1 = getelementptr %ctx, ptr %c, i32 0, i32 1
  store ptr %data, ptr %p1
  %p2 = getelementptr %ctx, ptr %c, i32 0, i32 2
  store i64 %size, ptr %p2
  %p3 = getelementptr %ctx, ptr %c, i32 0, i32 3
  store i32 %arg, ptr %p3
  %p4 = getelementptr %ctx, ptr %c, i32 0, i32 4
  store i32 %n, ptr %p4
  call void @GOMP_parallel(ptr @sg_blas_team, ptr %c, i32 %n, i32 0)
  ret void
}
"""


_installed: dict = {}
_lock = threading.Lock()


def _load_bridge():
    """The compiled callback, from the disk cache when it is there (a warm process then needs
    no llvmlite), else compiled now and stored."""
    key = hashlib.sha256(f"blas-bridge|{llvm_jit.host_id()}|{_IR}".encode()).hexdigest()[:40]
    obj = cache_store.load(key, ".bridge")
    if obj is None:
        obj = llvm_jit.emit_object(llvm_jit.optimize(_IR))
        cache_store.store(key, obj, ".bridge")
    return llvm_elf.load(obj, "sg_blas_threads") or llvm_jit.Loaded(obj, "sg_blas_threads")


def install() -> bool:
    """Route OpenBLAS's threading through libgomp (once per process); False when either
    library or the OpenBLAS entry point is missing, or ``SYMGRAPH_BLAS_OWN_THREADS`` is set."""
    if "ok" in _installed:
        return _installed["ok"]
    with _lock:
        if "ok" not in _installed:
            _installed["ok"] = _install()
    return _installed["ok"]


def _install() -> bool:
    libs = llvm_jit.libraries()
    if (not libs["gomp"] or libs["blas_handle"] is None or llvm_jit.forked_child()
            or os.environ.get("SYMGRAPH_BLAS_OWN_THREADS")):
        return False
    setter = getattr(libs["blas_handle"], "scipy_openblas_set_threads_callback_function64_", None)
    if setter is None:
        return False
    gomp = ctypes.CDLL(libs["gomp"])
    gomp.omp_set_max_active_levels.argtypes = [ctypes.c_int]
    gomp.omp_set_max_active_levels(2)  # a team started inside a region still gets threads
    loaded = _load_bridge()
    setter.argtypes = [ctypes.c_void_p]
    setter(loaded.address)
    _installed["engine"] = loaded  # keeps the code alive for the life of the process
    _installed["setter"] = setter
    llvm_jit.on_fork_in_child(_after_fork_in_child)
    return True


def _after_fork_in_child() -> None:
    """In a forked child: OpenBLAS runs its parallel sections on its own threads again (NULL
    callback), and the bridge is not installed again in this process."""
    global _lock
    _lock = threading.Lock()  # another thread of the parent may have held it
    setter = _installed.pop("setter", None)
    if setter is not None:
        setter(None)
    _installed["ok"] = False
