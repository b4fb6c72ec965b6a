"""``python -m symgraph cache info|clear``: inspect or empty the disk cache of compiled code."""

from __future__ import annotations

import argparse
import sys


def _info() -> int:
    from .backends import cache_store
    report = cache_store.info()
    print(f"cache folder: {report['dir'] or '-'}")
    print(f"state:        {report['state']}")
    if "entries" in report:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.get("kinds", {}).items()))
        print(f"entries:      {report['entries']}" + (f" ({kinds})" if kinds else ""))
        print(f"total size:   {report['total_bytes']} bytes")
    print(f"size limit:   {report['limit_bytes']} bytes (SYMGRAPH_CACHE_MAX_BYTES)")
    if "key" in report:
        print(f"key file:     {report['key']}")
    return 0 if not report["state"].startswith("refused") else 1


def _clear() -> int:
    from .backends import cache_store
    try:
        count, freed = cache_store.clear()
    except (cache_store.Refused, OSError) as exc:
        print(f"symgraph: cache not cleared: {exc}", file=sys.stderr)
        return 1
    print(f"removed {count} cache entries ({freed} bytes) from {cache_store.root() or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m symgraph", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache", help="the disk cache of compiled code")
    cache.add_argument("action", choices=("info", "clear"),
                       help="info: folder, entries, size, limit, key; clear: delete every entry")
    args = parser.parse_args(argv)
    return _info() if args.action == "info" else _clear()


if __name__ == "__main__":
    sys.exit(main())
