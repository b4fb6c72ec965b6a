"""``compile(..., check_finite=True)``: a guard that names the node that made a NaN or infinity.

The guarded function computes its outputs and the new values of every updated shared variable
with the chosen backend, as usual, but installs the updates only when every floating-point
result is finite. Otherwise nothing changes and ``FloatingPointError`` names the first graph
node (in evaluation order, before rewriting) whose result is not finite although its inputs are,
with the user's line that built it. Finding that node interprets the graph with NumPy once,
only after a failure, so a healthy call costs one finiteness scan of the results.
(Theano's NanGuardMode and JAX's ``jax_debug_nans`` do the same job.)
"""

from __future__ import annotations

import threading

import numpy as np

from .forksafe import renew_locks_after_fork
from .graph.basic import Apply, Constant, Installer, format_trace, user_trace
from .graph.fgraph import toposort


def _bad(value) -> str | None:
    """'nan', 'inf' or None for a finite (or non-float) value."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return None
    if np.isnan(arr).any():
        return "nan"
    if np.isinf(arr).any():
        return "inf"
    return None


class FiniteGuard:
    """A compiled function that refuses to return or install non-finite values."""

    def __init__(self, inputs, outputs, updates, givens, backend: str, **options):
        from .compile import CompiledFunction, build_fgraph
        fgraph, self.inputs, _, self.n_outputs, self.update_targets, self.single = \
            build_fgraph(inputs, outputs, updates, givens)
        self._values = list(fgraph.outputs)  # the outputs, then every update's new value
        self._inner = CompiledFunction(self.inputs, self._values, None, None, backend,
                                       no_default_updates=True, **options)
        self._install = Installer(self.update_targets)  # all updates or none
        self._compiled_at = user_trace()
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")

    def __call__(self, *args):
        with self._lock:
            results = self._inner(*args)
            if not isinstance(results, list):
                results = [results]
            for k, value in enumerate(results):
                if _bad(value):
                    self._diagnose(args, k, _bad(value))
            from .compile import update_shape_error
            from .graph.types import shape_conflict
            new = []
            for target, value in zip(self.update_targets, results[self.n_outputs:]):
                if shape_conflict(target.type.shape, np.shape(value)):
                    raise update_shape_error(target, np.shape(value), self._compiled_at)
                new.append(np.array(value, dtype=target.dtype, copy=True))
            self._install(new)
        outs = results[:self.n_outputs]
        return outs[0] if self.single else outs

    def _diagnose(self, args, index: int, kind: str) -> None:
        """Raise FloatingPointError naming the first node that produced a non-finite value."""
        values = [spec.convert(a) for spec, a in zip(self._inner.specs, args)]
        for spec, v in zip(self._inner.specs, values):
            if _bad(v):
                raise FloatingPointError(f"check_finite: argument {spec.name!r} contains {_bad(v)}")
        env = {id(v): val for v, val in zip(self.inputs, values)}
        for s in self._inner.shared:
            env[id(s)] = s.get_value()
        with np.errstate(all="ignore"):
            for node in toposort(self._values):
                args_ = [v.value if isinstance(v, Constant) else env[id(v)] for v in node.inputs]
                outs = node.op.perform(node, args_)
                for var, val in zip(node.outputs, outs):
                    env[id(var)] = np.asarray(val)
                    what = _bad(val)
                    if what and not any(_bad(a) for a in args_):
                        raise FloatingPointError(self._message(node, args_, what))
        where = (f"output {index}" if index < self.n_outputs
                 else f"the update of {self.update_targets[index - self.n_outputs].label()!r}")
        raise FloatingPointError(f"check_finite: {where} is {kind} on the {self._inner.backend} "
                                 "backend, but the NumPy interpretation of the graph is finite; "
                                 "please report this as a bug")

    @staticmethod
    def _message(node: Apply, args, what: str) -> str:
        shapes = ", ".join(f"{np.asarray(a).dtype}{list(np.shape(a))}" for a in args)
        return (f"check_finite: {node.op} produced {what} from finite inputs ({shapes}); "
                f"no shared variable was changed{format_trace(node.trace)}")

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_install")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._install = Installer(self.update_targets)
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")

    def __getattr__(self, name):
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)  # kernels, source(), asm(), stats(), ...

    def __repr__(self) -> str:
        return f"<FiniteGuard of {self._inner!r}>"
