"""What a kernel-IR storage record derives from its fields; shared by ``kernel_ir.Storage`` and
the warm-start cache's ``StorageInfo`` (which must not import the kernel IR)."""

from __future__ import annotations

import numpy as np


class StorageMethods:
    """Needs ``sid``, ``kind``, ``dtype`` and ``size`` (elements) on the instance."""

    sid: int
    kind: str
    dtype: str
    size: int

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    def __repr__(self) -> str:
        return f"s{self.sid}:{self.kind}:{self.dtype}[{self.size}]"
