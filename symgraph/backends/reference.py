"""The reference backend: a NumPy interpreter of the (rewritten) graph, the oracle for tests."""

from __future__ import annotations

import time

import numpy as np

from ..errors import CompileError, ShapeError
from ..graph.basic import Apply, Constant, format_trace
from ..graph.fgraph import FunctionGraph
from . import KernelInfo


class ReferenceProgram:
    """Runs each apply node's ``perform`` in topological order."""

    backend_name = "reference"

    def __init__(self, fgraph: FunctionGraph, roots: list, profile: bool = False,
                 built_outputs: list | None = None):
        self.fgraph = fgraph
        self.roots = roots  # the variables whose values the caller passes, in order
        self.built_outputs = built_outputs  # the graph as built: call-time errors in its terms
        self.nodes: list[Apply] = fgraph.toposort()
        self.profile = profile
        self.check_types = True
        self.kernels = [self._describe(i, node) for i, node in enumerate(self.nodes)]
        # free each intermediate after its last use
        last_use: dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            for v in node.inputs:
                last_use[id(v)] = i
        keep = {id(v) for v in fgraph.outputs}
        self._free_after: list[list[int]] = [[] for _ in self.nodes]
        for vid, i in last_use.items():
            if vid not in keep:
                self._free_after[i].append(vid)

    @staticmethod
    def _describe(i: int, node: Apply) -> KernelInfo:
        ins = [v.label() for v in node.inputs]
        outs = [f"{o.type}" for o in node.outputs]
        src = f"{', '.join(outs)} = {node.op}({', '.join(ins)})  # NumPy reference"
        return KernelInfo(name=f"k{i}_{str(node.op).split('{')[0].lower()}", source=src,
                          inputs=ins, outputs=outs, ops=[str(node.op)])

    def __call__(self, values: list) -> list:
        # IEEE results (inf, nan) are values, not warnings, as in the native backends
        with np.errstate(all="ignore"):
            return self._run(values)

    def _run(self, values: list) -> list:
        env: dict[int, object] = {id(v): val for v, val in zip(self.roots, values)}
        for i, node in enumerate(self.nodes):
            args = []
            for v in node.inputs:
                if id(v) in env:
                    args.append(env[id(v)])
                elif isinstance(v, Constant):
                    args.append(v.value)
                else:  # pragma: no cover - compile() checks the inputs
                    raise CompileError(f"no value for {v}")
            t0 = time.perf_counter() if self.profile else 0.0
            try:
                outs = node.op.perform(node, args)
            except (ValueError, IndexError, TypeError) as e:
                err = self._call_time_error(node, args, values, e)
                if err is e:
                    raise
                raise err from None
            if self.profile:
                k = self.kernels[i].stats
                k["calls"] += 1
                k["seconds"] += time.perf_counter() - t0
            for var, val in zip(node.outputs, outs):
                val = np.asarray(val)
                if val.dtype.name != var.dtype:
                    val = val.astype(var.dtype)
                if self.check_types:
                    _check_inferred(node, var, val)
                env[id(var)] = val
            for vid in self._free_after[i]:
                env.pop(vid, None)
        out = []
        for v in self.fgraph.outputs:
            if id(v) in env:
                out.append(env[id(v)])
            else:
                out.append(v.value)
        return out

    def _call_time_error(self, node: Apply, args: list, values: list, e: Exception) -> Exception:
        """What to raise for ``node``'s failure: the shape error of the graph as built (the
        text every backend gives, see ``codegen.specialize``), else ``e`` with the op, the
        input shapes and the user's line (a bad index read from the data, as the native
        backends' bound checks report it)."""
        from ..codegen.checks import describe_inputs
        from ..codegen.specialize import first_error
        if self.built_outputs is not None:
            err = first_error(self.roots, self.built_outputs, [np.shape(v) for v in values])
            if err is not None:
                return err
        if isinstance(e, ShapeError):
            named = str(e).lower().startswith(str(node.op).split("{")[0].lower())
            prefix = "" if named else f"{node.op}: "
            return ShapeError(f"{prefix}{e}{format_trace(node.trace)}")
        if isinstance(e, TypeError):
            return e
        shapes = describe_inputs(node.inputs, [np.shape(a) for a in args])
        return type(e)(f"{node.op}: {e} (input shapes {shapes}){format_trace(node.trace)}")

    def source(self) -> str:
        return "\n".join(k.source for k in self.kernels)

    def asm(self) -> str:
        raise CompileError("the reference backend interprets the graph with NumPy; it generates "
                           "no machine code (use backend='llvm')")


def _check_inferred(node: Apply, var, val: np.ndarray) -> None:
    """The oracle also checks the static types inferred at build time against real values."""
    shape = var.type.shape
    if val.ndim != len(shape) or any(d is not None and d != v for d, v in zip(shape, val.shape)):
        raise AssertionError(f"internal error: {node.op} produced shape {val.shape}, but its "
                             f"type says {var.type}{format_trace(node.trace)}")


def build(fgraph: FunctionGraph, roots: list, options: dict) -> ReferenceProgram:
    return ReferenceProgram(fgraph, roots, profile=options.get("profile", False),
                            built_outputs=options.get("built_outputs"))
