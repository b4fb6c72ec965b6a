"""Memory planning: temp storages placed in one arena, sharing bytes when their live ranges
(in kernel order) do not overlap."""

from __future__ import annotations

from ..kernel_ir import Program


def plan_memory(prog: Program, align: int = 64) -> None:
    """Place temp storages in one arena; storages whose live ranges do not overlap share bytes."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for k, kern in enumerate(prog.kernels):
        for st in kern.storages(prog.storages):
            if st.kind == "temp":
                first.setdefault(st.sid, k)
                last[st.sid] = k
    placed: list[tuple[int, int, int, int]] = []  # (start, end, offset, nbytes)
    size = 0
    for st in prog.storages:
        if st.kind != "temp" or st.sid not in first:
            continue
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
