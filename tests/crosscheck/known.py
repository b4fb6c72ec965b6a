"""Defects known when the cross-check was written, each being fixed on its own branch.

Every entry names one known item and says which programs it affects; ``check_program`` skips
a backend for a program an entry matches.  Empty this list once the fixes are merged: nothing
else is excluded from the cross-check.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .graphs import Program
from .registry import norm_axes


def _reduces_empty(prog: Program, ops: tuple[str, ...]) -> bool:
    """A step of ``ops`` reduces (or normalises along) a zero-size axis."""
    for op in ops:
        for s, (shape, *_) in prog.steps_of(op):
            axis = s.params.get("axis")
            if 0 in [shape[a] for a in norm_axes(axis, len(shape))] or (axis is None and 0 in shape):
                return True
    return False


def _large_input(prog: Program) -> bool:
    """A finite float input beyond exp's float32 range."""
    return any((np.abs(np.nan_to_num(i.value, posinf=0, neginf=0)) > 80).any()
               for i in prog.inputs if i.is_float)


def _inc_broadcasts(prog: Program) -> bool:
    return any(np.zeros(x)[s.params["key"]].shape != y for s, (x, y) in prog.steps_of("inc_subtensor"))


KNOWN_BROKEN: dict[str, Callable[[Program, str], bool]] = {}


def known_broken(prog: Program, backend: str) -> str | None:
    """The known item ``prog`` runs into on ``backend``, if any."""
    for item, hits in KNOWN_BROKEN.items():
        if hits(prog, backend):
            return item
    return None
