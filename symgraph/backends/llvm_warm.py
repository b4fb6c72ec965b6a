"""Warm start for the llvm backend: find compiled code before rewriting or lowering.

The ordinary disk cache (``KEY.o``) is keyed by the lowered program, so finding an entry
needs the rewriter and the lowering to run first.  This first-level cache is keyed by the
fingerprint of the *unrewritten* graph (``graph.fingerprint``) plus everything else the code
depends on: input shapes, code-generation flags, the target, the math library, the versions
and the symgraph sources themselves.  A ``KEY.warm`` entry holds the object-code digest (the
``.o`` entry) and a summary of the lowered program: what a ``Specialization`` reads (input and
output storages, output shapes, ``output_map``, ``arena_size``...) as JSON (plain data: reading
an entry never runs code).  A warm hit runs from that summary; the full program is lowered on
first access to anything else (inspection, export).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
import threading
import warnings
from collections.abc import Callable

from ..codegen.storage_fields import StorageMethods
from ..forksafe import renew_locks_after_fork
from . import cache_store

WARM = ".warm"
FORMAT = "sgwarm2"
# fields of the lowered program that are rebuilt on demand rather than stored
_LAZY_FIELDS = ("storages", "kernels", "guards")


def usable() -> bool:
    """False when rewrites from outside symgraph are registered, or symgraph's own are
    missing (a test or benchmark comparing a graph with and without one): the warm key
    cannot see what they do, so such processes compile from the graph."""
    engine = sys.modules.get("symgraph.rewrite.engine")
    if engine is None:
        return True
    if engine.LOCAL.missing or engine.GLOBAL.missing:
        return False
    fns = [r.fn for r in engine.LOCAL.values()] + [p.fn for p in engine.GLOBAL.values()]
    return all(getattr(fn, "__module__", "").startswith("symgraph.") for fn in fns)


def entry_key(graph_key: str, shapes: tuple, context: str) -> str:
    """The warm-entry key: graph fingerprint, input shapes and ``context`` (the backend's
    code-generation flags, target and versions)."""
    import numpy as np
    versions = f"py{sys.version_info[0]}.{sys.version_info[1]}|numpy{np.__version__}"
    code = cache_store.code_fingerprint()
    h = hashlib.sha256(f"{FORMAT}|{code}|{versions}|{context}|{graph_key}|{shapes!r}".encode())
    return h.hexdigest()[:40]


class StorageInfo(StorageMethods):
    """A kernel-IR ``Storage`` as read back from a warm entry (same fields; importing the
    kernel IR is left to the processes that lower)."""

    def __init__(self, fields: dict):
        self.__dict__.update(fields)


def _plain(value):
    """``value`` with kernel-IR storages and bound-check sites replaced by tagged dicts of
    their fields."""
    from ..codegen.checks import CheckSite
    from ..codegen.kernel_ir import Storage
    if isinstance(value, Storage) and value.value is None:  # constants stay in the kernels
        return ("storage", {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, CheckSite):
        return ("check", {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    if isinstance(value, StorageInfo):  # read back from an entry
        return ("storage", dict(value.__dict__))
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _revive(value):
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "storage":
        return StorageInfo(value[1])
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "check":
        from ..codegen.checks import CheckSite
        return CheckSite(**value[1])
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def _is_plain(value) -> bool:
    """Plain data only (no graph objects, which would drag a stale copy of a graph along)."""
    if value is None or type(value) in (bool, int, float, str, bytes):
        return True
    if type(value) in (tuple, list):
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


def summarize(prog, dim_values: tuple = ()) -> dict:
    """The fields of a lowered program a warm process may need without lowering: those
    holding plain data (storages become dicts of their fields); the rest is lowered on
    demand.  A shape-generic program is summarised for the run-time sizes ``dim_values``
    (its symbolic sizes evaluated), which the entry keeps."""
    out = {}
    for f in dataclasses.fields(prog):
        if f.name in _LAZY_FIELDS:
            continue
        value = _plain(_concrete(getattr(prog, f.name), dim_values))
        if _is_plain(value):
            out[f.name] = value
    if dim_values:
        out["dim_values"] = tuple(int(d) for d in dim_values)
    return out


def _concrete(value, dim_values: tuple):
    """``value`` with symbolic sizes (``symdim.SymInt``) evaluated for ``dim_values``."""
    from ..codegen.kernel_ir import Storage
    from ..codegen.symdim import SymInt, evaluate
    if not dim_values:
        return value
    if isinstance(value, SymInt):
        return evaluate(value, dim_values)
    if isinstance(value, Storage):
        return dataclasses.replace(value, size=evaluate(value.size, dim_values),
                                   shape=_concrete(value.shape, dim_values))
    if isinstance(value, (list, tuple)):
        return type(value)(_concrete(v, dim_values) for v in value)
    if isinstance(value, dict):
        return {k: _concrete(v, dim_values) for k, v in value.items()}
    return value


# --- the entry format: JSON; tuples, bytes and dicts with keys other than strings are tagged ---
# objects (plain data only: reading an entry never runs code, unlike pickle)
_TAGS = ("__t", "__b", "__d")


def _tag_plain(value):
    kind = type(value)
    if kind is tuple:
        return {"__t": [_tag_plain(v) for v in value]}
    if kind is list:
        return [_tag_plain(v) for v in value]
    if kind is dict:
        if all(type(k) is str for k in value) and not (len(value) == 1 and next(iter(value)) in _TAGS):
            return {k: _tag_plain(v) for k, v in value.items()}
        return {"__d": [[_tag_plain(k), _tag_plain(v)] for k, v in value.items()]}
    if kind is bytes:
        return {"__b": base64.b64encode(value).decode()}
    return value


def _untag(obj: dict):
    """``json.loads`` object hook: a JSON object back to the value ``_tag_plain`` tagged."""
    if len(obj) == 1:
        tag, body = next(iter(obj.items()))
        if tag == "__t":
            return tuple(body)
        if tag == "__d":
            return {k: v for k, v in body}
        if tag == "__b":
            return base64.b64decode(body)
    return obj


def encode(record: dict) -> bytes:
    """A warm record (plain data: see ``_is_plain``) as JSON text."""
    return json.dumps(_tag_plain(record), separators=(",", ":")).encode()


def decode(blob: bytes) -> dict:
    """The record ``encode`` wrote; ValueError (or KeyError/TypeError) for anything else."""
    record = json.loads(blob, object_hook=_untag)
    if type(record) is not dict:
        raise ValueError("a warm entry is not a record")
    return record


def store(key: str, digest: str, prog, dim_values: tuple = ()) -> None:
    """Record that ``key`` compiles to the object code stored under ``digest`` (a
    shape-generic program's, run with the sizes ``dim_values``)."""
    record = {"format": FORMAT, "digest": digest, "summary": summarize(prog, dim_values)}
    cache_store.store(key, encode(record), WARM)


def load(key: str) -> tuple[str, dict, bytes] | None:
    """``(digest, summary, object code)`` for ``key``, or None when the entry or its object
    code is missing, corrupt or not authenticated (``cache_store`` checks)."""
    blob = cache_store.load(key, WARM)
    if blob is None:
        return None
    try:
        record = decode(blob)
        if record.get("format") != FORMAT:
            return None
        digest = record["digest"]
        summary = {name: _revive(value) for name, value in record["summary"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):  # an unreadable entry is a miss
        return None
    obj = cache_store.load(digest, ".o")
    if obj is None:
        return None
    return digest, summary, obj


class WarmProgram:
    """Stands in for a lowered program after a warm hit.

    Reads of the summarised fields are answered from the cache entry; any other attribute
    (``kernels``, ``storages``...) lowers the graph once, checks that it produces the program
    the entry was built from, and from then on every read goes to the real program.
    """

    def __init__(self, summary: dict, digest: str, lower: Callable[[], object],
                 digest_of: Callable[[object], str], key: str):
        self._summary = summary
        self._digest = digest
        self._lower = lower
        self._digest_of = digest_of
        self._key = key
        self._full = None
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")

    @property
    def is_lowered(self) -> bool:
        return self._full is not None

    def lowered(self):
        """The real kernel-IR program (lowered on first use)."""
        if self._full is None:
            with self._lock:
                if self._full is None:
                    full = self._lower()
                    if self._digest_of(full) != self._digest:
                        cache_store.discard(self._key, WARM)
                        warnings.warn("symgraph: a warm-start cache entry did not match the "
                                      "program lowered from this graph; it was removed (the "
                                      "next process recompiles)", RuntimeWarning, stacklevel=3)
                    self._full = full
        return self._full

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        full = self._full
        if full is None:
            summary = self._summary
            if name in summary:
                return summary[name]
            full = self.lowered()
        return getattr(full, name)
