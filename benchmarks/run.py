"""Run the benchmark suite: symgraph beside NumPy, PyTensor, JAX, PyTorch eager and torch.compile.

    python benchmarks/run.py --threads 1 2 --seconds 2 [--write docs/benchmarks.md]

Each (peer, thread count) runs in its own worker process (benchmarks/worker.py), started with the
thread environment variables set and pinned to its cores; W5 starts fresh processes of
benchmarks/w5.py (cold caches, then warm).  Before the workloads, benchmarks/limits.py measures
the machine's limits (memory bandwidth, FMA peak, GEMM rate) at the same thread counts in its
own process (``--no-limits`` skips it); the report prints them and each workload's time as a
fraction of the limit that applies to it.  Peers that are not installed are skipped; a peer
may live in another Python (``--peer-python pytensor-numba=/path/to/python``; a virtual
environment in ``.venv-peers`` or ``~/.venv-peers`` is found automatically).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import report  # noqa: E402
from benchmarks.peers import PACKAGES, PEERS  # noqa: E402
from benchmarks.workloads import WORKLOADS, sizes  # noqa: E402

THREAD_VARS = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "SYMGRAPH_NUM_THREADS"]


HOW_TO_FILE = os.path.join(ROOT, "benchmarks", "README.md")


def how_to() -> str:
    """The suite's description (benchmarks/README.md without its title), for the report."""
    with open(HOW_TO_FILE) as fh:
        return fh.read().split("\n", 2)[2]


def resolve_backend(requested: str) -> str:
    """The symgraph backend to use; llvm falls back to reference (with a note) when missing."""
    if requested == "reference":
        return requested
    module = {"llvm": "symgraph.backends.llvm", "cuda": "symgraph.backends.cuda"}.get(requested)
    if module is None:
        raise SystemExit(f"unknown backend {requested!r}")
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:
        found = False
    if not found:
        print(f"note: symgraph's {requested} backend ({module}) is not available in this checkout; "
              "running symgraph with backend='reference' instead", flush=True)
        return "reference"
    return requested


def candidate_pythons() -> list[str]:
    out = [sys.executable]
    for venv in (os.path.join(ROOT, ".venv-peers"), os.path.expanduser("~/.venv-peers")):
        exe = os.path.join(venv, "bin", "python")
        if os.path.exists(exe) and exe not in out:
            out.append(exe)
    return out


def has_package(python: str, package: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({package!r}) is None)"
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([python, "-c", code], env=env, capture_output=True).returncode == 0


def find_python(peer: str, explicit: dict) -> str | None:
    """The Python that runs ``peer``: explicit, this one, or a peers virtual environment."""
    if peer in explicit:
        return explicit[peer]
    if peer in ("numpy", "symgraph"):
        return sys.executable
    for python in candidate_pythons():
        if has_package(python, PACKAGES[peer]):
            return python
    return None


def thread_env(n: int, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(n)
    env["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} " \
                       f"intra_op_parallelism_threads={n}"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTENSOR_FLAGS", "floatX=float32")
    env.update(extra or {})
    return env


def run_worker(python, peer, workloads, threads, args, backend) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [python, os.path.join(ROOT, "benchmarks", "worker.py"), "--peer", peer,
               "--workloads", ",".join(workloads), "--threads", str(threads),
               "--seconds", str(args.seconds), "--backend", backend, "--out", out,
               "--min-repeats", str(args.min_repeats)]
        if args.tiny:
            cmd.append("--tiny")
        if args.no_pin:
            cmd.append("--no-pin")
        try:
            proc = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True,
                                  timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return [{"peer": peer, "workload": w, "threads": threads,
                     "failed": f"worker timed out after {args.timeout} s"} for w in workloads]
        if proc.returncode != 0 or not os.path.exists(out):
            msg = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
            return [{"peer": peer, "workload": w, "threads": threads,
                     "failed": f"worker exited with {proc.returncode}: {msg}"} for w in workloads]
        with open(out) as fh:
            return json.load(fh)


def run_w5(python, peer, threads, args, backend) -> dict:
    """A cold process (fresh cache directories), then a warm one reusing them."""
    from benchmarks.w5 import cache_env
    if peer == "symgraph":
        # an installed package has its bytecode compiled (pip does it); a source checkout run
        # with PYTHONDONTWRITEBYTECODE would otherwise recompile every module in every process
        subprocess.run([python, "-m", "compileall", "-q", os.path.join(ROOT, "symgraph")],
                       capture_output=True)
    root = tempfile.mkdtemp(prefix="symgraph-w5-")
    row: dict = {"peer": peer}
    try:
        for phase in ("cold", "warm"):
            cmd = [python, os.path.join(ROOT, "benchmarks", "w5.py"), "--peer", peer,
                   "--backend", backend, "--threads", str(threads)]
            if args.tiny:
                cmd.append("--tiny")
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=thread_env(threads, cache_env(peer, root)),
                                  capture_output=True, text=True, timeout=args.timeout)
            wall = time.perf_counter() - t0
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("W5RESULT ")]
            if proc.returncode != 0 or not lines:
                msg = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
                return {"peer": peer, "failed": f"{phase} process exited with {proc.returncode}: {msg}"}
            row[phase] = dict(json.loads(lines[-1][len("W5RESULT "):]), process_s=wall)
    except subprocess.TimeoutExpired:
        return {"peer": peer, "failed": f"timed out after {args.timeout} s"}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return row


def run_limits(args) -> dict:
    """The machine limits at the run's thread counts, measured in a fresh process (so its
    arrays and OpenBLAS thread settings do not stay in this one); ``{"failed": why}`` if not."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "limits.json")
        cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "limits.py"), "--threads",
               *map(str, args.threads), "--json", out] + (["--tiny"] if args.tiny else [])
        try:
            proc = subprocess.run(cmd, env=thread_env(max(args.threads)), capture_output=True,
                                  text=True, timeout=min(args.timeout, 600))
        except subprocess.TimeoutExpired:
            return {"failed": "limits.py timed out"}
        if proc.returncode != 0 or not os.path.exists(out):
            msg = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
            return {"failed": f"limits.py exited with {proc.returncode}: {msg}"}
        with open(out) as fh:
            return json.load(fh)


def add_fractions(rows: list[dict], sizes, limits: dict | None) -> None:
    """Store each row's fraction of its machine limit in the row (for the JSON output)."""
    if not limits or "failed" in limits:
        return
    for r in rows:
        f = report.fractions(r, sizes, limits)
        if f is not None:
            r["limit"] = f


def header(args, backend, thread_counts, pythons, load_before=None) -> str:
    import numpy
    load = ""
    if load_before is not None and hasattr(os, "getloadavg"):
        load = (f" Load average (1 min) {load_before[0]:.1f} at the start and {os.getloadavg()[0]:.1f} "
                "at the end of the run: other processes were sharing the cores"
                if max(load_before[0], os.getloadavg()[0]) > 1.5 else "")
    lines = [
        f"Measured {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')} on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, NumPy {numpy.__version__}.",
        "",
        f"Command: `python benchmarks/run.py {' '.join(sys.argv[1:])}`; symgraph backend: "
        f"**{backend}**{'' if backend == args.backend else f' (requested {args.backend}, not available)'}; "
        f"{args.seconds} s per cell; threads {', '.join(map(str, thread_counts))}.{load}",
        "",
        "Each (peer, thread count) ran in its own process pinned to that many cores "
        "(`os.sched_setaffinity`) with the thread environment variables set before import. "
        "Outputs of the first call were checked against hand-written NumPy "
        "(relative L2 error < 1e-3; parameters compared as the change made by one step).",
        "",
    ]
    for peer, py in pythons.items():
        if py != sys.executable:
            lines.append(f"- {peer} ran in `{py}`")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per cell")
    ap.add_argument("--min-repeats", type=int, default=5)
    ap.add_argument("--peers", nargs="+", default=PEERS, choices=PEERS)
    ap.add_argument("--workloads", nargs="+", default=WORKLOADS + ["w5"], choices=WORKLOADS + ["w5"])
    ap.add_argument("--backend", default="llvm", help="symgraph backend (llvm, reference, cuda)")
    ap.add_argument("--peer-python", action="append", default=[], metavar="PEER=PYTHON")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per worker process")
    ap.add_argument("--write", metavar="PATH", help="also write the Markdown report to PATH")
    ap.add_argument("--json", metavar="PATH", help="also write the raw rows as JSON")
    ap.add_argument("--no-limits", action="store_true",
                    help="do not measure the machine limits (no limits table, no fractions)")
    args = ap.parse_args(argv)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    backend = resolve_backend(args.backend)
    explicit = dict(item.split("=", 1) for item in args.peer_python)
    pythons = {}
    for peer in args.peers:
        python = find_python(peer, explicit)
        if python is None:
            print(f"note: {peer} is not installed ({PACKAGES[peer]} not importable); skipped", flush=True)
            continue
        pythons[peer] = python
    workloads = [w for w in args.workloads if w != "w5"]
    limits = None
    if not args.no_limits:
        t0 = time.perf_counter()
        limits = run_limits(args)
        print(f"{'machine limits':24s} " + (f"failed: {limits['failed']}" if "failed" in limits
              else f"measured in {time.perf_counter() - t0:.1f} s"), flush=True)
    rows: list[dict] = []
    for threads in args.threads:
        for peer, python in pythons.items():
            if not workloads:
                break
            t0 = time.perf_counter()
            got = run_worker(python, peer, workloads, threads, args, backend)
            rows += got
            bad = [f"{r['workload']}: {r['failed']}" for r in got if "failed" in r]
            print(f"{peer:24s} {threads} thread(s): {len(got) - len(bad)} cells in "
                  f"{time.perf_counter() - t0:.1f} s" + (f"; failed {bad}" if bad else ""), flush=True)
    w5_rows = []
    if "w5" in args.workloads:
        for peer, python in pythons.items():
            row = run_w5(python, peer, max(args.threads), args, backend)
            w5_rows.append(row)
            print(f"{peer:24s} W5: {'failed ' + row['failed'] if 'failed' in row else 'done'}", flush=True)
    add_fractions(rows, sizes(args.tiny), limits)
    text = report.markdown(rows, w5_rows, args.threads, sizes(args.tiny),
                           header(args, backend, args.threads, pythons, load_before), limits)
    print()
    print(text)
    if args.write:
        os.makedirs(os.path.dirname(os.path.abspath(args.write)), exist_ok=True)
        with open(args.write, "w") as fh:
            fh.write("# Benchmarks\n\n" + how_to() + "\n## Results\n\n" + text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "w5": w5_rows, "backend": backend, "limits": limits}, fh, indent=1)
    failed_checks = [r for r in rows if r.get("error", 0) >= report.TOLERANCE]
    return 1 if failed_checks else 0


if __name__ == "__main__":
    sys.exit(main())
