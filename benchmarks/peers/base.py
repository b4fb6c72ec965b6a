"""The Runner shape shared by every peer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


class Runner:
    """Wraps one step function; ``state`` returns the current parameters (training workloads)."""

    def __init__(self, call: Callable, outputs: Callable, block: Callable | None = None):
        self.call = call
        self._outputs = outputs
        self._block = block

    def block(self, handle) -> None:
        if self._block is not None:
            self._block(handle)

    def outputs(self, handle) -> list[np.ndarray]:
        return [np.asarray(a, dtype=np.float64) for a in self._outputs(handle)]
