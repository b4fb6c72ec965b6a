"""The ``symgraph`` command (also ``python -m symgraph``).

    symgraph info                 version, backends found, CPU target, BLAS, threads, cache
    symgraph cache info|clear     inspect or empty the disk cache of compiled code
    symgraph example NAME [ARGS]  run one of the examples of a source checkout
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _system_info() -> int:
    import numpy as np

    from . import __version__
    print(f"symgraph:     {__version__} ({os.path.dirname(os.path.abspath(__file__))})")
    print(f"python:       {sys.version.split()[0]}; numpy {np.__version__}")
    try:
        import llvmlite
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
        widest = next((w for w, f in (("512-bit (AVX-512)", "avx512f"), ("256-bit (AVX2)", "avx2"),
                                      ("256-bit (AVX)", "avx")) if features.get(f, False)), "128-bit")
        version = ".".join(map(str, llvm.llvm_version_info))
        print(f"llvm backend: llvmlite {llvmlite.__version__}, LLVM {version}; "
              f"host CPU {llvm.get_host_cpu_name()}, vectors {widest}")
        from .backends.llvm import default_threads
        print(f"threads:      {default_threads()} by default (SYMGRAPH_NUM_THREADS overrides)")
    except Exception as e:  # noqa: BLE001 - report, do not fail
        print(f"llvm backend: unavailable ({e})")
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    print(f"BLAS:         {blas.get('name', '?')} {blas.get('version', '')} (NumPy's, used for GEMM)")
    cuda = "pycuda installed" if importlib.util.find_spec("pycuda") else "pycuda not installed"
    nvcc = shutil.which("nvcc")
    print(f"cuda backend: {cuda}; nvcc {'at ' + nvcc if nvcc else 'not found'}")
    fast = importlib.util.find_spec("symgraph._fastcall") is not None
    print(f"call path:    {'C extension' if fast else 'pure Python'}")
    print("cache:")
    return _info()


def _example(name: str, args: list[str]) -> int:
    if not os.path.isdir(EXAMPLES):
        print("symgraph: the examples live in the source checkout (examples/), which this "
              "installation does not include", file=sys.stderr)
        return 1
    candidates = [os.path.join(EXAMPLES, f"{name}.py"), os.path.join(EXAMPLES, "lectures", f"{name}.py")]
    script = next((c for c in candidates if os.path.exists(c)), None)
    if script is None:
        names = sorted(f[:-3] for d in (EXAMPLES, os.path.join(EXAMPLES, "lectures")) if os.path.isdir(d)
                       for f in os.listdir(d) if f.endswith(".py") and f != "common.py")
        print(f"symgraph: no example {name!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, script, *args])


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
    parser = argparse.ArgumentParser(prog="symgraph", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="version, backends found, CPU target, BLAS, threads, cache")
    cache = sub.add_parser("cache", help="the disk cache of compiled code")
    cache.add_argument("action", choices=("info", "clear"),
                       help="info: folder, entries, size, limit, key; clear: delete every entry")
    example = sub.add_parser("example", help="run an example of the source checkout")
    example.add_argument("name", help="e.g. digits_mlp, xor, optimisers")
    example.add_argument("args", nargs=argparse.REMAINDER, help="passed to the example")
    args = parser.parse_args(argv)
    if args.command == "info":
        return _system_info()
    if args.command == "example":
        return _example(args.name, args.args)
    return _info() if args.action == "info" else _clear()


if __name__ == "__main__":
    sys.exit(main())
