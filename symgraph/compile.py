"""``sg.compile``: inputs, outputs, updates and givens -> a rewritten graph -> a backend program
wrapped in a ``CompiledFunction`` that checks arguments and applies updates atomically."""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Sequence

import numpy as np

from .errors import CompileError, ShapeError
from .fastcall import FunctionBase
from .forksafe import renew_locks_after_fork
from .graph.basic import (
    Constant,
    Installer,
    SharedVariable,
    Variable,
    as_variable,
    executing_graph,
    format_trace,
    short_repr,
    user_trace,
)
from .graph.fgraph import FunctionGraph, clone_replace, graph_inputs
from .graph.types import format_shape, shape_conflict

BACKENDS = {"reference": "symgraph.backends.reference",
            "llvm": "symgraph.backends.llvm",
            "cuda": "symgraph.backends.cuda"}
DEFAULT_BACKEND = "llvm"


class InputSpec:
    """How one positional argument is checked and converted."""

    __slots__ = ("var", "name", "dtype", "ndim", "shape", "np_dtype", "bounds")

    def __init__(self, var: Variable, position: int):
        self.var = var
        self.name = var.name or f"input {position}"
        self.dtype = var.dtype
        self.np_dtype = np.dtype(var.dtype)
        self.ndim = var.ndim
        self.shape = var.type.shape
        # the range a Python int argument must fit (numeric inputs only)
        self.bounds = _bounds(self.np_dtype) if self.np_dtype.kind in "iuf" else None

    def convert(self, value) -> np.ndarray:
        what = f"argument {self.name!r}"
        if hasattr(value, "__cuda_array_interface__"):
            return self._check_device(value, what)
        if isinstance(value, np.ndarray):
            arr = value
        elif isinstance(value, (bool, int, float, np.generic)):
            if type(value) is int and self.bounds is not None:
                self._check_int_range(value, what)
            arr = np.asarray(value)
            if isinstance(value, bool) or arr.dtype.kind == "b":
                ok = True
            elif arr.dtype.kind in "iu":
                ok = self.np_dtype.kind in "iuf"
            else:
                ok = self.np_dtype.kind == "f"
            if not ok:
                raise TypeError(f"{what}: cannot use {value!r} for {_a(self.dtype)} input")
            if isinstance(value, np.generic) and not np.can_cast(arr.dtype, self.np_dtype, "safe"):
                raise TypeError(f"{what}: expected {self.dtype}, got a {arr.dtype} scalar, "
                                "which does not cast safely")
            arr = np.asarray(value, dtype=self.np_dtype)  # then the rank check below
        else:
            try:
                arr = np.asarray(value)
            except Exception as e:
                raise TypeError(f"{what}: cannot convert {type(value).__name__} to an array: {e}") from e
            if arr.dtype.kind == "f" and self.np_dtype.kind == "f":
                arr = arr.astype(self.np_dtype)  # Python float lists are weakly typed
            elif arr.dtype.kind in "iub" and self.np_dtype.kind == "f":
                arr = arr.astype(self.np_dtype)
        if arr.dtype != self.np_dtype:
            if arr.dtype.kind in "OSUV":  # not numbers: say what was given
                raise TypeError(f"{what}: expected {_a(self.dtype)} array or number, got "
                                f"{type(value).__name__} {short_repr(value)}")
            if not np.can_cast(arr.dtype, self.np_dtype, "safe"):
                raise TypeError(f"{what}: expected {self.dtype}, got {arr.dtype} (shape "
                                f"{arr.shape}), which does not cast safely; convert it with "
                                f".astype({self.dtype!r}) if that is what you want")
            arr = arr.astype(self.np_dtype)
        if arr.ndim != self.ndim:
            raise ValueError(f"{what}: expected a rank-{self.ndim} array of shape "
                             f"{format_shape(self.shape)}, got shape {arr.shape}")
        if shape_conflict(self.shape, arr.shape):
            axis = next(a for a, (w, g) in enumerate(zip(self.shape, arr.shape)) if w not in (None, g))
            raise ValueError(f"{what}: dimension {axis} must be {self.shape[axis]} (declared shape "
                             f"{format_shape(self.shape)}), got shape {arr.shape}")
        return arr

    def _check_int_range(self, value: int, what: str) -> None:
        """A Python int is weakly typed, but must fit the input's dtype (``TypeError``, as for
        an int64 array or scalar that does not cast safely)."""
        lo, hi = self.bounds
        if lo <= value <= hi:
            return
        text = str(value) if value.bit_length() <= 128 else f"of {len(str(abs(value)))} digits"
        bounds = f"[{lo:g}, {hi:g}]" if self.np_dtype.kind == "f" else f"[{lo}, {hi}]"
        raise TypeError(f"{what}: the Python integer {text} does not fit in {self.dtype} "
                        f"(range {bounds})")

    def _check_device(self, value, what: str):
        """A GPU array (pycuda GPUArray, CuPy...) is passed through after a dtype/shape check."""
        iface = value.__cuda_array_interface__
        dtype, shape = np.dtype(iface["typestr"]), tuple(iface["shape"])
        if dtype != self.np_dtype:
            raise TypeError(f"{what}: expected {self.dtype}, got a device array of {dtype}")
        if shape_conflict(self.shape, shape):
            raise ValueError(f"{what}: expected shape {format_shape(self.shape)}, got a device array "
                             f"of shape {shape}")
        return value


@functools.cache
def _bounds(dtype: np.dtype) -> tuple:
    """The smallest and largest value of ``dtype`` (ints exactly, floats as floats)."""
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    return (int(info.min), int(info.max)) if dtype.kind in "iu" else (float(info.min), float(info.max))


def _a(dtype: str) -> str:
    """``dtype`` with its article: "an int32", "a float32"."""
    return f"an {dtype}" if dtype[0] in "aeiou" else f"a {dtype}"


def _as_list(x) -> tuple[list, bool]:
    if isinstance(x, (list, tuple)):
        return list(x), False
    return [x], True


def _symbolic(value, what: str) -> Variable:
    """``as_variable(value)``: a variable, or a number / array (a constant); a ``TypeError``
    naming ``what`` for anything else."""
    if isinstance(value, Variable):
        return value
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise TypeError(f"compile: {what} is {type(value).__name__} {value!r}, not a symbolic value")
    try:
        return as_variable(value)
    except TypeError as e:
        raise TypeError(f"compile: {what}: {e}") from None


def _input_list(inputs) -> list:
    """``inputs`` must be a list (or tuple), as in Theano: a single variable is not accepted."""
    if not isinstance(inputs, (list, tuple)):
        hint = f"; write [{inputs.label()}] for a single input" if isinstance(inputs, Variable) else ""
        raise TypeError(f"compile: inputs must be a list of symbolic variables, got "
                        f"{type(inputs).__name__}{hint}")
    return list(inputs)


def _pairs(items, what: str, form: str) -> list[tuple]:
    """``items`` (a dict, or a list of 2-item pairs) as a list of pairs; ``TypeError`` naming
    ``what`` otherwise (``form`` says what each pair holds)."""
    if isinstance(items, dict):
        return list(items.items())
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise TypeError(f"compile: {what} must be a dict or a list of {form} pairs, got "
                        f"{type(items).__name__}")
    pairs = []
    for k, pair in enumerate(items):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            got = (f"a {type(pair).__name__} of {len(pair)} items" if isinstance(pair, (list, tuple))
                   else repr(pair))
            raise TypeError(f"compile: {what}[{k}] must be a {form} pair, got {got}")
        pairs.append(tuple(pair))
    return pairs


def _check_threads(threads) -> None:
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"compile: threads must be an int or None, got {type(threads).__name__} "
                        f"{threads!r}")
    if threads < 1:
        raise ValueError(f"compile: threads must be at least 1, got {threads}")


def build_fgraph(inputs, outputs, updates=None, givens=None, no_default_updates: bool = False):
    """Validate the arguments of ``compile`` and build the FunctionGraph it will rewrite.

    Returns ``(fgraph, input_vars, shared_vars, n_outputs, update_targets, single)``; the
    FunctionGraph's outputs are the user outputs followed by the update values, and its
    inputs the declared inputs followed by the shared variables.
    """
    inputs = _input_list(inputs)
    seen = set()
    for i, v in enumerate(inputs):
        if not isinstance(v, Variable):
            raise TypeError(f"compile: inputs[{i}] is a {type(v).__name__}, not a symbolic variable")
        if isinstance(v, SharedVariable):
            raise TypeError(f"compile: inputs[{i}] ({v.label()}) is a shared variable; shared "
                            "variables are implicit inputs, leave them out of the input list")
        if isinstance(v, Constant):
            raise TypeError(f"compile: inputs[{i}] ({v.label()}) is a constant; constants are "
                            "part of the graph, leave them out of the input list")
        if v.owner is not None:
            raise TypeError(f"compile: inputs[{i}] ({v.label()}) is not a graph input "
                            "(it is computed from other values)")
        if id(v) in seen:
            raise ValueError(f"compile: inputs[{i}] ({v.label()}) is listed twice")
        seen.add(id(v))
    outs, single = _as_list(outputs if outputs is not None else [])
    outs = [_symbolic(o, "outputs" if single else f"outputs[{k}]") for k, o in enumerate(outs)]
    pairs = _pairs(updates or [], "updates", "(shared variable, new value)")
    targets, values = [], []
    for k, (target, value) in enumerate(pairs):
        if not isinstance(target, SharedVariable):
            raise TypeError(f"compile: updates[{k}] targets {target!r}, which is not a shared variable")
        if any(t is target for t in targets):
            raise ValueError(f"compile: shared variable {target.label()!r} is updated twice")
        value = _checked_update(target, _symbolic(value, f"the new value of {target.label()!r} "
                                                         f"(updates[{k}])"))
        targets.append(target)
        values.append(value)
    # random streams and similar state advance by default on every call
    for root in [] if no_default_updates else graph_inputs(outs + values):
        default = getattr(root, "default_update", None)
        if default is not None and not any(t is root for t in targets):
            targets.append(root)
            values.append(default)
    all_outputs = outs + values
    if givens:
        mapping = {}
        for old, new in _pairs(givens, "givens", "(variable, replacement)"):
            if not isinstance(old, Variable):
                hint = (f" (pass the variable itself, not its name: {{{old}: ...}})"
                        if isinstance(old, str) else "")
                raise TypeError(f"compile: givens key {old!r} is a {type(old).__name__}, not a "
                                f"symbolic variable{hint}")
            new = _symbolic(new, f"the replacement of {old.label()} in givens")
            if old.ndim != new.ndim:
                raise TypeError(f"givens: {old.label()} has rank {old.ndim}, replacement has {new.ndim}")
            if old.dtype != new.dtype:
                from .ops.elemwise import cast
                new = cast(new, old.dtype)
            mapping[old] = new
        all_outputs = clone_replace(all_outputs, mapping)
    shared = [v for v in graph_inputs(all_outputs) if isinstance(v, SharedVariable)]
    fgraph = FunctionGraph(inputs + shared, all_outputs)
    missing = fgraph.free_inputs()
    if missing:
        names = ", ".join(f"{v.label()} ({v.type})" for v in missing)
        raise CompileError(f"compile: the outputs depend on {names}, which is not among the inputs; "
                           "add it to the input list or provide it with givens")
    return fgraph, inputs, shared, len(outs), targets, single


def _checked_update(target: SharedVariable, value: Variable) -> Variable:
    """The update expression of ``target``, cast to its dtype where that is safe; a static
    shape or a dtype that cannot fit the shared variable raises (with the user's line)."""
    if shape_conflict(target.type.shape, value.type.shape):
        raise ShapeError(f"compile: update of {target.label()!r} has shape "
                         f"{format_shape(value.type.shape)} but the variable has shape "
                         f"{format_shape(target.type.shape)}")
    if value.dtype != target.dtype:
        if not np.can_cast(value.dtype, target.dtype, "safe"):
            raise TypeError(f"compile: update of shared variable {target.label()!r} "
                            f"({target.dtype}) has dtype {value.dtype}, which does not cast "
                            f"safely; write the update as (expr).astype({target.dtype!r}) if "
                            "the loss of range or precision is intended"
                            + format_trace(user_trace()))
        from .ops.elemwise import cast
        value = cast(value, target.dtype)
    return value


def update_shape_error(target: SharedVariable, shape: tuple, trace) -> ShapeError:
    """The error of an update whose run-time shape is not its shared variable's (every backend
    raises it before installing anything); ``trace`` is the line that compiled the function."""
    with executing_graph():  # the message names the compile() line, not the caller's
        return ShapeError(f"update of shared variable {target.label()!r} computed shape "
                          f"{tuple(shape)}, but the variable has shape {format_shape(target.type.shape)}; no "
                          f"shared variable was changed{format_trace(trace)}")


def compile(inputs: Sequence[Variable], outputs=None, updates=None, givens=None,
            backend: str = DEFAULT_BACKEND, trust_input: bool = False, threads: int | None = None,
            profile: bool = False, rewrite: bool = True, check_finite: bool = False,
            no_default_updates: bool = False, fast_math: bool = False) -> CompiledFunction:
    """Compile a graph into a callable on NumPy arrays (see docs/user-guide.md).

    ``check_finite=True`` returns a guard that installs updates only when every result is
    finite and otherwise names the node and line that produced the NaN or infinity
    (``symgraph.debug``). ``no_default_updates=True`` leaves shared variables with a default
    update (random streams) unchanged by calls. ``fast_math=True`` (llvm backend) lets LLVM
    fuse a product and a sum into one FMA: faster elementwise kernels, results that may differ
    from NumPy's in the last bit.
    """
    if backend not in BACKENDS:
        raise ValueError(f"compile: unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
    _check_threads(threads)
    if check_finite:
        from .debug import FiniteGuard
        return FiniteGuard(inputs, outputs, updates, givens, backend, trust_input=trust_input,
                           threads=threads, profile=profile, rewrite=rewrite, fast_math=fast_math)
    return CompiledFunction(inputs, outputs, updates, givens, backend, trust_input, threads,
                            profile, rewrite, no_default_updates, fast_math)


class CompiledFunction(FunctionBase):
    """A compiled graph: call it with NumPy arrays; inspect ``kernels``, ``source()``, ``asm()``."""

    def __init__(self, inputs, outputs, updates, givens, backend, trust_input=False, threads=None,
                 profile=False, rewrite=True, no_default_updates=False, fast_math=False):
        self._args = (_input_list(inputs), outputs, updates, givens, backend, trust_input, threads,
                      profile, rewrite, no_default_updates, fast_math)
        self.compiled_at = user_trace()  # the user's line, for errors raised at call time
        fgraph, self.inputs, self.shared, self.n_outputs, self.update_targets, self.single = \
            build_fgraph(inputs, outputs, updates, givens, no_default_updates)
        self.backend = backend
        self.trust_input = trust_input
        self.profile = profile
        self.nodes_before_rewrite = len(fgraph.nodes)
        self._graph, self._rewrite_pending, self._rewrite_log = fgraph, rewrite, []
        self._graph_lock = threading.Lock()
        self.specs = [InputSpec(v, i) for i, v in enumerate(self.inputs)]
        self.install = Installer(self.update_targets)  # all updates or none
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock", "_graph_lock")
        module = importlib.import_module(BACKENDS[backend])
        # ``built_outputs``: the graph as built (rewriting works on copies), which reports a
        # call-time shape error in the user's terms on every backend (codegen/specialize.py)
        options = {"threads": threads, "profile": profile, "trust_input": trust_input,
                   "n_outputs": self.n_outputs, "built_outputs": list(fgraph.outputs),
                   "fast_math": bool(fast_math)}
        if getattr(module, "WARM_START", False):
            # the backend may find its code by the unrewritten graph's fingerprint, and then
            # rewrites (calls ``_rewritten``) only when it has to lower
            from .graph.fingerprint import fingerprint
            options["graph_key"] = fingerprint(fgraph, (backend, rewrite, profile, self.n_outputs,
                                                        bool(fast_math)))
        graph = self._rewritten if options.get("graph_key") else self._rewritten()
        self.program = module.build(graph, self.inputs + self.shared, options)
        # a backend may provide the whole call path (checks, native call, updates) itself
        make_caller = getattr(self.program, "make_caller", None)
        if any(not s.type.fully_static for s in self.shared):
            make_caller = None  # a backend's call path reads the shared shapes only once
        self._caller = make_caller(self) if make_caller is not None else None

    def _rewritten(self) -> FunctionGraph:
        """The graph after rewriting (done on first use)."""
        if self._rewrite_pending:
            with self._graph_lock:
                if self._rewrite_pending:
                    from .rewrite import rewrite_graph
                    self._rewrite_log = rewrite_graph(self._graph, backend=self.backend)
                    self._rewrite_pending = False
        return self._graph

    @property
    def fgraph(self) -> FunctionGraph:
        """The rewritten graph the backend compiled."""
        return self._rewritten()

    @property
    def rewrite_log(self) -> list:
        """What the rewriter did (rewrites the graph first if a warm start skipped that)."""
        self._rewritten()
        return self._rewrite_log

    # --- calling ------------------------------------------------------------------------
    def _convert(self, args) -> list[np.ndarray]:
        if len(args) != len(self.specs):
            names = ", ".join(s.name for s in self.specs)
            raise TypeError(f"compiled function takes {len(self.specs)} argument"
                            f"{'s' if len(self.specs) != 1 else ''} ({names}), got {len(args)}")
        # trust_input skips nothing here: an exact ndarray of the declared dtype, rank and
        # static dims passes through ``convert`` unchanged at the cost of a few checks, and
        # anything else must be converted or refused (see docs/user-guide.md)
        return [spec.convert(a) for spec, a in zip(self.specs, args)]

    def _bind(self, args: tuple, kwargs: dict) -> tuple:
        """The positional arguments of a call that names inputs: ``f(x=..., y=...)``."""
        names = [s.var.name for s in self.specs]
        if len(args) > len(names):
            self._convert(args)  # raises the TypeError naming the inputs
        missing = object()
        bound = list(args) + [missing] * (len(names) - len(args))
        for key, value in kwargs.items():
            where = [i for i, name in enumerate(names) if name == key]
            if not where:
                known = ", ".join(n for n in names if n) or "none"
                raise TypeError(f"compiled function got an unexpected keyword argument {key!r} "
                                f"(inputs that can be passed by name: {known})")
            if len(where) > 1:
                raise TypeError(f"compiled function: inputs {where} are all named {key!r}; pass "
                                "them by position")
            if bound[where[0]] is not missing:
                raise TypeError(f"compiled function got multiple values for argument {key!r}")
            bound[where[0]] = value
        absent = [self.specs[i].name for i, b in enumerate(bound) if b is missing]
        if absent:
            raise TypeError(f"compiled function missing argument{'s' if len(absent) > 1 else ''} "
                            f"{', '.join(map(repr, absent))}")
        return tuple(bound)

    def _call(self, *args, **kwargs):
        """The generic call path (``FunctionBase.__call__`` runs ``_caller`` instead when the
        backend provided one, unless there are keyword arguments)."""
        if kwargs:
            return self(*self._bind(args, kwargs))
        values = self._convert(args)
        # a backend that keeps shared values on a device reads and updates them itself
        on_device = getattr(self.program, "device_shared", False)
        with executing_graph():
            if self.update_targets:
                with self._lock:
                    roots = values + self._shared_args(on_device)
                    results = self.program(roots)
                    if on_device:
                        self._check_update_shapes(results[self.n_outputs:], on_device=True)
                        self.program.apply_updates(self.update_targets, results[self.n_outputs:])
                    else:
                        self._apply_updates(results[self.n_outputs:])
            else:
                roots = values + self._shared_args(on_device)
                results = self.program(roots)
        outs = self._own(results[:self.n_outputs], roots)
        return outs[0] if self.single else outs

    def _shared_args(self, on_device: bool) -> list:
        return list(self.shared) if on_device else [s._value for s in self.shared]

    @staticmethod
    def _own(results, roots) -> list[np.ndarray]:
        """Outputs the caller may mutate: never a view of an argument, a shared variable's
        storage, a constant, or another output."""
        outs: list[np.ndarray] = []
        for r in results:
            r = np.asarray(r)
            if (not r.flags.owndata or not r.flags.writeable
                    or any(np.may_share_memory(r, v) for v in roots if isinstance(v, np.ndarray))
                    or any(np.may_share_memory(r, o) for o in outs)):
                r = np.array(r, copy=True)
            outs.append(r)
        return outs

    def _check_update_shapes(self, new_values, on_device: bool = False) -> None:
        """Raise before anything is installed when an update has the wrong shape (a value a
        device holds is the device backend's to check)."""
        for target, value in zip(self.update_targets, new_values):
            if on_device and not isinstance(value, np.ndarray):
                continue
            shape = np.shape(value)
            if shape_conflict(target.type.shape, shape):
                raise update_shape_error(target, shape, self.compiled_at)

    def _apply_updates(self, new_values) -> None:
        """Check every update, copy it, then install all of them at once (all or nothing)."""
        self._check_update_shapes(new_values)
        fresh = [np.array(v, dtype=t.dtype, order="C", copy=True)
                 for t, v in zip(self.update_targets, new_values)]
        self.install(fresh)

    # --- inspection ---------------------------------------------------------------------
    @property
    def kernels(self):
        return self.program.kernels

    def source(self) -> str:
        return self.program.source()

    def asm(self) -> str:
        return self.program.asm()

    def stats(self) -> list[dict]:
        if not self.profile:
            raise RuntimeError("compile with profile=True to record per-kernel statistics")
        return [{"kernel": k.name, **k.stats} for k in self.kernels]

    def export(self, path, kind: str | None = None, example_inputs=None, name: str | None = None,
               **options):
        """Write a native library + C header of this function (llvm backend: ``target=``,
        ``threads=``, ``kind`` "shared" / "static" / "object"; see docs/deployment.md)."""
        export = getattr(self.program, "export", None)
        if export is None:
            raise CompileError(f"the {self.backend} backend cannot export")
        if kind is not None:
            options["kind"] = kind
        return export(self, path, example_inputs=example_inputs, name=name, **options)

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.specs)
        return f"<CompiledFunction({names}) backend={self.backend} nodes={len(self.fgraph.nodes)}>"

    # --- pickling: rebuild from the original graph (shared values travel with it) --------
    def __getstate__(self):
        return {"args": self._args}

    def __setstate__(self, state):
        self.__init__(*state["args"])
