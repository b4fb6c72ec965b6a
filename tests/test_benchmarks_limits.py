"""The machine-limits benchmark (benchmarks/limits.py) and the report's fractions of the limits.

No time or speed is asserted: the generated loops are checked for doing the work they are
counted for, the figures for being positive and finite, the work counts against PyTorch's
own flop counter, and the fraction arithmetic on made-up limits.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import limits as L
from benchmarks import report
from benchmarks.workloads import WORKLOADS, limit_work, make_data, sizes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive_finite(values: dict) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values.values())


def test_limits_script_tiny(tmp_path):
    out = tmp_path / "limits.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "limits.py"), "--tiny",
           "--threads", "1", "2", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["threads"] == [1, 2]
    for key in ("gb_per_s", "gb_per_s_best"):
        mem = data["memory"][key]
        assert set(mem) == set(L.MEMORY_KINDS)
        for kind in L.MEMORY_KINDS:
            assert set(mem[kind]) == {"1", "2"} and _positive_finite(mem[kind]), (kind, mem[kind])
            # the best repeat is at least as fast as the median
            assert data["memory"]["gb_per_s_best"][kind]["1"] >= data["memory"]["gb_per_s"][kind]["1"]
    fma = data["fma"]
    assert fma["vector_bits"] in (128, 256, 512)
    for name, size in (("float32", 4), ("float64", 8)):
        assert fma[name]["lanes"] == fma["vector_bits"] // (8 * size)
        for key in ("gflop_per_s", "gflop_per_s_best"):
            assert set(fma[name][key]) == {"1", "2"} and _positive_finite(fma[name][key])
    for key in ("float32", "float32_best"):
        gemm = data["gemm"][key]
        assert gemm and all(set(v) == {"1", "2"} and _positive_finite(v) for v in gemm.values())
    assert "| GEMM float32 " in proc.stdout and "| copy, streaming stores" in proc.stdout


def _threaded_memory_call(fn, kind, a, b, scratch, value, threads, lanes):
    chunk = a.size // threads
    jobs = [L._memory_job(fn, kind, a, b, scratch, value, i, chunk, lanes) for i in range(threads)]
    L.run_threads(jobs, L.cores_for(threads))


@pytest.mark.parametrize("threads", [1, 2])
def test_memory_loops_do_the_counted_work(threads):
    """read sums every element, write fills every element, copy copies every element."""
    lanes = L.host()["vector_bits"] // 32
    code = L.Compiled(L.memory_ir(lanes))
    P, I64 = ctypes.c_void_p, ctypes.c_int64
    n = L.UNROLL * lanes * threads * 37
    rng = np.random.default_rng(0)
    a = L.aligned_empty(n)
    a[:] = rng.integers(0, 8, n)  # small integers: the float32 sum is exact in any order
    b = L.aligned_empty(n)
    scratch = L.aligned_empty(lanes * threads)
    value = L.aligned_empty(lanes)
    value.fill(7.0)

    _threaded_memory_call(code.function("lim_read", P, P, I64, I64), "read", a, b, scratch,
                          value, threads, lanes)
    assert scratch.sum() == a.sum()
    for suffix in ("", "_nt"):
        src = rng.standard_normal(n).astype(np.float32)
        b[:] = src
        dst = L.aligned_empty(n)
        dst.fill(0.0)
        _threaded_memory_call(code.function(f"lim_copy{suffix}", P, P, I64, I64), "copy", dst, b,
                              scratch, value, threads, lanes)
        np.testing.assert_array_equal(dst, src)
        _threaded_memory_call(code.function(f"lim_write{suffix}", P, P, I64, I64), "write", dst, b,
                              scratch, value, threads, lanes)
        assert (dst == 7.0).all()


@pytest.mark.parametrize("scalar,dtype", [("float", np.float32), ("double", np.float64)])
@pytest.mark.parametrize("fused", [True, False])
def test_fma_loop_does_the_counted_work(scalar, dtype, fused):
    """``iters`` loop iterations run 2 rounds of ``acc = acc * a + b`` on every chain: the
    result equals that recurrence computed by NumPy."""
    lanes, chains, iters = 4, 5, 9
    code = L.Compiled(L.fma_ir(lanes, scalar, chains, fused))
    fn = code.function("lim_fma", ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)
    a = np.linspace(0.5, 0.9, lanes).astype(dtype)
    b = np.linspace(0.1, 0.4, lanes).astype(dtype)
    params = np.concatenate([a, b])
    out = np.zeros(lanes, dtype)
    fn(params.ctypes.data, iters, out.ctypes.data)
    acc = b.astype(np.float64)
    for _ in range(2 * iters):
        acc = acc * a + b
    np.testing.assert_allclose(out, chains * acc, rtol=1e-5)


def test_fma_instruction_is_read_from_the_assembly():
    info = L.host()
    lanes = info["vector_bits"] // 32
    asm = L.Compiled(L.fma_ir(lanes, "float", 2, info["fma"])).assembly
    assert L.fma_instruction(asm, info["fma"]) != ""
    assert L.fma_instruction("lim_fma:\n\tretq\n") == ""


@pytest.mark.parametrize("workload", ["w2", "w4"])
@pytest.mark.parametrize("tiny", [True, False])
def test_gemm_work_matches_torch_flop_counter(workload, tiny):
    """The flop a training step needs (limit_work) is what PyTorch's flop counter sees its
    autograd step do (matmuls and convolutions, forward and backward)."""
    pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.peers import torch_peer
    s = sizes(tiny)
    runner = torch_peer.build(workload, make_data(workload, s), s, 1, {})
    with FlopCounterMode(display=False) as counter:
        runner.call()
    assert limit_work(workload, s).amount == counter.get_total_flops()


def test_memory_work_counts_one_read_and_one_write():
    s = sizes(False)
    assert limit_work("w1f", s).amount == make_data("w1f", s)["x"].nbytes * 2
    data = make_data("w6", s)
    assert limit_work("w6", s).amount == 2 * data["logits"].nbytes + data["labels"].nbytes
    assert limit_work("w3", s) is None


def _fake_limits():
    return {"threads": [1, 2], "seconds": 1.0, "host": {"cpu": "test"},
            "memory": {"array_bytes": 1 << 27, "lanes": 8, "gb_per_s": {
                "read": {"1": 20.0, "2": 30.0}, "write": {"1": 8.0, "2": 9.0},
                "write_nt": {"1": 10.0, "2": 12.0}, "copy": {"1": 16.0, "2": 20.0},
                "copy_nt": {"1": 12.0, "2": 25.0}},
                "gb_per_s_best": {"copy": {"1": 17.0, "2": 21.0}, "copy_nt": {"1": 13.0, "2": 30.0}}},
            "fma": {"vector_bits": 256, "chains": 12, "fused": True,
                    "float32": {"lanes": 8, "gflop_per_s": {"1": 100.0, "2": 200.0},
                                "instruction": "vfmadd213ps ymm"},
                    "float64": {"lanes": 4, "gflop_per_s": {"1": 50.0, "2": 100.0},
                                "instruction": "vfmadd213pd ymm"}},
            "gemm": {"float32": {"256": {"1": 40.0, "2": 60.0}, "1024": {"1": 80.0, "2": 150.0}},
                     "blas": {"library": "OpenBLAS", "core": "Haswell"}}}


def test_fractions_use_the_applicable_limit():
    lim, s = _fake_limits(), sizes(False)
    # the better copy bandwidth (ordinary or streaming stores) at the row's thread count,
    # from the best repeat where recorded (the fractions' default), else the median
    assert L.bandwidth(lim, 1) == 17.0 and L.bandwidth(lim, 2) == 30.0
    assert L.bandwidth(lim, 1, best=False) == 16.0 and L.bandwidth(lim, 2, best=False) == 25.0
    assert L.fma_rate(lim, 2) == 200.0
    # W2's GEMMs stand for a square size near 813: the 1024 rate, not 256
    assert L.gemm(lim, 1, limit_work("w2", s).gemm_n) == (1024, 80.0)
    rows = []
    for threads in (1, 2):
        bw = L.bandwidth(lim, threads) * 1e9
        rows.append({"peer": "p", "workload": "w1f", "threads": threads,
                     "median": 2 * limit_work("w1f", s).amount / bw})  # half the limit's speed
        rows.append({"peer": "p", "workload": "w2", "threads": threads,
                     "median": limit_work("w2", s).amount / (L.gemm(lim, threads, 1024)[1] * 1e9)})
        rows.append({"peer": "p", "workload": "w3", "threads": threads, "median": 1e-6})
    for r in rows:
        r.update(min=r["median"], max=r["median"], error=0.0)
    got = {(r["workload"], r["threads"]): report.fractions(r, s, lim) for r in rows}
    assert got[("w1f", 1)]["fraction"] == pytest.approx(0.5)
    assert got[("w1f", 2)]["fraction"] == pytest.approx(0.5)
    assert got[("w2", 2)]["fraction"] == pytest.approx(1.0)
    assert got[("w2", 2)]["fma_fraction"] == pytest.approx(150.0 / 200.0)
    assert got[("w3", 1)] is None
    table = report.fraction_table(rows, 2, s, lim)
    assert "*copy 30 GB/s: " in table and "*GEMM 1024² 150 GFLOP/s: " in table
    assert "| p | 0.50 | 1.00 (FMA 0.75) |  |" in table
    text = report.markdown(rows, [], [1, 2], s, "header\n", lim)
    assert "### Machine limits" in text and "fraction of the machine limit" in text
    assert "| GEMM float32 1024² (OpenBLAS, Haswell kernel) | 80 GFLOP/s | 150 GFLOP/s |" in text
    assert "fraction of the machine limit" not in report.markdown(rows, [], [1, 2], s, "h\n", None)


def test_every_workload_states_its_limit():
    s = sizes(False)
    kinds = {w: (limit_work(w, s).kind if limit_work(w, s) else None) for w in WORKLOADS}
    assert kinds == {"w1f": "memory", "w1b": "memory", "w2": "gemm", "w3": None,
                     "w4": "gemm", "w6": "memory"}


def test_vector_shape_follows_the_cpu_features():
    """AVX-512 hosts measure 512-bit FMAs, AVX2 hosts 256-bit, whatever host runs the test."""
    x86 = "x86_64-unknown-linux-gnu"
    assert L.vector_shape(x86, {"avx512f", "avx2", "avx", "fma"}) == (512, 32, True)
    assert L.vector_shape(x86, {"avx2", "avx", "fma"}) == (256, 16, True)
    assert L.vector_shape(x86, {"avx"}) == (256, 16, False)
    assert L.vector_shape(x86, {"sse2"}) == (128, 16, False)
    assert L.vector_shape("aarch64-unknown-linux-gnu", {"neon"}) == (128, 32, True)
