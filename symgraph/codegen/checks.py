"""Run-time bound checks: the error channel from native code back to Python.

Lowering wraps every index it reads from a run-time array in a ``checked`` node (see
``kernel_ir.checked``) naming a ``CheckSite``: the graph node, the input, the axis and the
allowed range ``[lo, hi)``.  Native code keeps the smallest and largest value seen at each
site, uses a clamped (safe) index meanwhile, and reports failure through a status code; the
backend then reads the per-site extremes and raises the ``IndexError`` built here.  The
message matches the reference backend's for the same input.

The ``STATUS_*`` codes are what a program's entry point returns (llvm) or what the device
error word holds after a launch sequence (cuda).
"""

from __future__ import annotations

from dataclasses import dataclass

STATUS_OK = 0
STATUS_NONCONTIGUOUS = 1  # llvm with array-object arguments: retry with contiguous copies
STATUS_INDEX_ERROR = 2  # a bound check failed: read the per-site extremes, raise IndexError

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)


@dataclass(frozen=True)
class CheckSite:
    """One checked index read: values must lie in ``[lo, hi)``.

    ``kind`` is ``"index"`` (a gather / scatter index, NumPy's message) or ``"label"`` (class
    labels, cross-entropy's message).  ``op`` is the graph node's text, ``shapes`` its input
    shapes and ``trace`` the user's line that built it (``graph.basic.user_trace``).
    """

    site: int
    kind: str
    lo: int
    hi: int
    op: str
    axis: int = 0
    shapes: tuple = ()
    trace: tuple | None = None

    def failed(self, seen_min: int, seen_max: int) -> bool:
        """Whether the extremes seen at run time leave ``[lo, hi)`` (nothing seen: no)."""
        if seen_min > seen_max:
            return False
        return seen_min < self.lo or seen_max >= self.hi

    def message(self, seen_min: int, seen_max: int) -> str:
        from ..graph.basic import format_trace
        from ..graph.types import format_shape
        if self.kind == "label":
            body = (f"cross_entropy: labels must be in [0, {self.hi}), got values in "
                    f"[{seen_min}, {seen_max}]")
        else:
            bad = seen_max if seen_max >= self.hi else seen_min
            body = f"index {bad} is out of bounds for axis {self.axis} with size {self.hi}"
        shapes = ", ".join(format_shape(s) for s in self.shapes)
        return f"{self.op}: {body} (input shapes {shapes}){format_trace(self.trace)}"


def raise_index_error(sites: list[CheckSite], extremes) -> None:
    """Raise the ``IndexError`` for the first failed site; ``extremes[2*i], extremes[2*i+1]``
    are the smallest and largest values seen at site ``i``."""
    for s in sites:
        lo, hi = int(extremes[2 * s.site]), int(extremes[2 * s.site + 1])
        if s.failed(lo, hi):
            raise IndexError(s.message(lo, hi))
    raise IndexError("an index was out of bounds (the failing check could not be identified)")
