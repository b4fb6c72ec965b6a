"""Fast import and warm start: the llvm backend finds cached code by the unrewritten graph."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import rewrite_disabled

import symgraph as sg
from symgraph.backends import cache_store, llvm_warm
from symgraph.compile import build_fgraph
from symgraph.graph.fingerprint import fingerprint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _run(code: str, cache: Path, *args: str) -> dict:
    env = dict(os.environ, SYMGRAPH_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_import_does_not_load_heavy_modules():
    code = ("import sys, json, symgraph\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sympy', 'llvmlite', 'scipy', 'hypothesis', 'pycuda'))))")
    assert _run(code, Path("off")) == []


_MLP = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import symgraph as sg
    rng = np.random.default_rng(0)
    w1 = sg.shared(rng.standard_normal((6, 8)).astype("float32"), name="w1")
    b1 = sg.shared(np.zeros(8, "float32"), name="b1")
    w2 = sg.shared(rng.standard_normal((8, 3)).astype("float32"), name="w2")
    x = sg.tensor("x", (5, 6))
    y = sg.tensor("y", (5,), dtype="int64")
    loss = sg.nn.cross_entropy(sg.relu(x @ w1 + b1) @ w2, y)
    params = [w1, b1, w2]
    grads = sg.grad(loss, params)
    f = sg.compile([x, y], [loss, grads[0]], updates=[(p, p - 0.1 * g) for p, g in zip(params, grads)])
    prog = f.program
    lazy = prog.last.prog
    state = {"warm_hits": prog.warm_hits, "compiles": prog.compiles,
             "rewritten_before_call": not f._rewrite_pending,
             "lowered_before_call": getattr(lazy, "is_lowered", True)}
    xv = rng.standard_normal((5, 6)).astype("float32")
    yv = np.array([0, 2, 1, 1, 0])
    out = [f(xv, yv) for _ in range(2)]
    state["lowered_after_call"] = getattr(lazy, "is_lowered", True)
    state["llvmlite_binding_loaded"] = "llvmlite.binding" in sys.modules
    state["results"] = [[o.tolist() for o in r] for r in out] + [w1.get_value().tolist()]
    state["kernels"] = [(k.name, k.ir) for k in f.kernels]
    state["source"] = f.source()
    state["asm_lines"] = len(f.asm().splitlines())
    state["rewrites"] = len(f.rewrite_log)
    state["nodes"] = len(f.fgraph.nodes)
    files = f.export(sys.argv[1], kind="object")
    state["export"] = sorted(os.path.basename(p) for p in files.values())
    state["header"] = open(files["header"]).read()
    print(json.dumps(state))
""")


def test_warm_process_skips_rewrite_and_lowering_and_matches_a_cold_compile(_cache_dir):
    cold = _run(_MLP, _cache_dir, str(_mkdir(_cache_dir.parent / "cold") / "step"))
    assert cold["compiles"] == 1 and cold["warm_hits"] == 0 and cold["rewritten_before_call"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warm entry that disagreed with lowering would warn
        warm = _run("import warnings; warnings.simplefilter('error')\n" + _MLP, _cache_dir,
                    str(_mkdir(_cache_dir.parent / "warm") / "step"))
    assert warm["warm_hits"] == 1 and warm["compiles"] == 0
    assert not warm["rewritten_before_call"]
    assert not warm["lowered_before_call"] and not warm["lowered_after_call"]
    if platform.machine() == "x86_64":  # the object code is loaded without llvmlite
        assert not warm["llvmlite_binding_loaded"]
    assert warm["results"] == cold["results"]  # bit for bit: the same object code ran
    # inspection rewrites and lowers on demand and shows what a cold compile shows
    for k in ("kernels", "source", "asm_lines", "rewrites", "nodes", "header"):
        assert warm[k] == cold[k], k
    assert cold["rewrites"] > 0 and cold["kernels"]


def _graph(const=2.0, axis=1, shape=(4, 3), dtype="float32", name="x"):
    x = sg.tensor(name, shape, dtype=dtype)
    return [x], sg.sum(sg.exp(x) * const, axis=axis)


def _compile(case, **kw):
    inputs, out = case
    return sg.compile(inputs, out, **kw)


def _value(case):
    x = case[0][0]
    return (np.arange(np.prod(x.shape)).reshape(x.shape) % 5 * 0.25).astype(x.dtype)


def test_same_graph_hits_and_every_change_misses():
    base = _compile(_graph())
    assert base.program.warm_hits == 0 and base.program.compiles == 1
    again = _compile(_graph())
    assert again.program.warm_hits == 1 and again.program.compiles == 0
    variants = {"constant": _graph(const=3.0), "op prop": _graph(axis=0),
                "static shape": _graph(shape=(4, 5)), "dtype": _graph(dtype="float64"),
                "input name": _graph(name="z")}
    for what, case in variants.items():
        f = _compile(case)
        assert f.program.warm_hits == 0, what
        v = _value(case)
        want = sg.compile(case[0], case[1], backend="reference")(v)
        np.testing.assert_allclose(f(v), want, rtol=1e-6, err_msg=what)
    # compile options that change the code are part of the key too
    assert _compile(_graph(), profile=True).program.warm_hits == 0
    assert _compile(_graph(), rewrite=False).program.warm_hits == 0
    # ...and the thread count, which does not change the code, is not
    assert _compile(_graph(), threads=2).program.warm_hits == 1


def test_a_process_missing_one_of_the_rewrites_compiles_from_the_graph():
    """Comparing a graph with and without a rewrite (tests, benchmarks/pool_fusion.py) must
    not get the fused code back from a warm entry keyed by the sources alone."""
    from symgraph.rewrite import engine
    x = sg.tensor("x", (3, 1, 6, 6))
    w = sg.shared(np.ones((2, 1, 3, 3), "float32"), name="w")
    out = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(x, w, padding=1)), 2)
    loss = sg.sum(out * out)
    fused = sg.compile([x], [loss, sg.grad(loss, w)])
    assert any(k.name.startswith("max_pool_relu_grad") for k in fused.kernels)
    with rewrite_disabled("max_pool_relu_grad"):
        apart = sg.compile([x], [loss, sg.grad(loss, w)])
        assert apart.program.warm_hits == 0
        assert not any(k.name.startswith("max_pool_relu_grad") for k in apart.kernels)
    assert not engine.LOCAL.missing
    assert sg.compile([x], [loss, sg.grad(loss, w)]).program.warm_hits == 1  # all back: warm again


def test_shared_values_are_inputs_not_part_of_the_key():
    def build(value):
        w = sg.shared(np.full((3,), value, "float32"), name="w")
        x = sg.vector("x")
        return sg.compile([x], x * w + 1), w
    f, _ = build(1.0)
    g, w = build(5.0)
    assert g.program.warm_hits == 0  # shapes unknown until the first call
    v = np.array([1.0, 2.0, 3.0], "float32")
    f(v)
    np.testing.assert_array_equal(g(v), v * 5 + 1)
    assert g.program.warm_hits == 1
    w.set_value(np.full((3,), 7.0, "float32"))
    np.testing.assert_array_equal(g(v), v * 7 + 1)


def test_dynamic_shapes_get_one_warm_entry_per_shape_tuple():
    x = sg.matrix("x")
    f = sg.compile([x], sg.tanh(x).sum(axis=0))
    a, b = np.ones((2, 3), "float32"), np.ones((4, 5), "float32")
    f(a)
    f(b)
    g = sg.compile([x], sg.tanh(x).sum(axis=0))
    np.testing.assert_allclose(g(b), np.tanh(b).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(g(a), np.tanh(a).sum(axis=0), rtol=1e-6)
    assert g.program.warm_hits == 2 and g.program.compiles == 0


def _warm_files(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*" + llvm_warm.WARM))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_warm_entries_are_detected_and_rewritten(_cache_dir, damage):
    f = _compile(_graph())
    (entry,) = _warm_files(_cache_dir)
    data = entry.read_bytes()
    if damage == "flip":
        bad = bytearray(data)
        bad[-3] ^= 0x55
        data = bytes(bad)
    elif damage == "truncate":
        data = data[:len(data) // 2]
    else:  # a valid checksum around a payload that is not a warm record
        entry.unlink()
        cache_store.store(entry.stem, b"not a warm record", llvm_warm.WARM)
        data = entry.read_bytes()
    entry.write_bytes(data)
    assert llvm_warm.load(entry.stem) is None
    g = _compile(_graph())
    assert g.program.warm_hits == 0
    v = _value(_graph())
    np.testing.assert_array_equal(g(v), f(v))
    assert llvm_warm.load(entry.stem) is not None  # rewritten by the miss
    assert _compile(_graph()).program.warm_hits == 1


def test_missing_object_code_turns_a_warm_entry_into_a_miss(_cache_dir):
    _compile(_graph())
    for obj in _cache_dir.rglob("*.o"):
        obj.unlink()
    g = _compile(_graph())
    assert g.program.warm_hits == 0 and g.program.compiles == 1


def test_a_warm_entry_that_disagrees_with_lowering_warns_and_is_removed(_cache_dir):
    _compile(_graph())
    _compile(_graph(const=3.0))
    (e1, r1), (e2, r2) = ((e, llvm_warm.load(e.stem)) for e in _warm_files(_cache_dir))
    # swap the object code the two entries point at: both are now stale
    for entry, summary, digest in ((e1, r1[1], r2[0]), (e2, r2[1], r1[0])):
        summary = {name: llvm_warm._plain(value) for name, value in summary.items()}
        record = {"format": llvm_warm.FORMAT, "digest": digest, "summary": summary}
        cache_store.store(entry.stem, llvm_warm.encode(record), llvm_warm.WARM)
    g = _compile(_graph())
    assert g.program.warm_hits == 1
    with pytest.warns(RuntimeWarning, match="warm-start cache entry did not match"):
        assert g.kernels
    assert len(_warm_files(_cache_dir)) == 1  # the stale entry of g's graph was removed
    assert _compile(_graph()).program.warm_hits == 0


def test_cache_off_skips_the_warm_cache(monkeypatch, _cache_dir):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")
    f = _compile(_graph())
    g = _compile(_graph())
    assert f.program.warm_hits == g.program.warm_hits == 0
    assert not _cache_dir.exists()


def _fgraph(case):
    return build_fgraph(case[0], case[1])[0]


def test_fingerprint_is_structural():
    assert fingerprint(_fgraph(_graph())) == fingerprint(_fgraph(_graph()))
    assert fingerprint(_fgraph(_graph())) != fingerprint(_fgraph(_graph(const=2.5)))
    assert fingerprint(_fgraph(_graph()), ("llvm",)) != fingerprint(_fgraph(_graph()), ("reference",))
    # wiring matters, not only the multiset of nodes
    x, y = sg.vector("x"), sg.vector("y")
    a = build_fgraph([x, y], x - y)[0]
    x, y = sg.vector("x"), sg.vector("y")
    b = build_fgraph([x, y], y - x)[0]
    assert fingerprint(a) != fingerprint(b)


def test_ops_defined_outside_symgraph_are_not_fingerprinted():
    from symgraph.ops.elemwise import Elemwise

    class MyExp(Elemwise):
        pass

    x = sg.tensor("x", (3,))
    op = sg.exp(x).owner.op
    y = MyExp(op.expr, op.nin)(x)
    assert fingerprint(build_fgraph([x], y)[0]) is None
    with pytest.raises(sg.CompileError, match="cannot lower"):  # still raised at build time
        sg.compile([x], y)


def test_edited_sources_do_not_reuse_warm_entries(monkeypatch):
    _compile(_graph())
    assert _compile(_graph()).program.warm_hits == 1
    # what an edit of any symgraph source or kernel template does to the code identity
    monkeypatch.setitem(cache_store._state, "code", "edited-sources")
    assert _compile(_graph()).program.warm_hits == 0
    assert _compile(_graph()).program.warm_hits == 1
