"""Print what the cross-check covered at the end of the session."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter) -> None:
    try:
        from .graphs import KINDS_SEEN, STATS
        from .registry import REGISTRY
    except ImportError:  # torch is not installed: the cross-check was skipped
        return
    if not STATS["graphs"]:
        return
    counts = ", ".join(f"{v} {k}" for k, v in sorted(STATS.items()) if not k.startswith("skipped"))
    skipped = "; ".join(f"{k} {v}" for k, v in sorted(STATS.items()) if k.startswith("skipped"))
    terminalreporter.write_line(
        f"symgraph/torch cross-check: {counts}; {len(KINDS_SEEN)} of {len(REGISTRY)} op kinds exercised")
    if skipped:
        terminalreporter.write_line(f"  KNOWN_BROKEN (tests/crosscheck/known.py) {skipped}")
