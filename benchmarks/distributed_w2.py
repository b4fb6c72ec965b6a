"""W2 (MLP 784-1024-1024-10, SGD, global batch 512) data-parallel over MPI: 1 process x 1
thread against N processes x 1 thread each, with the global batch fixed (512 / N rows per
process).  Reports steps/s, the throughput ratio and the time the step spends in
communication (the MPI kernels of the compiled step, from ``compile(profile=True)``).

    python benchmarks/distributed_w2.py [--procs 2] [--steps 30] [--rounds 1] [--backend llvm]

The driver launches ``mpiexec -n 1`` and ``mpiexec -n N`` on this file (``--worker``); each
worker prints one JSON line.  Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build(backend: str, profile: bool, batch: int, dist, params):
    import symgraph as sg
    x = sg.tensor("x", (None, 784))
    y = sg.tensor("y", (None,), dtype="int64")
    w1, b1, w2, b2, w3, b3 = params
    h = sg.relu(x @ w1 + b1)
    h = sg.relu(h @ w2 + b2)
    loss = sg.nn.cross_entropy(h @ w3 + b3, y)
    grads = sg.grad(loss, params)
    updates = [(p, p - 0.01 * g) for p, g in zip(params, grads)]
    if dist.size() > 1:
        updates = dist.data_parallel(updates, grads, params)
    return sg.compile([x, y], loss, updates=updates, backend=backend, threads=1, profile=profile)


def worker(args) -> None:
    import symgraph as sg
    from benchmarks.workloads import Sizes, make_data
    from symgraph import distributed as dist
    dist.init(timeout=600)
    n, r = dist.size(), dist.rank()
    data = make_data("w2", Sizes())
    params = [sg.shared(p, f"p{i}") for i, p in enumerate(data["params"])]
    dist.broadcast(params)
    local = args.batch // n
    xs = data["x"][r * local:(r + 1) * local]
    ys = data["y"][r * local:(r + 1) * local]
    step = build(args.backend, False, local, dist, params)
    for _ in range(3):
        step(xs, ys)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(xs, ys)
    dist.barrier()
    seconds = (time.perf_counter() - t0) / args.steps
    comm = 0.0
    total = 0.0
    if args.backend == "llvm":
        prof = build(args.backend, True, local, dist, params)
        for _ in range(args.steps):
            prof(xs, ys)
        total = sum(k.stats["seconds"] for k in prof.kernels)
        comm = sum(k.stats["seconds"] for k in prof.kernels if k.name.startswith("mpi_"))
        comm, total = comm / args.steps, total / args.steps
    everyone = dist._mpi.comm().gather({"rank": r, "comm_s": comm, "kernels_s": total}, root=0)
    if r == 0:
        print(json.dumps({"procs": n, "step_s": seconds, "steps_per_s": 1 / seconds,
                          "ranks": everyone}))


def launch(n: int, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", SYMGRAPH_THREADS="1",
               PYTHONPATH=ROOT, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpiexec = shutil.which("mpiexec") or "mpiexec"
    cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
           "--steps", str(args.steps), "--backend", args.backend, "--batch", str(args.batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate the 1-process and N-process runs this many times; the "
                             "median ratio is reported (host noise drifts between launches)")
    parser.add_argument("--batch", type=int, default=512, help="global batch")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    load = os.getloadavg()[0]
    rounds = []
    for _ in range(args.rounds):
        one = launch(1, args)
        many = launch(args.procs, args)
        rounds.append((one, many, many["steps_per_s"] / one["steps_per_s"]))
    print(f"W2 MLP 784-1024-1024-10, SGD, global batch {args.batch}, {args.backend} backend, "
          f"1 thread per process; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print("| round | processes | rows per process | step (ms) | steps/s | in MPI kernels (ms, per rank) "
          "| ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k, (one, many, ratio) in enumerate(rounds, 1):
        for res in (one, many):
            comm = ", ".join(f"{x['comm_s'] * 1e3:.2f}" for x in res["ranks"])
            shown = f"{ratio:.2f}x" if res is many else ""
            print(f"| {k} | {res['procs']} | {args.batch // res['procs']} | {res['step_s'] * 1e3:.1f} | "
                  f"{res['steps_per_s']:.2f} | {comm} | {shown} |")
    ratios = sorted(r for _, _, r in rounds)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else sum(ratios[len(ratios) // 2 - 1:][:2]) / 2
    print(f"throughput ratio ({args.procs} processes / 1): median {median:.2f}x over {len(ratios)} "
          f"round(s), range {ratios[0]:.2f}-{ratios[-1]:.2f}x")
    one, many, _ = rounds[-1]
    return {"one": one, "many": many, "ratio": median, "ratios": ratios}


if __name__ == "__main__":
    main()
