"""Targets of ``f.export(target=...)``: which CPU the exported code is generated for, and
which CPU features the library checks for (with ``cpuid``) before it runs anything.

A target is never the build machine's CPU unless ``"host"`` is asked for: the default,
``"x86-64-v3"`` (AVX2, FMA, BMI1/2: Intel Haswell 2013 and later, AMD Zen and later), runs
on any x86-64 machine of the last ten years and never uses AVX-512.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# cpuid location of each feature the check knows: (leaf, subleaf, register, bit)
CPUID_BITS: dict[str, tuple[int, int, str, int]] = {
    "sse2": (1, 0, "edx", 26),
    "sse3": (1, 0, "ecx", 0), "ssse3": (1, 0, "ecx", 9), "fma": (1, 0, "ecx", 12),
    "cx16": (1, 0, "ecx", 13), "sse4.1": (1, 0, "ecx", 19), "sse4.2": (1, 0, "ecx", 20),
    "movbe": (1, 0, "ecx", 22), "popcnt": (1, 0, "ecx", 23), "xsave": (1, 0, "ecx", 26),
    "avx": (1, 0, "ecx", 28), "f16c": (1, 0, "ecx", 29),
    "bmi": (7, 0, "ebx", 3), "avx2": (7, 0, "ebx", 5), "bmi2": (7, 0, "ebx", 8),
    "avx512f": (7, 0, "ebx", 16), "avx512dq": (7, 0, "ebx", 17), "avx512ifma": (7, 0, "ebx", 21),
    "avx512cd": (7, 0, "ebx", 28), "avx512bw": (7, 0, "ebx", 30), "avx512vl": (7, 0, "ebx", 31),
    "avx512vbmi": (7, 0, "ecx", 1), "avx512vbmi2": (7, 0, "ecx", 6), "avx512vnni": (7, 0, "ecx", 11),
    "avx512bitalg": (7, 0, "ecx", 12), "avx512vpopcntdq": (7, 0, "ecx", 14),
    "avx512bf16": (7, 1, "eax", 5),
    "sahf": (0x80000001, 0, "ecx", 0), "lzcnt": (0x80000001, 0, "ecx", 5),
}

LEVELS: dict[str, list[str]] = {
    "x86-64": ["sse2"],
    "x86-64-v2": ["sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cx16", "sahf"],
}
LEVELS["x86-64-v3"] = LEVELS["x86-64-v2"] + ["avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt",
                                             "movbe", "xsave"]
LEVELS["x86-64-v4"] = LEVELS["x86-64-v3"] + ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]

_ICELAKE = ["avx512vbmi", "avx512vbmi2", "avx512vnni", "avx512bitalg", "avx512vpopcntdq", "avx512ifma"]
# CPU names LLVM knows, with the features the library checks for them
CPUS: dict[str, list[str]] = {
    "nehalem": LEVELS["x86-64-v2"], "westmere": LEVELS["x86-64-v2"],
    "sandybridge": LEVELS["x86-64-v2"] + ["avx", "xsave"],
    "ivybridge": LEVELS["x86-64-v2"] + ["avx", "xsave", "f16c"],
    "haswell": LEVELS["x86-64-v3"], "broadwell": LEVELS["x86-64-v3"], "skylake": LEVELS["x86-64-v3"],
    "alderlake": LEVELS["x86-64-v3"], "znver1": LEVELS["x86-64-v3"], "znver2": LEVELS["x86-64-v3"],
    "znver3": LEVELS["x86-64-v3"],
    "skylake-avx512": LEVELS["x86-64-v4"], "cascadelake": LEVELS["x86-64-v4"] + ["avx512vnni"],
    "icelake-server": LEVELS["x86-64-v4"] + _ICELAKE, "sapphirerapids": LEVELS["x86-64-v4"] + _ICELAKE +
    ["avx512bf16"], "znver4": LEVELS["x86-64-v4"] + _ICELAKE + ["avx512bf16"],
    "znver5": LEVELS["x86-64-v4"] + _ICELAKE + ["avx512bf16"],
}


@dataclass
class Target:
    """What the exported code is generated for."""

    name: str  # as the user said it ("x86-64-v3", "host", "znver4", "custom")
    triple: str
    cpu: str
    features: str  # LLVM feature string ("" = the CPU's own)
    required: list[str] = field(default_factory=list)  # checked with cpuid at create time

    @property
    def x86(self) -> bool:
        return self.triple.startswith(("x86_64", "amd64"))


def resolve(target) -> Target:
    """``target=`` of ``f.export``: a level name, ``"host"``, a CPU name, or a dict
    ``{"triple":, "cpu":, "features": "+avx2,+fma"}``; ValueError for anything else."""
    from .backends import llvm_jit
    binding = llvm_jit.llvm()
    host_triple = binding.get_process_triple()
    if isinstance(target, dict):
        return _custom(target, host_triple)
    if not isinstance(target, str):
        raise ValueError(f"export: target must be a string or a dict, got {type(target).__name__}")
    if target == "host":
        feats = binding.get_host_cpu_features()
        required = sorted(f for f, on in feats.items() if on and f in CPUID_BITS)
        return Target("host", host_triple, binding.get_host_cpu_name(), feats.flatten(), required)
    if target in LEVELS or target in CPUS:
        _need_x86(target, host_triple)
        return Target(target, host_triple, target, "", list(LEVELS.get(target) or CPUS[target]))
    raise ValueError(f"export: unknown target {target!r}; use one of {', '.join(LEVELS)}, 'host', "
                     f"a CPU name ({', '.join(sorted(CPUS))}) or a dict with triple/cpu/features")


def _need_x86(target: str, triple: str) -> None:
    if not triple.startswith(("x86_64", "amd64")):
        raise ValueError(f"export: target {target!r} is an x86-64 CPU but this machine is {triple}; "
                         "use target='host' or a dict with triple/cpu/features")


def _custom(spec: dict, host_triple: str) -> Target:
    unknown = set(spec) - {"triple", "cpu", "features"}
    if unknown:
        raise ValueError(f"export: unknown target keys {sorted(unknown)} (use triple, cpu, features)")
    triple = spec.get("triple", host_triple)
    cpu = spec.get("cpu", "x86-64" if triple.startswith("x86_64") else "generic")
    features = spec.get("features", "")
    if isinstance(features, (list, tuple)):
        features = ",".join(f if f[:1] in "+-" else "+" + f for f in features)
    for f in filter(None, features.split(",")):
        if f[:1] not in "+-":
            raise ValueError(f"export: target feature {f!r} must start with '+' or '-'")
    required = list(LEVELS.get(cpu) or CPUS.get(cpu) or [])
    required += [f[1:] for f in features.split(",") if f.startswith("+") and f[1:] in CPUID_BITS]
    if cpu not in LEVELS and cpu not in CPUS and cpu not in ("generic",):
        raise ValueError(f"export: unknown cpu {cpu!r} in target; known: "
                         f"{', '.join(list(LEVELS) + sorted(CPUS))}")
    return Target("custom", triple, cpu, features, sorted(set(required)))
