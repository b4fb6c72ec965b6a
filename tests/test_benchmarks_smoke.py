"""The benchmark harness runs end to end on tiny sizes (NumPy + symgraph, reference backend).

No timing is asserted: only that every workload runs, passes the numeric check against the
hand-written NumPy version and lands in the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_run_tiny(tmp_path):
    out_md, out_json = tmp_path / "bench.md", tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--tiny", "--threads", "1",
           "--seconds", "0.02", "--min-repeats", "2", "--peers", "numpy", "symgraph",
           "--backend", "reference", "--write", str(out_md), "--json", str(out_json)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out_json.read_text())
    rows = data["rows"]
    got = {(r["peer"], r["workload"]) for r in rows if "median" in r}
    for wl in ["w1f", "w1b", "w2", "w3", "w4", "w6"]:
        assert ("numpy", wl) in got and ("symgraph", wl) in got
    assert ("symgraph (trust_input)", "w3") in got
    assert all(r["error"] < 1e-3 for r in rows), [(r["peer"], r["workload"], r["error"]) for r in rows]
    assert [r["peer"] for r in data["w5"]] == ["numpy", "symgraph"]
    assert all(r["cold"]["first_result_s"] > 0 and r["warm"]["process_s"] > 0 for r in data["w5"])
    text = out_md.read_text()
    assert "ratio to the best peer" in text and "| symgraph |" in text
    # the machine limits were measured once, printed, and every bounded workload has a fraction
    results = text.split("\n## Results\n", 1)[1]  # after the how-to, which names the limits too
    assert data["limits"]["threads"] == [1] and "### Machine limits" in results
    assert "fraction of the machine limit" in results
    bounded = [r for r in rows if r["workload"] != "w3"]
    assert all(r["limit"]["fraction"] > 0 for r in bounded), [r.get("limit") for r in bounded]
    assert all("limit" not in r for r in rows if r["workload"] == "w3")


def test_run_without_limits(tmp_path):
    out_md, out_json = tmp_path / "bench.md", tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--tiny", "--threads", "1",
           "--seconds", "0.01", "--min-repeats", "2", "--peers", "numpy", "--workloads", "w1f",
           "--no-limits", "--write", str(out_md), "--json", str(out_json)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads(out_json.read_text())["limits"] is None
    results = out_md.read_text().split("\n## Results\n", 1)[1]  # after the how-to
    assert "| numpy |" in results
    assert "Machine limits" not in results and "fraction of the machine limit" not in results


def test_numeric_check_catches_a_wrong_gradient():
    from benchmarks.peers import numpy_peer
    from benchmarks.timing import check
    from benchmarks.workloads import make_data, sizes

    data = make_data("w2", sizes(True))
    initial = [p.astype(np.float64) for p in data["params"]]
    ref_runner = numpy_peer.build("w2", data, None, 1, {})
    ref = ref_runner.outputs(ref_runner.call())
    assert check(ref, ref, initial) == 0.0
    bad = [ref[0]] + [initial[0] + 2 * (ref[1] - initial[0])] + ref[2:]  # doubled first gradient
    assert check(ref, bad, initial) > 0.5


def test_compile_time_script_small():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "compile_time.py"), "--backend",
           "reference", "--chains", "10", "30", "--layers", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| chain 30 | 30 → " in proc.stdout and "| MLP layers 2 |" in proc.stdout


def test_shape_generic_benchmark_tiny():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "shape_generic.py"), "--tiny",
           "--seconds", "0.03", "--rounds", "1"]
    env = dict(os.environ, SYMGRAPH_CACHE_DIR="off")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["w2", "w4", "w6"]
    # each workload compiled with an unknown batch dim generated its code once
    assert all(r[-1] == "1" and float(r[3]) > 0 for r in rows), proc.stdout


def test_conv_paths_benchmark_small():
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "conv_paths.py"), "--shapes", "rgb3x3",
           "--repeats", "1"]
    env = dict(os.environ, SYMGRAPH_CACHE_DIR="off")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = [line.strip("|").split("|") for line in proc.stdout.splitlines() if line.startswith("| rgb3x3")]
    assert [r[1].strip() for r in rows] == ["forward", "grad_weight", "grad_input"]
    # the rule's pick for each op: 16 output channels are enough lanes, 3 input channels are not
    assert [r[-1].strip() for r in rows] == ["direct", "direct", "im2col"]
