"""Load the llvm backend's object code without llvmlite: a minimal in-process ELF loader.

The code is emitted for the JIT target (x86-64, large code model), whose object files need
only absolute 64-bit relocations (plus PC-relative ones inside the image).  Loading such a
file is a copy of its allocated sections into fresh pages, a relocation pass and an
``mprotect``; external symbols (OpenBLAS, libgomp, libm, libc) come from ``dlsym``.  That
spares a warm process the import of ``llvmlite.binding`` (a 170 MB library) and the creation
of an MCJIT engine.  Anything outside that narrow format (another machine, another
relocation type, constructors, TLS, common symbols...) makes ``load`` return None and the
caller uses MCJIT.  ``SYMGRAPH_LOADER=mcjit`` always uses MCJIT.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from . import llvm_jit

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
SHT_SYMTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 4, 8, 9
SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY = 14, 15, 16
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_TLS = 0x1, 0x2, 0x4, 0x400
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, R_X86_64_PC64 = 1, 2, 4, 24
STB_WEAK = 2
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
# sections that only describe the code for debuggers and unwinders
_SKIP = (".eh_frame", ".debug", ".comment", ".note", ".llvm")


class Unsupported(Exception):
    """The object file is outside what this loader handles."""


def _libc():
    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.mprotect.restype = ctypes.c_int
    return libc


def _resolver():
    """``name -> address`` over the process and the libraries the generated code calls."""
    libs = llvm_jit.libraries()
    handles = [ctypes.CDLL(None)] + [h for h in libs["handles"] if h is not None]

    def resolve(name: str) -> int:
        for h in handles:
            try:
                return ctypes.cast(h[name], ctypes.c_void_p).value or 0
            except AttributeError:
                continue
        return 0
    return resolve


class Image:
    """Object code mapped into this process; the same interface as ``llvm_jit.Loaded``."""

    def __init__(self, obj: bytes, entry: str):
        mem, symbols = _load(obj)
        self._mem = mem  # the mapping lives as long as this object
        self._symbols = symbols
        self.address = symbols.get(entry, 0)
        if not self.address:
            raise Unsupported(f"entry point {entry} missing")
        self.cfunc = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(self.address)
        addr = symbols.get("sg_num_threads")
        self.nthreads = ctypes.c_int32.from_address(addr) if addr else None
        self.profile_addr = symbols.get("sg_profile") or None
        llvm_jit.track_threads(self)

    def global_address(self, name: str) -> int:
        """The address of global ``name`` in the loaded code (0 when absent)."""
        return self._symbols.get(name, 0)

    def set_threads(self, n: int) -> None:
        if self.nthreads is not None:
            self.nthreads.value = llvm_jit.usable_threads(n)


def load(obj: bytes, entry: str) -> Image | None:
    """The object code loaded by this module, or None when MCJIT has to do it."""
    if os.environ.get("SYMGRAPH_LOADER", "").lower() == "mcjit":
        return None
    try:
        return Image(obj, entry)
    except (Unsupported, struct.error, OSError, ValueError, IndexError):
        return None


def _load(obj: bytes):
    ident, e_type, machine, _v, _entry, _phoff, shoff, _flags, _ehsize, _phes, _phnum, \
        shentsize, shnum, shstrndx = _EHDR.unpack_from(obj, 0)
    if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1 or e_type != 1 or machine != 62:
        raise Unsupported("not a little-endian x86-64 relocatable object")
    shdrs = [_SHDR.unpack_from(obj, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = shdrs[shstrndx][4]

    def cstr(off: int) -> str:
        end = obj.index(b"\0", off)
        return obj[off:end].decode()

    names = [cstr(strtab_off + h[0]) for h in shdrs]
    # lay out the sections to load: code first, then (on fresh pages) data
    page = mmap.PAGESIZE
    place: dict[int, int] = {}
    size = 0
    for want_exec in (True, False):
        for i, (_n, sh_type, flags, _a, _o, sh_size, _l, _inf, align, _es) in enumerate(shdrs):
            if not flags & SHF_ALLOC or names[i].startswith(_SKIP) or sh_type == 0x70000001:
                continue
            if flags & SHF_TLS or sh_type in (SHT_INIT_ARRAY, SHT_FINI_ARRAY, SHT_PREINIT_ARRAY) \
                    or names[i].startswith((".ctors", ".dtors", ".init", ".fini")):
                raise Unsupported(f"section {names[i]}")
            if bool(flags & SHF_EXECINSTR) != want_exec:
                continue
            align = max(int(align), 1)
            size = (size + align - 1) // align * align
            place[i] = size
            size += sh_size
        if want_exec:
            code_size = size = (size + page - 1) // page * page
    total = max((size + page - 1) // page * page, page)
    mem = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                    prot=PROT_READ | PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    for i, off in place.items():
        sh = shdrs[i]
        if sh[1] != SHT_NOBITS:
            mem[off:off + sh[5]] = obj[sh[4]:sh[4] + sh[5]]

    symtab = next((h for h in shdrs if h[1] == SHT_SYMTAB), None)
    if symtab is None:
        raise Unsupported("no symbol table")
    sym_strtab = shdrs[symtab[6]][4]
    resolve = _resolver()
    values: list[int] = []
    symbols: dict[str, int] = {}
    for k in range(symtab[5] // _SYM.size):
        st_name, info, _other, shndx, value, _size = _SYM.unpack_from(obj, symtab[4] + k * _SYM.size)
        name = cstr(sym_strtab + st_name) if st_name else ""
        if k == 0:
            addr = 0
        elif shndx == SHN_UNDEF:
            addr = resolve(name)
            if not addr and info >> 4 != STB_WEAK:
                raise Unsupported(f"unresolved symbol {name}")
        elif shndx == SHN_ABS:
            addr = value
        elif shndx == SHN_COMMON or shndx >= 0xFF00:
            raise Unsupported(f"symbol {name} in special section {shndx:#x}")
        elif shndx in place:
            addr = base + place[shndx] + value
            if name:
                symbols[name] = addr
        else:
            addr = -1  # in a section that is not loaded: any relocation against it fails
        values.append(addr)

    for sh in shdrs:
        if sh[1] == SHT_REL and sh[7] in place:
            raise Unsupported("REL relocations")
        if sh[1] != SHT_RELA or sh[7] not in place:
            continue
        target = base + place[sh[7]]
        tstart = place[sh[7]]
        for k in range(sh[5] // _RELA.size):
            r_off, r_info, addend = _RELA.unpack_from(obj, sh[4] + k * _RELA.size)
            s = values[r_info >> 32]
            if s < 0:
                raise Unsupported("relocation against a section that is not loaded")
            kind = r_info & 0xFFFFFFFF
            at = tstart + r_off
            p = target + r_off
            if kind == R_X86_64_64:
                struct.pack_into("<Q", mem, at, (s + addend) & 0xFFFFFFFFFFFFFFFF)
            elif kind == R_X86_64_PC64:
                struct.pack_into("<q", mem, at, s + addend - p)
            elif kind in (R_X86_64_PC32, R_X86_64_PLT32):
                v = s + addend - p
                if not -(1 << 31) <= v < (1 << 31):
                    raise Unsupported("PC32 relocation out of range")
                struct.pack_into("<i", mem, at, v)
            else:
                raise Unsupported(f"relocation type {kind}")
    if code_size and _libc().mprotect(base, code_size, PROT_READ | PROT_EXEC) != 0:
        raise Unsupported("mprotect failed")
    return mem, symbols
