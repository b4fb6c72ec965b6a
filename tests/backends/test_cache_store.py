"""The disk cache is a trust boundary: ownership and mode checks, authenticated entries, no
pickles, bounded reads of regular files only, a size limit, the ``cache`` command, and the
CUDA binaries going through the same store."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import symgraph as sg

ROOT = Path(__file__).resolve().parents[2]
FOREIGN_UID = 12345
HEADER = 48  # magic (8) + tag or checksum (32) + size (8), the same length in both formats
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="simulating another user needs chown")


@pytest.fixture(autouse=True)
def _cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SYMGRAPH_CACHE_MAX_BYTES", raising=False)
    return tmp_path / "cache"


def _graph(const: float = 3.0):
    x = sg.tensor("x", (17,))  # a static shape: the code is made (or loaded) by compile
    return [x], sg.exp(x) * const


def _compile(const: float = 3.0):
    return sg.compile(*_graph(const))


V = np.linspace(-1, 1, 17, dtype="float32")


def _check(f, const: float = 3.0) -> None:
    np.testing.assert_allclose(f(V), np.exp(V.astype("float64")) * const, rtol=1e-6)


def _entries(cache: Path, suffix: str) -> list[Path]:
    return sorted(cache.rglob("*" + suffix))


# --- folders and files: created private, refused when another user owns or may write them ----

def test_cache_folders_and_files_are_created_private(_cache_dir):
    _check(_compile())
    modes = {p.relative_to(_cache_dir).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [_cache_dir, *_cache_dir.rglob("*")]}
    dirs = [p for p in _cache_dir.rglob("*") if p.is_dir()]
    assert dirs and modes["."] == 0o700
    assert all(modes[d.relative_to(_cache_dir).as_posix()] == 0o700 for d in dirs)
    assert modes["secret.key"] == 0o600
    assert all(m == 0o600 for name, m in modes.items() if name.endswith((".o", ".warm")))


@pytest.mark.parametrize("damage", [
    pytest.param("foreign owner", marks=needs_root), "world-writable", "group-writable"])
def test_an_unsafe_cache_folder_is_refused_and_compilation_still_works(_cache_dir, damage):
    _cache_dir.mkdir(mode=0o700)
    if damage == "foreign owner":
        os.chown(_cache_dir, FOREIGN_UID, -1)
    else:
        os.chmod(_cache_dir, 0o777 if damage == "world-writable" else 0o770)
    why = "owned by uid 12345" if damage == "foreign owner" else "may write it"
    with pytest.warns(RuntimeWarning, match=f"{why}.*compiling without the disk cache"):
        f = _compile()
    _check(f)
    assert f.program.compiles == 1
    assert list(_cache_dir.iterdir()) == []  # nothing was written there
    g = _compile()  # refused again (warned once per process), never read
    _check(g)
    assert g.program.compiles == 1 and g.program.cache_hits == 0


@pytest.mark.parametrize("damage", [
    pytest.param("foreign owner", marks=needs_root), "group-writable", "world-writable"])
@pytest.mark.parametrize("what", ["entry", "subfolder"])
def test_an_unsafe_cache_entry_or_subfolder_is_refused(_cache_dir, damage, what):
    _check(_compile())
    targets = _entries(_cache_dir, ".o") + _entries(_cache_dir, ".warm")
    if what == "subfolder":
        targets = sorted({p.parent for p in targets})
    for p in targets:
        if damage == "foreign owner":
            os.chown(p, FOREIGN_UID, -1)
        else:
            os.chmod(p, stat.S_IMODE(p.stat().st_mode) | (0o020 if damage == "group-writable" else 0o002))
    with pytest.warns(RuntimeWarning, match="owned by uid 12345|may write it"):
        f = _compile()
    _check(f)
    assert f.program.compiles == 1 and f.program.cache_hits == 0


@needs_root
@pytest.mark.parametrize("damage", ["foreign owner", "readable by others"])
def test_an_unsafe_key_file_is_refused(_cache_dir, damage):
    _check(_compile())
    key = _cache_dir / "secret.key"  # (already read by this process: checked again)
    if damage == "foreign owner":
        os.chown(key, FOREIGN_UID, -1)
    else:
        os.chmod(key, 0o644)
    with pytest.warns(RuntimeWarning, match="key file.*compiling without the disk cache"):
        f = _compile()
    _check(f)
    assert f.program.compiles == 1 and f.program.cache_hits == 0


def test_a_removed_key_file_is_replaced_and_entries_signed_with_the_old_one_are_misses(_cache_dir):
    _check(_compile())
    key = _cache_dir / "secret.key"
    old = key.read_bytes()
    key.unlink()  # what rotating the key does
    f = _compile()
    _check(f)
    assert f.program.compiles == 1 and key.read_bytes() != old
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert _compile().program.cache_hits == 1


# --- entries are authenticated, and never unpickled ------------------------------------------

def _old_format(payload: bytes) -> bytes:
    """An entry as a checksum-only cache wrote it: anyone can recompute this header."""
    return b"SGOBJ1\n\0" + hashlib.sha256(payload).digest() + struct.pack("<Q", len(payload)) + payload


def _forged(name: str, payload: bytes) -> bytes:
    """An entry in the current format, signed with a key that is not the user's."""
    from symgraph.backends import cache_store
    return cache_store.seal(os.urandom(32), name, payload)


@pytest.mark.parametrize("forge", ["recomputed sha256", "hmac with another key"])
def test_a_planted_entry_with_other_code_is_never_loaded(_cache_dir, forge):
    _check(_compile(3.0))
    (target,) = _entries(_cache_dir, ".o")
    _check(_compile(4.0), 4.0)  # object code computing exp(x) * 4 instead
    (other,) = [p for p in _entries(_cache_dir, ".o") if p != target]
    payload = other.read_bytes()[HEADER:]
    target.write_bytes(_old_format(payload) if forge == "recomputed sha256"
                       else _forged(target.name, payload))
    f = _compile(3.0)
    _check(f, 3.0)  # the planted code (x 4) did not run
    assert f.program.compiles == 1


class _Payload:
    """Unpickling this creates the file named by ``MARKER`` (the planted code ran)."""

    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("forge", ["recomputed sha256", "authenticated with the user's key"])
def test_a_planted_pickle_in_a_warm_entry_is_never_unpickled(_cache_dir, tmp_path, forge):
    _check(_compile())
    (entry,) = _entries(_cache_dir, ".warm")
    marker = tmp_path / "pwned"
    _Payload.marker = str(marker)
    payload = pickle.dumps(_Payload())
    if forge == "recomputed sha256":
        entry.write_bytes(_old_format(payload))
    else:  # even a correctly signed entry is read as plain data only
        from symgraph.backends import cache_store
        entry.write_bytes(cache_store.seal((_cache_dir / "secret.key").read_bytes(), entry.name,
                                           payload))
    f = _compile()
    _check(f)
    assert not marker.exists()
    assert f.program.warm_hits == 0


def test_warm_records_round_trip_through_plain_json():
    from symgraph.backends import llvm_warm
    record = {"format": "x", "tuple": (1, (2.5, "a"), []), "ints": {3: (4, 5), -1: None},
              "tuple keys": {(1, 2): b"\0\xff"}, "tagged look-alike": {"__t": [1]},
              "nested": [{"a": True}, (), {}], "bytes": b"abc"}
    blob = llvm_warm.encode(record)
    json.loads(blob)  # plain JSON text
    assert llvm_warm.decode(blob) == record
    assert type(llvm_warm.decode(blob)["tuple"]) is tuple


# --- entries are read only from regular files, with a size bound -----------------------------

_WORKER = textwrap.dedent("""
    import numpy as np, symgraph as sg
    x = sg.vector("x")
    f = sg.compile([x], sg.exp(x) * 3.0)
    v = np.linspace(-1, 1, 17, dtype="float32")
    assert np.allclose(f(v), np.exp(v) * 3.0, rtol=1e-6)
    print("ok", f.program.compiles)
""")


def _limit_memory() -> None:
    two_gib = 2 << 30  # a process reading /dev/zero to its end fails here, not the machine
    resource.setrlimit(resource.RLIMIT_AS, (two_gib, two_gib))


@pytest.mark.parametrize("suffix", [".o", ".warm"])
@pytest.mark.parametrize("plant", ["fifo", "/dev/zero link"])
def test_a_fifo_or_device_in_place_of_an_entry_neither_hangs_nor_exhausts_memory(
        _cache_dir, suffix, plant):
    env = dict(os.environ, SYMGRAPH_CACHE_DIR=str(_cache_dir), PYTHONPATH=str(ROOT))
    first = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    (entry,) = _entries(_cache_dir, suffix)
    entry.unlink()
    if plant == "fifo":
        os.mkfifo(entry, 0o600)
    else:
        entry.symlink_to("/dev/zero")
    try:
        proc = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True,
                              text=True, timeout=120, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a {plant} in place of a {suffix} entry made compilation hang")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok", "1" if suffix == ".o" else "0"]


# --- size limit, least recently used first ----------------------------------------------------

def test_size_limit_evicts_least_recently_used_entries(_cache_dir, monkeypatch):
    from symgraph.backends import cache_store
    monkeypatch.setenv("SYMGRAPH_CACHE_MAX_BYTES", str(3 * (1000 + HEADER) + 100))
    keys = {name: hashlib.sha256(name.encode()).hexdigest()[:40] for name in "abcd"}
    for i, name in enumerate("abc"):
        cache_store.store(keys[name], bytes([i]) * 1000, ".o")
        path = _cache_dir / keys[name][:2] / f"{keys[name]}.o"
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # a, then b, then c were used
    assert cache_store.load(keys["a"], ".o") == b"\0" * 1000  # a is now the most recent
    cache_store.store(keys["d"], b"d" * 1000, ".o")  # over the limit: b goes first
    present = {name for name, key in keys.items() if cache_store.load(key, ".o") is not None}
    assert present == {"a", "c", "d"}


def test_compiling_keeps_the_cache_under_its_size_limit(_cache_dir, monkeypatch):
    _check(_compile(2.0), 2.0)
    one = sum(p.stat().st_size for p in _entries(_cache_dir, ".o") + _entries(_cache_dir, ".warm"))
    monkeypatch.setenv("SYMGRAPH_CACHE_MAX_BYTES", str(3 * one))
    for c in (3.0, 4.0, 5.0, 6.0, 7.0):
        _check(_compile(c), c)
        sizes = [p.stat().st_size for p in _cache_dir.rglob("*") if p.is_file()
                 and p.name != "secret.key"]
        assert sum(sizes) <= 3 * one
    assert _compile(7.0).program.compiles == 0  # the newest entries were kept


# --- the command line -------------------------------------------------------------------------

def _cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SYMGRAPH_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "symgraph", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_cache_info_and_clear_commands(_cache_dir):
    _check(_compile(2.0), 2.0)
    _check(_compile(3.0))
    n = len([p for p in _cache_dir.rglob("*") if p.is_file() and p.name != "secret.key"])
    info = _cli(_cache_dir, "cache", "info")
    assert info.returncode == 0, info.stderr
    assert str(_cache_dir) in info.stdout and f"entries:      {n} " in info.stdout
    assert "size limit:   1073741824" in info.stdout and "key file:     ok" in info.stdout
    cleared = _cli(_cache_dir, "cache", "clear")
    assert cleared.returncode == 0, cleared.stderr
    assert f"removed {n} cache entries" in cleared.stdout
    assert not _entries(_cache_dir, ".o") and (_cache_dir / "secret.key").exists()
    assert "entries:      0" in _cli(_cache_dir, "cache", "info").stdout
    assert _compile(2.0).program.compiles == 1


@needs_root
def test_cache_clear_refuses_a_foreign_folder(_cache_dir):
    _check(_compile())
    os.chown(_cache_dir, FOREIGN_UID, -1)
    out = _cli(_cache_dir, "cache", "clear")
    assert out.returncode == 1 and "owned by uid 12345" in out.stderr
    assert _entries(_cache_dir, ".o")  # nothing removed
    assert "refused" in _cli(_cache_dir, "cache", "info").stdout


# --- symgraph's own code is part of every key --------------------------------------------------

def test_edited_sources_do_not_reuse_object_code(monkeypatch):
    from symgraph.backends import cache_store, llvm_warm
    monkeypatch.setattr(llvm_warm, "usable", lambda: False)  # the .o cache alone
    _check(_compile())
    assert _compile().program.cache_hits == 1
    monkeypatch.setitem(cache_store._state, "code", "an edited renderer")
    f = _compile()
    _check(f)
    assert f.program.compiles == 1 and f.program.cache_hits == 0


# --- CUDA binaries go through the same store (no GPU or compiler needed) ----------------------

@pytest.fixture
def fake_nvcc(monkeypatch):
    from symgraph.backends import cuda_compiler
    calls = []

    def compile_(source, arch, kind="cubin", extra=()):
        calls.append((source, arch, kind))
        return f"// {kind} for {arch}: {len(calls)}\n".encode()
    monkeypatch.setattr(cuda_compiler, "nvrtc_available", lambda: False)
    monkeypatch.setattr(cuda_compiler, "nvcc_version", lambda: "fake nvcc 1.0")
    monkeypatch.setattr(cuda_compiler, "nvcc_compile", compile_)
    return calls


SRC = 'extern "C" __global__ void k(float *x) { x[threadIdx.x] += 1.0f; }\n'


def test_cuda_binaries_are_cached_and_authenticated(_cache_dir, fake_nvcc):
    from symgraph.backends import cuda_compiler
    first = cuda_compiler.compile_module(SRC, "sm_80", "ptx")
    assert cuda_compiler.compile_module(SRC, "sm_80", "ptx") == first and len(fake_nvcc) == 1
    (entry,) = _entries(_cache_dir, ".ptx")
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    # a planted binary with a recomputable checksum, or none at all, is not loaded
    for planted in (b"// planted\n", _old_format(b"// planted\n"), _forged(entry.name, b"// planted\n")):
        entry.write_bytes(planted)
        assert cuda_compiler.compile_module(SRC, "sm_80", "ptx") != b"// planted\n"
    assert len(fake_nvcc) == 4
    assert cuda_compiler.compile_module(SRC, "sm_90", "ptx") != first and len(fake_nvcc) == 5


@needs_root
def test_a_foreign_cuda_entry_is_refused(_cache_dir, fake_nvcc):
    from symgraph.backends import cuda_compiler
    cuda_compiler.compile_module(SRC, "sm_80", "cubin")
    (entry,) = _entries(_cache_dir, ".cubin")
    os.chown(entry, FOREIGN_UID, -1)
    with pytest.warns(RuntimeWarning, match="owned by uid 12345"):
        cuda_compiler.compile_module(SRC, "sm_80", "cubin")
    assert len(fake_nvcc) == 2


def test_cache_off_writes_nothing(monkeypatch, _cache_dir, fake_nvcc):
    from symgraph.backends import cuda_compiler
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")
    cuda_compiler.compile_module(SRC, "sm_80", "ptx")
    cuda_compiler.compile_module(SRC, "sm_80", "ptx")
    assert len(fake_nvcc) == 2 and not _cache_dir.exists()

