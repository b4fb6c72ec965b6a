"""Strided views and NumPy indexing as offset arithmetic, shared by the CUDA lowering.

A ``View`` is a window on a device buffer: dtype, shape, strides (in elements) and an offset.
Transpose, expand_dims, squeeze, broadcast_to, basic slicing and contiguous reshapes only
make a new view; kernels read through the strides.  ``index_map`` describes ``x[key]`` with
integer-array indices (NumPy's placement rules for advanced indices) so a gather and a
scatter-add kernel can compute, for each output element, the input element it touches.
``emulate_index_map`` runs the same description with NumPy, so the rules are tested on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides (in elements) of a contiguous tensor of ``shape``."""
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(strides))


def size_of(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


@dataclass(frozen=True)
class View:
    """A strided window on storage ``sid``."""

    sid: int
    dtype: str
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @property
    def size(self) -> int:
        return size_of(self.shape)

    @property
    def contiguous(self) -> bool:
        """Row-major without gaps (dims of size 1 may have any stride)."""
        return all(d == 1 or s == c for d, s, c in zip(self.shape, self.strides, c_strides(self.shape)))

    def with_layout(self, shape, strides, offset=None) -> View:
        return View(self.sid, self.dtype, tuple(int(d) for d in shape), tuple(int(s) for s in strides),
                    self.offset if offset is None else int(offset))

    def reshape(self, shape) -> View:
        assert self.contiguous and size_of(shape) == self.size
        return self.with_layout(shape, c_strides(tuple(shape)))

    def broadcast_to(self, shape) -> View:
        lead = len(shape) - len(self.shape)
        strides = [0] * lead
        for d, (have, want) in enumerate(zip(self.shape, shape[lead:])):
            strides.append(self.strides[d] if have == want else 0)
        return self.with_layout(shape, strides)

    def dimshuffle(self, order, dropped=()) -> View:
        shape, strides = [], []
        for o in order:
            if o == "x":
                shape.append(1)
                strides.append(0)
            else:
                shape.append(self.shape[o])
                strides.append(self.strides[o])
        return self.with_layout(shape, strides)


def offset_terms(view: View, idx: list[str]) -> str:
    """C expression of the element offset of ``view`` at output indices ``idx`` (names per
    output dimension, right-aligned against the view: the view broadcasts)."""
    lead = len(idx) - len(view.shape)
    terms = [str(view.offset)] if view.offset else []
    for d, (size, stride) in enumerate(zip(view.shape, view.strides)):
        if size == 1 or stride == 0:
            continue
        name = idx[lead + d]
        terms.append(name if stride == 1 else f"{name} * {stride}LL")
    return " + ".join(terms) if terms else "0"


# --- NumPy indexing ----------------------------------------------------------------------

@dataclass(frozen=True)
class IndexMap:
    """``x[key]``: ``out_shape``; for each input axis one of ``("fixed", k)``,
    ``("slice", out_dim, start, step)`` or ``("adv", j)`` (array input j, or an int treated as
    an advanced index); the advanced indices broadcast to ``adv_shape`` whose dims sit at
    output positions ``adv_pos .. adv_pos + len(adv_shape) - 1``."""

    out_shape: tuple[int, ...]
    axes: tuple[tuple, ...]
    adv_shape: tuple[int, ...]
    adv_pos: int
    ints_as_adv: tuple[int, ...]  # values of ints that act as advanced indices (by "adv" slot)


def _slice_params(s: tuple, dim: int) -> tuple[int, int, int]:
    start, stop, step = slice(s[1], s[2], s[3]).indices(dim)
    n = len(range(start, stop, step))
    return start, step, n


def index_map(spec: tuple, x_shape: tuple[int, ...], idx_shapes: list[tuple[int, ...]]) -> IndexMap:
    """Describe ``x[key]`` for a static spec (see ``ops.indexing``) at concrete shapes."""
    has_arrays = any(e[0] == "a" for e in spec)
    adv_positions = [p for p, e in enumerate(spec) if e[0] == "a" or (has_arrays and e[0] == "i")]
    adv_shape = tuple(np.broadcast_shapes(*idx_shapes)) if has_arrays else ()
    adjacent = bool(adv_positions) and adv_positions == list(range(adv_positions[0], adv_positions[-1] + 1))
    axes: list[tuple] = []
    out: list[int] = []
    adv_pos = -1
    int_values: list[int] = []
    axis = 0
    for p, e in enumerate(spec):
        if has_arrays and p in adv_positions and adv_pos < 0 and adjacent:
            adv_pos = len(out)
            out.extend(adv_shape)
        if e[0] == "n":
            out.append(1)
            continue
        dim = x_shape[axis]
        if e[0] == "i" and not has_arrays:
            k = e[1] + dim if e[1] < 0 else e[1]
            if not 0 <= k < dim:
                raise IndexError(f"index {e[1]} is out of bounds for axis {axis} with size {dim}")
            axes.append(("fixed", k))
        elif e[0] == "i":
            k = e[1] + dim if e[1] < 0 else e[1]
            if not 0 <= k < dim:
                raise IndexError(f"index {e[1]} is out of bounds for axis {axis} with size {dim}")
            axes.append(("fixed", k))
        elif e[0] == "s":
            start, step, n = _slice_params(e, dim)
            axes.append(("slice", len(out), start, step))
            out.append(n)
        else:
            axes.append(("adv", e[1]))
        axis += 1
    for _ in range(axis, len(x_shape)):  # trailing axes not named by the key
        axes.append(("slice", len(out), 0, 1))
        out.append(x_shape[len(axes) - 1])
    if has_arrays and not adjacent:
        adv_pos = 0
        out = list(adv_shape) + out
        n = len(adv_shape)
        axes = [("slice", a[1] + n, a[2], a[3]) if a[0] == "slice" else a for a in axes]
    return IndexMap(tuple(out), tuple(axes), adv_shape, adv_pos, tuple(int_values))


def emulate_index_map(m: IndexMap, x: np.ndarray, arrays: list[np.ndarray]) -> np.ndarray:
    """Evaluate ``m`` with NumPy the way the generated kernel does (for tests)."""
    out_idx = np.indices(m.out_shape, dtype=np.int64) if m.out_shape else np.zeros((0,), np.int64)
    adv_idx = [out_idx[m.adv_pos + d] for d in range(len(m.adv_shape))]
    flat = np.zeros(m.out_shape, dtype=np.int64)
    strides = c_strides(x.shape)
    for axis, a in enumerate(m.axes):
        if a[0] == "fixed":
            pos = np.int64(a[1])
        elif a[0] == "slice":
            pos = a[2] + out_idx[a[1]] * a[3]
        else:
            arr = np.broadcast_to(arrays[a[1]], m.adv_shape)
            pos = arr[tuple(adv_idx)] if m.adv_shape else arr
            pos = np.where(pos < 0, pos + x.shape[axis], pos)
        flat = flat + pos * strides[axis]
    return x.reshape(-1)[flat]
