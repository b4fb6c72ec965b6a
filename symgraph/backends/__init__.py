"""Backends: ``reference`` (NumPy interpreter), ``llvm`` (native CPU code), ``cuda`` (GPU)."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_INSTANCES = 64  # specialisations of shape-generic code kept per compiled function


def forget_old_instances(specs: dict) -> None:
    """Keep the newest ``MAX_INSTANCES`` of the specialisations in ``specs`` that run
    shape-generic code (``dim_values``): each holds buffers for its sizes, and inputs of ever
    new lengths would otherwise pile them up (a forgotten tuple of shapes gets a new
    specialisation, not new code, when it comes back)."""
    keys = [k for k, sp in specs.items() if sp.dim_values]
    for k in keys[:max(0, len(keys) - MAX_INSTANCES)]:
        del specs[k]


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
