"""The C API text that every exported library shares, whatever computes it (the llvm export
in ``symgraph.export``, the cuda export in ``symgraph.backends.cuda_export``).

Both write the same header layout (size macros, error enum, context functions, metadata
struct, parameter getters/setters) and the same C for the backend-independent functions
(``<name>_abi_version``, ``_target``, ``_strerror``, ``_last_error``, the metadata table and
the getters'/setters' checks); each backend supplies its target description, its extra
error codes and how it copies a parameter.  A program written against one header builds
against the other.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .codegen.symdim import SymInt

ABI_VERSION = 1
ERRORS = [  # (enum suffix, value, message); a backend may add codes after these
    ("OK", 0, "success"),
    ("ERR_NULL", 1, "a NULL pointer was passed"),
    ("ERR_INDEX", 2, "an index or class label read from the inputs was out of range; the outputs "
                     "are unspecified and no parameter was updated"),
    ("ERR_SIZE", 3, "a buffer has the wrong number of elements"),
    ("ERR_CPU", 4, "this CPU lacks features the library was built for (see <name>_cpu_missing)"),
    ("ERR_NOMEM", 5, "out of memory"),
    ("ERR_NOT_FOUND", 6, "no tensor of that name"),
    ("ERR_INTERNAL", 7, "internal error in the generated code"),
]

# every backend's context has ``int32_t status`` and ``char message[256]``
FAIL_C = """static int32_t sg_fail({lib}_ctx *ctx, int32_t code, const char *msg) {{
    ctx->status = code;
    snprintf(ctx->message, sizeof ctx->message, "%s", msg);
    return code;
}}"""


def nbytes(t):
    """Bytes of a ``Tensor`` (``symgraph.export.Tensor``; a ``SymInt`` when dynamic)."""
    return t.size * np.dtype(t.dtype).itemsize


def c_size(x, names: list[str]) -> str:
    """A C ``int64_t`` expression for a size: an int, or a ``SymInt`` over the run-time sizes
    ``names`` (``sg_floordiv`` and friends for its non-polynomial atoms, see ``SIZE_HELPERS_C``)."""
    if not isinstance(x, SymInt):
        return str(int(x))
    text = ""
    for mono, c in x.terms:
        factors = [_c_atom(a, names) for a in mono]
        if abs(c) != 1 or not factors:
            factors.insert(0, f"(int64_t){abs(c)}")
        term = " * ".join(factors)
        if not text:
            text = term if c > 0 else f"-{term}"
        else:
            text += f" + {term}" if c > 0 else f" - {term}"
    return f"({text})"


def _c_atom(a, names: list[str]) -> str:
    if a.kind == "leaf":
        return names[a.args[0]]
    args = ", ".join(c_size(v, names) for v in a.args)
    return f"sg_{a.kind}({args})"


# Python's floor division and modulo (0 for a zero divisor, as symdim.evaluate), max and min
SIZE_HELPERS_C = """static int64_t sg_floordiv(int64_t a, int64_t b) {
    if (b == 0) return 0;
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
static int64_t sg_mod(int64_t a, int64_t b) { return b == 0 ? 0 : a - sg_floordiv(a, b) * b; }
static int64_t sg_max(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t sg_min(int64_t a, int64_t b) { return a < b ? a : b; }"""


def shape_text(t, names: list[str]) -> str:
    """``[x_dim0, 784]``: a tensor's shape with run-time sizes by name."""
    return "[" + ", ".join(c_size(d, names).strip("()") if isinstance(d, SymInt) else str(d)
                           for d in t.shape) + "]"


def all_tensors(plans, params) -> list:
    """Every input and output of every function, then the parameters (the metadata order)."""
    return [t for p in plans for t in p.inputs + p.outputs] + params


def macros(prefix: str, t, dims: tuple = ()) -> list[str]:
    """``<PREFIX>_<NAME>_SIZE``, ``_NDIM`` and ``_DIM<d>`` of one tensor; those that depend on
    run-time sizes are function-like macros of the function's ``dims``
    (``MLP_Y_SIZE(x_dim0)``)."""
    p = f"{prefix}_{t.name.upper()}"
    params = f"({', '.join(dims)})"
    inner = [f"({d})" for d in dims]

    def define(name, value):
        if isinstance(value, SymInt):
            return f"#define {name}{params} {c_size(value, inner)}"
        return f"#define {name} {value}"
    lines = [define(f"{p}_SIZE", t.size), f"#define {p}_NDIM {len(t.shape)}"]
    lines += [define(f"{p}_DIM{d}", n) for d, n in enumerate(t.shape)]
    return lines


def _comment(*lines: str) -> str:
    return "\n".join(f" * {line}" for line in lines)


def c_args(plan) -> list[str]:
    """A function's C parameters after ``ctx``: its run-time sizes (dynamic export), its
    inputs (``const``), then its outputs."""
    return ([f"int64_t {d}" for d in getattr(plan, "dims", ())]
            + [f"const {t.ctype} *{t.name}" for t in plan.inputs]
            + [f"{t.ctype} *{t.name}" for t in plan.outputs])


# --- the library's C ------------------------------------------------------------------------
def common_c(lib: str, errors: list) -> list[str]:
    """``<lib>_abi_version``, ``_target``, ``_strerror`` and ``_last_error`` (needs the header,
    ``SG_API`` and a context with a ``message``)."""
    L = lib.upper()
    cases = "\n".join(f'    case {L}_{e}: return "{msg.replace("<name>", lib)}";' for e, _v, msg in errors)
    return [f"SG_API int32_t {lib}_abi_version(void) {{ return {L}_ABI_VERSION; }}",
            f"SG_API const char *{lib}_target(void) {{ return {L}_TARGET; }}",
            f"SG_API const char *{lib}_strerror(int32_t code) {{\n    switch (code) {{\n{cases}\n"
            '    default: return "unknown error code";\n    }\n}',
            f'SG_API const char *{lib}_last_error(const {lib}_ctx *ctx) {{\n'
            '    return ctx == NULL ? "NULL context" : ctx->message;\n}']


def accessors_c(lib: str, params: list, copy: Callable[[int, object, bool], str]) -> list[str]:
    """``<lib>_get_<param>`` / ``<lib>_set_<param>``: NULL and size checks, then
    ``copy(j, tensor, is_get)``: the backend's statements that copy between ``buf`` and the
    context's parameter ``j`` and return."""
    L, out = lib.upper(), []
    for j, t in enumerate(params):
        for verb, const_ctx, const_buf in (("get", "const ", ""), ("set", "", "const ")):
            sig = f"{lib}_{verb}_{t.name}({const_ctx}{lib}_ctx *ctx, {const_buf}{t.ctype} *buf, int64_t n)"
            out.append(f"""SG_API int32_t {sig} {{
    if (ctx == NULL || buf == NULL) return {L}_ERR_NULL;
    if (n != {L}_PARAM_{t.name.upper()}_SIZE) return {L}_ERR_SIZE;
    {copy(j, t, verb == "get")}
}}""")
    return out


def metadata_c(lib: str, plans, params) -> str:
    """The tensor table and ``<lib>_num_tensors`` / ``_tensor`` / ``_find_tensor``."""
    rows, shapes = [], []
    for i, t in enumerate(all_tensors(plans, params)):
        # a run-time size is -1 (and so is the size of a tensor that has one)
        dims = ["-1" if isinstance(d, SymInt) else str(d) for d in t.shape]
        size = -1 if isinstance(t.size, SymInt) else t.size
        shapes.append(f"static const int64_t sg_shape{i}[] = {{{', '.join(dims) or '0'}}};")
        rows.append(f'    {{"{t.name}", "{t.function}", {lib.upper()}_{t.role.upper()}, "{t.dtype}", '
                    f"{len(t.shape)}, sg_shape{i}, {size}}}")
    return "\n".join(shapes) + f"""
static const {lib}_tensor_info sg_tensors[] = {{
{",".join(chr(10) + r for r in rows).lstrip(chr(10))}
}};
SG_API int32_t {lib}_num_tensors(void) {{ return {len(rows)}; }}
SG_API const {lib}_tensor_info *{lib}_tensor(int32_t i) {{
    return i >= 0 && i < {len(rows)} ? &sg_tensors[i] : 0;
}}
SG_API const {lib}_tensor_info *{lib}_find_tensor(const char *function, const char *name) {{
    if (name == NULL) return 0;
    for (int32_t i = 0; i < {len(rows)}; i++)
        if (strcmp(sg_tensors[i].name, name) == 0 &&
            (function == NULL || strcmp(sg_tensors[i].function, function) == 0))
            return &sg_tensors[i];
    return 0;
}}"""


# --- the header -----------------------------------------------------------------------------
def header(lib: str, plans, params: list, *, target_text: str, notes: str, target_macros: list[str],
           errors: list, run_errors: str, create_errors: str, extra_decls: str = "") -> str:
    """``<lib>.h``.  The backend gives: ``target_text`` and ``notes`` (comment lines, ``" * "``
    prefixed) before and after the shared paragraphs on shapes and contexts;
    ``target_macros`` (``#define`` lines after ``<LIB>_ABI_VERSION``); its ``errors``; the
    codes ``run`` and ``create`` may return (``"<LIB>_ERR_NULL, <LIB>_ERR_INDEX"``); and
    declarations of its own functions."""
    from . import __version__
    L = lib.upper()
    macro_lines, runs, accessors = [], [], []
    for p in plans:
        dims = tuple(getattr(p, "dims", ()))
        for t in p.inputs + p.outputs:
            macro_lines += macros(p.macro, t, dims)
        call = f"({', '.join(dims)})" if dims else ""
        docs = "\n".join(f" *   {t.name}: {t.role}, {t.dtype}{shape_text(t, list(dims))} "
                         f"({p.macro}_{t.name.upper()}_SIZE{call if t.dynamic else ''} elements)"
                         for t in p.inputs + p.outputs)
        if dims:
            docs = (f" *   {', '.join(dims)}: run-time sizes (int64_t, >= 0) of the inputs' dims "
                    "declared unknown; calls whose sizes the code does not serve return "
                    f"{L}_ERR_SIZE\n" + docs)
        updated = sorted({params[j].name for j in p.updates})
        note = (f"\n * Updates the context's parameters {', '.join(updated)} after computing the outputs"
                " (not when it fails)." if updated else "")
        runs.append(f"/* {p.run_name}(ctx, ...): {p.key or lib}\n{docs}{note}\n * Returns {L}_OK, or an "
                    f"error code ({run_errors}). */\n"
                    f"int32_t {p.run_name}({', '.join([f'{lib}_ctx *ctx'] + c_args(p))});")
    for t in params:
        macro_lines += macros(f"{L}_PARAM", t)
        size = f"{L}_PARAM_{t.name.upper()}_SIZE"
        accessors.append(f"/* parameter {t.name}: {t.dtype}{list(t.shape)}; n must be {size} */\n"
                         f"int32_t {lib}_get_{t.name}(const {lib}_ctx *ctx, {t.ctype} *dst, int64_t n);\n"
                         f"int32_t {lib}_set_{t.name}({lib}_ctx *ctx, const {t.ctype} *src, int64_t n);")
    error_lines = "\n".join(f"    {L}_{e} = {v},  /* {msg.replace('<name>', lib).replace('*/', '')} */"
                            for e, v, msg in errors)
    extra = f"{extra_decls}\n" if extra_decls else ""
    if any(getattr(p, "dims", ()) for p in plans):
        shapes_text = _comment(
            "RUN-TIME SIZES: a dim unknown when the function was built is an int64_t argument of",
            "its run function (named <input>_dim<axis>); one library serves every size.  The",
            "shapes below name them; the _SIZE/_DIM macros of such tensors take them as arguments.",
            "Every pointer must point to a C-contiguous (row-major) buffer of exactly that many",
            "elements of that type; input and output buffers must not overlap.")
    else:
        shapes_text = _comment(
            "SHAPES ARE FIXED: the code is specialised for the shapes below (no dynamic batch size).",
            "Every pointer must point to a C-contiguous (row-major) buffer of exactly that many",
            "elements of that type; input and output buffers must not overlap.")
    return f"""/* {lib}.h: C API of a library exported by symgraph {__version__}; do not edit.
 *
{target_text}
 *
{shapes_text}
 *
 * Contexts: {lib}_create() makes a context that owns a copy of every parameter (initialised
 * with the values at export time) and all scratch memory.  Different contexts may be used
 * from different threads at the same time; one context must not be used by two threads at
 * once.  Parameters are shared by every function of the library through the context.
 *
{notes}
 */
#ifndef SYMGRAPH_{L}_H
#define SYMGRAPH_{L}_H

#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {L}_ABI_VERSION {ABI_VERSION}
{chr(10).join(target_macros)}
#define {L}_SYMGRAPH_VERSION "{__version__}"

{chr(10).join(macro_lines)}

typedef enum {{
{error_lines}
}} {lib}_status;

typedef struct {lib}_ctx {lib}_ctx;

/* metadata: every input, output and parameter */
enum {{ {L}_INPUT = 0, {L}_OUTPUT = 1, {L}_PARAM = 2 }};
typedef struct {{
    const char *name;
    const char *function;  /* the function key ("" for a single export or a parameter) */
    int32_t role;          /* {L}_INPUT, {L}_OUTPUT or {L}_PARAM */
    const char *dtype;     /* "float32", "int64", ... */
    int32_t ndim;
    const int64_t *shape;
    int64_t size;          /* elements */
}} {lib}_tensor_info;
int32_t {lib}_num_tensors(void);
const {lib}_tensor_info *{lib}_tensor(int32_t i);  /* NULL when out of range */
const {lib}_tensor_info *{lib}_find_tensor(const char *function, const char *name);

/* {L}_ABI_VERSION of the library (compare with the header's at run time) */
int32_t {lib}_abi_version(void);
const char *{lib}_target(void);
/* the first CPU feature the library needs that this CPU lacks, or NULL */
const char *{lib}_cpu_missing(void);
const char *{lib}_strerror(int32_t code);
/* a message for the last error of a call on ctx ("" after a success) */
const char *{lib}_last_error(const {lib}_ctx *ctx);

/* Returns {L}_OK and *ctx, or {create_errors} (*ctx = NULL). */
int32_t {lib}_create({lib}_ctx **ctx);
void {lib}_destroy({lib}_ctx *ctx);  /* NULL is fine */
void {lib}_set_num_threads(int32_t n);
{extra}
{chr(10).join(runs)}

{chr(10).join(accessors)}

#ifdef __cplusplus
}}
#endif

#endif /* SYMGRAPH_{L}_H */
"""
