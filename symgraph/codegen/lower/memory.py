"""Memory planning: temp storages placed in one arena, sharing bytes when their live ranges
(in kernel order) do not overlap."""

from __future__ import annotations

from ..kernel_ir import Program
from ..symdim import SymInt, known_nonneg


def plan_memory(prog: Program, align: int = 64) -> None:
    """Place temp storages in one arena; storages whose live ranges do not overlap share bytes."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for k, kern in enumerate(prog.kernels):
        for st in kern.storages(prog.storages):
            if st.kind == "temp":
                first.setdefault(st.sid, k)
                last[st.sid] = k
    temps = [st for st in prog.storages if st.kind == "temp" and st.sid in first]
    if prog.generic:
        _plan_symbolic(prog, temps, first, last, align)
        return
    placed: list[tuple[int, int, int, int]] = []  # (start, end, offset, nbytes)
    size = 0
    for st in temps:
        lo, hi = first[st.sid], last[st.sid]
        nbytes = max((st.nbytes + align - 1) // align * align, align)
        busy = sorted((off, off + nb) for s, e, off, nb in placed if not (e < lo or s > hi))
        off = 0
        for b0, b1 in busy:
            if off + nbytes <= b0:
                break
            off = max(off, b1)
        placed.append((lo, hi, off, nbytes))
        prog.arena_offsets[st.sid] = off
        size = max(size, off + nbytes)
    prog.arena_size = size


def dims_header_bytes(prog: Program, align: int = 64) -> int:
    """Bytes at the head of a shape-generic program's arena holding its run-time sizes."""
    return -(-8 * len(prog.dims) // align) * align


def _plan_symbolic(prog: Program, temps: list, first: dict, last: dict, align: int) -> None:
    """``plan_memory`` for symbolic sizes: blocks are reused only when they are provably big
    enough (no guard on sizes), in order of first use."""
    size = dims_header_bytes(prog, align)
    free: list[tuple] = []  # (offset, capacity) of blocks no longer live
    live: list[tuple] = []  # (last kernel, offset, capacity)
    for st in sorted(temps, key=lambda t: (first[t.sid], t.sid)):
        lo = first[st.sid]
        free += [(off, cap) for end, off, cap in live if end < lo]
        live = [item for item in live if item[0] >= lo]
        nbytes = _padded_bytes(st.nbytes, align)
        fits = [i for i, (_, cap) in enumerate(free) if known_nonneg(cap - nbytes)]
        if fits:
            off, cap = free.pop(fits[0])
        else:
            off, cap = size, nbytes
            size = size + nbytes
        live.append((last[st.sid], off, cap))
        prog.arena_offsets[st.sid] = off
    prog.arena_size = size


def _padded_bytes(nbytes, align: int):
    """At least ``nbytes``, a multiple of ``align`` (for symbolic sizes: every coefficient
    rounded up, so offsets built from these stay aligned whatever the run-time sizes)."""
    if not isinstance(nbytes, SymInt):
        return max((nbytes + align - 1) // align * align, align)
    if any(c < 0 for _, c in nbytes.terms):
        return (nbytes + align - 1) // align * align
    return SymInt.make({m: -(-c // align) * align for m, c in nbytes.terms})
