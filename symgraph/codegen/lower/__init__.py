"""Lowering: a specialised, rewritten graph -> a kernel-IR ``Program``.

Written once for every backend.  Each graph op maps to zero kernels (views: transpose,
broadcast, reshape of contiguous data, basic slicing, split), one loop kernel (elementwise,
reductions, row-wise softmax / cross-entropy, pooling, gather / scatter, random draws,
copies) or a short sequence of them around BLAS ``Gemm`` calls (matmul + epilogue, conv2d
via im2col, its gradients via col2im).

The package is laid out by op family, parallel to ``symgraph/ops``:

- ``core``: the ``Lowerer`` (driver, storages, views, ``emit``, ``check_index``, ``defer``,
  map / reduce / copy kernels) and ``lower()``;
- ``shape``, ``indexing``, ``slicing``, ``elemwise``, ``linalg``, ``nn``, ``pool``, ``conv``, ``random``:
  one mixin each holding that family's ``op_<OpName>`` methods, inherited by ``Lowerer``;
- ``helpers`` (loop nests, reduction kinds, kernel names), ``memory`` (``plan_memory``) and
  ``schedule`` (``overlap_schedule``).
"""

from .core import Lowerer, lower
from .helpers import collapse, combine
from .linalg import SMALL_GEMM, SMALL_GEMV
from .memory import plan_memory
from .schedule import overlap_schedule

__all__ = ["SMALL_GEMM", "SMALL_GEMV", "Lowerer", "collapse", "combine", "lower", "overlap_schedule",
           "plan_memory"]
