"""``theano.config``, ``theano.shared``, ``theano.function``, ``theano.grad``, ``theano.pp``."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np

from ... import compile as sg_compile
from ...grad import grad as sg_grad
from ...graph.basic import SharedVariable, Variable
from ...graph.fgraph import graph_inputs

config = SimpleNamespace(floatX="float64")  # Theano's and PyTensor's default


class TheanoSharedVariable(SharedVariable):
    """A shared variable with Theano's ``borrow`` arguments (accepted; values are always copied,
    so borrowing never aliases symgraph's storage)."""

    def get_value(self, borrow: bool = False, return_internal_type: bool = False) -> np.ndarray:
        return super().get_value()

    def set_value(self, value, borrow: bool = False) -> None:
        super().set_value(value)


def shared(value, name: str | None = None, borrow: bool = False, strict: bool = False,
           allow_downcast=None, shape=None) -> TheanoSharedVariable:
    """``theano.shared``: the value's own dtype is kept (Python floats become ``floatX``);
    ``shape`` (as in PyTensor) declares dims that ``set_value`` may change as ``None``."""
    if isinstance(value, float):
        value = np.asarray(value, dtype=config.floatX)
    return TheanoSharedVariable(value if isinstance(value, (np.ndarray, np.generic)) else np.asarray(value),
                                name=name, shape=shape)


class TheanoFunction:
    """A compiled function with Theano's call conventions (``allow_input_downcast``)."""

    def __init__(self, fn, inputs, allow_input_downcast: bool, name: str | None):
        self.fn, self.inputs, self.name = fn, inputs, name
        self.allow_input_downcast = allow_input_downcast

    def __call__(self, *args):
        if self.allow_input_downcast:
            args = [np.asarray(a).astype(v.dtype, copy=False) for a, v in zip(args, self.inputs)]
        return self.fn(*args)

    def __getattr__(self, attr):
        if attr.startswith("__") or attr == "fn":
            raise AttributeError(attr)
        return getattr(self.fn, attr)


_MODES = {None: {}, "FAST_RUN": {}, "FAST_COMPILE": {"backend": "reference"},
          "DebugMode": {"backend": "reference", "check_finite": True},
          "NanGuardMode": {"check_finite": True}}


def function(inputs, outputs=None, updates=None, givens=None, allow_input_downcast=None,
             on_unused_input: str = "raise", mode=None, name: str | None = None,
             no_default_updates: bool = False, profile=None) -> TheanoFunction:
    """``theano.function``: compile with symgraph's default backend (``mode='FAST_COMPILE'``:
    the reference backend; ``'NanGuardMode'``: ``check_finite``)."""
    inputs = list(inputs)
    if isinstance(mode, str) and mode not in _MODES:
        raise ValueError(f"function: unknown mode {mode!r}; choose one of {sorted(m for m in _MODES if m)}")
    options = dict(_MODES.get(mode if isinstance(mode, str) or mode is None else None, {}))
    pairs = list(updates.items()) if isinstance(updates, dict) else list(updates or [])
    _check_unused(inputs, outputs, pairs, givens, on_unused_input)
    options["no_default_updates"] = bool(no_default_updates)
    if options.pop("check_finite", False):
        options.pop("no_default_updates")
        options["check_finite"] = True
    fn = sg_compile(inputs, outputs if outputs is not None else [], updates=pairs, givens=givens,
                    profile=bool(profile), **options)
    return TheanoFunction(fn, inputs, bool(allow_input_downcast), name)


def _check_unused(inputs, outputs, pairs, givens, policy: str) -> None:
    if policy not in ("raise", "warn", "ignore"):
        raise ValueError(f"function: on_unused_input must be 'raise', 'warn' or 'ignore', got {policy!r}")
    outs = list(outputs) if isinstance(outputs, (list, tuple)) else ([] if outputs is None else [outputs])
    roots = outs + [v for _, v in pairs]
    if givens:
        roots += list(givens.values()) if isinstance(givens, dict) else [v for _, v in givens]
    used = {id(v) for v in graph_inputs([r for r in roots if isinstance(r, Variable)])}
    replaced = {id(k) for k in (givens.keys() if isinstance(givens, dict) else [k for k, _ in givens or []])}
    for i, v in enumerate(inputs):
        if id(v) not in used and id(v) not in replaced and policy != "ignore":
            msg = (f"function: input {i} ({v.label()}) is not used to compute the outputs; pass "
                   "on_unused_input='warn' or 'ignore' to allow it")
            if policy == "raise":
                raise ValueError(msg)
            warnings.warn(msg, stacklevel=3)


def grad(cost, wrt, consider_constant=None, disconnected_inputs: str = "raise", known_grads=None):
    """``theano.grad`` (``consider_constant`` is not supported: use ``sg.stop_gradient``)."""
    if consider_constant:
        raise NotImplementedError("grad: consider_constant is not supported; wrap those values in "
                                  "sg.stop_gradient(...) where they are used")
    return sg_grad(cost, wrt, known_grads=known_grads, disconnected=disconnected_inputs)


def pp(var) -> str:
    """``theano.pp``: the graph as text."""
    import io

    from ...printing import debugprint
    return debugprint(var, file=io.StringIO())
