"""Exception types raised by symgraph."""

from __future__ import annotations


class ShapeError(ValueError):
    """Shapes that cannot work together (raised while building a graph or at call time).

    Raised while a graph is being built, the message ends with the user's line that built the
    offending node (``built at FILE:LINE``).
    """

    def __init__(self, message: str = "", *args):
        from .graph.basic import construction_trace
        super().__init__(str(message) + construction_trace(str(message)), *args)


class GradientError(ValueError):
    """A symbolic gradient disagrees with finite differences, or cannot be formed."""

    def __init__(self, message: str, *, input_index: int | None = None,
                 worst_index: tuple | None = None, analytic: float | None = None,
                 numeric: float | None = None):
        super().__init__(message)
        self.input_index = input_index
        self.worst_index = worst_index
        self.analytic = analytic
        self.numeric = numeric


class CompileError(RuntimeError):
    """A graph could not be compiled (missing toolchain, unsupported op, bad arguments)."""
