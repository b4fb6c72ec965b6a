"""Locate the hand-written kernel templates shipped in the top-level ``kernels/`` folder.

In a checkout (editable install) ``symgraph/_kernels`` is a symbolic link to ``kernels/``; a
built wheel contains a real copy under the same name.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def kernels_dir() -> Path:
    """The directory holding ``llvm/``, ``cuda/`` and ``export/`` templates."""
    for candidate in (_HERE / "_kernels", _HERE.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("symgraph's kernels/ folder is missing from this installation")


def read_kernel(relative: str) -> str:
    """The text of one template, e.g. ``read_kernel("llvm/math.ll")``."""
    return (kernels_dir() / relative).read_text()
