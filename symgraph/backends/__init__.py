"""Backends: ``reference`` (NumPy interpreter), ``llvm`` (native CPU code), ``cuda`` (GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class KernelInfo:
    """One generated (or, for the reference backend, interpreted) kernel, for ``f.kernels``."""

    name: str
    source: str
    inputs: list[str]
    outputs: list[str]
    ops: list[str]
    ir: str = ""  # the kernel-IR text it was rendered from, where there is one
    stats: dict = field(default_factory=lambda: {"calls": 0, "seconds": 0.0})
