"""The vectorisable math helpers of the LLVM backend (``kernels/llvm/math.ll``).

The IR defines ``@sg_<fn>f`` (float) and ``@sg_<fn>`` (double) for every name in
``UNARY_FUNCTIONS`` (one argument) and ``BINARY_FUNCTIONS`` (two arguments). They are
``linkonce_odr``, ``alwaysinline`` and ``memory(none)``: link or paste the text into a module,
call them, and after the O3 pipeline no call is left and loops calling them vectorise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from symgraph.resources import read_kernel

UNARY_FUNCTIONS: tuple[str, ...] = (
    "exp", "log", "log1p", "expm1", "tanh", "sigmoid", "erf", "softplus", "sin", "cos",
)
BINARY_FUNCTIONS: tuple[str, ...] = ("pow",)


@lru_cache(maxsize=1)
def _full_text() -> str:
    return read_kernel("llvm/math.ll")


@lru_cache(maxsize=1)
def _definitions() -> dict[str, str]:
    """{symbol: its ``define ... }`` block}."""
    found = re.findall(r"^(define [^@]*@(\w+)\(.*?^}\n)", _full_text(), re.S | re.M)
    return {name: block for block, name in found}


def intrinsic_declarations() -> list[str]:
    """The ``declare`` lines of the LLVM intrinsics the helpers call (fabs, copysign)."""
    return [line for line in _full_text().splitlines() if line.startswith("declare ")]


def math_ir(functions: Iterable[str] | None = None, declarations: bool = True) -> str:
    """LLVM IR text defining the helpers named in ``functions`` (IR symbols such as 'sg_expf';
    all of them when None), followed by the intrinsic declarations unless ``declarations`` is
    False (for pasting into a module that declares them itself).

    Every helper is self-contained (shared pieces are inlined in the text, attributes are written
    on each ``define``), so a module can take just the ones it calls: parsing and optimising all
    22 costs about 15 ms per module."""
    blocks = _definitions()
    names = list(blocks) if functions is None else list(dict.fromkeys(functions))
    missing = [f for f in names if f not in blocks]
    if missing:
        raise KeyError(f"no LLVM math helper named {missing}")
    decls = "".join(d + "\n" for d in intrinsic_declarations()) if declarations else ""
    return "".join(blocks[f] + "\n" for f in names) + decls


def function_name(fn: str, dtype: str) -> str:
    """The IR symbol for math function ``fn`` at ``dtype`` ('float32' or 'float64')."""
    if fn not in UNARY_FUNCTIONS and fn not in BINARY_FUNCTIONS:
        raise KeyError(f"no LLVM math helper for {fn!r}")
    suffixes = {"float32": "f", "float64": ""}
    if dtype not in suffixes:
        raise KeyError(f"LLVM math helpers exist for float32 and float64, not {dtype}")
    return f"sg_{fn}{suffixes[dtype]}"


def function_names() -> list[str]:
    """Every helper's IR symbol, float versions first."""
    fns = UNARY_FUNCTIONS + BINARY_FUNCTIONS
    return [function_name(f, d) for d in ("float32", "float64") for f in fns]


# --- a standalone JIT of array loops over the helpers (tests, benchmarks/math_accuracy.py) ---


def loop_ir(name: str, dtype: str, nargs: int) -> str:
    """IR of ``void loop_<name>(T* out, T* a[, T* b], i64 n)``: out[i] = name(a[i][, b[i]])."""
    t = {"float32": "float", "float64": "double"}[dtype]
    ins = [f"%in{k}" for k in range(nargs)]
    params = ", ".join(f"ptr noalias {p}" for p in ["%out", *ins])
    loads = "".join(
        f"  %p{k} = getelementptr inbounds {t}, ptr {p}, i64 %i\n  %x{k} = load {t}, ptr %p{k}\n"
        for k, p in enumerate(ins))
    args = ", ".join(f"{t} %x{k}" for k in range(nargs))
    return (
        f"define void @loop_{name}({params}, i64 %n) {{\n"
        "entry:\n  %c = icmp sgt i64 %n, 0\n  br i1 %c, label %loop, label %exit\n"
        "loop:\n  %i = phi i64 [0, %entry], [%i1, %loop]\n"
        f"{loads}  %y = call {t} @{name}({args})\n"
        f"  %po = getelementptr inbounds {t}, ptr %out, i64 %i\n  store {t} %y, ptr %po\n"
        "  %i1 = add nuw nsw i64 %i, 1\n  %d = icmp eq i64 %i1, %n\n"
        "  br i1 %d, label %exit, label %loop\nexit:\n  ret void\n}\n")


class MathLoops:
    """JIT-compiled loops ``out[i] = sg_fn(in[i])`` for the host CPU (O3, loop vectoriser on)."""

    def __init__(self, functions: list[tuple[str, str]] | None = None, features: str | None = None):
        """Compile loops for ``functions`` ((fn, dtype) pairs; all when None). ``features``
        overrides the host's CPU feature string (e.g. with '-fma' appended, to check that the
        accuracy does not depend on fused multiply-adds)."""
        import ctypes

        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.initialize_native_asmparser()
        if functions is None:
            functions = [(f, d) for d in ("float32", "float64")
                         for f in UNARY_FUNCTIONS + BINARY_FUNCTIONS]
        self._spec = {function_name(f, d): (1 if f in UNARY_FUNCTIONS else 2) for f, d in functions}
        self._dtype = {function_name(f, d): d for f, d in functions}
        text = math_ir(self._spec) + "\n" + "".join(
            loop_ir(n, self._dtype[n], k) for n, k in self._spec.items())
        target = llvm.Target.from_triple(llvm.get_process_triple())
        self.target_machine = target.create_target_machine(
            cpu=llvm.get_host_cpu_name(), opt=3, jit=True,
            features=llvm.get_host_cpu_features().flatten() if features is None else features)
        mod = llvm.parse_assembly(text)
        mod.triple = self.target_machine.triple
        mod.data_layout = str(self.target_machine.target_data)
        mod.verify()
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = llvm.create_pass_builder(self.target_machine, pto)
        pb.getModulePassManager().run(mod, pb)
        self.module = mod
        self._engine = llvm.create_mcjit_compiler(mod, self.target_machine)
        self._engine.finalize_object()
        vp = ctypes.c_void_p
        self._funcs = {}
        for name, k in self._spec.items():
            proto = ctypes.CFUNCTYPE(None, *([vp] * (k + 1)), ctypes.c_int64)
            self._funcs[name] = proto(self._engine.get_function_address(f"loop_{name}"))

    def __call__(self, name: str, *arrays):
        """Apply helper ``name`` (e.g. 'sg_expf') elementwise to contiguous arrays."""
        import numpy as np

        dtype = np.dtype(self._dtype[name])
        xs = [np.ascontiguousarray(a, dtype=dtype) for a in np.broadcast_arrays(*arrays)]
        out = np.empty_like(xs[0])
        self._funcs[name](out.ctypes.data, *[x.ctypes.data for x in xs], out.size)
        return out

    def assembly(self) -> str:
        """x86 (host) assembly of the optimised module."""
        return self.target_machine.emit_assembly(self.module)
