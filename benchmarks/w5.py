"""W5: one fresh process from import to the first W2 (MLP training step) result.

Run by run.py twice per peer with the same fresh cache directories: the first process is
"cold" (empty caches), the second "warm".  Prints one JSON line with the import time and the
time from graph definition to the first result; run.py adds the whole-process wall time.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FRAMEWORK = {"numpy": "numpy", "symgraph": "symgraph", "pytensor-numba": "pytensor",
             "pytensor-c": "pytensor", "jax": "jax", "torch": "torch", "torch.compile": "torch"}
OPTIONS = {"pytensor-c": {"mode": "CVM"}, "torch.compile": {"compiled": True}}


def cache_env(peer: str, root: str) -> dict:
    """Environment variables that put every on-disk cache of ``peer`` under ``root``."""
    env = {"SYMGRAPH_CACHE_DIR": os.path.join(root, "symgraph")}
    if peer.startswith("pytensor"):
        env["PYTENSOR_FLAGS"] = f"base_compiledir={os.path.join(root, 'pytensor')},floatX=float32"
        env["NUMBA_CACHE_DIR"] = os.path.join(root, "numba")
    if peer == "jax":
        env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(root, "jax")
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    if peer.startswith("torch"):
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(root, "inductor")
        env["TRITON_CACHE_DIR"] = os.path.join(root, "triton")
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    t0 = time.perf_counter()
    importlib.import_module(FRAMEWORK[args.peer])
    t_import = time.perf_counter() - t0
    from benchmarks.workloads import make_data, sizes
    data = make_data("w2", sizes(args.tiny))  # not timed: the same for every peer
    t1 = time.perf_counter()
    from benchmarks.peers import MODULES
    module = importlib.import_module(MODULES[args.peer])
    options = dict(OPTIONS.get(args.peer, {}))
    if args.peer == "symgraph":
        options["backend"] = args.backend
    runner = module.build("w2", data, sizes(args.tiny), args.threads, options)
    handle = runner.call()
    runner.block(handle)
    loss = float(runner.outputs(handle)[0])
    t2 = time.perf_counter()
    print("W5RESULT " + json.dumps({"import_s": t_import, "first_result_s": t2 - t1, "loss": loss,
                                     "in_process_s": t2 - T_START}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
