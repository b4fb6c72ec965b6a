"""Markdown tables from the workers' JSON rows: times, ratios to the best peer, fractions of the
machine limits, checks, W5."""

from __future__ import annotations

import math

from . import limits as machine_limits
from .workloads import TITLES, UNITS, WORKLOADS, bytes_moved, flops, limit_work

SCALE = {"ms": 1e3, "us": 1e6, "s": 1.0}
TOLERANCE = 1e-3


def fmt(v: float) -> str:
    """Three significant digits, no exponent for ordinary magnitudes."""
    if v is None or not math.isfinite(v):
        return "-"
    if v >= 1000:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _peers(rows: list[dict]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        if r["peer"] not in seen:
            seen.append(r["peer"])
    return seen


def _cell(rows, peer, wl, threads):
    for r in rows:
        if r["peer"] == peer and r["workload"] == wl and r["threads"] == threads:
            return r
    return None


def is_symgraph(peer: str) -> bool:
    return peer.startswith("symgraph")


def best_peer(rows, wl, threads) -> tuple[str, float] | None:
    """The fastest passing non-symgraph row of one workload, ``(peer, median seconds)``."""
    best = None
    for r in rows:
        if (r["workload"] == wl and r["threads"] == threads and not is_symgraph(r["peer"])
                and "median" in r and r.get("error", math.inf) < TOLERANCE):
            if best is None or r["median"] < best[1]:
                best = (r["peer"], r["median"])
    return best


def time_table(rows, threads, sizes) -> str:
    wls = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    head = ["peer"] + [f"{TITLES[w]} ({UNITS[w]})" for w in wls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for peer in _peers(rows):
        cells = [peer]
        for w in wls:
            r = _cell(rows, peer, w, threads)
            if r is None:
                cells.append("")
            elif "failed" in r:
                cells.append("failed")
            else:
                k = SCALE[UNITS[w]]
                text = f"**{fmt(r['median'] * k)}** ({fmt(r['min'] * k)}–{fmt(r['max'] * k)})"
                if bytes_moved(w, sizes):
                    text += f"; {bytes_moved(w, sizes) / r['median'] / 1e9:.3g} GB/s"
                if flops(w, sizes):
                    text += f"; {flops(w, sizes) / r['median'] / 1e9:.3g} GFLOP/s"
                if r.get("error", 0) >= TOLERANCE:
                    text += " (check FAILED)"
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(rows, threads) -> str:
    """Median time divided by the best non-symgraph peer's median (< 1: faster than all peers)."""
    wls = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    head = ["peer"] + [TITLES[w] for w in wls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {w: best_peer(rows, w, threads) for w in wls}
    lines.append("| *best peer* | " + " | ".join(
        f"*{b[0]}*" if b else "-" for b in best.values()) + " |")
    for peer in _peers(rows):
        cells = [peer]
        for w in wls:
            r = _cell(rows, peer, w, threads)
            if r is None or "median" not in r or best[w] is None:
                cells.append("")
            else:
                ratio = r["median"] / best[w][1]
                cells.append(f"**{ratio:.2f}**" if is_symgraph(peer) else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_table(rows, thread_counts) -> str:
    wls = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    head = ["peer"] + wls
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for peer in _peers(rows):
        cells = [peer]
        for w in wls:
            parts = []
            for t in thread_counts:
                r = _cell(rows, peer, w, t)
                if r is None:
                    parts.append("-")
                elif "failed" in r:
                    parts.append("failed")
                else:
                    parts.append(f"{r['error']:.1e} {'pass' if r['error'] < TOLERANCE else 'FAIL'}")
            cells.append(" / ".join(parts))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def first_call_table(rows, threads) -> str:
    wls = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    lines = ["| peer | " + " | ".join(wls) + " |", "|" + "---|" * (len(wls) + 1)]
    for peer in _peers(rows):
        cells = [peer]
        for w in wls:
            r = _cell(rows, peer, w, threads)
            cells.append(f"{r['first_call_s']:.2f}" if r and "first_call_s" in r else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def w5_table(w5_rows) -> str:
    lines = ["| peer | import | define → first result, cold | define → first result, warm | "
             "whole process, cold | whole process, warm |", "|---|---|---|---|---|---|"]
    for r in w5_rows:
        if "failed" in r:
            lines.append(f"| {r['peer']} | failed: {r['failed']} | | | | |")
            continue
        c, w = r["cold"], r["warm"]
        lines.append(f"| {r['peer']} | {c['import_s']:.2f} | {c['first_result_s']:.2f} | "
                     f"{w['first_result_s']:.2f} | {c['process_s']:.2f} | {w['process_s']:.2f} |")
    return "\n".join(lines)


def failures(rows) -> str:
    out = [f"- {r['peer']} {r['workload']} at {r['threads']} thread(s): {r['failed']}"
           for r in rows if "failed" in r]
    return "\n".join(out)


def limit_of(workload: str, sizes, limits: dict, threads: int) -> dict | None:
    """The limit that applies to ``workload`` at ``threads`` and the time a call would take at
    it: ``{"label", "seconds"}`` plus, for GEMM-bound workloads, ``"fma_seconds"`` (the same
    flop at the FMA peak).  None when no limit applies or it was not measured."""
    work = limit_work(workload, sizes)
    if work is None or not limits:
        return None
    if work.kind == "memory":
        bw = machine_limits.bandwidth(limits, threads, "copy")
        if not bw:
            return None
        return {"label": f"copy {bw:.3g} GB/s", "seconds": work.amount / (bw * 1e9)}
    found = machine_limits.gemm(limits, threads, work.gemm_n)
    if found is None:
        return None
    n, rate = found
    out = {"label": f"GEMM {n}² {rate:.3g} GFLOP/s", "seconds": work.amount / (rate * 1e9)}
    fma = machine_limits.fma_rate(limits, threads)
    if fma:
        out["fma_seconds"] = work.amount / (fma * 1e9)
    return out


def fractions(row: dict, sizes, limits: dict) -> dict | None:
    """``{"limit": label, "fraction": t_limit / t_median[, "fma_fraction": ...]}`` of a row."""
    if "median" not in row:
        return None
    lim = limit_of(row["workload"], sizes, limits, row["threads"])
    if lim is None:
        return None
    out = {"limit": lim["label"], "fraction": lim["seconds"] / row["median"]}
    if "fma_seconds" in lim:
        out["fma_fraction"] = lim["fma_seconds"] / row["median"]
    return out


def fraction_table(rows, threads, sizes, limits: dict) -> str:
    """Time at the machine limit divided by the median time (1 = at the limit)."""
    wls = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    head = ["peer"] + [TITLES[w] for w in wls]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cells = []
    for w in wls:
        lim = limit_of(w, sizes, limits, threads)
        if lim is None:
            cells.append("*none (call overhead)*" if limit_work(w, sizes) is None else "-")
        else:
            k = SCALE[UNITS[w]]
            cells.append(f"*{lim['label']}: {fmt(lim['seconds'] * k)} {UNITS[w]}*")
    lines.append("| *limit: time at it* | " + " | ".join(cells) + " |")
    for peer in _peers(rows):
        cells = [peer]
        for w in wls:
            r = _cell(rows, peer, w, threads)
            f = fractions(r, sizes, limits) if r else None
            if f is None:
                cells.append("")
                continue
            text = f"{f['fraction']:.2f}"
            text = f"**{text}**" if is_symgraph(peer) else text
            if "fma_fraction" in f:
                text += f" (FMA {f['fma_fraction']:.2f})"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def limits_section(limits: dict | None) -> str:
    """The machine-limits table (or why there is none)."""
    if limits is None:
        return ""
    if "failed" in limits:
        return f"### Machine limits\n\nNot measured: {limits['failed']}\n"
    return ("### Machine limits\n\n"
            f"Measured by `benchmarks/limits.py` in {limits['seconds']:.1f} s before the workloads "
            "(median of the repeats, the best repeat in parentheses; the fractions below use "
            "the best repeat; the memory loops and the FMA loop are LLVM IR compiled for "
            f"`{limits['host']['cpu']}`).\n\n" + machine_limits.markdown(limits) + "\n")


def markdown(rows, w5_rows, thread_counts, sizes, header: str, limits: dict | None = None) -> str:
    parts = [header]
    if limits is not None:
        parts.append(limits_section(limits))
    for t in thread_counts:
        parts.append(f"### {t} thread{'s' if t != 1 else ''}: median (min–max) over the timed repeats\n")
        parts.append(time_table(rows, t, sizes) + "\n")
        parts.append(f"#### {t} thread{'s' if t != 1 else ''}: ratio to the best peer (median / "
                     "best non-symgraph median; below 1 = faster than every peer)\n")
        parts.append(ratio_table(rows, t) + "\n")
        if limits and "failed" not in limits:
            parts.append(f"#### {t} thread{'s' if t != 1 else ''}: fraction of the machine limit "
                         "(time the work would take at the limit / median; 1 = at the limit; "
                         "GEMM-bound workloads also against the FMA peak)\n")
            parts.append(fraction_table(rows, t, sizes, limits) + "\n")
    parts.append("### Numeric check: relative L2 error against NumPy, "
                 + " / ".join(f"{t} thr" for t in thread_counts) + "\n")
    parts.append(check_table(rows, thread_counts) + "\n")
    parts.append(f"### First call (build + compile + first run) in the timing process, seconds, "
                 f"{thread_counts[-1]} threads\n")
    parts.append(first_call_table(rows, thread_counts[-1]) + "\n")
    if w5_rows:
        parts.append("### W5: W2 training step in a fresh process, seconds\n")
        parts.append(w5_table(w5_rows) + "\n")
    fails = failures(rows)
    if fails:
        parts.append("### Failures\n")
        parts.append(fails + "\n")
    return "\n".join(parts)
