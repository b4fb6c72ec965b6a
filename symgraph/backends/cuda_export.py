"""``f.export(path)`` for the cuda backend: ``path.cu``, ``path.h`` and ``path.ptx``.

``path.h`` is the C API of the llvm export (``symgraph.export``; docs/deployment.md), written
by the same code (``symgraph.export_c``): contexts (``<name>_create / _run / _destroy``),
per-context parameters with getters and setters, names and size macros, the metadata table,
``<name>_abi_version()``, the error enum with ``<name>_strerror`` / ``<name>_last_error``.
A program written against the CPU export's header builds against this one.  The cuda
export adds two error codes (``<NAME>_ERR_DEVICE``, ``<NAME>_ERR_CUDA``) and
``<name>_device_missing()``.

``path.cu`` is the rendered module plus the host side of that API on the CUDA runtime: a
context owns one device allocation (parameters, constants, staging buffers for host
arguments, output slots, the scratch arena, the bound-check words) and a stream.
``<name>_run`` takes host or device pointers; it is synchronous, reads the check words
(``<NAME>_ERR_INDEX``) and only then copies the new parameter values into the context.
``path.ptx`` is the device code alone, for loading with the driver API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..codegen.checks import initial_words
from ..codegen.cuda_render import ERROR_PARAM
from ..codegen.cuda_scalar import c_type
from ..export import Tensor, _plan, _tensors_of_shared, check_library_name
from ..export_c import ERRORS, FAIL_C, accessors_c, c_args, common_c, header, metadata_c, nbytes
from . import cuda_compiler

ALIGN = 256  # cudaMalloc's alignment: every buffer of a context starts on one
CUDA_ERRORS = ERRORS + [
    ("ERR_DEVICE", 8, "no CUDA device, or one older than the library's architecture "
                      "(see <name>_device_missing)"),
    ("ERR_CUDA", 9, "a CUDA runtime call failed (see <name>_last_error)"),
]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Layout:
    """Byte offsets of everything in a context's device allocation."""

    params: list[int] = field(default_factory=list)  # library parameter j
    consts: dict[int, int] = field(default_factory=dict)  # storage id
    inputs: list[int] = field(default_factory=list)  # staging for user input i
    slots: list[int] = field(default_factory=list)  # program output slot
    arena: int = 0
    errors: int = 0
    size: int = 0

    def take(self, n: int) -> int:
        at, self.size = self.size, _align(self.size + n)
        return at


def _layout(prog, plan, params: list[Tensor]) -> Layout:
    lay = Layout()
    lay.params = [lay.take(nbytes(t)) for t in params]
    lay.consts = {st.sid: lay.take(st.nbytes) for st in prog.storages if st.kind == "const"}
    lay.inputs = [lay.take(nbytes(t)) for t in plan.inputs]
    lay.slots = [lay.take(st.nbytes) for st in prog.outputs]
    lay.arena = lay.take(prog.arena_size)
    lay.errors = lay.take(8 * len(initial_words(prog.checks)) if prog.checks else 0)
    lay.size = max(lay.size, ALIGN)
    return lay


def _arch_number(arch: str) -> int:
    m = re.fullmatch(r"(?:sm|compute)_(\d+)[a-z]?", arch)
    if m is None:
        raise ValueError(f"export: arch must look like 'sm_80', got {arch!r}")
    return int(m.group(1))


def _blob(sym: str, data: bytes) -> str:
    """``data`` as a host array of 64-bit words (exact for every dtype; little-endian host)."""
    data = data + b"\0" * (-len(data) % 8) if data else b"\0" * 8
    words = np.frombuffer(data, "<u8")
    rows = [", ".join(f"0x{w:x}ULL" for w in words[i:i + 8].tolist()) for i in range(0, len(words), 8)]
    return f"static const unsigned long long {sym}[{len(words)}] = {{\n    " + ",\n    ".join(rows) + "\n};"


# --- the host side --------------------------------------------------------------------------
def _support_c(lib: str, arch: str) -> str:
    """The context, error helpers and device check (everything but the functions' bodies)."""
    L = lib.upper()
    need = _arch_number(arch)
    return f"""struct {lib}_ctx {{
    int32_t status;
    char message[256];
    unsigned char *mem;   /* one cudaMalloc: parameters, constants, staging, slots, arena */
    cudaStream_t stream;
    int device;
}};
{FAIL_C.format(lib=lib)}

/* a failed CUDA call: drain the stream, record the message, map the code */
static int32_t sg_cuda_fail({lib}_ctx *ctx, cudaError_t e, const char *what, const char *call) {{
    (void)cudaStreamSynchronize(ctx->stream);
    (void)cudaGetLastError();
    ctx->status = e == cudaErrorMemoryAllocation ? {L}_ERR_NOMEM : {L}_ERR_CUDA;
    snprintf(ctx->message, sizeof ctx->message, "%s: %s (%s)", what, cudaGetErrorString(e), call);
    return ctx->status;
}}
#define SG_TRY(what, call) do {{ cudaError_t sg_e = (call); \\
    if (sg_e != cudaSuccess) return sg_cuda_fail(ctx, sg_e, what, #call); }} while (0)

/* device (or managed) memory is used in place; anything else is host memory */
static bool sg_on_device(const void *p) {{
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {{ (void)cudaGetLastError(); return false; }}
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}}

/* the context's device must be the current one */
static int32_t sg_ready({lib}_ctx *ctx, const char *what) {{
    int dev = -1;
    if (cudaGetDevice(&dev) != cudaSuccess || dev != ctx->device) {{
        (void)cudaGetLastError();
        snprintf(ctx->message, sizeof ctx->message, "%s: the context lives on CUDA device %d but the "
                 "current device is %d (cudaSetDevice)", what, ctx->device, dev);
        return ctx->status = {L}_ERR_DEVICE;
    }}
    return {L}_OK;
}}

SG_API const char *{lib}_device_missing(void) {{
    int n = 0, dev = 0, major = 0, minor = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0 || cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {{
        (void)cudaGetLastError();
        return "cuda-device";
    }}
    return major * 10 + minor < {need} ? "{arch}" : 0;
}}
SG_API const char *{lib}_cpu_missing(void) {{ return 0; }}  /* host code: baseline CPU */
SG_API void {lib}_set_num_threads(int32_t n) {{ (void)n; }}  /* no CPU threads to set */"""


def _create_c(lib: str, lay: Layout, params: list[Tensor], consts: list) -> str:
    L = lib.upper()
    uploads = [(lay.params[j], f"{lib}__init{j}", nbytes(t)) for j, t in enumerate(params)]
    uploads += [(lay.consts[st.sid], f"{lib}__const{st.sid}", st.nbytes) for st in consts]
    copies = "".join(f'    SG_TRY("{lib}_create", cudaMemcpyAsync(ctx->mem + {off}, {sym}, {n}, '
                     f"cudaMemcpyHostToDevice, ctx->stream));\n" for off, sym, n in uploads if n)
    return f"""static int32_t sg_setup({lib}_ctx *ctx) {{
    SG_TRY("{lib}_create", cudaGetDevice(&ctx->device));
    SG_TRY("{lib}_create", cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
    SG_TRY("{lib}_create", cudaMalloc((void **)&ctx->mem, {lay.size}));
    SG_TRY("{lib}_create", cudaMemsetAsync(ctx->mem, 0, {lay.size}, ctx->stream));
{copies}    SG_TRY("{lib}_create", cudaStreamSynchronize(ctx->stream));
    return {L}_OK;
}}
SG_API int32_t {lib}_create({lib}_ctx **out) {{
    if (out == NULL) return {L}_ERR_NULL;
    *out = NULL;
    if ({lib}_device_missing() != NULL) return {L}_ERR_DEVICE;
    {lib}_ctx *c = ({lib}_ctx *)calloc(1, sizeof *c);
    if (c == NULL) return {L}_ERR_NOMEM;
    int32_t st = sg_setup(c);
    if (st != {L}_OK) {{ {lib}_destroy(c); return st; }}
    *out = c;
    return {L}_OK;
}}
SG_API void {lib}_destroy({lib}_ctx *ctx) {{
    if (ctx == NULL) return;
    if (ctx->stream != NULL) (void)cudaStreamSynchronize(ctx->stream);
    if (ctx->mem != NULL) (void)cudaFree(ctx->mem);
    if (ctx->stream != NULL) (void)cudaStreamDestroy(ctx->stream);
    free(ctx);
}}"""


def _copy_c(lib: str, lay: Layout):
    """The getters'/setters' copy (host or device ``buf``) for ``accessors_c``."""
    def copy(j: int, t: Tensor, get: bool) -> str:
        what = f"{lib}_{'get' if get else 'set'}_{t.name}"
        where = f"c->mem + {lay.params[j]}"
        src, dst = (where, "buf") if get else ("buf", where)
        return (f"{lib}_ctx *c = ({lib}_ctx *)ctx;  /* only its message may change */\n"
                f'    int32_t st = sg_ready(c, "{what}");\n'
                f"    if (st != {lib.upper()}_OK) return st;\n"
                f"    return sg_copy(c, {dst}, {src}, {nbytes(t)}, \"{what}\");")
    return copy


def _copy_helper_c(lib: str) -> str:
    return f"""static int32_t sg_copy({lib}_ctx *ctx, void *dst, const void *src, size_t n,
                      const char *what) {{
    SG_TRY(what, cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, ctx->stream));
    SG_TRY(what, cudaStreamSynchronize(ctx->stream));
    ctx->status = 0; ctx->message[0] = 0;
    return {lib.upper()}_OK;
}}"""


def _run_c(lib: str, plan, mod, lay: Layout) -> str:
    """``<lib>_run``: stage host inputs, launch every kernel, check indices, hand back."""
    L, prog, run = lib.upper(), mod.program, plan.run_name
    body = [f"    if (ctx == NULL) return {L}_ERR_NULL;"]
    for t in plan.inputs + plan.outputs:
        body.append(f'    if ({t.name} == NULL) return sg_fail(ctx, {L}_ERR_NULL, "{run}: {t.role} {t.name} '
                    'is NULL");')
    body += [f'    int32_t st = sg_ready(ctx, "{run}");', f"    if (st != {L}_OK) return st;",
             "    unsigned char *m = ctx->mem;", "    cudaStream_t s = ctx->stream;",
             "    /* device buffers in place; host inputs through the context */"]
    ptr: dict[int, str] = {}
    for i, t in enumerate(plan.inputs):
        body.append(f"    const void *in{i} = sg_on_device({t.name}) ? (const void *){t.name} : "
                    f"m + {lay.inputs[i]};")
        body.append(f'    if (in{i} != {t.name}) SG_TRY("{run}", cudaMemcpyAsync(m + {lay.inputs[i]}, '
                    f"{t.name}, {nbytes(t)}, cudaMemcpyHostToDevice, s));")
        ptr[prog.inputs[i].sid] = f"in{i}"
    for j, p in enumerate(plan.params):
        ptr[prog.inputs[len(plan.inputs) + j].sid] = f"m + {lay.params[p]}"
    owner: dict[int, int] = {}
    for i in range(len(plan.outputs)):
        owner.setdefault(prog.output_map[i], i)
    for slot, st in enumerate(prog.outputs):
        mine = f"m + {lay.slots[slot]}"
        if slot in owner:
            name = plan.outputs[owner[slot]].name
            body.append(f"    void *out{slot} = sg_on_device({name}) ? (void *){name} : {mine};")
        else:
            body.append(f"    void *out{slot} = {mine};")
        ptr[st.sid] = f"out{slot}"
    for sid, off in prog.arena_offsets.items():
        ptr[sid] = f"m + {lay.arena + off}"
    for st in prog.storages:
        if st.kind == "const":
            ptr[st.sid] = f"m + {lay.consts[st.sid]}"
    if prog.checks:
        n = 8 * len(initial_words(prog.checks))
        ptr[ERROR_PARAM] = f"m + {lay.errors}"
        body.append(f'    SG_TRY("{run}", cudaMemcpyAsync(m + {lay.errors}, {lib}__errors_init, {n}, '
                    "cudaMemcpyHostToDevice, s));")
    body.append(_launches(lib, mod, ptr))
    body.append(f'    SG_TRY("{run}", cudaGetLastError());')
    if prog.checks:
        flag = f"m + {lay.errors}"  # word 0: some check failed (codegen/checks.py)
        body += ["    long long failed = 0;",
                 f'    SG_TRY("{run}", cudaMemcpyAsync(&failed, {flag}, 8, cudaMemcpyDeviceToHost, s));',
                 f'    SG_TRY("{run}", cudaStreamSynchronize(s));',
                 f'    if (failed != 0) return sg_fail(ctx, {L}_ERR_INDEX, "{run}: an index or class '
                 'label in the inputs is out of range; no parameter was updated");']
    body.append("    /* outputs to the caller's host buffers, then the new parameter values */")
    for i, t in enumerate(plan.outputs):
        slot = prog.output_map[i]
        body.append(f'    if ((void *){t.name} != out{slot}) SG_TRY("{run}", cudaMemcpyAsync({t.name}, '
                    f"out{slot}, {nbytes(t)}, cudaMemcpyDefault, s));")
    for k, p in enumerate(plan.updates):
        slot = prog.output_map[len(plan.outputs) + k]
        body.append(f'    SG_TRY("{run}", cudaMemcpyAsync(m + {lay.params[p]}, out{slot}, '
                    f"{prog.outputs[slot].nbytes}, cudaMemcpyDeviceToDevice, s));")
    body += [f'    SG_TRY("{run}", cudaStreamSynchronize(s));',
             f"    ctx->status = 0; ctx->message[0] = 0;\n    return {L}_OK;"]
    return (f"SG_API int32_t {run}({', '.join([f'{lib}_ctx *ctx'] + c_args(plan))}) {{\n"
            + "\n".join(body) + "\n}")


def _launches(lib: str, mod, ptr: dict[int, str]) -> str:
    lines = []
    for k in mod.kernels:
        if k.grid[0] == 0:
            continue
        args = ", ".join(f"({c_type(_dtype_of(mod.program, s))} *)({ptr[s]})" for s in k.params)
        g = k.grid
        lines.append(f"    {k.name}<<<dim3({g[0]}, {g[1]}, {g[2]}), {k.block}, 0, s>>>({args});")
    return "\n".join(lines)


def _dtype_of(prog, sid: int) -> str:
    return "int64" if sid == ERROR_PARAM else prog.storages[sid].dtype


def _source(lib: str, mod, plan, params: list[Tensor], values: list, arch: str, header_name: str) -> str:
    """``path.cu``: the device code (kernel names prefixed with ``<lib>__``), then the host API."""
    prog = mod.program
    lay = _layout(prog, plan, params)
    consts = [st for st in prog.storages if st.kind == "const"]
    renames = [f"#define {k.name} {lib}__{k.name}" for k in mod.kernels]
    device = [f"// {lib}.cu: generated by symgraph; do not edit.  Build (docs/deployment.md):",
              f"//   nvcc -shared -Xcompiler -fPIC,-fvisibility=hidden -Xlinker -soname={lib}.so "
              f"-arch={arch} -o {lib}.so {lib}.cu",
              f'#include "{header_name}"', "#include <cuda_runtime.h>", "#include <stdio.h>",
              "#include <stdlib.h>", "#include <string.h>", "",
              "// kernel symbols carry the library's prefix, so that two exports link into one program",
              *renames, "", mod.source, "// ---- host side: the C API of the header (CUDA runtime)",
              '#define SG_API __attribute__((visibility("default")))']
    host = [_blob(f"{lib}__init{j}", np.ascontiguousarray(v, dtype=t.dtype).tobytes())
            for j, (t, v) in enumerate(zip(params, values))]
    host += [_blob(f"{lib}__const{st.sid}", np.ascontiguousarray(st.value, dtype=st.dtype).tobytes())
             for st in consts]
    if prog.checks:
        init = ", ".join(f"{w}LL" if w > -2 ** 63 else "(-0x7fffffffffffffffLL - 1)"
                         for w in initial_words(prog.checks).tolist())
        host.append(f"static const long long {lib}__errors_init[] = {{{init}}};")
    host += [_support_c(lib, arch), _copy_helper_c(lib), *common_c(lib, CUDA_ERRORS),
             _create_c(lib, lay, params, consts), *accessors_c(lib, params, _copy_c(lib, lay)),
             metadata_c(lib, [plan], params), _run_c(lib, plan, mod, lay)]
    return "\n".join(device) + "\n\n" + "\n\n".join(host) + "\n"


def _header(lib: str, plan, params: list[Tensor], arch: str) -> str:
    L = lib.upper()
    n = _arch_number(arch)
    target_text = (f" * Target: CUDA {arch} (compute capability {n // 10}.{n % 10} or newer).\n"
                   f" * {lib}_create() returns {L}_ERR_DEVICE without a CUDA device or on an older one\n"
                   f" * ({lib}_device_missing() says which) instead of failing in a kernel launch.")
    notes = f""" * CUDA: a context holds its parameters, constants and scratch in one device allocation
 * on the device current at {lib}_create() (use it with that device current), and has its
 * own stream.  {lib}_run() takes host or device (or managed) pointers, in any mix: device
 * buffers are used in place, host buffers are copied through the context's device memory;
 * it returns when the outputs are written.  The getters and setters take either kind too.
 * A failed CUDA call returns {L}_ERR_CUDA (or {L}_ERR_NOMEM) with the CUDA message in
 * {lib}_last_error(ctx).  {lib}_cpu_missing() is always NULL and {lib}_set_num_threads()
 * does nothing: they are there so that programs written for the CPU export build unchanged.
 * Build: nvcc -shared -Xcompiler -fPIC,-fvisibility=hidden -Xlinker -soname={lib}.so
 *   -arch={arch} -o {lib}.so {lib}.cu
 * (nvcc links the CUDA runtime statically), then link programs with -l:{lib}.so."""
    extra = ("/* what this machine lacks to run the library: \"cuda-device\" (no usable CUDA device) or\n"
             f" * \"{arch}\" (the current device is older); NULL when it can run it */\n"
             f"const char *{lib}_device_missing(void);")
    return header(lib, [plan], params, target_text=target_text, notes=notes,
                  target_macros=[f'#define {L}_TARGET "{arch}"'], errors=CUDA_ERRORS,
                  run_errors=f"{L}_ERR_NULL, {L}_ERR_INDEX, {L}_ERR_DEVICE, {L}_ERR_CUDA",
                  create_errors=f"{L}_ERR_DEVICE / {L}_ERR_NOMEM / {L}_ERR_CUDA / {L}_ERR_NULL",
                  extra_decls=extra)


def export_module(mod, cf, path: str, arch: str, name: str | None = None) -> dict:
    """Write ``path.cu``, ``path.h`` and ``path.ptx`` for the rendered module ``mod`` of the
    compiled function ``cf``; returns their paths (``source``, ``header``, ``ptx``)."""
    base = Path(path)
    lib = check_library_name(name or base.name, base, name is not None)
    _arch_number(arch)
    shared = list(cf.shared)
    params = _tensors_of_shared(shared)
    plan = _plan(lib, {"": (cf, SimpleNamespace(prog=mod.program))}, shared)[0]
    base.parent.mkdir(parents=True, exist_ok=True)
    files = {"source": str(base) + ".cu", "header": str(base) + ".h", "ptx": str(base) + ".ptx"}
    Path(files["header"]).write_text(_header(lib, plan, params, arch))
    values = [s.get_value() for s in shared]
    Path(files["source"]).write_text(_source(lib, mod, plan, params, values, arch, base.name + ".h"))
    Path(files["ptx"]).write_bytes(cuda_compiler.compile_module(mod.source, arch, "ptx"))
    return files
