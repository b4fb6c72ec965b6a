"""Variables, apply nodes and ops: the nodes of a symgraph graph.

A graph is bipartite: ``Variable`` -> ``Apply`` (an ``Op`` applied to input variables) ->
output ``Variable``s.  Variables never change once built; rewrites work on a
``FunctionGraph`` that owns a graph and swaps variables in it.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections import deque
from collections.abc import Sequence
from itertools import chain
from operator import call, methodcaller
from typing import Any

import numpy as np

from ..forksafe import renew_locks_after_fork
from .types import TensorType, as_dtype, shape_conflict

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ids = itertools.count()


_internal_files: dict[str, bool] = {}


def _is_internal(filename: str) -> bool:
    known = _internal_files.get(filename)
    if known is None:
        path = os.path.abspath(filename)
        known = path.startswith(_PACKAGE_DIR) or filename.startswith("<frozen")
        _internal_files[filename] = known
    return known


def user_trace() -> tuple[str, int, str] | None:
    """The first stack frame outside symgraph: the user's line that is building a node."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if not _is_internal(code.co_filename) and not _generated(frame):
            return (code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def _generated(frame) -> bool:
    """Code that Python generated for symgraph (a dataclass's ``__init__``): source-less
    ``<string>`` code called from symgraph, so not the user's line."""
    caller = frame.f_back
    return (frame.f_code.co_filename == "<string>" and caller is not None
            and _is_internal(caller.f_code.co_filename))


def format_trace(trace) -> str:
    if not trace:
        return ""
    filename, line, func = trace
    text = ""
    try:
        import linecache
        text = linecache.getline(filename, line).strip()
    except Exception:  # pragma: no cover - linecache never matters for correctness
        pass
    where = f"{filename}:{line} in {func}"
    return f"\n  built at {where}" + (f"\n    {text}" if text else "")


_execution = threading.local()


class executing_graph:
    """Marks the current thread as running a compiled graph (not building one).

    Errors raised while a graph runs name the node's own creation line (the backend adds it),
    so ``ShapeError`` must not add the caller's line there.
    """

    def __enter__(self):
        _execution.depth = getattr(_execution, "depth", 0) + 1

    def __exit__(self, *exc):
        _execution.depth -= 1


def construction_trace(message: str) -> str:
    """``built at FILE:LINE`` for an error raised while the user builds a graph, else ``""``."""
    if getattr(_execution, "depth", 0) or "built at " in message:
        return ""
    return format_trace(user_trace())


class Variable:
    """A symbolic tensor value: a type, and the apply node that computes it (if any)."""

    __array_priority__ = 1000  # make ``ndarray + Variable`` call our __radd__

    def __init__(self, type: TensorType, owner: Apply | None = None, index: int = 0,
                 name: str | None = None):
        self.type = type
        self.owner = owner
        self.index = index
        self.name = name
        self.id = next(_ids)
        self.trace = user_trace() if owner is None else None

    # --- static information -------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.ndim

    @property
    def shape(self) -> tuple:
        """One entry per dim: an int where the size is static, else the symbolic int64 scalar
        ``x.shape[i]`` (the same variable each time it is asked for)."""
        static = self.type.shape
        if None not in static:
            return static
        return self._symbolic_shape()[1]

    def _symbolic_shape(self) -> tuple[Variable, tuple]:
        """``(Shape(self), dims)``, built once per variable (see ``ops.shape.symbolic_dims``)."""
        cached = self.__dict__.get("_shape_cache")
        if cached is None or cached[0] is not self:
            # a copy of the variable (``privatize``, ``clone``) builds its own
            from ..ops.shape import symbolic_dims
            cached = (self, *symbolic_dims(self))
            self.__dict__["_shape_cache"] = cached
        return cached[1], cached[2]

    @property
    def size(self):
        """The number of elements: an int when every dim is static, else a symbolic int64
        scalar (the product of ``self.shape``)."""
        if self.type.fully_static:
            return int(np.prod(self.type.shape, dtype=np.int64))
        from ..ops.reduce import prod
        from ..ops.shape import shape
        return prod(shape(self))

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a rank-0 symbolic value")
        first = self.type.shape[0]
        if first is None:
            raise TypeError(f"len() of {self}: {dim_label(self, 0)} is unknown until call "
                            f"time; use {dim_label(self, 0)} (a symbolic int64 scalar) instead")
        return first

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        from ..ops.shape import unknown_value_message
        raise TypeError(unknown_value_message(self, "a truth value")
                        + "; inside the graph, use sg.where (and sg.minimum / sg.maximum for "
                        "Python's min / max)")

    def __index__(self):
        from ..ops.shape import unknown_value_message
        raise TypeError(unknown_value_message(self, "a Python int"))

    __int__ = __index__

    def __float__(self):
        from ..ops.shape import unknown_value_message
        raise TypeError(unknown_value_message(self, "a Python float"))

    def label(self) -> str:
        if self.name:
            return self.name
        if self.owner is not None:
            return f"{self.owner.op}.out{self.index}" if len(self.owner.outputs) > 1 else str(self.owner.op)
        return f"<{self.type}>"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label()}: {self.type})"

    def eval(self, inputs: dict | None = None, backend: str = "reference") -> np.ndarray:
        """This value computed for ``inputs`` (``{input variable: array}``), for quick checks.

        The function compiled for a set of inputs is kept on the variable, so evaluating again
        with new values costs no compilation."""
        from ..compile import compile
        items = list((inputs or {}).items())
        key = (backend, tuple(v.id for v, _ in items))
        cache = self.__dict__.setdefault("_eval_functions", {})
        if key not in cache:
            cache[key] = compile([v for v, _ in items], self, backend=backend)
        return cache[key](*[a for _, a in items])

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_eval_functions", None)  # compiled functions are rebuilt on demand
        state.pop("_shape_cache", None)  # rebuilt on demand
        return state

    def clone(self) -> Variable:
        """A fresh root variable of the same type and name (no owner)."""
        v = type(self).__new__(type(self))
        v.__dict__.update(self.__dict__)
        v.__dict__.pop("_eval_functions", None)  # compiled for the original, not the clone
        v.__dict__.pop("_shape_cache", None)
        v.owner, v.index, v.id = None, 0, next(_ids)
        return v


def dim_label(x: Variable, axis: int) -> str:
    """``x.shape[axis]`` spelled with ``x``'s label, for messages and debugprint."""
    return f"{x.label()}.shape[{axis}]"


def short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def value_array(value, dtype, what: str) -> np.ndarray:
    """``np.array(value, dtype)`` (a copy) for making ``what``, with a ``TypeError`` naming the value
    when NumPy cannot (or only as Python objects)."""
    if isinstance(value, Variable):
        raise TypeError(f"cannot make {what} from the symbolic value {value.label()} "
                        f"({value.type}); its value is only known when a compiled function runs")
    try:
        arr = np.array(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"cannot make {what} from {type(value).__name__} {short_repr(value)}: {e}") from None
    if arr.dtype == object:
        raise TypeError(f"cannot make {what} from {type(value).__name__} {short_repr(value)}: "
                        "it is not a number or an array of numbers")
    return arr


def _supported_dtype(arr: np.ndarray, value, what: str) -> str:
    try:
        return as_dtype(arr.dtype)
    except TypeError as e:
        raise TypeError(f"cannot make {what} from {type(value).__name__} {short_repr(value)}: {e}") from None


def check_name(name, what: str) -> None:
    """A variable's name is a str (or None); a tuple here is usually a shape in the wrong place."""
    if name is not None and not isinstance(name, str):
        hint = " (the first argument is the name: pass the shape as shape=...)" \
            if isinstance(name, (tuple, list, int)) else ""
        raise TypeError(f"{what}: name must be a str or None, got {type(name).__name__} "
                        f"{name!r}{hint}")


class Constant(Variable):
    """A value fixed when the graph is built; folded into the generated code."""

    def __init__(self, value, dtype=None, name: str | None = None):
        arr = value_array(value, dtype, "a constant")
        if dtype is None and arr.dtype == np.float64 and not isinstance(value, np.ndarray):
            # Python floats and lists of floats default to float32, like every other input.
            arr = arr.astype(np.float32)
        if dtype is None and arr.dtype == np.int64 and not isinstance(value, (np.ndarray, np.generic)):
            arr = arr.astype(np.int64)
        arr = arr.astype(_supported_dtype(arr, value, "a constant"), copy=False)
        arr.setflags(write=False)
        super().__init__(TensorType(arr.dtype.name, arr.shape), name=name)
        self.value = arr

    def label(self) -> str:
        if self.name:
            return self.name
        if self.value.size <= 4:
            return np.array2string(self.value, separator=",", precision=6).replace("\n", "")
        return f"constant{self.type}"

    def signature(self) -> tuple:
        return (self.type, self.value.tobytes())


class SharedVariable(Variable):
    """Persistent state (model parameters) that lives across calls of compiled functions."""

    def __init__(self, value, name: str | None = None, dtype=None, shape=None):
        arr = value_array(value, dtype, "a shared variable")
        # Python floats (and lists of them) are weakly typed: float32, as symbolic constants;
        # NumPy arrays and scalars keep their dtype
        if dtype is None and arr.dtype == np.float64 and not isinstance(value, (np.ndarray, np.generic)):
            arr = arr.astype(np.float32)
        # ``arr`` is already a private copy: only a non-C-contiguous one is copied again
        arr = np.asarray(arr.astype(_supported_dtype(arr, value, "a shared variable"), copy=False),
                         order="C")
        declared = arr.shape if shape is None else _declared_shape(shape, arr.shape, name)
        super().__init__(TensorType(arr.dtype.name, declared), name=name)
        self._value = arr
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")
        self._version = 0
        self.device_state: dict[str, Any] = {}

    def __bool__(self) -> bool:
        # a shared variable is an object that exists (``if not W: W = sg.shared(...)`` in
        # Theano-style code); only computed symbolic values have an unknown truth value
        return True

    @property
    def _value(self) -> np.ndarray:
        """The host value; fetched from the device first when a device holds the newest one."""
        pull = self.__dict__.get("_pull")
        if pull is not None:
            with self._lock:
                pull = self.__dict__.get("_pull")
                if pull is not None:
                    self.__dict__["_host"] = pull()
                    self.__dict__["_pull"] = None
        return self.__dict__["_host"]

    @_value.setter
    def _value(self, arr: np.ndarray) -> None:
        self.__dict__["_host"] = arr
        self.__dict__["_pull"] = None

    def get_value(self) -> np.ndarray:
        """A copy of the current value."""
        return self._value.copy()

    def set_value(self, value) -> None:
        """Replace the value (a copy is stored).  The shape must stay the same, except along
        the dims declared unknown (``sg.shared(value, shape=(None, 784))``); the dtype must
        be of the same kind (float into float, int or bool into int or float) and every
        value must survive the cast: an integer that does not fit, or a finite float that
        would overflow to inf, raises and changes nothing (NaN and inf already in ``value``
        are kept)."""
        arr = np.asarray(value)
        what = f"shared variable {self.label()!r}"
        if not np.can_cast(arr.dtype, self.dtype, "same_kind") and arr.size:
            raise TypeError(f"{what}: cannot store a {arr.dtype} array in a {self.dtype} "
                            "variable")
        self._check_shape(arr.shape, what)
        self._assign(checked_cast(arr, np.dtype(self.dtype), what))

    def _check_shape(self, shape: tuple, what: str) -> None:
        """``shape`` must fit the declared one (``None`` dims may change)."""
        declared = self.type.shape
        if not shape_conflict(declared, shape):
            return
        old = self._value.shape
        if all(d is not None for d in declared):
            raise ValueError(f"{what}: shape must stay {old}, got {tuple(shape)} (declare the "
                             "dims that may change as None: sg.shared(value, shape=...))")
        raise ValueError(f"{what}: a value of shape {tuple(shape)} does not fit the declared "
                         f"shape {_format_dims(declared)} (current value {old}); only the "
                         "None dims may change")

    def __getstate__(self):
        self._value  # noqa: B018 - bring a device-held value back to the host first
        state = super().__getstate__()
        state.pop("_lock")
        state["_pull"] = None
        state["device_state"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")

    def _assign(self, arr: np.ndarray) -> None:
        """Install ``arr`` (all of the value, version and device state, or none of it).  Its
        shape and dtype must be the variable's: compiled code reads the value as that."""
        arr = np.array(arr, order="C", copy=None)
        if shape_conflict(self.type.shape, arr.shape) or arr.dtype != self.dtype:
            raise ValueError(f"shared variable {self.label()!r}: cannot install a {arr.dtype} "
                             f"value of shape {arr.shape} in a {self.type} variable")
        install_values([self], [arr])

    def _assign_locked(self, arr: np.ndarray) -> None:
        """``_assign`` for a subclass with its own ``_value`` storage."""
        with self._lock:
            self._value = np.array(arr, order="C", copy=None)
            self._version += 1
            self.device_state.clear()

    def _assign_device(self, key: str, handle, pull) -> None:
        """A device (``key``) now holds the newest value (``handle``); ``pull()`` returns it as a
        NumPy array and is called only when the host value is read."""
        with self._lock:
            self._version += 1
            self.device_state.clear()
            self.device_state[key] = handle
            self.__dict__["_pull"] = pull


def checked_cast(arr: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
    """A C-contiguous copy of ``arr`` as ``dtype``.  Raises ``ValueError`` naming ``what`` when
    a value does not survive the cast: an integer outside ``dtype``'s range, or a finite value
    that becomes inf (NaN and inf already in ``arr`` stay as they are)."""
    if dtype.kind in "iu" and arr.dtype.kind in "iu" and arr.size:
        info = np.iinfo(dtype)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            raise ValueError(f"{what}: {lo if lo < info.min else hi} does not fit in {dtype} "
                             f"(range [{info.min}, {info.max}]); nothing was changed")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array(arr, dtype=dtype, order="C", copy=True)
    if dtype.kind == "f" and arr.dtype.kind in "fiu" and arr.size:
        overflow = np.isinf(out) & np.isfinite(arr)
        if overflow.any():
            bad = np.asarray(arr)[overflow].flat[0].item()
            raise ValueError(f"{what}: {bad!r} overflows {dtype} (largest finite value "
                             f"{np.finfo(dtype).max.item():.6g}); nothing was changed")
    return out


_update_dict = dict.update
_clear_dict = dict.clear
_copy_dict = dict.copy
_is_locked = methodcaller("locked")


class Installer:
    """Installs new values into a fixed list of shared variables, all or none, whatever signal
    arrives (``installer(values)``).

    ``values`` are installed as they are (fresh arrays of the targets' dtypes and shapes that
    nobody else holds).  Everything is prepared first; the installation itself is one C-level
    step (``dict.update`` on every target's ``__dict__`` and ``dict.clear`` on stale device
    state, driven by ``map`` and consumed by a ``deque``) during which no bytecode runs, so
    no signal handler can raise ``KeyboardInterrupt`` in the middle of it and no other thread
    can interleave.  A target lock another thread holds (a ``set_value`` or a device pull in
    progress) is waited for before that step, as the C call path does.
    """

    __slots__ = ("targets", "dicts", "plain")

    def __init__(self, targets: Sequence[SharedVariable]):
        self.targets = list(targets)
        self.dicts = [t.__dict__ for t in self.targets]
        own = SharedVariable.__dict__["_value"]
        self.plain = all(type(t).__dict__.get("_value", own) is own for t in self.targets)

    def __call__(self, values: Sequence[np.ndarray]) -> None:
        if not self.plain:  # a subclass with its own storage: its own setter
            for t, v in zip(self.targets, values):
                t._assign_locked(v)
            return
        dicts = self.dicts
        locks = [d["_lock"] for d in dicts]  # read each call: a forked child renews them
        while True:
            if any(map(_is_locked, locks)):
                self._wait(locks)
            states = [{"_host": v, "_pull": None, "_version": d["_version"] + 1}
                      for d, v in zip(dicts, values)]
            stale = [t.device_state for t in self.targets if t.device_state]
            # the replaced values stay referenced until after the step, so no deallocation
            # (which could run Python code) happens inside it
            replaced = [(d["_host"], d["_pull"]) for d in dicts]
            if stale:
                replaced += map(_copy_dict, stale)
            if not any(map(_is_locked, locks)):
                break
        if stale:
            deque(chain(map(_update_dict, dicts, states), map(_clear_dict, stale)), maxlen=0)
        else:
            deque(map(_update_dict, dicts, states), maxlen=0)
        del replaced


    @staticmethod
    def _wait(locks: list) -> None:
        """Wait until each lock is free (nothing is held when a signal interrupts the wait)."""
        for lock in locks:
            if lock.locked():  # acquire and release in one C-level step
                deque(map(call, (lock.acquire, lock.release)), maxlen=0)


def _format_dims(shape: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + \
        ("," if len(shape) == 1 else "") + ")"


def _declared_shape(shape, actual: tuple, name) -> tuple:
    """The static shape of a shared variable declared with ``shape=``: ints that must be the
    value's, ``None`` for dims that ``set_value`` may change."""
    what = f"shared variable {name!r}" if name else "shared variable"
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else None
    if dims is None or any(not (d is None or isinstance(d, (int, np.integer))
                                and not isinstance(d, (bool, np.bool_))) for d in dims):
        raise TypeError(f"{what}: shape must be a tuple of ints and None, got {shape!r}")
    if len(dims) != len(actual) or any(d is not None and d != a for d, a in zip(dims, actual)):
        raise ValueError(f"{what}: the value's shape {actual} does not fit the declared shape "
                         f"{_format_dims(dims)}")
    return tuple(None if d is None else int(d) for d in dims)


def install_values(targets: Sequence[SharedVariable], values: Sequence[np.ndarray]) -> None:
    """Install ``values`` into ``targets``, all or none (see ``Installer``)."""
    Installer(targets)(values)


class Apply:
    """One application of an op to input variables, producing output variables."""

    def __init__(self, op: Op, inputs: Sequence[Variable], output_types: Sequence[TensorType],
                 trace=None):
        self.op = op
        self.inputs = list(inputs)
        self.outputs = [Variable(t, owner=self, index=i) for i, t in enumerate(output_types)]
        self.trace = trace if trace is not None else user_trace()

    @property
    def out(self) -> Variable:
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Apply({self.op}, {[i.label() for i in self.inputs]})"

    def clone_with_new_inputs(self, inputs: Sequence[Variable]) -> Apply:
        node = self.op.make_node(*inputs)
        node.trace = self.trace
        return node


class Op:
    """Base class of every operation.

    Subclasses set ``__props__`` (names of the attributes that define the op, for equality and
    hashing, so identical nodes merge) and implement:

    * ``make_node(*inputs) -> Apply``: check inputs and infer output types (shape errors here);
    * ``perform(node, inputs) -> list[np.ndarray]``: the NumPy reference;
    * ``L_op(node, inputs, outputs, output_grads)``: vector-Jacobian product as graph nodes;
    * ``R_op(node, inputs, eval_points)``: Jacobian-vector product (optional);
    * ``batch(node, inputs, batched)``: the node over a leading batch axis (``sg.vmap``).
    """

    __props__: tuple[str, ...] = ()
    nondeterministic = False  # random ops must not be merged or constant-folded

    def _props(self) -> tuple:
        return tuple(getattr(self, p) for p in self.__props__)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._props() == other._props()

    def __hash__(self) -> int:
        return hash((type(self), self._props()))

    def __str__(self) -> str:
        return type(self).__name__

    __repr__ = __str__

    def __call__(self, *inputs, **kwargs):
        node = self.make_node(*inputs, **kwargs)
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs

    def make_node(self, *inputs) -> Apply:  # pragma: no cover - abstract
        raise NotImplementedError

    def perform(self, node: Apply, inputs: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover
        raise NotImplementedError(f"{self} has no reference implementation")

    def L_op(self, node: Apply, inputs, outputs, output_grads):
        from ..errors import GradientError
        raise GradientError(f"{self} is not differentiable")

    R_op = None  # ops that define it override with a method

    def batch(self, node: Apply, inputs, batched):
        """``vmap``'s rule: ``node`` rebuilt from ``inputs`` (batch axis 0 where ``batched``);
        returns ``(outputs, out_batched)``.  Ops that can be batched override it."""
        raise NotImplementedError(f"vmap: {self} has no batching rule" + format_trace(node.trace))


def as_variable(x, dtype=None) -> Variable:
    """Wrap NumPy arrays and Python numbers as constants; pass variables through."""
    if isinstance(x, Variable):
        return x
    if isinstance(x, (list, tuple)) and any(isinstance(e, Variable) for e in x):
        from ..ops.shape import stack
        return stack([as_variable(e, dtype) for e in x])
    return Constant(x, dtype=dtype)


def is_python_scalar(x) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


# --- operators and methods on symbolic values ---------------------------------------------
# They call into symgraph.ops, imported lazily because the ops import this module.

def _ops():
    from .. import ops
    return ops


def _binop(name: str, reflected: bool = False):
    def method(self, other):
        fn = getattr(_ops(), name)
        return fn(other, self) if reflected else fn(self, other)
    method.__name__ = f"__{'r' if reflected else ''}{name}__"
    return method


for _name, _fn in [("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "true_divide"),
                   ("floordiv", "floor_divide"), ("mod", "mod"), ("pow", "power"),
                   ("matmul", "matmul"), ("and", "logical_and"), ("or", "logical_or")]:
    setattr(Variable, f"__{_name}__", _binop(_fn))
    setattr(Variable, f"__r{_name}__", _binop(_fn, reflected=True))
for _name, _fn in [("lt", "lt"), ("le", "le"), ("gt", "gt"), ("ge", "ge")]:
    setattr(Variable, f"__{_name}__", _binop(_fn))

Variable.__neg__ = lambda self: _ops().neg(self)
Variable.__pos__ = lambda self: self
Variable.__abs__ = lambda self: _ops().abs(self)
Variable.__invert__ = lambda self: _ops().logical_not(self)
Variable.__getitem__ = lambda self, key: _ops().getitem(self, key)
# ``==`` and ``!=`` are elementwise, as in NumPy; hashing stays identity-based, so variables
# still work as dict keys (dicts compare by hash and identity first).  Inside symgraph, never
# test ``var in list``: use identity (``any(v is w ...)``) or ids.
# A symbolic value is never None: ``x.shape[0] == None`` is False, not a graph node (tuples
# of sizes compare element by element, ``x.shape == (None, 3)`` included).
Variable.__eq__ = lambda self, other: False if other is None else _ops().eq(self, other)
Variable.__ne__ = lambda self, other: True if other is None else _ops().neq(self, other)
Variable.__hash__ = object.__hash__
Variable.T = property(lambda self: _ops().transpose(self))
Variable.transpose = lambda self, *axes: _ops().transpose(
    self, axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else (axes or None))
Variable.reshape = lambda self, *shape: _ops().reshape(
    self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list, Variable)) else shape)
Variable.astype = lambda self, dtype: _ops().cast(self, dtype)
Variable.flatten = lambda self, ndim=1: _ops().flatten(self, ndim)
for _name in ("sum", "mean", "max", "min", "prod", "argmax", "argmin", "var", "std"):
    setattr(Variable, _name, (lambda n: lambda self, axis=None, keepdims=False:
                              getattr(_ops(), n)(self, axis=axis, keepdims=keepdims))(_name))
Variable.dot = lambda self, other: _ops().dot(self, other)
