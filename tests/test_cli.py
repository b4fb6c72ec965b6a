"""The ``symgraph`` command: ``info`` and ``example`` (``cache`` is tested with the cache store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_info_command_reports_version_backends_and_cache(tmp_path):
    env = dict(os.environ, SYMGRAPH_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "symgraph", "info"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    for field in ("symgraph:", "llvm backend:", "BLAS:", "cuda backend:", "cache folder:", "size limit:"):
        assert field in out.stdout


def test_example_command_runs_an_example_and_lists_the_names(tmp_path):
    env = dict(os.environ, SYMGRAPH_CACHE_DIR="off", PYTHONPATH=str(ROOT))
    bad = subprocess.run([sys.executable, "-m", "symgraph", "example", "nope"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "xor" in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "symgraph", "example", "xor", "--steps", "300"],
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and "learned XOR" in ok.stdout
