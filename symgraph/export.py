"""``f.export(path)``: a compiled function as a native library with a C header.

The kernel-IR program of one specialisation is rendered again, for an ahead-of-time target
(position-independent code, default code model), with a small C-callable wrapper around the
entry point: shared variables and scratch memory become globals of the library, updates are
copied into the shared globals after the outputs are computed, and getters / setters give
access to the shared values.  ``kind="object"`` writes ``path.o``; the default writes
``path.so`` (linked with gcc against NumPy's OpenBLAS, libgomp and libm).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from string import Template

import numpy as np

from .errors import CompileError

C_TYPES = {"float32": "float", "float64": "double", "int64": "int64_t", "int32": "int32_t",
           "int16": "int16_t", "int8": "int8_t", "uint8": "uint8_t", "bool": "bool"}


def _ident(text: str, fallback: str) -> str:
    s = re.sub(r"\W", "_", text or "")
    if not s or s[0].isdigit():
        s = fallback
    return s


def export_program(cf, spec, path, kind: str = "shared", name: str | None = None) -> dict:
    """Write the library and header; returns ``{"library": ..., "header": ...}`` paths."""
    from llvmlite import ir

    from .backends import llvm_jit
    from .codegen.llvm_render import I8, I32, I64, PTR, VOID, ModuleBuilder
    if kind not in ("shared", "object"):
        raise ValueError(f"export: kind must be 'shared' or 'object', got {kind!r}")
    path = Path(path)
    name = _ident(name or path.name, "symgraph_fn")
    prog = spec.prog
    ni_user = len(cf.inputs)
    n_out = cf.n_outputs
    mb = ModuleBuilder(prog, entry_name=f"{name}__entry", gomp=llvm_jit.libraries()["gomp"] is not None,
                       math_functions=llvm_jit.math_module()[1], object_args=False)
    mod = mb.build()
    entry = mod.get_global(f"{name}__entry")
    entry.linkage = "internal"

    def global_bytes(gname: str, nbytes: int, init: bytes | None = None):
        ty = ir.ArrayType(I8, max(nbytes, 1))
        g = ir.GlobalVariable(mod, ty, gname)
        g.initializer = ir.Constant(ty, bytearray(init)) if init else ir.Constant(ty, None)
        g.linkage = "internal"
        g.align = 64
        return g

    memcpy = ir.Function(mod, ir.FunctionType(PTR, [PTR, PTR, I64]), name="memcpy")
    shared_names, shared_globals = [], []
    used = set()
    for j, s in enumerate(cf.shared):
        sname = _ident(s.name or "", f"shared{j}")
        while sname in used:
            sname += "_"
        used.add(sname)
        shared_names.append(sname)
        val = np.ascontiguousarray(s.get_value())
        shared_globals.append(global_bytes(f"{name}__shared_{j}", val.nbytes, val.tobytes()))
    arena = global_bytes(f"{name}__arena", prog.arena_size + 64)

    # output storage slots: the first user output using a slot gets the caller's pointer
    slot_owner: dict[int, int] = {}
    for i in range(n_out):
        slot_owner.setdefault(prog.output_map[i], i)
    slot_buf = {}
    for st in prog.outputs:
        if st.slot not in slot_owner:
            slot_buf[st.slot] = global_bytes(f"{name}__out_{st.slot}", st.nbytes)

    in_storages = prog.inputs
    user_params = [PTR] * (ni_user + n_out)
    fn = ir.Function(mod, ir.FunctionType(I32, user_params), name=name)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    nargs = len(in_storages) + len(prog.outputs) + 1
    argv = b.alloca(PTR, size=ir.Constant(I64, nargs), name="argv")

    def put(i, value):
        b.store(value, b.gep(argv, [ir.Constant(I64, i)], source_etype=PTR))

    for i in range(ni_user):
        put(i, fn.args[i])
    for j, g in enumerate(shared_globals):
        put(ni_user + j, g)
    base = len(in_storages)
    for st in prog.outputs:
        put(base + st.slot, fn.args[ni_user + slot_owner[st.slot]] if st.slot in slot_owner
            else slot_buf[st.slot])
    put(nargs - 1, arena)
    status = b.call(entry, [argv])
    with b.if_then(b.icmp_unsigned("!=", status, ir.Constant(I32, 0)), likely=False):
        b.ret(status)  # an index out of range: no update is applied
    sizes = {st.slot: st.nbytes for st in prog.outputs}
    for i in range(n_out):  # user outputs that share a slot with an earlier one
        slot = prog.output_map[i]
        if slot_owner[slot] != i:
            b.call(memcpy, [fn.args[ni_user + i], fn.args[ni_user + slot_owner[slot]],
                            ir.Constant(I64, sizes[slot])])
    for k, target in enumerate(cf.update_targets):
        slot = prog.output_map[n_out + k]
        j = next(j for j, s in enumerate(cf.shared) if s is target)
        src = fn.args[ni_user + slot_owner[slot]] if slot in slot_owner else slot_buf[slot]
        b.call(memcpy, [shared_globals[j], src, ir.Constant(I64, sizes[slot])])
    b.ret(ir.Constant(I32, 0))

    for j, (sname, g) in enumerate(zip(shared_names, shared_globals)):
        nbytes = int(np.asarray(cf.shared[j].get_value()).nbytes)
        for suffix, to_global in (("get", False), ("set", True)):
            acc = ir.Function(mod, ir.FunctionType(VOID, [PTR]), name=f"{name}_{suffix}_{sname}")
            ab = ir.IRBuilder(acc.append_basic_block("entry"))
            dst, src = (g, acc.args[0]) if to_global else (acc.args[0], g)
            ab.call(memcpy, [dst, src, ir.Constant(I64, nbytes)])
            ab.ret_void()
    th = ir.Function(mod, ir.FunctionType(VOID, [I32]), name=f"{name}_set_num_threads")
    tb = ir.IRBuilder(th.append_basic_block("entry"))
    n = th.args[0]
    tb.store(tb.select(tb.icmp_signed("<", n, ir.Constant(I32, 1)), ir.Constant(I32, 1), n), mb.nthreads)
    tb.ret_void()
    mb.nthreads.linkage = "internal"
    if mb.error_word is not None:
        mb.error_word.linkage = "internal"

    ref = llvm_jit.optimize(str(mod), aot=True)
    obj = llvm_jit.emit_object(ref, aot=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = Path(str(path) + ".h")
    header.write_text(_header(cf, prog, name, shared_names))
    obj_path = Path(str(path) + ".o")
    obj_path.write_bytes(obj)
    result = {"header": str(header), "object": str(obj_path)}
    if kind == "shared":
        so = Path(str(path) + ".so")
        _link(obj_path, so)
        result["library"] = str(so)
    return result


def _link(obj: Path, so: Path) -> None:
    from .backends import llvm_jit
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise CompileError("export: no C compiler (gcc) found to link the shared library; "
                           "use kind='object' and link the .o yourself")
    blas = llvm_jit.openblas_path()
    cmd = [cc, "-shared", "-o", str(so), str(obj)]
    if blas:
        d = os.path.dirname(blas)
        cmd += [blas, f"-Wl,-rpath,{d}"]
    if llvm_jit.libraries()["gomp"]:
        cmd.append("-lgomp")
    cmd.append("-lm")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"export: linking failed: {' '.join(cmd)}\n{proc.stderr}")


def _header(cf, prog, name: str, shared_names: list[str]) -> str:
    from . import __version__
    from .resources import read_kernel
    params, docs, sig = [], [], []
    for i, v in enumerate(cf.inputs):
        st = prog.inputs[i]
        pname = _ident(v.name or "", f"in{i}")
        shape = st.shape
        params.append(f"const {C_TYPES[st.dtype]} *{pname}")
        docs.append(f" *   {pname}: input, {st.dtype}{list(shape)}")
        sig.append(pname)
    for i in range(cf.n_outputs):
        slot = prog.output_map[i]
        st = prog.outputs[slot]
        shape = prog.output_shapes[slot]
        params.append(f"{C_TYPES[st.dtype]} *out{i}")
        docs.append(f" *   out{i}: output, {st.dtype}{list(shape)}")
        sig.append(f"out{i}")
    shared_api = []
    for j, sname in enumerate(shared_names):
        val = cf.shared[j].get_value()
        ct = C_TYPES[val.dtype.name]
        shared_api.append(f"/* shared variable {sname}: {val.dtype.name}{list(val.shape)} "
                          f"({val.size} elements) */\n"
                          f"void {name}_get_{sname}({ct} *dst);\n"
                          f"void {name}_set_{sname}(const {ct} *src);\n")
    return Template(read_kernel("export/header.h.in")).substitute(
        name=name, guard=f"SYMGRAPH_{name.upper()}_H", guard_name=f"{name}.h", version=__version__,
        signature_doc=", ".join(sig), arg_docs="\n".join(docs), params=", ".join(params) or "void",
        shared_api="\n".join(shared_api))

