"""On-disk cache of compiled object code (``~/.cache/symgraph``; ``SYMGRAPH_CACHE_DIR``).

Two kinds of entry share the folder: ``KEY.o`` holds object code keyed by the lowered program,
``KEY.warm`` the warm-start record keyed by the unrewritten graph (``llvm_warm``).  An entry is
``MAGIC + sha256(payload) + len(payload) + payload``, written to a temporary file and renamed
into place, so concurrent processes never see a partial file; an entry whose header or
checksum does not match is treated as missing (and rewritten).
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

MAGIC = b"SGOBJ1\n\0"
_HEADER = len(MAGIC) + 32 + 8


def cache_dir() -> Path | None:
    """The cache folder, or None when ``SYMGRAPH_CACHE_DIR=off``."""
    env = os.environ.get("SYMGRAPH_CACHE_DIR")
    if env is not None and env.strip().lower() in ("off", "0", "none", ""):
        return None
    return Path(env) if env else Path.home() / ".cache" / "symgraph"


def _path(key: str, suffix: str) -> Path | None:
    d = cache_dir()
    return None if d is None else d / key[:2] / f"{key}{suffix}"


def load(key: str, suffix: str = ".o") -> bytes | None:
    """The payload stored under ``key``, or None (missing, truncated or corrupt)."""
    path = _path(key, suffix)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < _HEADER or not data.startswith(MAGIC):
        return None
    digest = data[len(MAGIC):len(MAGIC) + 32]
    (size,) = struct.unpack("<Q", data[len(MAGIC) + 32:_HEADER])
    payload = data[_HEADER:]
    if len(payload) != size or hashlib.sha256(payload).digest() != digest:
        return None
    return payload


def store(key: str, payload: bytes, suffix: str = ".o") -> None:
    """Write atomically; errors (read-only disk...) only cost the cache."""
    path = _path(key, suffix)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = MAGIC + hashlib.sha256(payload).digest() + struct.pack("<Q", len(payload)) + payload
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError:
        pass


def discard(key: str, suffix: str = ".o") -> None:
    """Remove an entry (a stale or inconsistent one); a missing entry is fine."""
    path = _path(key, suffix)
    if path is not None:
        try:
            path.unlink()
        except OSError:
            pass
