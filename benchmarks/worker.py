"""One benchmark worker: a fresh process for one peer at one thread count.

The orchestrator (run.py) sets the thread environment variables before starting it; the worker
pins itself to its cores before importing anything heavy, then for each workload builds the
peer's function (timed as the first call), checks its outputs against NumPy and times it.
Results go to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pin(threads: int) -> list[int]:
    """Restrict this process to ``threads`` of the cores it may use (no-op where unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return []
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    return cores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--workloads", required=True, help="comma-separated, e.g. w1f,w2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--min-repeats", type=int, default=5)
    ap.add_argument("--backend", default="reference", help="symgraph backend")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    cores = [] if args.no_pin else pin(args.threads)

    import importlib

    from benchmarks.peers import MODULES, numpy_peer
    from benchmarks.timing import check, measure
    from benchmarks.workloads import make_data, sizes

    s = sizes(args.tiny)
    peer = args.peer
    module = importlib.import_module(MODULES[peer])
    variants = [({}, peer)]
    if peer == "symgraph":
        variants = [({"backend": args.backend}, "symgraph")]
    elif peer == "pytensor-c":
        variants = [({"mode": "CVM"}, peer)]
    elif peer == "torch.compile":
        variants = [({"compiled": True}, peer)]
    results = []
    for wl in args.workloads.split(","):
        data = make_data(wl, s)
        ref_runner = numpy_peer.build(wl, data, s, args.threads, {})
        ref = ref_runner.outputs(ref_runner.call())
        initial = [p.astype("float64") for p in data["params"]] if "params" in data else None
        todo = list(variants)
        if peer == "symgraph" and wl == "w3":
            todo.append(({"backend": args.backend, "trust_input": True}, "symgraph (trust_input)"))
        for options, label in todo:
            row = {"peer": label, "workload": wl, "threads": args.threads, "cores": cores}
            runner = None
            try:
                t0 = time.perf_counter()
                runner = module.build(wl, data, s, args.threads, options)
                handle = runner.call()
                runner.block(handle)
                row["first_call_s"] = time.perf_counter() - t0
                row["error"] = check(ref, runner.outputs(handle), initial)
                row.update(measure(runner, args.seconds, args.min_repeats))
            except Exception as e:  # a peer that fails one workload still reports the others
                row["failed"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
                row["traceback"] = traceback.format_exc()[-2000:]
            results.append(row)
            del runner  # free the peer's buffers before the next workload
    with open(args.out, "w") as fh:
        json.dump(results, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
