"""``f.export(path)`` / ``sg.export_library(path, {...})``: compiled functions as a
self-contained native C library (no Python, no NumPy, no BLAS) with a C header.

What is written (see docs/deployment.md):

* one object per function: its kernel-IR program rendered for the chosen target CPU
  (``export_target``) with matrix products as generated loops (``blas=False``) and the
  check words passed in (``error_arg=True``), so nothing in it is global but read-only data
  and the thread count;
* ``<name>_api.c``: the C side (contexts, argument checks, parameter getters/setters,
  metadata, error strings, the cpuid check), compiled with the system C compiler for the
  baseline x86-64 so it runs (and refuses cleanly) on any CPU;
* the parameters' initial values (``.incbin`` in a small assembly file);
* ``<name>.h``, then ``.so`` (default), ``.a`` or one relocatable ``.o``.

The header and the backend-independent C (metadata, error strings, the getters'/setters'
checks) come from ``export_c``, shared with the cuda export (``backends/cuda_export.py``).

A context (``<name>_create``) owns a copy of every parameter, the scratch arena, and the
check words, so contexts on different threads never share writable memory.
"""

from __future__ import annotations

import ctypes
import keyword
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .codegen import symdim
from .errors import CompileError
from .export_c import (
    ERRORS,
    FAIL_C,
    SIZE_HELPERS_C,
    accessors_c,
    c_args,
    c_size,
    common_c,
    metadata_c,
    nbytes,
)
from .export_c import header as c_header

C_TYPES = {"float32": "float", "float64": "double", "int64": "int64_t", "int32": "int32_t",
           "int16": "int16_t", "int8": "int8_t", "uint8": "uint8_t", "bool": "bool"}
C_KEYWORDS = set("""auto break case char const continue default do double else enum extern float for
goto if inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while bool true false ctx main""".split())
ALIGN = 64

@dataclass
class Tensor:
    """One argument or parameter, as the header describes it."""

    name: str
    role: str  # "input" | "output" | "param"
    dtype: str
    shape: tuple
    function: str = ""

    @property
    def size(self):
        """Elements: an int, or a ``SymInt`` of the function's run-time sizes (dynamic export)."""
        if self.dynamic:
            return symdim.prod(self.shape)
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def dynamic(self) -> bool:
        return any(isinstance(d, symdim.SymInt) for d in self.shape)

    @property
    def ctype(self) -> str:
        return C_TYPES[self.dtype]


@dataclass
class FunctionPlan:
    """One exported function: its program and the C names of everything it touches."""

    key: str  # "" for a single export
    cf: object
    prog: object
    run_name: str
    macro: str
    inputs: list[Tensor] = field(default_factory=list)
    outputs: list[Tensor] = field(default_factory=list)
    params: list[int] = field(default_factory=list)  # cf.shared[j] -> library parameter index
    updates: list[int] = field(default_factory=list)  # update k -> library parameter index
    slot_offsets: dict = field(default_factory=dict)  # scratch slot -> offset in the context
    error_offset: int = 0
    dims: list[str] = field(default_factory=list)  # C names of its run-time sizes (dynamic)


# --- names ------------------------------------------------------------------------------------
def c_name(text: str | None, fallback: str) -> str:
    """A graph name as a C identifier (``\\W`` -> ``_``; keywords get a trailing ``_``)."""
    s = re.sub(r"\W", "_", text or "")
    if not s or s[0].isdigit():
        s = fallback if not s else "_" + s
    if s in C_KEYWORDS or keyword.iskeyword(s):
        s += "_"
    return s


def _unique(name: str, used: set) -> str:
    base, k = name, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def _system_symbol(sym: str) -> str | None:
    """The system library that already defines ``sym`` (libc, libm), or None."""
    for lib in ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2"):
        try:
            if hasattr(ctypes.CDLL(lib), sym):
                return lib
        except OSError:
            continue
    return None


def check_library_name(name: str, path: Path, explicit: bool) -> str:
    """``name`` must be a C identifier that no system library defines (``exp``, ``pthread``
    would interpose or collide with libc/libm)."""
    how = "name" if explicit else f"the file name of {str(path)!r}"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name or "") or name in C_KEYWORDS:
        suggestion = c_name(name, "model").lstrip("_") or "model"
        raise ValueError(f"export: {how} gives the C prefix {name!r}, which is not a plain C "
                         f"identifier; pass name=, e.g. name={suggestion!r}")
    for sym in (name, f"{name}_create", f"{name}_run", f"{name}_destroy"):
        lib = _system_symbol(sym)
        if lib:
            raise ValueError(f"export: {how} gives the C prefix {name!r}, but {lib} already defines "
                             f"{sym!r}: the library would collide with it; pass name=, e.g. "
                             f"name={name + '_model'!r}")
    return name


# --- planning ---------------------------------------------------------------------------------
def _tensors_of_shared(shared: list) -> list[Tensor]:
    """The library's parameters: one per shared variable, with unique C names."""
    used: set = set()
    params = [Tensor(_unique(c_name(s.name, f"param{j}"), used), "param",
                     np.asarray(s.get_value()).dtype.name, tuple(np.shape(s.get_value())))
              for j, s in enumerate(shared)]
    for t in params:
        if t.dtype not in C_TYPES:
            raise CompileError(f"export: parameter {t.name!r} has dtype {t.dtype}, which the C API "
                               "does not support")
    return params


def _spec_for(cf, example_inputs, dynamic: bool | None = None):
    """The specialisation to export (validating ``example_inputs`` exactly like a call): code
    for exactly those shapes, or with ``dynamic`` the shape-generic code serving them.
    ``dynamic=None``: shape-generic when no ``example_inputs`` fix the shapes and the code
    is generic in the inputs' unknown dims (only)."""
    program = cf.program
    if example_inputs is not None:
        values = cf._convert(list(example_inputs))
        shapes = [v.shape for v in values] + [np.shape(s.get_value()) for s in cf.shared]
        spec = program.specialize(shapes)
    else:
        spec = program._current()
    if dynamic is None:
        dynamic = (example_inputs is None and bool(spec.dim_values)
                   and all(axis >= 0 and slot < len(cf.inputs) for slot, axis in spec.prog.dims))
    if not dynamic:
        return program.exact(spec)
    if not spec.dim_values:
        raise CompileError("export(dynamic=True): this function's code is not shape-generic (its "
                           "inputs have no dim declared None, or SYMGRAPH_SHAPE_GENERIC=0)")
    dims = spec.prog.dims
    if any(axis < 0 or slot >= len(cf.inputs) for slot, axis in dims):
        raise CompileError("export(dynamic=True): a size depends on an int input's value or on a "
                           "shared variable with unknown dims; only input dims can be run-time "
                           "arguments of an exported function")
    return spec


def _plan(lib: str, functions: dict, shared: list) -> list[FunctionPlan]:
    plans = []
    for key, (cf, spec) in functions.items():
        prog = spec.prog
        run_name = f"{lib}_{key}_run" if key else f"{lib}_run"
        plan = FunctionPlan(key, cf, prog, run_name, (f"{lib}_{key}" if key else lib).upper())
        used: set = {"ctx"}
        for i, v in enumerate(cf.inputs):
            st = prog.inputs[i]
            plan.inputs.append(Tensor(_unique(c_name(v.name, f"in{i}"), used), "input", st.dtype,
                                      tuple(st.shape), key))
        built = getattr(cf.program, "built_outputs", None) or []
        for i in range(cf.n_outputs):
            slot = prog.output_map[i]
            var = built[i] if i < len(built) else None
            name = c_name(getattr(var, "name", None), f"out{i}")
            if name in used:
                name += "_out"
            plan.outputs.append(Tensor(_unique(name, used), "output", prog.outputs[slot].dtype,
                                       tuple(prog.output_shapes[slot]), key))
        plan.dims = [_unique(f"{plan.inputs[slot].name}_dim{axis}", used) for slot, axis in prog.dims]
        plan.params = [next(j for j, s in enumerate(shared) if s is v) for v in cf.shared]
        plan.updates = [next(j for j, s in enumerate(shared) if s is t) for t in cf.update_targets]
        for t in plan.inputs + plan.outputs:
            if t.dtype not in C_TYPES:
                raise CompileError(f"export: {t.role} {t.name!r} has dtype {t.dtype}, which the C "
                                   f"API does not support ({', '.join(C_TYPES)})")
        plans.append(plan)
    return plans


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _layout(plans: list[FunctionPlan], params: list[Tensor]) -> tuple[list[int], int, int]:
    """Offsets of the parameters in a context, the arena's offset, and the context size.
    Each function's scratch (update slots, check words) follows the arena; functions share
    that region (a context runs one function at a time)."""
    offsets, pos = [], 0
    for t in params:
        offsets.append(pos)
        pos = _align(pos + t.size * np.dtype(t.dtype).itemsize)
    arena = pos
    # (a function with run-time sizes keeps its arena, scratch slots and check words in the
    # context's run-time buffer, sized per call: see _run_dynamic_c)
    arena_size = _align(max((p.prog.arena_size for p in plans if not p.dims), default=0) + ALIGN)
    end = arena + arena_size
    for p in plans:
        if p.dims:
            continue
        q = end
        owned = {p.prog.output_map[i] for i in range(len(p.outputs))}
        for st in p.prog.outputs:
            if st.slot not in owned:
                p.slot_offsets[st.slot] = q
                q = _align(q + st.nbytes)
        p.error_offset = q
        q = _align(q + 8 * (1 + 4 * len(p.prog.checks)))
        pos = max(pos, q)
    return offsets, arena, max(pos, end)


# --- the generated code -----------------------------------------------------------------------
def _hidden(lib: str, key: str, what: str) -> str:
    """A library-internal symbol of function ``key`` (hidden visibility: not exported)."""
    return f"{lib}__{key}_{what}" if key else f"{lib}__{what}"


def _kernel_object(plan: FunctionPlan, lib: str, target, threads: int, tm) -> bytes:
    """The function's kernels for ``target``, with two hidden symbols:
    ``<lib>__<key>entry(void **args)`` and ``<lib>__<key>set_threads(int32_t)``."""
    from llvmlite import ir

    from .backends import llvm_jit
    from .codegen.llvm_render import I32, VOID, ModuleBuilder
    entry, setter = _hidden(lib, plan.key, "entry"), _hidden(lib, plan.key, "set_threads")
    mb = ModuleBuilder(plan.prog, entry_name=entry, gomp=threads > 1,
                       math_functions=llvm_jit.math_module()[1], object_args=False,
                       blas=False, error_arg=True)
    mod = mb.build()
    mb.nthreads.initializer = ir.Constant(I32, threads)
    th = ir.Function(mod, ir.FunctionType(VOID, [I32]), name=setter)
    tb = ir.IRBuilder(th.append_basic_block("entry"))
    n = th.args[0]
    tb.store(tb.select(tb.icmp_signed("<", n, ir.Constant(I32, 1)), ir.Constant(I32, 1), n), mb.nthreads)
    tb.ret_void()
    ref = llvm_jit.optimize(str(mod), tm=tm)
    for sym in list(ref.functions) + list(ref.global_variables):
        if sym.is_declaration:
            continue
        if sym.name in (entry, setter):
            sym.visibility = "hidden"
        else:
            sym.linkage = "internal"
    return llvm_jit.emit_object(ref, tm=tm)


def _params_asm(lib: str, params: list[Tensor], values: list[np.ndarray], tmp: Path) -> str:
    """Assembly that embeds the parameters' initial values (``.incbin``: fast for big ones)."""
    lines = ['.section .note.GNU-stack,"",@progbits', ".section .rodata"]
    for j, (t, v) in enumerate(zip(params, values)):
        blob = tmp / f"param{j}.bin"
        blob.write_bytes(np.ascontiguousarray(v, dtype=t.dtype).tobytes() or b"\0")
        sym = f"{lib}__init{j}"
        lines += [".balign 64", f".globl {sym}", f".hidden {sym}", f"{sym}:",
                  f'.incbin "{blob}"']
    return "\n".join(lines) + "\n"


def _cpu_check_c(lib: str, target) -> str:
    """``<lib>_cpu_missing()``: the first needed CPU feature this machine lacks, or NULL."""
    from .export_target import CPUID_BITS
    if not target.x86 or not target.required:
        return (f"SG_API const char *{lib}_cpu_missing(void) {{ return 0; }}\n")
    regs = {"eax": 0, "ebx": 1, "ecx": 2, "edx": 3}
    rows = ",\n".join(f'        {{"{f}", 0x{CPUID_BITS[f][0]:x}u, {CPUID_BITS[f][1]}u, '
                      f'{regs[CPUID_BITS[f][2]]}, {CPUID_BITS[f][3]}}}' for f in target.required)
    need_avx = any(f.startswith("avx") or f in ("fma", "f16c") for f in target.required)
    need_512 = any(f.startswith("avx512") for f in target.required)
    os_mask = "0xe6u" if need_512 else "0x6u" if need_avx else "0u"
    return f"""#include <cpuid.h>
SG_API const char *{lib}_cpu_missing(void) {{
    static const struct {{ const char *name; unsigned leaf, sub; int reg; unsigned bit; }} need[] = {{
{rows}
    }};
    unsigned r[4];
    for (unsigned i = 0; i < sizeof need / sizeof need[0]; i++) {{
        if (!__get_cpuid_count(need[i].leaf, need[i].sub, &r[0], &r[1], &r[2], &r[3]) ||
            !((r[need[i].reg] >> need[i].bit) & 1u))
            return need[i].name;
    }}
    if ({os_mask} != 0u) {{  /* the OS must save the vector registers (OSXSAVE, XCR0) */
        unsigned lo, hi;
        if (!__get_cpuid(1, &r[0], &r[1], &r[2], &r[3]) || !((r[2] >> 27) & 1u))
            return "osxsave";
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        (void)hi;
        if ((lo & {os_mask}) != {os_mask}) return "os-avx-state";
    }}
    return 0;
}}
"""


def _run_c(lib: str, plan: FunctionPlan, param_offsets: list[int], arena: int) -> str:
    prog = plan.prog
    ni = len(prog.inputs)
    nargs = ni + len(prog.outputs) + 2
    body = ["    if (ctx == NULL) return " + f"{lib.upper()}_ERR_NULL;"]
    for t in plan.inputs + plan.outputs:
        body.append(f'    if ({t.name} == NULL) return sg_fail(ctx, {lib.upper()}_ERR_NULL, '
                    f'"{plan.run_name}: {t.role} {t.name} is NULL");')
    body.append(f"    void *argv[{nargs}];")
    for i, t in enumerate(plan.inputs):
        body.append(f"    argv[{i}] = (void *){t.name};")
    for j, p in enumerate(plan.params):
        body.append(f"    argv[{len(plan.inputs) + j}] = ctx->mem + {param_offsets[p]};")
    owner: dict[int, int] = {}
    for i in range(len(plan.outputs)):
        owner.setdefault(prog.output_map[i], i)
    for st in prog.outputs:
        where = (plan.outputs[owner[st.slot]].name if st.slot in owner
                 else f"ctx->mem + {plan.slot_offsets[st.slot]}")
        body.append(f"    argv[{ni + st.slot}] = (void *){where};")
    body.append(f"    argv[{nargs - 2}] = ctx->mem + {arena};")
    body.append(f"    argv[{nargs - 1}] = ctx->mem + {plan.error_offset};")
    sizes = {st.slot: str(st.nbytes) for st in prog.outputs}
    slots = {slot: f"ctx->mem + {off}" for slot, off in plan.slot_offsets.items()}
    return _run_function(lib, plan, body, owner, slots, sizes, param_offsets)


def _run_function(lib: str, plan: FunctionPlan, body: list[str], owner: dict, slots: dict,
                  sizes: dict, param_offsets: list[int]) -> str:
    """The run function's text: ``body`` (checks, ``argv``), then the entry call, its status,
    the copies of repeated outputs and of updates (from their output or scratch ``slots``),
    and success.  ``sizes``: bytes per output slot, as C expressions."""
    prog, L = plan.prog, lib.upper()
    body = list(body)
    body.append(f"    int32_t status = {_hidden(lib, plan.key, 'entry')}(argv);")
    body.append(f'    if (status == 2) return sg_fail(ctx, {L}_ERR_INDEX, "{plan.run_name}: '
                'an index or class label in the inputs is out of range; no parameter was updated");')
    body.append(f'    if (status != 0) return sg_fail(ctx, {L}_ERR_INTERNAL, "{plan.run_name}: '
                'internal error");')
    for i, t in enumerate(plan.outputs):
        slot = prog.output_map[i]
        if owner[slot] != i:
            body.append(f"    memcpy({t.name}, {plan.outputs[owner[slot]].name}, (size_t){sizes[slot]});")
    for k, p in enumerate(plan.updates):
        slot = prog.output_map[len(plan.outputs) + k]
        src = plan.outputs[owner[slot]].name if slot in owner else slots[slot]
        body.append(f"    memcpy(ctx->mem + {param_offsets[p]}, {src}, (size_t){sizes[slot]});")
    body.append(f"    ctx->status = 0; ctx->message[0] = 0;\n    return {L}_OK;")
    hidden = '__attribute__((visibility("hidden")))'
    return (f"int32_t {_hidden(lib, plan.key, 'entry')}(void **args) {hidden};\n"
            f"void {_hidden(lib, plan.key, 'set_threads')}(int32_t n) {hidden};\n"
            f"SG_API int32_t {plan.run_name}({', '.join([f'{lib}_ctx *ctx'] + c_args(plan))}) {{\n"
            + "\n".join(body) + "\n}\n")


def _api_c(lib: str, plans, params: list[Tensor], param_offsets, arena: int, size: int, target,
           header: str) -> str:
    L = lib.upper()
    # dyn: the run-time buffer of functions with run-time sizes (arena, scratch, check words)
    out = [f'#include "{header}"', "#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>",
           '#define SG_API __attribute__((visibility("default")))',
           f"struct {lib}_ctx {{ unsigned char *mem; int32_t status; char message[256]; "
           "unsigned char *dyn; size_t dyn_cap; };",
           FAIL_C.format(lib=lib)]
    if any(p.dims for p in plans):
        out += [SIZE_HELPERS_C, _RESERVE_C.format(lib=lib, align=ALIGN)]
    for j in range(len(params)):
        out.append(f'extern const unsigned char {lib}__init{j}[] __attribute__((visibility("hidden")));')
    out.append(_cpu_check_c(lib, target))
    out += common_c(lib, ERRORS)
    init = "\n".join(f"    memcpy(c->mem + {param_offsets[j]}, {lib}__init{j}, {nbytes(t)});"
                     for j, t in enumerate(params))
    out.append(f"""SG_API int32_t {lib}_create({lib}_ctx **out) {{
    if (out == NULL) return {L}_ERR_NULL;
    *out = NULL;
    if ({lib}_cpu_missing() != NULL) return {L}_ERR_CPU;
    {lib}_ctx *c = ({lib}_ctx *)calloc(1, sizeof *c);
    if (c == NULL) return {L}_ERR_NOMEM;
    c->mem = (unsigned char *)aligned_alloc({ALIGN}, {max(size, ALIGN)});
    if (c->mem == NULL) {{ free(c); return {L}_ERR_NOMEM; }}
    memset(c->mem, 0, {max(size, ALIGN)});
{init}
    *out = c;
    return {L}_OK;
}}
SG_API void {lib}_destroy({lib}_ctx *ctx) {{
    if (ctx == NULL) return;
    free(ctx->mem);
    free(ctx->dyn);
    free(ctx);
}}""")
    setters = "\n".join(f"    {_hidden(lib, p.key, 'set_threads')}(n);" for p in plans)
    out.append(f"SG_API void {lib}_set_num_threads(int32_t n) {{\n{setters}\n}}")

    def copy(j: int, t: Tensor, get: bool) -> str:
        where, n = f"ctx->mem + {param_offsets[j]}", nbytes(t)
        copied = f"memcpy(buf, {where}, {n});" if get else f"memcpy({where}, buf, {n});"
        return f"{copied}\n    return {L}_OK;"
    out += accessors_c(lib, params, copy)
    out.append(metadata_c(lib, plans, params))
    for p in plans:
        run = _run_dynamic_c(lib, p, param_offsets) if p.dims else _run_c(lib, p, param_offsets, arena)
        out.append(run)
    return "\n\n".join(out) + "\n"


_RESERVE_C = """static int sg_reserve({lib}_ctx *ctx, int64_t need) {{
    if (need <= (int64_t)ctx->dyn_cap) return 0;
    size_t bytes = ((size_t)need + {align} - 1) / {align} * {align};
    unsigned char *p = (unsigned char *)aligned_alloc({align}, bytes);
    if (p == NULL) return 1;
    free(ctx->dyn);
    ctx->dyn = p;
    ctx->dyn_cap = bytes;
    return 0;
}}"""


def _run_dynamic_c(lib: str, plan: FunctionPlan, param_offsets: list[int]) -> str:
    """``<lib>_run`` of a function with run-time sizes: checks the sizes (non-negative, and the
    guards the shape-generic code was generated under), sizes the context's run-time buffer
    (arena with the sizes at its head, scratch slots, check words), runs, copies."""
    prog, L = plan.prog, lib.upper()
    names = plan.dims
    ni = len(prog.inputs)
    nargs = ni + len(prog.outputs) + 2
    body = [f"    if (ctx == NULL) return {L}_ERR_NULL;"]
    for t in plan.inputs + plan.outputs:
        body.append(f'    if ({t.name} == NULL) return sg_fail(ctx, {L}_ERR_NULL, '
                    f'"{plan.run_name}: {t.role} {t.name} is NULL");')
    for d in names:
        body.append(f'    if ({d} < 0) return sg_fail(ctx, {L}_ERR_SIZE, '
                    f'"{plan.run_name}: {d} is negative");')
    ops = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
    for diff, op in prog.guards:
        cond = f"{c_size(diff, names)} {ops[op]} 0"
        body.append(f'    if (!({cond})) return sg_fail(ctx, {L}_ERR_SIZE, "{plan.run_name}: the code '
                    f'serves sizes with {cond}, which these do not satisfy");')
    owner: dict[int, int] = {}
    for i in range(len(plan.outputs)):
        owner.setdefault(prog.output_map[i], i)
    # the run-time buffer: arena, then the scratch output slots, then the check words
    def aligned(nbytes) -> str:
        return f"sg_floordiv({c_size(nbytes, names)} + {ALIGN - 1}, {ALIGN}) * {ALIGN}"
    body.append(f"    int64_t at = {aligned(prog.arena_size)};")
    slot_at = {}
    for st in prog.outputs:
        if st.slot not in owner:
            slot_at[st.slot] = f"off{st.slot}"
            body.append(f"    int64_t off{st.slot} = at;")
            body.append(f"    at += {aligned(st.nbytes)};")
    body.append("    int64_t errors_at = at;")
    body.append(f"    if (sg_reserve(ctx, at + {8 * (1 + 4 * len(prog.checks)) + ALIGN})) "
                f'return sg_fail(ctx, {L}_ERR_NOMEM, "{plan.run_name}: out of memory");')
    for k, d in enumerate(names):
        body.append(f"    ((int64_t *)ctx->dyn)[{k}] = {d};")
    body.append(f"    void *argv[{nargs}];")
    for i, t in enumerate(plan.inputs):
        body.append(f"    argv[{i}] = (void *){t.name};")
    for j, p in enumerate(plan.params):
        body.append(f"    argv[{len(plan.inputs) + j}] = ctx->mem + {param_offsets[p]};")
    for st in prog.outputs:
        where = plan.outputs[owner[st.slot]].name if st.slot in owner else f"ctx->dyn + {slot_at[st.slot]}"
        body.append(f"    argv[{ni + st.slot}] = (void *){where};")
    body.append(f"    argv[{nargs - 2}] = ctx->dyn;")
    body.append(f"    argv[{nargs - 1}] = ctx->dyn + errors_at;")
    sizes = {st.slot: c_size(st.nbytes, names) for st in prog.outputs}
    slots = {slot: f"ctx->dyn + {at}" for slot, at in slot_at.items()}
    return _run_function(lib, plan, body, owner, slots, sizes, param_offsets)


def _header(lib: str, plans, params: list[Tensor], target, threads: int) -> str:
    L = lib.upper()
    feats = ",".join(target.required)
    extra = f", features {target.features}" if target.features else ""
    target_text = (f" * Target: {target.name} (triple {target.triple}, cpu {target.cpu}{extra}).\n"
                   f" * {lib}_create() checks that the CPU has: {feats or '(nothing beyond the baseline)'};\n"
                   f" * on a CPU without them it returns {L}_ERR_CPU instead of crashing.")
    gomp = "; the library needs libgomp" if threads > 1 else "; built without OpenMP, so it has no effect"
    plus, lgomp = (", plus libgomp", " -lgomp") if threads > 1 else ("", "")
    notes = (f" * Threads inside one call: {threads} ({lib}_set_num_threads() changes it for the whole\n"
             f" * library{gomp}).\n"
             f" * Link: -l:{lib}.so (depends on libc and libm only{plus}), or\n"
             f" * {lib}.a with -lm{lgomp}.")
    macros = [f'#define {L}_TARGET "{target.name}"', f'#define {L}_TARGET_CPU "{target.cpu}"',
              f'#define {L}_TARGET_FEATURES "{feats}"']
    return c_header(lib, plans, params, target_text=target_text, notes=notes, target_macros=macros,
                    errors=ERRORS, run_errors=f"{L}_ERR_NULL, {L}_ERR_INDEX",
                    create_errors=f"{L}_ERR_CPU / {L}_ERR_NOMEM / {L}_ERR_NULL")


# --- building ---------------------------------------------------------------------------------
def _cc() -> str:
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise CompileError("export: no C compiler (gcc or cc) found: export compiles a small C file "
                           "(the context and argument checks) and links the library with it")
    return cc


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"export: {what} failed: {' '.join(cmd)}\n{proc.stderr}")


def _build(path: Path, lib: str, kind: str, api_c: str, asm: str, objects: list[bytes], target,
           threads: int, tmp: Path) -> dict:
    cc = _cc()
    (tmp / f"{lib}_api.c").write_text(api_c)
    (tmp / "params.s").write_text(asm)
    for i, obj in enumerate(objects):
        (tmp / f"kernels{i}.o").write_bytes(obj)
    arch = ["-march=x86-64", "-mtune=generic"] if target.x86 else []
    _run([cc, "-std=c11", "-O2", "-fPIC", "-fvisibility=hidden", *arch, f"-I{path.parent}", "-c",
          "-o", str(tmp / "api.o"), str(tmp / f"{lib}_api.c")], "compiling the C API")
    _run([cc, "-c", "-o", str(tmp / "params.o"), str(tmp / "params.s")], "assembling the parameters")
    objs = [str(tmp / "api.o"), str(tmp / "params.o")]
    objs += [str(tmp / f"kernels{i}.o") for i in range(len(objects))]
    libs = (["-lgomp"] if threads > 1 else []) + ["-Wl,--as-needed", "-lm"]
    if kind == "shared":
        out = Path(str(path) + ".so")
        _run([cc, "-shared", "-o", str(out), *objs, f"-Wl,-soname,{out.name}", "-Wl,--no-undefined",
              "-Wl,-z,noexecstack", *libs], "linking the shared library")
        return {"library": str(out)}
    if kind == "static":
        out = Path(str(path) + ".a")
        out.unlink(missing_ok=True)
        ar = shutil.which("ar") or shutil.which("gcc-ar")
        if ar is None:
            raise CompileError("export: kind='static' needs 'ar' (binutils)")
        _run([ar, "rcs", str(out), *objs], "archiving the static library")
        return {"library": str(out)}
    out = Path(str(path) + ".o")
    _run([cc, "-r", "-o", str(out), *objs], "combining the objects")
    return {"object": str(out)}


def export_functions(path, functions: dict, kind: str = "shared", name: str | None = None,
                     target="x86-64-v3", threads: int = 1) -> dict:
    """Export ``{key: (compiled function, specialisation)}`` as one library (``key`` "" for
    ``f.export``); returns the paths written (``header``, ``library`` or ``object``)."""
    from . import export_target
    from .backends import llvm_jit
    if kind not in ("shared", "static", "object"):
        raise ValueError(f"export: kind must be 'shared', 'static' or 'object', got {kind!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"export: threads must be an int >= 1, got {threads!r}")
    if threads > 1 and llvm_jit.libraries()["gomp"] is None:
        raise CompileError("export: threads > 1 needs libgomp, which is not installed")
    path = Path(path)
    lib = check_library_name(name or path.name, path, name is not None)
    tgt = export_target.resolve(target)
    for key in functions:
        if key and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise ValueError(f"export_library: function key {key!r} is not a C identifier")
    shared: list = []
    for cf, _spec in functions.values():
        for s in cf.shared:
            if not any(s is t for t in shared):
                shared.append(s)
    params = _tensors_of_shared(shared)
    plans = _plan(lib, functions, shared)
    param_offsets, arena, size = _layout(plans, params)
    tm = llvm_jit.export_target_machine(tgt.triple, tgt.cpu, tgt.features)
    objects = [_kernel_object(p, lib, tgt, threads, tm) for p in plans]
    path.parent.mkdir(parents=True, exist_ok=True)
    header = Path(str(path) + ".h")
    header.write_text(_header(lib, plans, params, tgt, threads))
    with tempfile.TemporaryDirectory(prefix="sg-export-") as tmp:
        tmpd = Path(tmp)
        asm = _params_asm(lib, params, [s.get_value() for s in shared], tmpd)
        api = _api_c(lib, plans, params, param_offsets, arena, size, tgt, header.name)
        result = _build(path, lib, kind, api, asm, objects, tgt, threads, tmpd)
    result["header"] = str(header)
    return result


def refuse_collectives(cf) -> None:
    """Raise ``CompileError`` when ``cf`` reduces over MPI ranks (an exported library has no MPI)."""
    from .distributed.ops import AllReduce
    if any(isinstance(n.op, AllReduce) for n in cf.fgraph.toposort()):
        raise CompileError("export: a step with an all-reduce (sg.distributed) cannot be exported: "
                           "the library would have no MPI to call")


def export_function(cf, path, kind: str = "shared", example_inputs=None, name: str | None = None,
                    target="x86-64-v3", threads: int = 1, dynamic: bool | None = None) -> dict:
    """``f.export``: one function as ``<name>_create / _run / _destroy``.  With ``dynamic``
    (the default when no ``example_inputs`` fix the shapes and the code is shape-generic) its
    dims declared unknown are run-time arguments of ``<name>_run``: one library for every
    batch size."""
    refuse_collectives(cf)
    return export_functions(path, {"": (cf, _spec_for(cf, example_inputs, dynamic))}, kind=kind,
                            name=name, target=target, threads=threads)


def export_library(path, functions: dict, kind: str = "shared", name: str | None = None,
                   target="x86-64-v3", threads: int = 1, example_inputs: dict | None = None,
                   dynamic: bool | None = None) -> dict:
    """Several compiled functions (``{"train": f, "predict": g}``) in one library, sharing
    their shared variables through one context: ``<name>_train_run(ctx, ...)``,
    ``<name>_predict_run(ctx, ...)``.  ``example_inputs`` maps keys to example arguments for
    functions whose shapes are not static."""
    if not functions:
        raise ValueError("export_library: no functions given")
    example_inputs = example_inputs or {}
    specs = {}
    for key, cf in functions.items():
        if getattr(cf, "backend", None) != "llvm":
            raise CompileError(f"export_library: function {key!r} uses the "
                               f"{getattr(cf, 'backend', '?')} backend; only llvm functions export")
        refuse_collectives(cf)
        specs[key] = (cf, _spec_for(cf, example_inputs.get(key), dynamic))
    return export_functions(path, specs, kind=kind, name=name, target=target, threads=threads)
