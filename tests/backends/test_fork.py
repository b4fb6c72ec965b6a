"""Forked children after threaded calls: libgomp's pool does not survive ``fork``.

Each scenario runs in its own Python process with a timeout, so a hang (the bug these tests
guard against) fails the test instead of stopping the run.  The parent always makes a
two-thread call first: an elementwise kernel on libgomp's threads and a GEMM whose parallel
sections run on libgomp's threads through the OpenBLAS bridge.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120  # a run takes a few seconds; a hung child never finishes

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# the parent's set-up, shared by every scenario
_PRELUDE = textwrap.dedent("""
    import multiprocessing as mp
    import os
    import sys

    import numpy as np

    import symgraph as sg
    from symgraph.backends import blas_threads, llvm_jit

    N = 512  # big enough for OpenBLAS to split a product across its threads
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N)).astype("float32")
    a64 = a.astype("float64")
    x = sg.matrix("x")
    f = sg.compile([x], [sg.tanh(x) * 2.0 + 1.0, x @ x], threads=2)
    WANT = [np.tanh(a64) * 2.0 + 1.0, a64 @ a64]

    def check(got, want):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-3)

    def check_f():
        for got, want in zip(f(a), WANT):
            check(got, want)

    def check_numpy():
        check(a @ a, WANT[1])

    def threads_in_use(fn):
        return fn.program.last.loaded.nthreads.value

    def in_child(fn):
        # run fn in a forked child; fail unless it returns
        pid = os.fork()
        if pid == 0:
            try:
                fn()
            except BaseException as e:
                print("child failed:", repr(e), file=sys.stderr, flush=True)
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    check_f()  # the parent's threaded call: libgomp's pool now exists
    check_numpy()
    BRIDGE = blas_threads.install()  # whether OpenBLAS runs on libgomp's threads here
    # compiled code in a child of a process that loaded libgomp runs on one thread
    CHILD_THREADS = 1 if llvm_jit.libraries()["gomp"] else 2
""")


def _run(tmp_path: Path, body: str) -> str:
    """Run the prelude plus ``body`` as a script; its stdout.  A timeout kills the script and
    every child it forked."""
    script = tmp_path / "scenario.py"
    script.write_text(_PRELUDE + textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=str(ROOT), SYMGRAPH_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung after fork (killed after {TIMEOUT_S} s)\nstdout:\n{out}\nstderr:\n{err}")
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    return out


def test_fork_pool_children_call_the_function_and_numpy(tmp_path):
    out = _run(tmp_path, """
        def work(i):
            check_f()
            check_numpy()
            return i, threads_in_use(f)

        with mp.get_context("fork").Pool(2) as pool:
            done = pool.map(work, range(4))
        assert sorted(i for i, _ in done) == [0, 1, 2, 3]
        assert {t for _, t in done} == {CHILD_THREADS}, done
        print("ok")
    """)
    assert out.split() == ["ok"]


def test_plain_fork_child_runs_numpy_matmul_and_the_function(tmp_path):
    out = _run(tmp_path, """
        def child_checks():
            check_numpy()
            check_f()
            assert threads_in_use(f) == CHILD_THREADS
            assert not blas_threads.install()  # OpenBLAS keeps its own threads in the child

        def child_and_grandchild():
            child_checks()
            in_child(child_checks)

        in_child(child_and_grandchild)
        print("ok")
    """)
    assert out.split() == ["ok"]


def test_children_run_compiled_gemm_graphs(tmp_path):
    out = _run(tmp_path, """
        w = sg.shared(rng.standard_normal((N, 300)).astype("float32") * 0.05, "w")
        loss = sg.sum(sg.tanh(x @ w) ** 2)
        g = sg.compile([x], [loss, sg.grad(loss, w)], threads=2)
        w64 = w.get_value().astype("float64")
        t = np.tanh(a64 @ w64)
        want = [np.sum(t ** 2), a64.T @ (2.0 * t * (1.0 - t ** 2))]

        def check_g(fn):
            got = fn(a)
            np.testing.assert_allclose(got[0], want[0], rtol=1e-3)
            np.testing.assert_allclose(got[1], want[1], rtol=1e-3, atol=1e-2)

        def work(i):
            check_g(g)
            # a function compiled in the child: its parallel kernels stay on one thread too
            h = sg.compile([x], [loss, sg.grad(loss, w)], threads=2)
            check_g(h)
            return threads_in_use(g), threads_in_use(h)

        check_g(g)
        with mp.get_context("fork").Pool(2) as pool:
            assert pool.map(work, range(2)) == [(CHILD_THREADS, CHILD_THREADS)] * 2
        print("ok")
    """)
    assert out.split() == ["ok"]


def test_parent_keeps_its_threads_after_forked_children(tmp_path):
    out = _run(tmp_path, """
        def work(i):
            check_f()
            check_numpy()
            return i

        for _ in range(2):
            with mp.get_context("fork").Pool(2) as pool:
                assert pool.map(work, range(2)) == [0, 1]
            check_f()
            check_numpy()
        assert threads_in_use(f) == 2 and f.program.threads == 2
        assert blas_threads.install() == BRIDGE  # the bridge is still the parent's
        assert not llvm_jit.forked_child()
        print("ok")
    """)
    assert out.split() == ["ok"]


def test_child_of_a_fork_made_while_other_threads_held_every_lock(tmp_path):
    """Another thread of the parent holds the locks of a training step (its shared variable,
    the compiled function, the program, the update lock and the arena of its specialisation)
    when the process forks: the child renews them and trains, compiling a new shape too."""
    out = _run(tmp_path, """
        import threading
        w = sg.shared(np.ones((4, 3), "float32"), name="w")
        v = sg.tensor("v", (None, 4))
        step = sg.compile([v], (v @ w).sum(), updates=[(w, w * 0.5)])
        step(np.ones((2, 4), "float32"))
        prog = step.program
        locks = [w._lock, step._lock, prog._lock, prog.update_lock, prog.last.lock]
        held, release = threading.Event(), threading.Event()

        def hold():
            for lock in locks:
                lock.__enter__()
            held.set()
            release.wait()
            for lock in reversed(locks):
                lock.__exit__(None, None, None)
        t = threading.Thread(target=hold)
        t.start()
        held.wait()

        def child():
            assert step(np.ones((2, 4), "float32")) == 12.0  # the C call path
            assert step(np.ones((5, 4), "float32")) == 15.0  # a new shape: the Python path
            check_f()
        in_child(child)
        release.set()
        t.join()
        assert step(np.ones((2, 4), "float32")) == 12.0  # the parent's locks still work
        print("ok")
    """)
    assert out.split() == ["ok"]


def test_child_of_a_fork_made_while_a_thread_held_the_mpi_and_cuda_module_locks(tmp_path):
    """The module locks of ``sg.distributed`` and the cuda runtime (taken while loading MPI or
    finding the device) are new in a child, not left held by a thread that is gone."""
    out = _run(tmp_path, """
        import threading
        from symgraph.backends import cuda_runtime
        from symgraph.distributed import _mpi
        held, release = threading.Event(), threading.Event()

        def hold():
            with _mpi._lock, cuda_runtime._lock:
                held.set()
                release.wait()
        t = threading.Thread(target=hold, daemon=True)  # a failing child must not hang the script
        t.start()
        held.wait()

        def child():
            for lock in (_mpi._lock, cuda_runtime._lock):
                assert lock.acquire(timeout=5), lock
                lock.release()
        in_child(child)
        release.set()
        t.join()
        print("ok")
    """)
    assert out.split() == ["ok"]
