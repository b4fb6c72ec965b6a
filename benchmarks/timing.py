"""Timing loop and numeric check, kept apart from the peers so the harness stays out of the times."""

from __future__ import annotations

import gc
import statistics
import time

import numpy as np


def measure(runner, seconds: float, min_repeats: int = 5, max_repeats: int = 100_000) -> dict:
    """Time ``runner.call`` for about ``seconds``; returns per-call median/min/max in seconds.

    Calls shorter than 1 ms are timed in batches (one clock read per batch) so the clock and the
    loop cost nothing measurable; asynchronous peers are waited for at the end of each batch.
    """
    call, block = runner.call, runner.block
    block(call())  # one warm-up call beyond the checked first call
    t0 = time.perf_counter()
    block(call())
    single = time.perf_counter() - t0
    inner = 1 if single >= 1e-3 else max(1, int(1e-3 / max(single, 1e-7)))
    gc.collect()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        for _ in range(inner):
            h = call()
        block(h)
        times.append((time.perf_counter() - t0) / inner)
    return {"median": statistics.median(times), "min": min(times), "max": max(times),
            "repeats": len(times), "inner": inner}


def rel_l2(ref: np.ndarray, got: np.ndarray) -> float:
    """Relative L2 error ``|got - ref| / |ref|`` (absolute when ``ref`` is all zeros)."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        got = got.reshape(ref.shape) if got.size == ref.size else got
        if got.shape != ref.shape:
            return float("inf")
    norm = float(np.linalg.norm(ref))
    err = float(np.linalg.norm(got - ref))
    return err / norm if norm > 0 else err


def check(ref: list, got: list, initial: list | None) -> float:
    """Worst relative L2 error over the outputs.

    For training steps the outputs are ``[loss, *params]``; parameters are compared as the
    change made by the step (``params - initial``), so the check sees the gradients rather
    than the much larger unchanged weights.
    """
    if len(ref) != len(got):
        return float("inf")
    worst = 0.0
    for i, (r, g) in enumerate(zip(ref, got)):
        if initial is not None and i > 0:
            r = np.asarray(r, np.float64) - initial[i - 1]
            g = np.asarray(g, np.float64) - initial[i - 1]
        worst = max(worst, rel_l2(r, g))
    return worst


def alternating_medians(fns: dict, args: tuple, rounds: int) -> dict:
    """Median (wall, process CPU) seconds per call of each function in ``fns`` (name ->
    callable), called in turn ``rounds`` times with ``args`` (variants compared in one
    process, so drifts of the machine hit them all alike)."""
    times = {name: ([], []) for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            f(*args)
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return {name: (float(np.median(w)), float(np.median(c))) for name, (w, c) in times.items()}
