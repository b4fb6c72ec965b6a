"""The op reference names every public function, so it cannot silently fall behind the code."""

from __future__ import annotations

import inspect
import os

import pytest

import symgraph as sg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _public(module) -> list[str]:
    return [n for n in module.__all__ if not inspect.ismodule(getattr(module, n))
            and not n.startswith("_") and n != "annotations"]


def test_ops_reference_lists_every_public_name():
    text = open(os.path.join(ROOT, "docs", "ops.md")).read()
    missing = [n for n in _public(sg) if f"`{n}" not in text and f" {n}(" not in text
               and f"{n}(" not in text]
    missing += [f"nn.{n}" for n in _public(sg.nn) if f"nn.{n}" not in text and f" {n}" not in text]
    assert not missing, f"docs/ops.md does not mention: {missing}"


def test_docs_index_links_exist_or_are_owned_elsewhere():
    index = open(os.path.join(ROOT, "docs", "index.md")).read()
    for page in ["user-guide.md", "ops.md", "architecture.md", "errors.md", "benchmarks.md"]:
        assert f"({page})" in index
        assert os.path.exists(os.path.join(ROOT, "docs", page)), page


def test_user_guide_code_runs(monkeypatch):
    """Every ```python block of the user guide runs, in order, in one namespace."""
    import re

    text = open(os.path.join(ROOT, "docs", "user-guide.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 8
    real_compile = sg.compile

    def compile_reference(*args, **kwargs):  # the guide uses the default backend
        kwargs.setdefault("backend", "reference")
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(sg, "compile", compile_reference)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "user-guide.md", "exec"), namespace)
    assert namespace["w"].get_value().shape == (4,)


def test_training_page_code_runs(monkeypatch):
    """Every ```python block of docs/training.md runs, in order, in one namespace."""
    import re

    text = open(os.path.join(ROOT, "docs", "training.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "training.md", "exec"), namespace)
    assert namespace["extra"]["epoch"] == namespace["epoch"]


def test_coming_from_theano_code_runs():
    import re

    text = open(os.path.join(ROOT, "docs", "coming-from-theano.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "coming-from-theano.md", "exec"), namespace)
    assert namespace["W"].get_value().any()


def _doc_pages() -> list[str]:
    pages = sorted(f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    return [os.path.join("docs", f) for f in pages] + ["README.md"]


def _has_cuda() -> bool:
    try:
        import pycuda.driver as drv
        drv.init()
        return drv.Device.count() > 0
    except Exception:
        return False


@pytest.mark.parametrize("page", _doc_pages())
def test_every_python_block_runs(page, monkeypatch, tmp_path):
    """Every ```python block of every docs page (and the README) runs, in order, in one
    namespace per page. A block whose first line is ``# raises: Name`` must raise that
    exception; ``# needs: cuda`` blocks run only with a GPU. Excerpts of symgraph's own code
    use ```py fences and are not run."""
    import re
    import textwrap

    text = open(os.path.join(ROOT, page)).read()
    blocks = [textwrap.dedent(b) for b in re.findall(r"^ *```python\n(.*?)^ *```", text, flags=re.S | re.M)]
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {}
    for i, block in enumerate(blocks):
        first = block.lstrip().splitlines()[0] if block.strip() else ""
        code = compile(block, f"{page}[block {i}]", "exec")
        if first.startswith("# needs: cuda") and not _has_cuda():
            continue
        if first.startswith("# raises:"):
            name = first.split(":", 1)[1].strip()
            with pytest.raises(Exception) as info:
                exec(code, namespace)
            assert type(info.value).__name__ == name, f"{page} block {i}: raised {info.value!r}"
        else:
            exec(code, namespace)


def test_docs_site_builds_strictly(tmp_path):
    """The MkDocs site (API reference from the docstrings included) builds with --strict: no
    broken link, anchor or reference."""
    import subprocess
    import sys

    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "nn" / "index.html").exists()
    assert (tmp_path / "site" / "images" / "mdn.png").exists()


def test_generated_code_page_shows_todays_output():
    """The kernel header printed in generated-code.md is what the example prints today."""
    import re

    import numpy as np

    text = open(os.path.join(ROOT, "docs", "generated-code.md")).read()
    shown = re.search(r"```llvm\n(.*?)```", text, flags=re.S).group(1).splitlines()[:4]
    x, b = sg.vector("x"), sg.vector("b")
    f = sg.compile([x, b], sg.exp(x) * 2.0 + b[0])
    f(np.ones(1000, "float32"), np.ones(3, "float32"))
    assert f.kernels[0].source.splitlines()[:4] == shown
