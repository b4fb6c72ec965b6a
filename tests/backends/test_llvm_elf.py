"""The in-process ELF loader gives the same results as MCJIT and steps aside when it must."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import llvm_elf, llvm_jit


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")


def _cases():
    rng = np.random.default_rng(1)
    x = sg.tensor("x", (300, 257))
    big = rng.standard_normal((300, 257)).astype("float32")
    yield "math, parallel", [x], [sg.tanh(x * 2.0) + sg.exp(-x * x), sg.log1p(x * x).sum(axis=0)], [big]
    a, b = sg.matrix("a"), sg.matrix("b")
    va, vb = rng.standard_normal((33, 20)).astype("float32"), rng.standard_normal((20, 7)).astype("float32")
    yield "matmul (OpenBLAS)", [a, b], [sg.relu(a @ b + 1.0)], [va, vb]
    z = sg.matrix("z")
    t = sg.vector("t", dtype="int64")
    loss = sg.nn.cross_entropy(z, t)
    yield "softmax-CE + grad", [z, t], [loss, sg.grad(loss, z)], \
        [rng.standard_normal((16, 10)).astype("float32"), rng.integers(0, 10, 16)]
    i = sg.vector("i", dtype="int32")
    yield "integers", [i], [(i * 3) // 2 - i % 5, sg.max(i)], [np.arange(-50, 50, dtype="int32")]


@pytest.mark.parametrize("case", list(_cases()), ids=lambda c: c[0])
def test_elf_loader_matches_mcjit(case, monkeypatch):
    _, inputs, outputs, values = case
    f = sg.compile(inputs, outputs)
    got = f(*values)
    assert isinstance(f.program.last.loaded, llvm_elf.Image)
    monkeypatch.setenv("SYMGRAPH_LOADER", "mcjit")
    g = sg.compile(inputs, outputs)
    want = g(*values)
    assert isinstance(g.program.last.loaded, llvm_jit.Loaded)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    want_ref = sg.compile(inputs, outputs, backend="reference")(*values)
    for a, b in zip(got, want_ref):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)


def test_profile_counters_and_threads_through_the_elf_loader():
    x = sg.vector("x")
    f = sg.compile([x], sg.exp(x) + 1, profile=True, threads=2)
    v = np.linspace(-1, 1, 100000).astype("float32")
    for _ in range(3):
        f(v)
    loaded = f.program.last.loaded
    assert isinstance(loaded, llvm_elf.Image)
    assert loaded.nthreads is not None and loaded.nthreads.value == 2
    assert sum(s["calls"] for s in f.stats()) >= 3
    f.program.set_threads(1)
    assert loaded.nthreads.value == 1
    np.testing.assert_allclose(f(v), np.exp(v) + 1, rtol=1e-6)


def test_objects_outside_the_supported_format_are_left_to_mcjit():
    x = sg.vector("x")
    f = sg.compile([x], x + 1)
    f(np.ones(3, "float32"))
    obj = llvm_jit.emit_object(llvm_jit.optimize(f.source()))
    assert llvm_elf.load(obj, "symgraph_entry") is not None
    assert llvm_elf.load(b"not an object file", "symgraph_entry") is None
    assert llvm_elf.load(obj[:200], "symgraph_entry") is None
    assert llvm_elf.load(obj, "no_such_entry") is None
    # position-independent code reaches OpenBLAS through the GOT / PLT: not ours to load
    a = sg.matrix("a")
    g = sg.compile([a], sg.tanh(a @ a))
    g(np.ones((256, 256), "float32"))
    pic = llvm_jit.emit_object(llvm_jit.optimize(g.source(), aot=True), aot=True)
    assert llvm_elf.load(pic, "symgraph_entry") is None
