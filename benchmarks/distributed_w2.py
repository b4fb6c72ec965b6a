"""W2 (MLP 784-1024-1024-10, SGD, global batch 512) data-parallel over MPI: 1 process x 1
thread against N processes x 1 thread each, with the global batch fixed (512 / N rows per
process).  Reports the step times, the throughput ratio and the time the step spends in
communication (the MPI kernels of the compiled step, from ``compile(profile=True)``).

    python benchmarks/distributed_w2.py [--procs 2] [--steps 20] [--rounds 7] [--separate]

By default one ``mpiexec -n N`` job alternates, round after round, a block of single-process
steps (rank 0 runs the whole global batch on its own copy of the weights while the other ranks
sleep) and a block of data-parallel steps (every rank, B/N rows): both sides of each ratio are
measured seconds apart, so the host's drift between launches cancels.  ``--separate`` launches
``mpiexec -n 1`` and ``mpiexec -n N`` in turn instead.  The median ratio over the rounds is
reported.  Nothing is asserted about speed.
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


def build(backend: str, profile: bool, dist, params, parallel: bool):
    import symgraph as sg
    x = sg.tensor("x", (None, 784))
    y = sg.tensor("y", (None,), dtype="int64")
    w1, b1, w2, b2, w3, b3 = params
    h = sg.relu(x @ w1 + b1)
    h = sg.relu(h @ w2 + b2)
    loss = sg.nn.cross_entropy(h @ w3 + b3, y)
    grads = sg.grad(loss, params)
    updates = [(p, p - 0.01 * g) for p, g in zip(params, grads)]
    if parallel:
        updates = dist.data_parallel(updates, grads, params)
    return sg.compile([x, y], loss, updates=updates, backend=backend, threads=1, profile=profile)


def timed(step, xs, ys, steps: int, comm) -> float:
    """Seconds per step of ``steps`` calls, between barriers (a step is as slow as its slowest rank)."""
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(xs, ys)
    comm.Barrier()
    return (time.perf_counter() - t0) / steps


def idle_until_all_arrive(comm) -> None:
    """A barrier that sleeps instead of polling, so a waiting rank leaves its core idle."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.002)


def worker(args) -> None:
    import symgraph as sg
    from benchmarks.workloads import Sizes, make_data
    from symgraph import distributed as dist
    comm = dist.init(timeout=1200)
    n, r = dist.size(), dist.rank()
    data = make_data("w2", Sizes())
    params = [sg.shared(p, f"p{i}") for i, p in enumerate(data["params"])]
    dist.broadcast(params)
    local = args.batch // n
    xs = data["x"][r * local:(r + 1) * local]
    ys = data["y"][r * local:(r + 1) * local]
    step = build(args.backend, False, dist, params, parallel=n > 1)
    single = None
    if args.interleave and r == 0:  # the 1-process step, on its own copy of the weights
        copies = [sg.shared(p.get_value().copy(), f"q{i}") for i, p in enumerate(params)]
        single = build(args.backend, False, dist, copies, parallel=False)
        for _ in range(3):
            single(data["x"][:args.batch], data["y"][:args.batch])
    for _ in range(3):
        step(xs, ys)
    rounds = []
    for _ in range(args.rounds):
        one = None
        if args.interleave:
            comm.Barrier()
            if single is not None:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    single(data["x"][:args.batch], data["y"][:args.batch])
                one = (time.perf_counter() - t0) / args.steps
            idle_until_all_arrive(comm)
        rounds.append({"one_s": one, "step_s": timed(step, xs, ys, args.steps, comm)})
    comm_s = total = 0.0
    if args.backend == "llvm":
        prof = build(args.backend, True, dist, params, parallel=n > 1)
        prof(xs, ys)
        before = {k.name: k.stats["seconds"] for k in prof.kernels}  # the counters only grow
        for _ in range(args.steps):
            prof(xs, ys)
        spent = {k.name: (k.stats["seconds"] - before[k.name]) / args.steps for k in prof.kernels}
        total = sum(spent.values())
        comm_s = sum(s for name, s in spent.items() if name.startswith("mpi_"))
    everyone = comm.gather({"rank": r, "comm_s": comm_s, "kernels_s": total}, root=0)
    if r == 0:
        print(json.dumps({"procs": n, "rounds": rounds, "ranks": everyone}))


def launch(n: int, args, rounds: int, interleave: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", SYMGRAPH_THREADS="1",
               PYTHONPATH=ROOT, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpiexec = shutil.which("mpiexec") or "mpiexec"
    cmd = [mpiexec, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
           "--steps", str(args.steps), "--backend", args.backend, "--batch", str(args.batch),
           "--rounds", str(rounds)] + (["--interleave"] if interleave else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds of (1-process block, N-process block); the median ratio is reported")
    parser.add_argument("--separate", action="store_true",
                        help="launch the 1-process and N-process jobs separately, in turn")
    parser.add_argument("--batch", type=int, default=512, help="global batch")
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--interleave", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    load = os.getloadavg()[0]
    if args.separate:
        ones, manys = [], []
        for _ in range(args.rounds):
            ones.append(launch(1, args, 1, False))
            manys.append(launch(args.procs, args, 1, False))
        pairs = [(o["rounds"][0]["step_s"], m["rounds"][0]["step_s"]) for o, m in zip(ones, manys)]
        ranks = manys[-1]["ranks"]
    else:
        job = launch(args.procs, args, args.rounds, True)
        pairs = [(rd["one_s"], rd["step_s"]) for rd in job["rounds"]]
        ranks = job["ranks"]
    how = "separate launches" if args.separate else f"interleaved in one {args.procs}-process job"
    print(f"W2 MLP 784-1024-1024-10, SGD, global batch {args.batch}, {args.backend} backend, "
          f"1 thread per process, {args.steps} steps per block, {how}; "
          f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"| round | 1 process, {args.batch} rows (ms) | {args.procs} processes, "
          f"{args.batch // args.procs} rows each (ms) | ratio |")
    print("| --- | --- | --- | --- |")
    ratios = []
    for k, (one, many) in enumerate(pairs, 1):
        ratios.append(one / many)
        print(f"| {k} | {one * 1e3:.1f} | {many * 1e3:.1f} | {one / many:.2f}x |")
    comm = ", ".join(f"{x['comm_s'] * 1e3:.2f}" for x in ranks)
    kernels = ", ".join(f"{x['kernels_s'] * 1e3:.1f}" for x in ranks)
    print(f"in MPI kernels per {args.procs}-process step (ms, per rank; profiled run): {comm} "
          f"of {kernels} in all kernels")
    print(f"throughput ratio ({args.procs} processes / 1): median {median(ratios):.2f}x over "
          f"{len(ratios)} round(s), range {min(ratios):.2f}-{max(ratios):.2f}x")
    return {"pairs": pairs, "ratio": median(ratios), "ratios": sorted(ratios), "ranks": ranks}


if __name__ == "__main__":
    main()
