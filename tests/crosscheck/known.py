"""Defects known when the cross-check was written, each being fixed on its own branch.

Every entry names one known item and says which programs it affects; ``check_program`` skips
a backend for a program an entry matches.  Empty this list once the fixes are merged: nothing
else is excluded from the cross-check.
"""

from __future__ import annotations

from collections.abc import Callable

from .graphs import Program

KNOWN_BROKEN: dict[str, Callable[[Program, str], bool]] = {}


def known_broken(prog: Program, backend: str) -> str | None:
    """The known item ``prog`` runs into on ``backend``, if any."""
    for item, hits in KNOWN_BROKEN.items():
        if hits(prog, backend):
            return item
    return None
