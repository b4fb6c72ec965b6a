"""Machine limits: memory bandwidth, FMA peak and the BLAS GEMM rate, measured on this host.

    python benchmarks/limits.py [--threads 1 2] [--all-cores] [--json PATH] [--tiny]

The benchmark report (run.py) prints these beside every workload, so each workload's time is
also a fraction of what the machine can do.  Three kinds of limit:

- **Memory bandwidth** (GB/s): streaming *read* (sum of an array), *write* (fill) and *copy*
  (read + write, both counted), each with ordinary stores and with non-temporal (streaming)
  stores, at each thread count.  The loops are hand-written LLVM IR (explicit vector loads and
  stores, four independent accumulators) compiled by llvmlite for the host CPU with no
  middle-end passes, so LLVM cannot turn them into ``memset``/``memcpy`` calls: they are the
  same kind of code symgraph's llvm backend emits for elementwise kernels.  NumPy is not used
  here because it runs on one thread only.  Threads are Python threads, each pinned to one
  core, each calling the compiled loop on its own slice through ``ctypes`` (which releases the
  GIL); the time is from a common start (a barrier) to the last thread's end.  The arrays are
  at least 8 times the last-level cache.
- **FMA peak** (GFLOP/s, float32 and float64): a loop of independent ``llvm.fma`` chains on
  vectors as wide as the host's widest FMA unit (512-bit with AVX-512, 256-bit with AVX2+FMA,
  else 128-bit), built for the host CPU (``get_host_cpu_name``/``features``); the chain count
  (12, or 24 with 32 vector registers) covers latency × ports of current cores.  Per thread;
  the n-thread figure runs one loop per thread.
- **GEMM rate** (GFLOP/s, ``2 n^3`` per product): ``np.matmul`` of float32 n × n matrices,
  i.e. NumPy's OpenBLAS, the BLAS symgraph's llvm backend calls; its thread count is set the
  way symgraph sets it (``llvm_jit.set_blas_threads``, OpenBLAS's own threads).

Every figure is the median of repeated timed calls after a warm-up call; the best repeat is
recorded too, and the report's fractions use it: on a shared machine other work only ever
makes a limit look lower, and a limit measured low would inflate every fraction.  Nothing here needs a
compiler beyond llvmlite.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `symgraph` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GEMM_SIZES = (256, 512, 1024, 2048)
MEMORY_KINDS = ("read", "write", "write_nt", "copy", "copy_nt")
# what each memory kind counts: bytes per element per pass
BYTES_PER_ELEMENT = {"read": 4, "write": 4, "write_nt": 4, "copy": 8, "copy_nt": 8}
UNROLL = 4  # vectors per loop iteration of the memory loops (independent accumulators for read)


# --------------------------------------------------------------------------- host description

def _llvm():
    """``llvmlite.binding`` initialised for the host."""
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()
    return llvm


def host() -> dict:
    """The host as LLVM sees it: CPU name, vector width for FMA, registers, cores, caches."""
    llvm = _llvm()
    feats = llvm.get_host_cpu_features()
    triple = llvm.get_process_triple()
    bits, regs, fma = vector_shape(triple, {k for k, v in feats.items() if v})
    return {"triple": triple, "cpu": llvm.get_host_cpu_name(), "features": feats.flatten(),
            "vector_bits": bits, "vector_registers": regs, "fma": fma,
            "cores": len(available_cores()), "llc_bytes": last_level_cache()}


def vector_shape(triple: str, features: set[str]) -> tuple[int, int, bool]:
    """``(vector bits, vector registers, has FMA)`` of the widest FMA unit a CPU with these
    LLVM ``features`` has: 512 with AVX-512F, 256 with AVX, else 128 (SSE, NEON, ...)."""
    if triple.startswith(("x86_64", "i386", "i686")):
        if "avx512f" in features:
            return 512, 32, True
        fma = "fma" in features
        return (256, 16, fma) if "avx" in features else (128, 16, fma)
    return 128, 32, True  # AArch64 NEON (and others): fused multiply-add is native


def available_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def last_level_cache() -> int:
    """Size in bytes of the largest cache level sysfs reports (0 when unknown)."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = os.listdir(base)
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(os.path.join(base, entry, "size")) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            best = max(best, int(digits) * scale)
    return best


# --------------------------------------------------------------------------- generated kernels

def _vec(lanes: int, scalar: str) -> str:
    return f"<{lanes} x {scalar}>"


def memory_ir(lanes: int) -> str:
    """LLVM IR of the streaming loops over float32: read (sum), write (fill), copy, and the
    non-temporal-store variants, each ``f(a, b, n, reps)``.  ``n`` is a multiple of
    ``UNROLL * lanes``; every pointer is aligned to a full vector."""
    v = _vec(lanes, "float")
    align = 4 * lanes
    out: list[str] = []

    def addr(base: str, u: int) -> list[str]:
        return [f"  %off{base}{u} = add i64 %i, {u * lanes}",
                f"  %p{base}{u} = getelementptr float, ptr %{base}, i64 %off{base}{u}"]

    # read: UNROLL independent accumulators, carried across the passes
    outer = [f"  %acc{u}.o = phi {v} [ zeroinitializer, %entry ], [ %acc{u}.next, %outer.end ]"
             for u in range(UNROLL)]
    inner = [f"  %acc{u} = phi {v} [ %acc{u}.o, %outer ], [ %acc{u}.next, %inner ]"
             for u in range(UNROLL)]
    body = []
    for u in range(UNROLL):
        body += addr("a", u) + [f"  %x{u} = load {v}, ptr %pa{u}, align {align}",
                                f"  %acc{u}.next = fadd {v} %acc{u}, %x{u}"]
    total = "%acc0.next"
    tail = []
    for u in range(1, UNROLL):
        tail.append(f"  %sum{u} = fadd {v} {total}, %acc{u}.next")
        total = f"%sum{u}"
    tail.append(f"  store {v} {total}, ptr %b, align 4")
    out.append(_loop_ir("lim_read", lanes, outer, inner, body, tail))

    for suffix, meta in (("", ""), ("_nt", ", !nontemporal !0")):
        body = [f"  %val = load {v}, ptr %b, align 4"]
        for u in range(UNROLL):
            body += addr("a", u) + [f"  store {v} %val, ptr %pa{u}, align {align}{meta}"]
        # the fence drains streaming stores before the call returns
        out.append(_loop_ir(f"lim_write{suffix}", lanes, [], [], body, ["  fence seq_cst"]))
        body = []
        for u in range(UNROLL):
            body += addr("a", u) + addr("b", u) + [
                f"  %y{u} = load {v}, ptr %pb{u}, align {align}",
                f"  store {v} %y{u}, ptr %pa{u}, align {align}{meta}"]
        out.append(_loop_ir(f"lim_copy{suffix}", lanes, [], [], body, ["  fence seq_cst"]))
    out.append("!0 = !{i32 1}")
    return "\n".join(out) + "\n"


def _loop_ir(name: str, lanes: int, outer_phis: list[str], inner_phis: list[str],
             body: list[str], tail: list[str]) -> str:
    """``define void @name(ptr a, ptr b, i64 n, i64 reps)``: ``for r < reps: for i < n step
    UNROLL * lanes: body``, then ``tail``."""
    lines = [f"define void @{name}(ptr noalias %a, ptr noalias %b, i64 %n, i64 %reps) {{",
             "entry:", "  br label %outer",
             "outer:", "  %r = phi i64 [ 0, %entry ], [ %r.next, %outer.end ]", *outer_phis,
             "  br label %inner",
             "inner:", "  %i = phi i64 [ 0, %outer ], [ %i.next, %inner ]", *inner_phis,
             *body,
             f"  %i.next = add i64 %i, {UNROLL * lanes}",
             "  %more = icmp ult i64 %i.next, %n",
             "  br i1 %more, label %inner, label %outer.end",
             "outer.end:", "  %r.next = add i64 %r, 1", "  %again = icmp ult i64 %r.next, %reps",
             "  br i1 %again, label %outer, label %exit",
             "exit:", *tail, "  ret void", "}"]
    return "\n".join(lines)


def fma_ir(lanes: int, scalar: str, chains: int, fused: bool) -> str:
    """LLVM IR of ``lim_fma``: ``chains`` independent ``acc = acc * a + b`` vector chains,
    two rounds per loop iteration; ``fused=False`` (hosts without FMA) uses fmul + fadd."""
    v = _vec(lanes, scalar)
    suffix = f"v{lanes}f{64 if scalar == 'double' else 32}"
    out = [f"declare {v} @llvm.fma.{suffix}({v}, {v}, {v})",
           "define void @lim_fma(ptr noalias %in, i64 %iters, ptr noalias %out) {",
           "entry:",
           f"  %a = load {v}, ptr %in, align 4",
           f"  %pb = getelementptr {v}, ptr %in, i64 1",
           f"  %b = load {v}, ptr %pb, align 4",
           "  br label %loop",
           "loop:",
           "  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]"]
    for c in range(chains):
        out.append(f"  %acc{c} = phi {v} [ %b, %entry ], [ %acc{c}.2, %loop ]")
    for src, dst in (("", ".1"), (".1", ".2")):
        for c in range(chains):
            s, d = f"%acc{c}{src}", f"%acc{c}{dst}"
            if fused:
                out.append(f"  {d} = call {v} @llvm.fma.{suffix}({v} {s}, {v} %a, {v} %b)")
            else:
                out.append(f"  {d}.m = fmul {v} {s}, %a\n  {d} = fadd {v} {d}.m, %b")
    out += ["  %i.next = add i64 %i, 1", "  %more = icmp ult i64 %i.next, %iters",
            "  br i1 %more, label %loop, label %exit", "exit:"]
    total = "%acc0.2"
    for c in range(1, chains):
        out.append(f"  %sum{c} = fadd {v} {total}, %acc{c}.2")
        total = f"%sum{c}"
    out += [f"  store {v} {total}, ptr %out, align 4", "  ret void", "}"]
    return "\n".join(out) + "\n"


class Compiled:
    """An IR module compiled for the host CPU (codegen at -O3, no middle-end passes, so the
    hand-written loops stay as written) and kept alive with its engine."""

    def __init__(self, ir: str):
        llvm = _llvm()
        target = llvm.Target.from_triple(llvm.get_process_triple())
        tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                          features=llvm.get_host_cpu_features().flatten(),
                                          opt=3, jit=True)
        mod = llvm.parse_assembly(ir)
        mod.verify()
        self.assembly = tm.emit_assembly(mod)
        self.engine = llvm.create_mcjit_compiler(mod, tm)
        self.engine.finalize_object()

    def function(self, name: str, *argtypes) -> Callable:
        """A ctypes function (CFUNCTYPE: the GIL is released during the call)."""
        addr = self.engine.get_function_address(name)
        return ctypes.CFUNCTYPE(None, *argtypes)(addr)


def fma_instruction(assembly: str, fused: bool = True) -> str:
    """The FMA (or, unfused, multiply) instruction and register class the loop compiled to,
    e.g. ``vfmadd213ps ymm``; empty when it cannot be told from the assembly."""
    marks = ("fma", "fmla") if fused else ("mul",)
    for line in assembly.splitlines():
        words = line.replace(",", " ").split()
        if (not words or words[0].endswith(":") or words[0].startswith((".", "#"))
                or not any(m in words[0] for m in marks)):
            continue
        regs = [r for r in ("zmm", "ymm", "xmm") if r in line] or \
               [w.split(".")[-1] for w in words[1:] if w.startswith("v") and "." in w]
        return f"{words[0]} {regs[0] if regs else ''}".strip()
    return ""


# --------------------------------------------------------------------------- timing helpers

def aligned_empty(n: int, dtype=np.float32, align: int = 64) -> np.ndarray:
    """An uninitialised 1-d array whose data starts on an ``align``-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + align // itemsize, dtype)
    skip = (-raw.ctypes.data % align) // itemsize
    return raw[skip:skip + n]


def _pin_this_thread(core: int | None) -> None:
    # on Linux, pid 0 names the calling thread: each worker thread gets its own core
    if core is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {core})
        except OSError:
            pass


def run_threads(jobs: list[Callable[[], None]], cores: list[int | None]) -> float:
    """Run each job on its own thread (pinned to ``cores[i]``), all released at once by a
    barrier; seconds from the release to the end of the last job."""
    barrier = threading.Barrier(len(jobs) + 1)

    def work(i: int) -> None:
        _pin_this_thread(cores[i])
        barrier.wait()
        jobs[i]()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def sample_times(sample: Callable[[], float], repeats: int,
                 min_seconds: float = 0.0) -> tuple[float, float]:
    """``(median, best)`` of ``sample()`` (seconds) after one warm-up: at least ``repeats``
    samples and at least ``min_seconds`` of sampling."""
    sample()
    times: list[float] = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < repeats or time.perf_counter() < t_end:
        times.append(sample())
    return statistics.median(times), min(times)


def cores_for(threads: int) -> list[int | None]:
    """The cores the ``threads`` workers are pinned to (wrapping round when there are fewer)."""
    cores = available_cores()
    if not cores or not hasattr(os, "sched_setaffinity"):
        return [None] * threads
    return [cores[i % len(cores)] for i in range(threads)]


# --------------------------------------------------------------------------- measurements

def memory_bandwidth(thread_counts: list[int], array_bytes: int, repeats: int,
                     lanes: int) -> dict:
    """GB/s of each memory kind at each thread count (``gb_per_s``: ``{kind: {threads: GB/s}}``)
    and the array size used."""
    code = Compiled(memory_ir(lanes))
    P, I64 = ctypes.c_void_p, ctypes.c_int64
    fns = {"read": code.function("lim_read", P, P, I64, I64),
           "write": code.function("lim_write", P, P, I64, I64),
           "write_nt": code.function("lim_write_nt", P, P, I64, I64),
           "copy": code.function("lim_copy", P, P, I64, I64),
           "copy_nt": code.function("lim_copy_nt", P, P, I64, I64)}
    block = UNROLL * lanes * max(thread_counts)
    n = max(block, (array_bytes // 4) // block * block)
    a, b = aligned_empty(n), aligned_empty(n)
    a.fill(1.0)
    b.fill(2.0)
    scratch = aligned_empty(lanes * max(thread_counts))
    value = aligned_empty(lanes)
    value.fill(3.0)
    result: dict = {k: {} for k in MEMORY_KINDS}
    best: dict = {k: {} for k in MEMORY_KINDS}
    for t in thread_counts:
        chunk = n // t // (UNROLL * lanes) * (UNROLL * lanes)
        for kind in MEMORY_KINDS:
            jobs = [_memory_job(fns[kind], kind, a, b, scratch, value, i, chunk, lanes)
                    for i in range(t)]
            med, low = sample_times(lambda: run_threads(jobs, cores_for(t)), repeats)
            moved = BYTES_PER_ELEMENT[kind] * chunk * t / 1e9
            result[kind][str(t)], best[kind][str(t)] = moved / med, moved / low
    return {"array_bytes": int(4 * n), "lanes": lanes, "gb_per_s": result, "gb_per_s_best": best}


def _memory_job(fn, kind, a, b, scratch, value, i, chunk, lanes) -> Callable[[], None]:
    """One thread's pass over its slice ``[i * chunk, (i + 1) * chunk)``."""
    pa = a.ctypes.data + 4 * i * chunk
    if kind == "read":  # the second pointer receives the sum
        pb = scratch.ctypes.data + 4 * i * lanes
    elif kind.startswith("write"):  # the second pointer holds the fill value
        pb = value.ctypes.data
    else:
        pb = b.ctypes.data + 4 * i * chunk
    return lambda: fn(pa, pb, chunk, 1)


def fma_peak(thread_counts: list[int], info: dict, repeats: int, target_s: float) -> dict:
    """GFLOP/s of the FMA loop for float32 and float64 at each thread count."""
    chains = 24 if info["vector_registers"] >= 32 else 12
    out: dict = {"vector_bits": info["vector_bits"], "chains": chains, "fused": info["fma"]}
    for scalar, name, size in (("float", "float32", 4), ("double", "float64", 8)):
        lanes = info["vector_bits"] // (8 * size)
        code = Compiled(fma_ir(lanes, scalar, chains, info["fma"]))
        fn = code.function("lim_fma", ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)
        dtype = np.float32 if size == 4 else np.float64
        params = np.concatenate([np.full(lanes, 0.999, dtype), np.full(lanes, 1e-3, dtype)])
        sink = np.zeros(lanes * max(thread_counts), dtype)
        flop_per_iter = 2 * 2 * chains * lanes  # two rounds of `chains` vector FMAs, 2 flop each
        iters = _calibrate(lambda k: fn(params.ctypes.data, k, sink.ctypes.data), target_s)
        rates, best = {}, {}
        for t in thread_counts:
            jobs = [(lambda i=i: fn(params.ctypes.data, iters, sink.ctypes.data + size * lanes * i))
                    for i in range(t)]
            med, low = sample_times(lambda: run_threads(jobs, cores_for(t)), repeats)
            flop = flop_per_iter * iters * t / 1e9
            rates[str(t)], best[str(t)] = flop / med, flop / low
        out[name] = {"lanes": lanes, "gflop_per_s": rates, "gflop_per_s_best": best,
                     "instruction": fma_instruction(code.assembly, info["fma"])}
        if not math.isfinite(float(sink.sum())):
            raise RuntimeError("the FMA loop produced a non-finite value")
    return out


def _calibrate(call: Callable[[int], None], target_s: float) -> int:
    """Iterations so that ``call(iterations)`` takes about ``target_s`` seconds."""
    k = 1000
    while True:
        t0 = time.perf_counter()
        call(k)
        dt = time.perf_counter() - t0
        if dt >= target_s / 8 or k >= 1 << 40:
            return max(1, int(k * target_s / max(dt, 1e-9)))
        k *= 8


def openblas_info() -> dict:
    """The BLAS NumPy uses (name, version, kernel) and the function that sets its threads."""
    from symgraph.backends import llvm_jit
    info = {"library": None, "config": None, "core": None}
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["library"] = f"{cfg.get('name')} {cfg.get('version')}"
        info["config"] = cfg.get("openblas configuration")
    except Exception:  # noqa: BLE001 - only descriptive
        pass
    handle = llvm_jit.libraries()["blas_handle"]
    corename = getattr(handle, "scipy_openblas_get_corename64_", None) if handle else None
    if corename is not None:
        corename.restype = ctypes.c_char_p
        info["core"] = corename().decode()
    info["threads_settable"] = bool(handle is not None and
                                    hasattr(handle, "scipy_openblas_set_num_threads64_"))
    return info


def gemm_rate(thread_counts: list[int], sizes: list[int], repeats: int, min_seconds: float) -> dict:
    """GFLOP/s of float32 ``np.matmul`` (OpenBLAS sgemm): ``{"float32": {n: {threads: median
    GFLOP/s}}, "float32_best": the same from the best repeat}``."""
    from symgraph.backends import llvm_jit
    rng = np.random.default_rng(0)
    out: dict = {}
    best: dict = {}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        out[str(n)], best[str(n)] = {}, {}
        for t in thread_counts:
            llvm_jit.set_blas_threads(t)

            def sample() -> float:
                t0 = time.perf_counter()
                np.matmul(a, b, out=c)
                return time.perf_counter() - t0
            med, low = sample_times(sample, repeats, min_seconds)
            out[str(n)][str(t)], best[str(n)][str(t)] = 2.0 * n ** 3 / med / 1e9, 2.0 * n ** 3 / low / 1e9
    return {"float32": out, "float32_best": best}


# --------------------------------------------------------------------------- the whole run

def measure(thread_counts: list[int], tiny: bool = False, gemm_sizes=GEMM_SIZES,
            array_bytes: int | None = None) -> dict:
    """All limits at each of ``thread_counts``; a JSON-ready dict (thread counts as strings)."""
    t0 = time.perf_counter()
    thread_counts = sorted(set(thread_counts))
    info = host()
    if array_bytes is None:
        array_bytes = 1 << 20 if tiny else min(max(128 << 20, 8 * info["llc_bytes"]), 1 << 30)
    lanes = info["vector_bits"] // 32
    repeats = 3 if tiny else 9
    memory = memory_bandwidth(thread_counts, array_bytes, repeats, lanes)
    fma = fma_peak(thread_counts, info, repeats=3 if tiny else 5, target_s=0.002 if tiny else 0.03)
    sizes = [64, 128] if tiny else list(gemm_sizes)
    gemm = gemm_rate(thread_counts, sizes, repeats=2 if tiny else 3,
                     min_seconds=0.0 if tiny else 0.15)
    return {"host": info, "threads": thread_counts, "memory": memory, "fma": fma,
            "gemm": dict(gemm, blas=openblas_info()),
            "seconds": time.perf_counter() - t0, "tiny": tiny}


def _table(section: dict, key: str, best: bool) -> dict:
    """``section[key + "_best"]`` when asked for and present, else ``section[key]``."""
    return section.get(key + "_best", section.get(key, {})) if best else section.get(key, {})


def bandwidth(limits: dict, threads: int, kind: str = "copy", best: bool = True) -> float | None:
    """GB/s of ``kind`` (``read``/``write``/``copy``; the better of ordinary and non-temporal
    stores) at ``threads``, from the best repeat (``best``) or the median; None when not
    measured."""
    table = _table(limits.get("memory", {}), "gb_per_s", best)
    found = [table[k][str(threads)] for k in (kind, kind + "_nt")
             if k in table and str(threads) in table[k]]
    return max(found) if found else None


def fma_rate(limits: dict, threads: int, best: bool = True) -> float | None:
    """float32 FMA-loop GFLOP/s at ``threads`` (best repeat or median); None if not measured."""
    return _table(limits.get("fma", {}).get("float32", {}), "gflop_per_s", best).get(str(threads))


def gemm(limits: dict, threads: int, n: int, best: bool = True) -> tuple[int, float] | None:
    """``(size, GFLOP/s)`` of the measured GEMM size closest to ``n`` (in log scale)."""
    table = _table(limits.get("gemm", {}), "float32", best)
    sizes = [int(s) for s in table if str(threads) in table[s]]
    if not sizes:
        return None
    size = min(sizes, key=lambda s: (abs(math.log(s / n)), -s))
    return size, table[str(size)][str(threads)]


def markdown(limits: dict) -> str:
    """The limits as a Markdown table, one column per thread count."""
    ts = limits["threads"]
    mem, fma = limits["memory"], limits["fma"]
    head = "| limit | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in ts) + " |"
    lines = [head, "|---|" + "---|" * len(ts)]

    def row(label: str, values: dict, best: dict, unit: str) -> None:
        cells = [f"{values[str(t)]:.3g} {unit}" + (f" (best {best[str(t)]:.3g})" if str(t) in best else "")
                 if str(t) in values else "-" for t in ts]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    labels = {"read": "read (sum)", "write": "write (fill)", "write_nt": "write (fill), streaming stores",
              "copy": "copy (read + write counted)", "copy_nt": "copy, streaming stores"}
    mib = mem["array_bytes"] / (1 << 20)
    for kind in MEMORY_KINDS:
        row(f"{labels[kind]}, float32 {mib:.0f} MiB", mem["gb_per_s"][kind],
            mem.get("gb_per_s_best", {}).get(kind, {}), "GB/s")
    unit = "FMA" if fma["fused"] else "mul+add"
    for name in ("float32", "float64"):
        f = fma[name]
        what = f"{f['lanes']} lanes × {fma['chains']} chains" + (
            f", `{f['instruction']}`" if f["instruction"] else "")
        row(f"{unit} peak {name} ({fma['vector_bits']}-bit, {what})", f["gflop_per_s"],
            f.get("gflop_per_s_best", {}), "GFLOP/s")
    blas = limits["gemm"]["blas"]
    name = blas.get("library") or "BLAS"
    core = f", {blas['core']} kernel" if blas.get("core") else ""
    best = limits["gemm"].get("float32_best", {})
    for n, values in limits["gemm"]["float32"].items():
        row(f"GEMM float32 {n}² ({name}{core})", values, best.get(n, {}), "GFLOP/s")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--all-cores", action="store_true", help="also measure with every core")
    ap.add_argument("--gemm-sizes", type=int, nargs="+", default=list(GEMM_SIZES))
    ap.add_argument("--array-mib", type=float, help="memory-test array size (default: ≥ 8× LLC)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    threads = list(args.threads) + ([len(available_cores())] if args.all_cores else [])
    array_bytes = int(args.array_mib * (1 << 20)) if args.array_mib else None
    limits = measure(threads, tiny=args.tiny, gemm_sizes=args.gemm_sizes, array_bytes=array_bytes)
    print(markdown(limits))
    print(f"\n({limits['seconds']:.1f} s)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(limits, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
