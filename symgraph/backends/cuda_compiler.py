"""CUDA C -> PTX / CUBIN: NVRTC in process when its library loads, else the ``nvcc`` binary.

Binaries are kept in the disk cache (``cache_store``: ``~/.cache/symgraph``, ``SYMGRAPH_CACHE_DIR``;
authenticated entries ``KEY.ptx`` / ``KEY.cubin``) under a hash of the source, the target
architecture, the compiler's version and options and symgraph's own code.  Needs no GPU: tests
compile PTX for sm_80/sm_90.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import CompileError
from . import cache_store

NVCC_FLAGS = ("-std=c++17", "-O3", "--use_fast_math")


@functools.cache
def find_nvcc() -> str | None:
    """The nvcc binary: ``$SYMGRAPH_NVCC``, PATH, ``$CUDA_HOME/bin``, ``/usr/local/cuda/bin``."""
    env = os.environ.get("SYMGRAPH_NVCC")
    if env and os.path.exists(env):
        return env
    found = shutil.which("nvcc")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


@functools.cache
def nvcc_version() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        return "none"
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else "unknown"


@functools.cache
def nvcc_archs() -> tuple[int, ...]:
    """Real architectures nvcc can emit a CUBIN for (``nvcc --list-gpu-code``: 75, 80, ...)."""
    nvcc = find_nvcc()
    if nvcc is None:
        return ()
    out = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout
    return tuple(sorted({int(m) for m in re.findall(r"\bsm_(\d+)\b", out)}))


def arch_number(arch: str | int) -> int:
    """``"sm_90"`` / ``"compute_90"`` / ``90`` -> ``90``."""
    return int(re.sub(r"^(sm_|compute_)", "", str(arch)).rstrip("a").rstrip("f"))


def device_target(arch: str | int, supported: tuple[int, ...]) -> tuple[str, str]:
    """What to build for a device of architecture ``arch`` with a compiler that knows the
    architectures ``supported``: ``("sm_XY", "cubin")`` when it knows the device; for a device
    newer than the compiler, PTX for the newest older architecture (``"ptx"``), which the
    driver compiles at load time; a CompileError for a device older than all of them."""
    want = arch_number(arch)
    if not supported or want in supported:
        return f"sm_{want}", "cubin"
    older = [a for a in supported if a < want]
    if not older:
        raise CompileError(f"the GPU's architecture sm_{want} is older than any this CUDA compiler "
                           f"supports (sm_{min(supported)} and newer); install a CUDA toolkit or "
                           "NVRTC that still supports it")
    return f"sm_{max(older)}", "ptx"


def device_binary(source: str, arch: str | int) -> tuple[bytes, str]:
    """``(image, kind)`` to load on a device of architecture ``arch``: a CUBIN when the
    compiler knows the architecture, else PTX (NUL-terminated, as ``cuModuleLoadData``
    requires of text images) for the driver to compile."""
    use_nvrtc = nvrtc_available()
    supported = nvrtc_archs() if use_nvrtc else nvcc_archs()
    target, kind = device_target(arch, supported)
    data = compile_module(source, target, kind)
    if kind == "ptx" and not data.endswith(b"\0"):
        data += b"\0"
    return data, kind


def arch_flag(arch: str | int) -> str:
    """``80`` / ``"sm_80"`` -> ``"sm_80"``."""
    a = str(arch)
    return a if a.startswith("sm_") else f"sm_{a}"


def nvcc_compile(source: str, arch: str | int, kind: str = "cubin", extra: tuple[str, ...] = ()) -> bytes:
    """Compile ``source`` with nvcc to ``kind`` (``ptx``, ``cubin`` or ``fatbin``) for ``arch``."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise CompileError("the cuda backend needs nvcc (the CUDA toolkit) or the NVRTC library "
                           "(pip install nvidia-cuda-nvrtc) to compile kernels; neither was found")
    with tempfile.TemporaryDirectory(prefix="symgraph-nvcc-") as tmp:
        src = os.path.join(tmp, "module.cu")
        out = os.path.join(tmp, f"module.{kind}")
        Path(src).write_text(source)
        cmd = [nvcc, f"--{kind}", f"-arch={arch_flag(arch)}", *NVCC_FLAGS, *extra, "-o", out, src]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"nvcc failed ({' '.join(cmd[1:4])}):\n{_first_errors(proc.stderr)}")
        return Path(out).read_bytes()


def _first_errors(text: str, limit: int = 40) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[:limit])


# --- NVRTC (optional, ~8x faster than spawning nvcc) ----------------------------------------

@functools.cache
def _nvrtc():
    names = []
    try:
        import nvidia  # the pip wheels put the library under nvidia/cu13/lib or nvidia/cuda_nvrtc/lib
        for root in getattr(nvidia, "__path__", []):
            names += sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    lib = ctypes.util.find_library("nvrtc")
    if lib:
        names.append(lib)
    names += ["libnvrtc.so", "/usr/local/cuda/lib64/libnvrtc.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        for fn, argtypes in NVRTC_PROTOTYPES.items():
            if hasattr(lib, fn):  # nvrtcGet*SupportedArchs came with NVRTC 11.2
                getattr(lib, fn).argtypes = argtypes
                getattr(lib, fn).restype = ctypes.c_int
        lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    return None


_P, _CP = ctypes.c_void_p, ctypes.c_char_p
_SZP, _IP = ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_int)
# ctypes prototypes of the NVRTC entry points used (nvrtc.h; nvrtcResult is an int enum,
# nvrtcProgram a pointer); the test suite checks them against the installed header if any.
NVRTC_PROTOTYPES: dict[str, list] = {
    "nvrtcVersion": [_IP, _IP],
    "nvrtcGetNumSupportedArchs": [_IP],
    "nvrtcGetSupportedArchs": [_IP],
    "nvrtcCreateProgram": [ctypes.POINTER(_P), _CP, _CP, ctypes.c_int, ctypes.POINTER(_CP),
                           ctypes.POINTER(_CP)],
    "nvrtcDestroyProgram": [ctypes.POINTER(_P)],
    "nvrtcCompileProgram": [_P, ctypes.c_int, ctypes.POINTER(_CP)],
    "nvrtcGetPTXSize": [_P, _SZP],
    "nvrtcGetPTX": [_P, _CP],
    "nvrtcGetCUBINSize": [_P, _SZP],
    "nvrtcGetCUBIN": [_P, _CP],
    "nvrtcGetProgramLogSize": [_P, _SZP],
    "nvrtcGetProgramLog": [_P, _CP],
}


def nvrtc_available() -> bool:
    return _nvrtc() is not None and os.environ.get("SYMGRAPH_CUDA_NVRTC", "1") != "0"


@functools.cache
def nvrtc_archs() -> tuple[int, ...]:
    """Architectures NVRTC can compile for (``nvrtcGetSupportedArchs``, NVRTC 11.2+)."""
    lib = _nvrtc()
    if lib is None or not hasattr(lib, "nvrtcGetSupportedArchs"):
        return ()
    n = ctypes.c_int()
    if lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)) != 0 or n.value <= 0:
        return ()
    arr = (ctypes.c_int * n.value)()
    if lib.nvrtcGetSupportedArchs(arr) != 0:
        return ()
    return tuple(sorted(int(a) for a in arr))


def nvrtc_version() -> str:
    lib = _nvrtc()
    if lib is None:
        return "none"
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"nvrtc {major.value}.{minor.value}"


def nvrtc_compile(source: str, arch: str | int, kind: str = "cubin") -> bytes:
    """Compile in process with NVRTC (``kind``: ``ptx`` or ``cubin``)."""
    lib = _nvrtc()
    if lib is None:  # pragma: no cover - callers check nvrtc_available()
        raise CompileError("NVRTC is not available")
    prog = ctypes.c_void_p()
    check = _nvrtc_checker(lib)
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"module.cu", 0, None, None),
          "nvrtcCreateProgram")
    try:
        target = f"--gpu-architecture={'compute' if kind == 'ptx' else 'sm'}_{arch_flag(arch)[3:]}"
        opts = [target.encode(), b"-std=c++17", b"--use_fast_math", b"-default-device"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        res = lib.nvrtcCompileProgram(prog, len(opts), arr)
        if res != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CompileError(f"NVRTC failed:\n{_first_errors(log.value.decode(errors='replace'))}")
        size = ctypes.c_size_t()
        if kind == "ptx":
            check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
            buf = ctypes.create_string_buffer(size.value)
            check(lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
        else:
            check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
            buf = ctypes.create_string_buffer(size.value)
            check(lib.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
        return buf.raw[:size.value]
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _nvrtc_checker(lib):
    def check(code: int, what: str) -> None:
        if code != 0:
            raise CompileError(f"{what} failed: {lib.nvrtcGetErrorString(code).decode()}")
    return check


# --- cached entry point -----------------------------------------------------------------------

def compile_module(source: str, arch: str | int, kind: str = "cubin") -> bytes:
    """PTX or CUBIN for ``source``, from the disk cache when possible."""
    use_nvrtc = nvrtc_available() and kind in ("ptx", "cubin")
    compiler = nvrtc_version() if use_nvrtc else nvcc_version()
    key = module_key(source, arch, kind, compiler)
    data = cache_store.load(key, f".{kind}")
    if data is None:
        data = nvrtc_compile(source, arch, kind) if use_nvrtc else nvcc_compile(source, arch, kind)
        cache_store.store(key, data, f".{kind}")
    return data


def module_key(source: str, arch: str | int, kind: str, compiler: str) -> str:
    """The cache key of a compiled module: source, architecture, kind, compiler, options and
    symgraph's own code (which holds the NVRTC options)."""
    parts = [source, arch_flag(arch), kind, compiler, " ".join(NVCC_FLAGS),
             cache_store.code_fingerprint()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
