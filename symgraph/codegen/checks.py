"""Run-time bound checks: the error channel from native code back to Python.

Lowering wraps every index it reads from a run-time array in a ``checked`` node (see
``kernel_ir.checked``) naming a ``CheckSite``: the graph node, the input, the axis and the
allowed range ``[lo, hi)``.  Native code uses a clamped (safe) index meanwhile, records what
it saw in the program's *error words* and reports failure through a status code; the backend
then raises the ``IndexError`` built here.  The message matches the reference backend's.

Error words (``int64``): word 0 is a flag (nonzero: some check failed), then ``WORDS_PER_SITE``
words per site ``s`` at ``1 + WORDS_PER_SITE * s``:

* ``bad``: nonzero when a value at this site left its range;
* ``umax``: the largest ``value - lo`` seen, compared as unsigned (a value below ``lo``
  wraps to a huge number), so one max-reduction tells whether anything left the range;
* ``min``, ``max``: the smallest and largest value, kept only at sites with ``extremes``
  (class labels, whose message gives the range, and ranges that are empty).

The ``STATUS_*`` codes are what a program's entry point returns (llvm); the cuda runtime
reads the flag after its launch sequence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import CompileError, ShapeError

STATUS_OK = 0
STATUS_NONCONTIGUOUS = 1  # llvm with array-object arguments: retry with contiguous copies
STATUS_INDEX_ERROR = 2  # a bound check failed: read the error words, raise IndexError

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
WORDS_PER_SITE = 4
BAD, UMAX, MIN, MAX = range(WORDS_PER_SITE)


@dataclass(frozen=True)
class CheckSite:
    """One checked index read: values must lie in ``[lo, hi)``.

    ``kind`` is ``"index"`` (a gather / scatter index, NumPy's message) or ``"label"`` (class
    labels, cross-entropy's message).  ``wrapped``: the checked value is a NumPy index after
    negative values were wrapped (``k + hi`` for ``k < 0``), so the message can show the
    user's value.  ``op`` is the graph node's text, ``shapes`` its input shapes and ``trace``
    the user's line that built it (``graph.basic.user_trace``).
    """

    site: int
    kind: str
    lo: int
    hi: int
    op: str
    axis: int = 0
    shapes: tuple = ()
    trace: tuple | None = None
    wrapped: bool = False
    names: tuple = ()  # per input: its name when it is a named graph input (``input_names``)

    @property
    def extremes(self) -> bool:
        """Whether native code must keep this site's smallest and largest value (always for
        a bound that is a run-time size: its range may turn out empty)."""
        from .symdim import SymInt
        return self.kind == "label" or isinstance(self.hi, SymInt) or self.hi <= self.lo

    def message(self, words) -> str:
        """The error text from this site's ``WORDS_PER_SITE`` error words."""
        from ..graph.basic import format_trace
        if self.kind == "label":
            body = (f"cross_entropy: labels must be in [0, {self.hi}), got values in "
                    f"[{int(words[MIN])}, {int(words[MAX])}]")
        else:
            if self.extremes:
                bad = int(words[MAX]) if int(words[MAX]) >= self.hi else int(words[MIN])
            else:
                bad = _signed64(self.lo + int(words[UMAX]))
            if self.wrapped and bad < 0:  # checked after wrapping: show the user's index
                bad -= self.hi
            body = f"index {bad} is out of bounds for axis {self.axis} with size {self.hi}"
        shapes = format_inputs(self.names, self.shapes)
        return f"{self.op}: {body} (input shapes {shapes}){format_trace(self.trace)}"


def _signed64(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def initial_words(sites: list[CheckSite]) -> np.ndarray:
    """The error words before a call: no failure, nothing seen."""
    words = np.zeros(1 + WORDS_PER_SITE * len(sites), np.int64)
    words[1 + MIN::WORDS_PER_SITE] = INT64_MAX
    words[1 + MAX::WORDS_PER_SITE] = INT64_MIN
    return words


def raise_index_error(sites: list[CheckSite], words, dim_values: tuple = ()) -> None:
    """Raise the ``IndexError`` for the first failed site given the error words (the input
    shapes of shape-generic code evaluated for the call's sizes ``dim_values``)."""
    from .symdim import evaluate
    for s in sites:
        base = 1 + WORDS_PER_SITE * s.site
        site_words = [int(w) for w in words[base:base + WORDS_PER_SITE]]
        if site_words[BAD]:
            if dim_values:
                shapes = tuple(tuple(evaluate(d, dim_values) for d in shp) for shp in s.shapes)
                s = dataclasses.replace(s, shapes=shapes, hi=evaluate(s.hi, dim_values))
            raise IndexError(s.message(site_words))
    raise IndexError("an index was out of bounds (the failing check could not be identified)")


# --- shapes that do not fit together at call time ----------------------------------------------

# what an op's shape check may raise about its arguments, most specific first (``ShapeError``
# is a ``ValueError``); anything else is a failure of the compiler itself
_ARGUMENT_ERRORS = (ShapeError, IndexError, TypeError, ValueError)


def input_names(inputs) -> tuple:
    """Per input, its name when it is a named graph input, else None (intermediate values
    differ between the rewritten graphs of different backends; graph inputs do not)."""
    from ..graph.basic import Constant
    return tuple(v.name if v.name and v.owner is None and not isinstance(v, Constant) else None
                 for v in inputs)


def format_inputs(names, shapes) -> str:
    """``a: (2, 3), (4,)``: each input's shape, after its name when it has one."""
    from ..graph.types import format_shape
    names = tuple(names) + (None,) * (len(shapes) - len(names))
    return ", ".join(f"{n}: {format_shape(s)}" if n else format_shape(s)
                     for n, s in zip(names, shapes))


def describe_inputs(inputs, shapes) -> str:
    """``a: (2, 3), (4,)`` for these input variables and their concrete shapes."""
    return format_inputs(input_names(inputs), shapes)


def node_error(node, in_shapes, exc: BaseException) -> Exception:
    """The error to raise when ``node`` rejects concrete input shapes (or constant values).

    Keeps the kind (``ShapeError``, ``IndexError``, ``TypeError``, ``ValueError``); the message
    is the op's own, prefixed by the op unless it names itself, followed by the input names and
    shapes and the user's line that built the node.  Any other exception is a compiler failure
    (``CompileError``).
    """
    from ..graph.basic import executing_graph, format_trace
    body = str(exc).split("\n  built at ")[0]
    inputs = describe_inputs(node.inputs, in_shapes)
    kind = next((k for k in _ARGUMENT_ERRORS if isinstance(exc, k)), None)
    if kind is None:
        return CompileError(f"{node.op}: cannot specialise for input shapes {inputs}: "
                            f"{type(exc).__name__}: {body}")
    op_name = str(node.op).split("{")[0].split("[")[0].lower()
    named = body.lower().replace("_", "").startswith(op_name.replace("_", ""))
    prefix = "" if named else f"{node.op}: "
    message = f"{prefix}{body} (input shapes {inputs}){format_trace(node.trace)}"
    with executing_graph():  # the message already names the line: ShapeError must not add one
        return kind(message)
