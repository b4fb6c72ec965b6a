"""The on-disk cache of compiled code: every read and write of ``~/.cache/symgraph`` goes here.

The cache holds native code that is mapped and run (llvm ``.o`` entries, the OpenBLAS
threading ``.bridge``, CUDA ``.ptx``/``.cubin``) and the warm-start records (``.warm``, plain
JSON).  Whoever can write an entry can run code in every process that loads it, so the cache
is a trust boundary, safe by construction:

* Folders are created ``0700``; a cache folder or sub-folder that is not owned by the current
  user, or that others may write, is refused (a ``CacheWarning``, then the process compiles
  without the cache).  An entry is opened with ``O_NOFOLLOW | O_NONBLOCK`` and read only when
  it is a regular file owned by the user, not writable by others, and no larger than the cache
  limit (a FIFO or a link to ``/dev/zero`` is a miss, not a hang).
* Every entry is authenticated: ``MAGIC + HMAC-SHA256(secret, MAGIC + name + size + payload) +
  size + payload``, the secret being 32 random bytes in ``KEY_FILE`` (``0600``, created on first
  use).  A checksum anyone can recompute is not enough: an entry without a valid tag for its
  own name is a miss and is rewritten.
* Entries are written to a temporary file and renamed into place (concurrent processes never
  see half a file), touched when read, and the least recently used ones are removed when the
  folder outgrows ``SYMGRAPH_CACHE_MAX_BYTES`` (default 1 GiB).

``SYMGRAPH_CACHE_DIR`` moves the folder; ``off`` switches the cache off.  Entries live at
``ROOT/KEY[:2]/KEY.KIND``.  ``python -m symgraph cache info|clear`` inspects or empties it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import re
import secrets
import stat
import struct
import time
import warnings
from pathlib import Path

MAGIC = b"SGCACHE2"
KEY_FILE = "secret.key"
DEFAULT_MAX_BYTES = 1 << 30
_TAG = 32
_HEADER = len(MAGIC) + _TAG + 8
_KEY_BYTES = 32
_NAME = re.compile(r"[0-9a-f]{16,64}\.[a-z]{1,8}")
_SUBDIR = re.compile(r"[0-9a-f]{2}")
_TMP = re.compile(r"\.[0-9a-f]{2,64}\.[0-9a-f]{16}\.tmp")
_LEGACY_CUDA = re.compile(r"[0-9a-f]{64}\.(ptx|cubin|fatbin)")  # the former ROOT/cuda/ layout
_STALE_TMP_S = 3600
_RESCAN_S = 60.0
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_O_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_keys: dict[tuple, bytes] = {}  # (cache folder, key file inode, mtime) -> the secret
_state: dict[str, str] = {}
_usage: dict[str, tuple[int, float]] = {}  # cache folder -> (estimated bytes, time of last scan)
_warned: set[str] = set()


class CacheWarning(RuntimeWarning):
    """A cache folder, entry or key file failed the ownership / permission / type checks."""


class Refused(Exception):
    """A cache folder or file failed a check (the message says which and why)."""


# --- configuration --------------------------------------------------------------------------

def root() -> Path | None:
    """The cache folder, or None when ``SYMGRAPH_CACHE_DIR`` is ``off`` (or ``0``/``none``)."""
    path = _root()
    return None if path is None else Path(path)


def _root() -> str | None:
    # plain strings: pathlib's parsing cost more than the rest of a cache lookup
    env = os.environ.get("SYMGRAPH_CACHE_DIR")
    if env is not None and env.strip().lower() in ("off", "0", "none", ""):
        return None
    return env if env else os.path.join(os.path.expanduser("~"), ".cache", "symgraph")


def max_bytes() -> int:
    """The size limit of the folder (``SYMGRAPH_CACHE_MAX_BYTES``: bytes, or ``K``/``M``/``G``)."""
    env = os.environ.get("SYMGRAPH_CACHE_MAX_BYTES", "").strip()
    if not env:
        return DEFAULT_MAX_BYTES
    m = re.fullmatch(r"(\d+)\s*([kKmMgG]?)i?[bB]?", env)
    if m is None:
        _warn_once(f"max:{env}", f"SYMGRAPH_CACHE_MAX_BYTES={env!r} is not a size; using "
                                 f"{DEFAULT_MAX_BYTES} bytes")
        return DEFAULT_MAX_BYTES
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def _warn_once(tag: str, message: str) -> None:
    if tag not in _warned:
        _warned.add(tag)
        warnings.warn(f"symgraph: {message}", CacheWarning, stacklevel=4)


def _check_name(key: str, kind: str) -> str:
    name = f"{key}{kind}"
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a cache entry name: {name!r}")
    return name


# --- checks ---------------------------------------------------------------------------------

def _check_owner_mode(st: os.stat_result, what: str, private: bool = False) -> None:
    """Refuse what another user owns or may write (or, when ``private``, may read)."""
    if st.st_uid != os.geteuid():
        raise Refused(f"{what} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})")
    bad = 0o077 if private else 0o022
    if st.st_mode & bad:
        who = "group or others may " + ("read" if private else "write")
        raise Refused(f"{what} has mode {stat.S_IMODE(st.st_mode):04o}: {who} it")


def _open_dir(path: Path | str, dir_fd: int | None = None, follow: bool = True,
              label: str = "") -> int:
    """An fd of a checked cache folder (a real folder owned by this user, closed to others);
    ``label``: its full path, for messages."""
    fd = os.open(path, _O_DIR | (0 if follow else os.O_NOFOLLOW), dir_fd=dir_fd)
    try:
        _check_owner_mode(os.fstat(fd), f"cache folder {label or path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_root(create: bool) -> tuple[str, int] | None:
    """``(path, fd)`` of the checked cache root; None when off, missing (and not ``create``)
    or refused (with a warning)."""
    path = _root()
    if path is None:
        return None
    try:
        if create:
            os.makedirs(path, mode=0o700, exist_ok=True)
        return path, _open_dir(path)
    except Refused as exc:
        _warn_once(f"root:{path}", f"{exc}; compiling without the disk cache (see "
                                   "docs/errors.md, 'The disk cache')")
    except OSError:  # missing, unreadable, read-only disk: the cache is simply unavailable
        pass
    return None


def _open_subdir(root_fd: int, root_path: str, key: str, create: bool) -> int | None:
    sub = key[:2]
    try:
        if create:
            try:
                os.mkdir(sub, 0o700, dir_fd=root_fd)
            except FileExistsError:
                pass
        return _open_dir(sub, dir_fd=root_fd, follow=False, label=f"{root_path}/{sub}")
    except Refused as exc:
        _warn_once(f"sub:{root_path}/{sub}", f"{exc}; its entries are ignored (compiled again, "
                                              "not cached)")
    except OSError:
        pass
    return None


def read_regular(name: str, dir_fd: int | None, limit: int, touch: bool = False,
                 private: bool = False, label: str = "") -> bytes:
    """The bytes of ``name``: only a regular file, owned by this user, not writable (when
    ``private``: not readable) by others, at most ``limit`` bytes; never follows a link, never
    blocks on a FIFO.  ``touch`` marks it used (for least-recently-used eviction); ``label``
    names it in messages.  Raises OSError or Refused."""
    label = label or f"cache file {name}"
    try:
        fd = os.open(name, _O_ENTRY, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(f"{label} is a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{label} is not a regular file")
        _check_owner_mode(st, label, private)
        if st.st_size > limit:
            raise Refused(f"{label} is larger than the limit ({limit} bytes)")
        chunks, left = [], st.st_size + 1  # one byte more: a file that grew is refused
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise Refused(f"{label} grew while it was read")
        if touch:
            try:
                os.utime(fd)
            except OSError:
                pass
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- the secret key -------------------------------------------------------------------------

def _secret(root_fd: int, root_path: str, create: bool) -> bytes | None:
    """The per-user HMAC key of this cache folder (made on first use), or None (refused:
    warned; missing and not ``create``).  Its owner and mode are checked on every use; its
    bytes are read again only when the file changed (another key after a removal)."""
    label = f"cache key file {root_path}/{KEY_FILE}"
    try:
        st = os.stat(KEY_FILE, dir_fd=root_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{label} is not a regular file")
        _check_owner_mode(st, label, private=True)
        memo = (root_path, st.st_ino, st.st_mtime_ns)
        key = _keys.get(memo)
        if key is None:
            key = read_regular(KEY_FILE, root_fd, _KEY_BYTES, private=True, label=label)
            if len(key) != _KEY_BYTES:
                raise Refused(f"{label} is damaged (remove it: a new one is made, and the "
                              "entries signed with the old one are recompiled)")
            _keys[memo] = key
        return key
    except FileNotFoundError:
        return _make_secret(root_fd) if create else None
    except Refused as exc:
        _warn_once(f"key:{root_path}", f"{exc}; compiling without the disk cache (see "
                                       "docs/errors.md, 'The disk cache')")
    except OSError:
        pass
    return None


def _make_secret(root_fd: int) -> bytes | None:
    """Write a new key under a temporary name and link it into place: of two processes that
    race, one key wins and both use it."""
    tmp = f".key.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=root_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(_KEY_BYTES))
        try:
            os.link(tmp, KEY_FILE, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        except FileExistsError:
            pass
        return read_regular(KEY_FILE, root_fd, _KEY_BYTES, private=True)
    except (OSError, Refused):
        return None
    finally:
        try:
            os.unlink(tmp, dir_fd=root_fd)
        except OSError:
            pass


def _tag(secret: bytes, name: str, payload: bytes) -> bytes:
    mac = hmac.new(secret, MAGIC + name.encode() + b"\0" + struct.pack("<Q", len(payload)),
                   hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def seal(secret: bytes, name: str, payload: bytes) -> bytes:
    """The stored form of ``payload`` under entry ``name`` (``KEY.KIND``)."""
    return MAGIC + _tag(secret, name, payload) + struct.pack("<Q", len(payload)) + payload


def unseal(secret: bytes, name: str, blob: bytes) -> bytes | None:
    """The payload of a stored entry, or None when its tag is not valid for ``name``."""
    if len(blob) < _HEADER or not blob.startswith(MAGIC):
        return None
    tag = blob[len(MAGIC):len(MAGIC) + _TAG]
    (size,) = struct.unpack("<Q", blob[len(MAGIC) + _TAG:_HEADER])
    payload = blob[_HEADER:]
    if len(payload) != size or not hmac.compare_digest(tag, _tag(secret, name, payload)):
        return None
    return payload


# --- entries --------------------------------------------------------------------------------

def load(key: str, kind: str) -> bytes | None:
    """The payload stored under ``key`` and ``kind`` (``.o``, ``.warm``...), or None: missing,
    damaged, not authenticated, or refused by the checks (with a warning)."""
    name = _check_name(key, kind)
    opened = _open_root(create=False)
    if opened is None:
        return None
    root_path, root_fd = opened
    try:
        secret = _secret(root_fd, root_path, create=False)
        if secret is None:
            return None
        sub_fd = _open_subdir(root_fd, root_path, key, create=False)
        if sub_fd is None:
            return None
        try:
            blob = read_regular(name, sub_fd, _HEADER + max_bytes(), touch=True,
                                label=f"cache entry {root_path}/{key[:2]}/{name}")
        finally:
            os.close(sub_fd)
    except Refused as exc:
        _warn_once(f"entry:{root_path}/{key[:2]}/{name}", f"{exc}; it is ignored (and "
                                                          "recompiled)")
        return None
    except OSError:
        return None
    finally:
        os.close(root_fd)
    return unseal(secret, name, blob)


def store(key: str, payload: bytes, kind: str) -> None:
    """Write an entry atomically, then keep the folder under its size limit.  Errors (a
    read-only disk, a refused folder) only cost the cache."""
    name = _check_name(key, kind)
    if _HEADER + len(payload) > max_bytes():
        return
    opened = _open_root(create=True)
    if opened is None:
        return
    root_path, root_fd = opened
    try:
        secret = _secret(root_fd, root_path, create=True)
        sub_fd = None if secret is None else _open_subdir(root_fd, root_path, key, create=True)
        if sub_fd is None:
            return
        try:
            _write_atomic(sub_fd, name, seal(secret, name, payload))
        finally:
            os.close(sub_fd)
    except OSError:
        return
    finally:
        os.close(root_fd)
    _account(root_path, _HEADER + len(payload))


def _account(root_path: str, added: int) -> None:
    """Evict when this process's estimate of the folder's size passes the limit, or when its
    last scan is a minute old (other processes write too): a store need not list the folder."""
    total, scanned = _usage.get(str(root_path), (0, float("-inf")))
    if total + added > max_bytes() or time.monotonic() - scanned > _RESCAN_S:
        evict(root_path)  # records the folder's real size
    else:
        _usage[str(root_path)] = (total + added, scanned)


def _write_atomic(dir_fd: int, name: str, blob: bytes) -> None:
    tmp = f".{name.split('.')[0][:16]}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def discard(key: str, kind: str) -> None:
    """Remove an entry (a stale or inconsistent one); a missing entry is fine."""
    name = _check_name(key, kind)
    path = root()
    if path is not None:
        try:
            (path / key[:2] / name).unlink()
        except OSError:
            pass


# --- size limit, inspection, clearing -------------------------------------------------------

def _entries(root_path: str | Path) -> list[tuple[Path, os.stat_result]]:
    """Every entry file (and stale temporary file) under the cache folder, with its lstat;
    anything that does not look like an entry is left alone."""
    out = []
    try:
        subdirs = [d for d in os.scandir(root_path) if _SUBDIR.fullmatch(d.name)
                   or d.name == "cuda"]
    except OSError:
        return out
    for d in subdirs:
        if not d.is_dir(follow_symlinks=False):
            continue
        pattern = _LEGACY_CUDA if d.name == "cuda" else _NAME
        try:
            files = list(os.scandir(d.path))
        except OSError:
            continue
        for f in files:
            if pattern.fullmatch(f.name) or _TMP.fullmatch(f.name):
                try:
                    out.append((Path(f.path), f.stat(follow_symlinks=False)))
                except OSError:
                    pass
    return out


def evict(root_path: str | Path, limit: int | None = None) -> int:
    """Remove the least recently used entries until the folder holds at most ``limit`` bytes
    (``max_bytes()``), and temporary files older than an hour; returns the number removed."""
    limit = max_bytes() if limit is None else limit
    entries = _entries(root_path)
    now = time.time()
    removed = 0
    live = []
    for path, st in entries:
        if path.name.endswith(".tmp"):
            if now - st.st_mtime > _STALE_TMP_S and _unlink(path):
                removed += 1
        else:
            live.append((st.st_mtime_ns, st.st_size, path))
    total = sum(size for _, size, _ in live)
    for _, size, path in sorted(live):
        if total <= limit:
            break
        if _unlink(path):
            total -= size
            removed += 1
    _usage[str(root_path)] = (total, time.monotonic())
    return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError:
        return False


def info() -> dict:
    """The cache folder, its state, entries per kind, total size, limit and key status."""
    path = root()
    out: dict = {"dir": str(path) if path is not None else None, "limit_bytes": max_bytes()}
    if path is None:
        return {**out, "state": "off (SYMGRAPH_CACHE_DIR=off)"}
    if not path.exists():
        return {**out, "state": "empty (the folder does not exist yet)", "entries": 0,
                "total_bytes": 0, "key": "absent"}
    try:
        os.close(_open_dir(path))
    except (Refused, OSError) as exc:
        return {**out, "state": f"refused: {exc}"}
    kinds: dict[str, int] = {}
    total = 0
    for p, st in _entries(path):
        if p.name.endswith(".tmp"):
            continue
        kind = p.suffix if p.parent.name != "cuda" else f"{p.suffix} (old cuda layout)"
        kinds[kind] = kinds.get(kind, 0) + 1
        total += st.st_size
    return {**out, "state": "ok", "entries": sum(kinds.values()), "kinds": kinds,
            "total_bytes": total, "key": _key_status(path)}


def _key_status(path: Path) -> str:
    try:
        st = os.lstat(path / KEY_FILE)
    except FileNotFoundError:
        return "absent (made on the next write)"
    try:
        if not stat.S_ISREG(st.st_mode):
            raise Refused("the key file is not a regular file")
        _check_owner_mode(st, "the key file", private=True)
    except Refused as exc:
        return f"refused: {exc}"
    return f"ok ({path / KEY_FILE}, mode {stat.S_IMODE(st.st_mode):04o})"


def clear() -> tuple[int, int]:
    """Delete every entry (the key file stays); returns ``(files removed, bytes freed)``.
    Raises Refused for a folder that fails the checks (nothing is removed there)."""
    path = root()
    if path is None or not path.exists():
        return 0, 0
    os.close(_open_dir(path))
    count = freed = 0
    for p, st in _entries(path):
        if _unlink(p):
            count += 1
            freed += st.st_size
    for d in list(path.iterdir()):
        if (_SUBDIR.fullmatch(d.name) or d.name == "cuda") and d.is_dir() and not d.is_symlink():
            try:
                d.rmdir()
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
    return count, freed


# --- code identity --------------------------------------------------------------------------

def code_fingerprint() -> str:
    """Identity of the installed symgraph sources, extension and kernel templates (paths,
    sizes and modification times: ~4 ms once per process), part of every cache key so an
    edited checkout never reuses code built by older sources."""
    if "code" not in _state:
        h = hashlib.sha256()
        here = Path(__file__).resolve().parents[1]
        roots = [str(here)]
        try:
            from ..resources import kernels_dir
            roots.append(str(kernels_dir().resolve()))
        except (FileNotFoundError, ImportError):  # pragma: no cover - no templates shipped
            pass
        for top in roots:
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
                for fname in sorted(filenames):
                    if fname.endswith((".pyc", ".tmp")):
                        continue
                    p = os.path.join(dirpath, fname)
                    try:
                        st = os.stat(p)
                    except OSError:
                        continue
                    h.update(f"{os.path.relpath(p, top)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        _state["code"] = h.hexdigest()[:32]
    return _state["code"]

