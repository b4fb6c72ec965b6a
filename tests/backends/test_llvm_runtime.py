"""llvm backend runtime: threads, disk cache, inspection, export, pickling, trust_input."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import host_vector_registers
from test_llvm_helpers import compare, rand

import symgraph as sg
from symgraph.backends import cache_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _mlp():
    rng = np.random.default_rng(0)
    x = sg.matrix("x")
    t = sg.vector("t", dtype="int64")
    w1 = sg.shared(rng.standard_normal((13, 32)).astype("float32") * 0.3, "w1")
    b1 = sg.shared(np.zeros(32, "float32"), "b1")
    w2 = sg.shared(rng.standard_normal((32, 5)).astype("float32") * 0.3, "w2")
    h = sg.relu(x @ w1 + b1)
    loss = sg.nn.cross_entropy(h @ w2, t)
    return x, t, [w1, b1, w2], loss


def test_mlp_gradients_match_reference():
    x, t, params, loss = _mlp()
    grads = sg.grad(loss, params)
    compare([x, t], [loss] + grads, [rand((64, 13)), np.arange(64, dtype=np.int64) % 5],
            tol=dict(rtol=1e-4, atol=1e-5))


def test_threads_agree():
    x = sg.matrix("x")
    y = sg.tanh(x * 2.0 + 1.0)
    s = (y * y).sum(axis=1)
    v = rand((300, 257))
    f1 = sg.compile([x], [y, s], threads=1)
    f2 = sg.compile([x], [y, s], threads=2)
    for a, b in zip(f1(v), f2(v)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_env_threads(monkeypatch):
    monkeypatch.setenv("SYMGRAPH_NUM_THREADS", "3")
    x = sg.vector("x")
    f = sg.compile([x], x + 1)
    assert f.program.threads == 3


def test_disk_cache_hit_and_corruption(_cache_dir):
    x = sg.vector("x")
    f = sg.compile([x], sg.exp(x) * 3)
    v = rand((33,))
    np.testing.assert_allclose(f(v), np.exp(v) * 3, rtol=1e-6)
    assert f.program.compiles == 1
    g = sg.compile([x], sg.exp(x) * 3)
    np.testing.assert_allclose(g(v), np.exp(v) * 3, rtol=1e-6)
    assert g.program.cache_hits == 1 and g.program.compiles == 0
    files = list(_cache_dir.rglob("*.o"))
    assert len(files) == 1
    data = files[0].read_bytes()
    files[0].write_bytes(data[:len(data) // 2])  # truncated
    h = sg.compile([x], sg.exp(x) * 3)
    np.testing.assert_allclose(h(v), np.exp(v) * 3, rtol=1e-6)
    assert h.program.compiles == 1
    assert cache_store.load(files[0].stem, ".o") is not None  # rewritten
    corrupt = bytearray(files[0].read_bytes())
    corrupt[-5] ^= 0xFF
    files[0].write_bytes(bytes(corrupt))
    assert cache_store.load(files[0].stem, ".o") is None


def test_cache_off(monkeypatch, _cache_dir):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")
    x = sg.vector("x")
    f = sg.compile([x], x * 2)
    f(rand((3,)))
    assert not _cache_dir.exists()


_WORKER = textwrap.dedent("""
    import sys, numpy as np, symgraph as sg
    x = sg.matrix("x")
    y = (sg.tanh(x @ x.T) + sg.exp(-x).sum()).sum(axis=0)
    f = sg.compile([x], y)
    v = np.linspace(-1, 1, 35, dtype="float32").reshape(5, 7)
    want = (np.tanh(v @ v.T) + np.exp(-v).sum()).sum(axis=0)
    assert np.allclose(f(v), want, rtol=1e-5), (f(v), want)
    print("ok", f.program.compiles, f.program.cache_hits)
""")


def test_concurrent_processes_share_the_cache(_cache_dir):
    env = dict(os.environ, SYMGRAPH_CACHE_DIR=str(_cache_dir), PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.startswith("ok")
    entries = list(_cache_dir.rglob("*.o"))
    assert len(entries) == 1
    assert not list(_cache_dir.rglob("*.tmp"))
    # a corrupted entry is detected and every process still gets correct results
    entries[0].write_bytes(b"garbage")
    out = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1:] == ["1", "0"]  # recompiled, not loaded


def test_inspection_names_comments_and_vector_asm():
    x = sg.vector("x")
    y = sg.exp(sg.tanh(x) * 2.0)
    f = sg.compile([x], y)
    f(rand((1000,)))
    g = sg.compile([x], y)
    g(rand((1000,)))
    assert [k.name for k in f.kernels] == [k.name for k in g.kernels]
    k = f.kernels[0]
    assert k.ops and "tanh" in " ".join(k.ops) + k.name
    assert k.source.startswith(f"; kernel {k.name}: from nodes")
    src = f.source()
    assert f"; kernel {k.name}: from nodes" in src and "symgraph_entry" in src
    asm = f.asm()
    registers = host_vector_registers()
    if registers is not None:
        assert re.search(registers, asm)


def test_pickle_roundtrip():
    w = sg.shared(np.arange(3, dtype=np.float32), "w")
    x = sg.vector("x")
    f = sg.compile([x], (x * w).sum(), updates=[(w, w + 1)])
    f(np.ones(3, np.float32))
    g = pickle.loads(pickle.dumps(f))
    assert float(g(np.ones(3, np.float32))) == pytest.approx(6.0)


def test_trust_input_and_errors():
    x = sg.matrix("x")
    f = sg.compile([x], x * 2, trust_input=True)
    np.testing.assert_allclose(f(np.ones((2, 3), np.float32)), 2.0)
    g = sg.compile([x], x * 2)
    with pytest.raises(TypeError):
        g(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError):
        g(np.ones(3, np.float32))
    np.testing.assert_allclose(g([[1.0, 2.0]]), [[2.0, 4.0]])


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the C program")
def test_export_c_program(tmp_path):
    X = sg.matrix("X")
    y = sg.vector("y")
    w = sg.shared(np.zeros(3, "float32"), "w")
    b = sg.shared(np.float32(0), "b")
    p = sg.sigmoid(X @ w + b)
    loss = -(y * sg.log(p) + (1 - y) * sg.log(1 - p)).mean()
    gw, gb = sg.grad(loss, [w, b])
    f = sg.compile([X, y], loss, updates=[(w, w - 0.5 * gw), (b, b - 0.5 * gb)])
    Xv = ((np.arange(12) % 5) / 5 - 0.4).astype("float32").reshape(4, 3)
    yv = (np.arange(4) % 2).astype("float32")
    paths = f.export(str(tmp_path / "lr"), example_inputs=[Xv, yv])
    header = Path(paths["header"]).read_text()
    assert "int32_t lr_run(lr_ctx *ctx, const float *X, const float *y, float *out0);" in header
    (tmp_path / "main.c").write_text(textwrap.dedent("""
        #include <stdio.h>
        #include "lr.h"
        int main(void) {
            float X[12], y[4], loss, w[3];
            for (int i = 0; i < 12; i++) X[i] = (float)(i % 5) / 5.0f - 0.4f;
            for (int i = 0; i < 4; i++) y[i] = (float)(i % 2);
            lr_ctx *ctx;
            if (lr_create(&ctx) != LR_OK) return 1;
            for (int it = 0; it < 3; it++) { lr_run(ctx, X, y, &loss); printf("%.6f\\n", loss); }
            lr_get_w(ctx, w, 3);
            lr_destroy(ctx);
            printf("%.6f %.6f %.6f\\n", w[0], w[1], w[2]);
            return 0;
        }
    """))
    subprocess.run(["gcc", "-O2", "-std=c11", "-o", str(tmp_path / "main"), str(tmp_path / "main.c"),
                    f"-L{tmp_path}", "-l:lr.so", f"-Wl,-rpath,{tmp_path}"], check=True, cwd=tmp_path)
    out = subprocess.run([str(tmp_path / "main")], capture_output=True, text=True, check=True).stdout
    lines = out.split("\n")
    want = [float(f(Xv, yv)) for _ in range(3)]
    got = [float(v) for v in lines[:3]]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose([float(v) for v in lines[3].split()], w.get_value(), rtol=1e-5)


def test_profile_stats_count_kernel_calls():
    x = sg.vector("x")
    f = sg.compile([x], [sg.exp(x), x.sum()], profile=True)
    for _ in range(3):
        f(rand((100,)))
    stats = f.stats()
    assert len(stats) == len(f.kernels) >= 2
    assert all(s["calls"] == 3 and s["seconds"] >= 0 for s in stats)
    assert {s["kernel"] for s in stats} == {k.name for k in f.kernels}
