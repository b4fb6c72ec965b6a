"""``f.export(path)`` for the cuda backend: ``path.cu``, ``path.ptx`` and ``path.h``.

``path.cu`` is the rendered module plus a host launcher written against the CUDA runtime
API; ``path.h`` declares it::

    int <name>_init(void);                 // uploads the constants, allocates the scratch arena
    int <name>_run(<inputs>, <outputs>, cudaStream_t stream);   // device pointers
    void <name>_free(void);

Inputs are the declared inputs followed by the shared variables (their current values are
the caller's to keep on the device); outputs are the function's outputs followed by the new
values of the updated shared variables.  ``path.ptx`` is the device code alone, for loading
with the driver API.  The functions are specialised on the shapes written in the header.

Conventions shared with the llvm export (``symgraph.export``): the prefix is checked the same
way (a C identifier no system library uses), the header has ``<NAME>_ABI_VERSION`` /
``<name>_abi_version()``, size macros ``<NAME>_<ARG>_SIZE``, and an error enum:
``<NAME>_ERR_NULL`` (-1) for a NULL pointer, otherwise the CUDA runtime's ``cudaError_t``
(``<name>_strerror`` describes both).  Contexts and metadata are not implemented here yet.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ..codegen.checks import initial_words
from ..codegen.cuda_render import ERROR_PARAM
from ..codegen.cuda_scalar import c_type, literal
from ..graph.basic import SharedVariable
from . import cuda_compiler


def _ident(text: str) -> str:
    s = re.sub(r"\W", "_", text)
    return s if s and not s[0].isdigit() else f"_{s}"


def _host_literal(v, dtype: str) -> str:
    if dtype.startswith("float") and not math.isfinite(v):
        return "NAN" if math.isnan(v) else ("-INFINITY" if v < 0 else "INFINITY")
    return literal(v, dtype)


def export_module(mod, path: str, arch: str, roots, fgraph, n_user: int | None = None,
                  name: str | None = None) -> list[str]:
    """Write the three files for the rendered module ``mod``; returns their paths."""
    from ..export import ABI_VERSION, check_library_name
    base = Path(path)
    name = check_library_name(name or base.name, base, name is not None)
    upper = name.upper()
    macros: list[str] = []
    prog = mod.program
    n_user = len(fgraph.outputs) if n_user is None else n_user
    in_params, out_params, doc = [], [], []
    for i, st in enumerate(prog.inputs):
        var = roots[i]
        pname = _ident(var.name or f"in{i}")
        in_params.append((st.sid, f"const {c_type(st.dtype)} *{pname}_{i}"))
        macros.append(f"#define {upper}_{pname.upper()}_{i}_SIZE {st.size}")
        kind = " (shared variable)" if isinstance(var, SharedVariable) else ""
        doc.append(f" *   {pname}_{i}: {st.dtype}, {st.size} elements{kind}")
    for slot, st in enumerate(prog.outputs):
        users = [i for i, s in enumerate(prog.output_map) if s == slot]
        what = "output" if users and users[0] < n_user else "new value of a shared variable"
        shape = prog.output_shapes[slot]
        out_params.append((st.sid, f"{c_type(st.dtype)} *out{slot}"))
        macros.append(f"#define {upper}_OUT{slot}_SIZE {st.size}")
        doc.append(f" *   out{slot}: {st.dtype}{list(shape)} ({what} {users})")
    host = [
        "", "// ---- host launcher (CUDA runtime API)", "#include <cuda_runtime.h>", "#include <cmath>", "",
        f"enum {{ {upper}_OK = 0, {upper}_ERR_NULL = -1 }};",
        f"static char *{name}_arena = 0;",
    ]
    consts = [st for st in prog.storages if st.kind == "const"]
    for st in consts:
        vals = np.asarray(st.value, dtype=st.dtype).reshape(-1)
        body = ", ".join(_host_literal(v, st.dtype) for v in vals.tolist()) or literal(0, st.dtype)
        host.append(f"static const {c_type(st.dtype)} {name}_const{st.sid}_host[] = {{{body}}};")
        host.append(f"static {c_type(st.dtype)} *{name}_const{st.sid} = 0;")
    words = initial_words(prog.checks)  # bound-check error words (codegen/checks.py)
    nerr = len(words)
    if prog.checks:
        init = ", ".join(f"{w}LL" if w > -2 ** 63 else "(-0x7fffffffffffffffLL - 1)" for w in words.tolist())
        host += [f"static const long long {name}_errors_init[] = {{{init}}};",
                 f"static long long *{name}_errors = 0;"]
    host += ["", f'extern "C" int {name}_init(void)', "{", "    cudaError_t e = cudaSuccess;"]
    if prog.checks:
        host.append(f"    if ((e = cudaMalloc((void **)&{name}_errors, {8 * nerr})) != cudaSuccess) "
                    "return (int)e;")
    if prog.arena_size:
        host.append(f"    if ((e = cudaMalloc((void **)&{name}_arena, {prog.arena_size + 256})) "
                    "!= cudaSuccess) return (int)e;")
    for st in consts:
        nbytes = st.size * np.dtype(st.dtype).itemsize
        host.append(f"    if ((e = cudaMalloc((void **)&{name}_const{st.sid}, {nbytes})) != cudaSuccess) "
                    "return (int)e;")
        host.append(f"    if ((e = cudaMemcpy({name}_const{st.sid}, {name}_const{st.sid}_host, {nbytes}, "
                    "cudaMemcpyHostToDevice)) != cudaSuccess) return (int)e;")
    host += ["    return 0;", "}", ""]
    sig = ", ".join([p for _, p in in_params] + [p for _, p in out_params] + ["cudaStream_t stream"])
    host += [f'extern "C" int {name}_abi_version(void) {{ return {ABI_VERSION}; }}',
             f'extern "C" const char *{name}_strerror(int code)', "{",
             f'    if (code == {upper}_ERR_NULL) return "a NULL pointer was passed";',
             "    return cudaGetErrorString((cudaError_t)code);", "}", ""]
    host += [f'extern "C" int {name}_run({sig})', "{"]
    for p in [p for _, p in in_params] + [p for _, p in out_params]:
        host.append(f"    if ({p.split('*')[-1]} == 0) return {upper}_ERR_NULL;")
    ptr = {}
    for (sid, p), st in zip(in_params, prog.inputs):
        ptr[sid] = f"({c_type(st.dtype)} *){p.split('*')[-1]}"
    for sid, p in out_params:
        ptr[sid] = p.split("*")[-1]
    for sid, off in prog.arena_offsets.items():
        st = prog.storages[sid]
        ptr[sid] = f"({c_type(st.dtype)} *)({name}_arena + {off})"
    for st in consts:
        ptr[st.sid] = f"{name}_const{st.sid}"
    if prog.checks:  # out-of-range indices are clamped and recorded in the (unread) words
        ptr[ERROR_PARAM] = f"{name}_errors"
        host.append(f"    cudaMemcpyAsync({name}_errors, {name}_errors_init, {8 * nerr}, "
                    "cudaMemcpyHostToDevice, stream);")
    for k in mod.kernels:
        if k.grid[0] == 0:
            continue
        args = ", ".join(ptr[s] for s in k.params)
        g = k.grid
        host.append(f"    {k.name}<<<dim3({g[0]}, {g[1]}, {g[2]}), {k.block}, 0, stream>>>({args});")
    host += ["    return (int)cudaGetLastError();", "}", "",
             f'extern "C" void {name}_free(void)', "{",
             f"    cudaFree({name}_arena);", f"    {name}_arena = 0;"]
    if prog.checks:
        host += [f"    cudaFree({name}_errors);", f"    {name}_errors = 0;"]
    for st in consts:
        host += [f"    cudaFree({name}_const{st.sid});", f"    {name}_const{st.sid} = 0;"]
    host += ["}", ""]
    cu = mod.source + "\n" + "\n".join(host)
    header = [
        f"/* {name}.h: a symgraph function compiled to CUDA (generated; do not edit).",
        " *",
        f" * int {name}_init(void);   upload constants, allocate the scratch arena; 0 on success",
        f" * int {name}_run(...);     launch every kernel on `stream` (asynchronous); 0 on success",
        f" * void {name}_free(void);",
        " *",
        " * All pointers are device pointers to C-contiguous arrays of exactly these shapes:",
        *doc,
        " * Inputs are the declared inputs, then the shared variables' current values; outputs are",
        " * the function's outputs, then the new values of the updated shared variables (swap them in",
        " * after the stream has finished).",
        " * Shapes are fixed (no dynamic batch size).  Every int-returning function returns",
        f" * {upper}_OK (0), {upper}_ERR_NULL (-1) or a cudaError_t; {name}_strerror() describes it.",
        " */",
        f"#ifndef SYMGRAPH_{upper}_H",
        f"#define SYMGRAPH_{upper}_H",
        "#include <cuda_runtime.h>",
        f"#define {upper}_ABI_VERSION {ABI_VERSION}",
        *macros,
        f"enum {{ {upper}_OK = 0, {upper}_ERR_NULL = -1 }};",
        '#ifdef __cplusplus\nextern "C" {\n#endif',
        f"int {name}_abi_version(void);",
        f"const char *{name}_strerror(int code);",
        f"int {name}_init(void);",
        f"int {name}_run({sig});",
        f"void {name}_free(void);",
        '#ifdef __cplusplus\n}\n#endif',
        "#endif", "",
    ]
    files = [str(base) + ".cu", str(base) + ".ptx", str(base) + ".h"]
    Path(files[0]).write_text(cu)
    Path(files[1]).write_bytes(cuda_compiler.compile_module(mod.source, arch, "ptx"))
    Path(files[2]).write_text("\n".join(header))
    return files
