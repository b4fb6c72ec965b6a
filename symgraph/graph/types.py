"""Tensor types: a dtype plus a static shape in which unknown dims are ``None``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..codegen.symdim import SymInt
from ..errors import ShapeError

DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "float32", "float64")
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8")
DEFAULT_FLOAT = "float32"
_DTYPE_SET = frozenset(DTYPES)

# NumPy results symgraph has no dtype for, and what it gives instead (docs/ops.md, "dtypes"):
# float math on bool/int8/uint8 is float32 (NumPy: float16), sums and products of uint8 are
# int64 (NumPy: uint64; the same values below 2**63)
_SUBSTITUTES = {"float16": "float32", "uint64": "int64"}
_REFUSED = {
    "float16": "float16 is not supported (no backend computes in it alike); use float32 (float16 "
               "arrays are accepted as arguments of float32 inputs)",
    "uint64": "uint64 is not supported; use int64 (uint8 sums and products are int64)",
}

Shape = tuple  # tuple[int | None, ...]

# NumPy's limit: an array's byte size (the product of its nonzero dims times the item size)
# must fit in a signed 64-bit integer, which is also what the native backends index with
MAX_BYTES = (1 << 63) - 1


def as_dtype(dtype) -> str:
    """Normalise anything NumPy understands as a dtype to its canonical name."""
    if isinstance(dtype, str) and dtype in _DTYPE_SET:
        return dtype
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}; symgraph supports {', '.join(DTYPES)}") from None
    name = np_dtype.name
    if name not in DTYPES:
        what = {"U": "str", "S": "bytes", "O": "object"}.get(np_dtype.kind)
        why = f"unsupported dtype {what!r}" if what else _REFUSED.get(name, f"unsupported dtype {name!r}")
        raise TypeError(f"{why}; symgraph supports {', '.join(DTYPES)}")
    return name


def numpy_result(dtype) -> str:
    """symgraph's dtype for a result NumPy computes in ``dtype`` (see ``_SUBSTITUTES``)."""
    name = np.dtype(dtype).name
    return as_dtype(_SUBSTITUTES.get(name, name))


def static_shape(shape, what: str = "shape") -> Shape:
    """A declared shape as a tuple of ints and ``None`` (an int alone is a 1-tuple, as in
    NumPy); ``TypeError`` for anything else (floats, strings, bools), ``ShapeError`` for a
    negative dim."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{what} must be a tuple of ints and None (unknown), got "
                        f"{type(shape).__name__} {shape!r}")
    dims = tuple(shape)
    for axis, d in enumerate(dims):
        if d is None:
            continue
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"{what}: dimension {axis} is {type(d).__name__} {d!r}; each "
                            f"dimension must be an int or None (unknown), in {dims!r}")
        if d < 0:
            raise ShapeError(f"{what}: dimension {axis} is negative ({d}) in {dims!r}")
    return tuple(None if d is None else int(d) for d in dims)


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


@dataclass(frozen=True, init=False)
class TensorType:
    """The static type of a symbolic value: ``dtype`` and ``shape`` (ints or ``None``)."""

    dtype: str
    shape: Shape

    # written out (not generated) so that a ShapeError's "built at" line skips it
    def __init__(self, dtype, shape: Shape):
        object.__setattr__(self, "dtype", as_dtype(dtype))
        dims = []
        for d in shape:
            # a SymInt (a size of shape-generic code being generated) stays symbolic
            if d is not None and not isinstance(d, SymInt):
                d = int(d)
                if d < 0:
                    raise ShapeError(f"negative dimension {d} in shape {tuple(shape)}")
            dims.append(d)
        object.__setattr__(self, "shape", tuple(dims))
        check_size(self.shape, self.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def fully_static(self) -> bool:
        return all(d is not None for d in self.shape)

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        if self.ndim == 1:
            dims += ","
        return f"{self.dtype}[{dims}]"


def num_elements(shape) -> int:
    """The exact element count of a concrete shape (Python ints: no overflow)."""
    return math.prod(int(d) for d in shape)


def check_size(shape: Shape, dtype: str = "int8", what: str = "") -> None:
    """Raise ``ShapeError`` when an array of ``shape`` (its known dims) and ``dtype`` could not
    exist: more than ``2**63 - 1`` bytes, as NumPy refuses ("array is too big").

    Unknown (``None``) and zero dims are left out of the product, as NumPy does, so a shape
    whose known dims are already too big is refused whatever the unknown ones turn out to be.
    """
    # a symbolic size (shape-generic code being generated) counts with its current value
    known = [d.hint if isinstance(d, SymInt) else int(d) for d in shape if d is not None]
    known = [d for d in known if d]
    nbytes = math.prod(known) * np.dtype(dtype).itemsize
    if nbytes > MAX_BYTES:
        prefix = f"{what}: " if what else ""
        raise ShapeError(f"{prefix}shape {_fmt(shape)} is too big: {math.prod(known)} elements "
                         f"of {dtype} need {nbytes} bytes, more than the 2**63 - 1 an array can "
                         "hold")


def shape_conflict(declared: Shape, actual: tuple) -> str | None:
    """Why a concrete (or partly known) shape contradicts a declared static shape, or None.

    ``None`` entries on either side are unknown and match anything.
    """
    if len(actual) != len(declared):
        return f"rank {len(actual)} instead of {len(declared)}"
    for axis, (want, got) in enumerate(zip(declared, actual)):
        if want is not None and got is not None and want != got:
            return f"dimension {axis} is {got} instead of {want}"
    return None


def broadcast_shapes(*shapes: Shape, what: str = "broadcast") -> Shape:
    """NumPy broadcasting on static shapes; ``None`` means unknown until call time.

    Symbolic sizes (``SymInt``, while shape-generic code is generated) that are the same
    polynomial broadcast without a question; different ones are compared on their hints,
    equality first, so that two batch dims of one call do not also pin either to ``!= 1``."""
    ndim = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for axis in range(ndim):
        dims = [s[axis] for s in padded]
        known: list = []
        for d in dims:
            if d is None or (not isinstance(d, SymInt) and d == 1):
                continue
            if not any(d == k for k in known):  # SymInts: the same polynomial, or a guard
                known.append(d)
        if len(known) > 1:
            known = [d for d in known if not (isinstance(d, SymInt) and d == 1)] or known[:1]
        if len(known) > 1:
            raise ShapeError(f"{what}: shapes {' and '.join(_fmt(s) for s in shapes)} "
                             f"cannot be broadcast together (dimension {axis - ndim}: "
                             f"{' vs '.join(str(d) for d in _ordered(known))})")
        if known:
            out.append(known[0])
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _ordered(dims: list) -> list:
    return sorted(dims) if all(isinstance(d, int) for d in dims) else dims


def _fmt(shape: Shape) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({dims}{',' if len(shape) == 1 else ''})"


format_shape = _fmt


def result_dtype(*dtypes_or_scalars) -> str:
    """NumPy 2 promotion: arrays by dtype, Python scalars weakly (NEP 50)."""
    return numpy_result(np.result_type(*dtypes_or_scalars))
