"""Tensor types: a dtype plus a static shape in which unknown dims are ``None``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ShapeError

DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8",
          "float16", "float32", "float64")
FLOAT_DTYPES = ("float16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8")
DEFAULT_FLOAT = "float32"
_DTYPE_SET = frozenset(DTYPES)

Shape = tuple  # tuple[int | None, ...]


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
        what = {"U": "str", "S": "bytes", "O": "object"}.get(np_dtype.kind, name)
        raise TypeError(f"unsupported dtype {what!r}; symgraph supports {', '.join(DTYPES)}")
    return name


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


@dataclass(frozen=True)
class TensorType:
    """The static type of a symbolic value: ``dtype`` and ``shape`` (ints or ``None``)."""

    dtype: str
    shape: Shape

    def __post_init__(self):
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        dims = []
        for d in self.shape:
            if d is not None:
                d = int(d)
                if d < 0:
                    raise ShapeError(f"negative dimension {d} in shape {self.shape}")
            dims.append(d)
        object.__setattr__(self, "shape", tuple(dims))

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
    """NumPy broadcasting on static shapes; ``None`` means unknown until call time."""
    ndim = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for axis in range(ndim):
        dims = [s[axis] for s in padded]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeError(f"{what}: shapes {' and '.join(_fmt(s) for s in shapes)} "
                             f"cannot be broadcast together (dimension {axis - ndim}: "
                             f"{' vs '.join(str(d) for d in sorted(known))})")
        if known:
            out.append(known.pop())
        elif any(d is None for d in dims):
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def _fmt(shape: Shape) -> str:
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({dims}{',' if len(shape) == 1 else ''})"


format_shape = _fmt


def result_dtype(*dtypes_or_scalars) -> str:
    """NumPy 2 promotion: arrays by dtype, Python scalars weakly (NEP 50)."""
    return as_dtype(np.result_type(*dtypes_or_scalars))
