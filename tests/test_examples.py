"""The examples run on small settings with the reference backend and learn something."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(relpath: str):
    path = os.path.join(ROOT, "examples", relpath)
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytest.importorskip("sklearn")


def test_logistic_regression():
    acc = load("logistic_regression.py").main(["--backend", "reference", "--epochs", "3"])
    assert acc > 0.9


def test_digits_convnet():
    acc = load("digits_convnet.py").main(["--backend", "reference", "--epochs", "2",
                                          "--train-size", "384", "--batch", "32"])
    assert acc > 0.5  # ten classes: chance is 0.1


def test_adversarial_lowers_accuracy():
    res = load("adversarial.py").main(["--backend", "reference", "--epochs", "3",
                                       "--eps", "0", "0.3"])
    assert res[0.0] > 0.85
    assert res[0.3] < res[0.0] - 0.4


def test_export_c(tmp_path):
    status = load("export_c/export_model.py").main(["--backend", "llvm" if _has_llvm() else "reference",
                                                     "--build-dir", str(tmp_path)])
    if _has_llvm() and shutil.which("cc"):
        assert status == "ok"
    else:
        assert status in ("skipped", "exported")


def _has_llvm() -> bool:
    return importlib.util.find_spec("symgraph.backends.llvm") is not None


def test_digits_toolkit_checkpoint_restores_in_a_fresh_process(tmp_path):
    """The toolkit example trains, saves a checkpoint, and a fresh process restores it to the
    same validation accuracy; the example stays under 40 lines of code."""
    import subprocess
    import sys
    path = os.path.join(ROOT, "examples", "digits_toolkit.py")
    lines = [ln for ln in open(path).read().splitlines() if ln.strip()]
    assert len(lines) <= 40
    ckpt = str(tmp_path / "ckpt.npz")
    best = load("digits_toolkit.py").main(["--backend", "reference", "--epochs", "3",
                                           "--checkpoint", ckpt])
    assert best > 0.7
    env = dict(os.environ, PYTHONPATH=ROOT, SYMGRAPH_CACHE_DIR="off")
    code = (f"import runpy, sys; sys.argv = ['x', '--backend', 'reference', '--resume', "
            f"'--checkpoint', {ckpt!r}]; m = runpy.run_path({path!r}); print(m['main']())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.split()[-1]) == best
