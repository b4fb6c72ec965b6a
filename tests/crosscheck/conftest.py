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
    counts = ", ".join(f"{v} {k}" for k, v in sorted(STATS.items()))
    terminalreporter.write_line(
        f"symgraph/torch cross-check: {counts}; {len(KINDS_SEEN)} of {len(REGISTRY)} op kinds exercised")
