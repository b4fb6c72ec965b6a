"""Random programs over the registry's op kinds, replayed in symgraph and in PyTorch, and the
comparison of their values, gradients and Hessian-vector products.

A :class:`Program` is a recorded DAG: graph inputs (NumPy arrays, some dims hidden as ``None``
on the symgraph side) and steps ``(op kind, params, argument ids)``.  The hypothesis strategy
:func:`programs` draws one, running the torch twins eagerly in float64 as it goes to learn the
shapes; :func:`check_program` then builds it in both libraries and compares.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st

import symgraph as sg

from .registry import REGISTRY, Operand, any_shape

# what the session checked, for the closing summary (conftest.py prints it)
STATS: Counter = Counter()
KINDS_SEEN: set[str] = set()

FLOATS = ("float32", "float64")
# values rtol, values atol (times the output's scale), gradient rtol, gradient atol (same)
TOLERANCE = {"float32": (2e-4, 2e-5, 3e-3, 3e-4), "float64": (1e-7, 1e-9, 1e-6, 1e-8)}


def specials(dtype: str) -> np.ndarray:
    """The special values injected into some inputs: infinities, NaN, -0.0, tiny, huge."""
    tiny, huge = (1e-38, 1e30) if dtype == "float32" else (1e-300, 1e300)
    return np.array([np.inf, -np.inf, np.nan, -0.0, tiny, -tiny, huge, -huge], dtype=dtype)


@dataclass
class Input:
    name: str
    value: np.ndarray
    hidden: tuple = ()

    @property
    def is_float(self) -> bool:
        return self.value.dtype.kind == "f"


@dataclass
class Step:
    op: str
    params: dict
    args: tuple
    shape: tuple = ()  # the result's shape


@dataclass
class Program:
    """A recorded random graph: its nodes (inputs and steps) in creation order; a step's
    arguments are node indices."""
    dtype: str
    special: bool = False
    seed: int = 0
    nodes: list[Input | Step] = field(default_factory=list)

    @property
    def inputs(self) -> list[Input]:
        return [n for n in self.nodes if isinstance(n, Input)]

    @property
    def steps(self) -> list[Step]:
        return [n for n in self.nodes if isinstance(n, Step)]

    def ops(self) -> set[str]:
        return {s.op for s in self.steps}

    def shape_of(self, vid: int) -> tuple:
        n = self.nodes[vid]
        return n.value.shape if isinstance(n, Input) else n.shape

    def steps_of(self, op: str) -> list[tuple[Step, list[tuple]]]:
        """The steps of kind ``op``, each with its arguments' shapes."""
        return [(s, [self.shape_of(a) for a in s.args]) for s in self.steps if s.op == op]

    def hides_dims(self) -> bool:
        return any(any(i.hidden) for i in self.inputs)

    def describe(self) -> str:
        """A readable listing to reproduce a failure by hand."""
        lines = [f"dtype={self.dtype} special={self.special}"]
        for k, n in enumerate(self.nodes):
            if isinstance(n, Input):
                lines.append(f"  v{k} = input {n.name} {n.value.dtype}{list(n.value.shape)} hidden={n.hidden}"
                             f" values={np.array2string(n.value.ravel()[:12], precision=17)}")
            else:
                params = {a: b for a, b in n.params.items() if a != "raw"}
                lines.append(f"  v{k} = {n.op}({', '.join(f'v{a}' for a in n.args)}) {params}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# drawing

class _Builder:
    """Grows a Program step by step, keeping each value's float64 torch result for its shape."""

    def __init__(self, draw, dtype: str, special: bool, ties: bool, seed: int):
        self.draw, self.special, self.ties = draw, special, ties
        self.rng = np.random.default_rng(seed)
        self.prog = Program(dtype, special, seed)
        self.values: list[torch.Tensor] = []
        self.terminal: list[bool] = []

    def new_input(self, shape: tuple, dtype: str | None = None, ints=None) -> int:
        dtype = "int64" if ints else dtype or self.prog.dtype
        if ints:
            value = self.rng.integers(ints[0], ints[1] + 1, size=shape).astype(dtype)
        else:
            value = self.rng.uniform(-2.0, 2.0, size=shape)
            if self.ties:  # exact ties and zeros: where sub-gradient conventions matter
                value = np.round(value * 2) / 2
            value = value.astype(dtype)
            if self.special and value.size:
                hit = self.rng.random(shape) < 0.3
                value[hit] = self.rng.choice(specials(dtype), size=int(hit.sum()))
        self.prog.nodes.append(Input(f"x{len(self.prog.inputs)}", value))
        self.values.append(torch.as_tensor(value).to(torch.int64 if ints else torch.float64))
        self.terminal.append(bool(ints))
        return len(self.values) - 1

    def usable(self, vid: int, leaf: bool) -> bool:
        return not self.terminal[vid] and self.values[vid].is_floating_point() and \
            (not leaf or isinstance(self.prog.nodes[vid], Input))

    def operand(self, o: Operand) -> int:
        if o.ints:
            return self.new_input(o.shape, ints=o.ints)
        same = [v for v in range(len(self.values)) if self.usable(v, o.leaf or o.dtype is not None)
                and tuple(self.values[v].shape) == o.shape
                and (o.dtype is None or self.input_dtype(v) == o.dtype)]
        if same and self.draw(st.booleans()):
            return self.draw(st.sampled_from(same))
        return self.new_input(o.shape, o.dtype)

    def input_dtype(self, vid: int) -> str:
        """The dtype of input ``vid`` (an operand with a required dtype is always an input)."""
        return self.prog.nodes[vid].value.dtype.name

    def add_step(self, name: str) -> None:
        op = REGISTRY[name]
        draw = self.draw
        eligible = [v for v in range(len(self.values)) if self.usable(v, op.leaf_only)
                    and op.accepts(tuple(self.values[v].shape))]
        if eligible and draw(st.integers(0, 3)):
            first = draw(st.sampled_from(eligible))
        else:
            shape = op.fresh(draw) if op.fresh else any_shape(draw)
            if not op.accepts(shape):
                return
            first = self.new_input(shape)
        plan = op.plan(draw, tuple(self.values[first].shape))
        if plan is None:
            return
        args = [first]
        for o in plan.operands:
            args.append(self.operand(o))
        params = dict(plan.params, raw=self.special)
        try:
            out = op.twin([self.values[a] for a in args], params)
        except (RuntimeError, ValueError, IndexError):  # torch rejects this combination
            return
        self.prog.nodes.append(Step(name, params, tuple(args), tuple(out.shape)))
        self.values.append(out.detach())
        self.terminal.append(op.terminal)

    def finish(self) -> Program:
        static = any(REGISTRY[s.op].needs_static for s in self.prog.steps)
        hide = not static and self.draw(st.booleans())
        for i in self.prog.inputs:
            n = i.value.ndim
            i.hidden = tuple(self.draw(st.booleans()) for _ in range(n)) if hide else (False,) * n
        return self.prog


@st.composite
def programs(draw, kinds: tuple[str, ...], max_ops: int = 5, special: bool = False,
             first: str | None = None, dtypes: tuple[str, ...] = FLOATS) -> Program:
    """A random Program of 1..``max_ops`` steps drawn from ``kinds`` (``first`` leads)."""
    b = _Builder(draw, draw(st.sampled_from(dtypes)), special,
                 ties=not special and draw(st.integers(0, 3)) == 0,
                 seed=draw(st.integers(0, 2 ** 32 - 1)))
    n = draw(st.integers(1, max_ops))
    for k in range(n):
        b.add_step(first if k == 0 and first else draw(st.sampled_from(kinds)))
    if first:
        assume(any(s.op == first for s in b.prog.steps))
    assume(b.prog.steps)
    return b.finish()


# ---------------------------------------------------------------------------------------------
# replay

def replay(prog: Program, make_input, lib: str):
    """Every node's value, inputs made by ``make_input``, steps by the ``lib`` side of their kind."""
    values = []
    for n in prog.nodes:
        if isinstance(n, Input):
            values.append(make_input(n))
        else:
            op = REGISTRY[n.op]
            args = [values[a] for a in n.args]
            if lib == "symgraph":
                values.append(op.build(args, n.params))
            else:
                values.append(op.twin(promoted(args) if op.promotes else args, n.params))
    return values


def promoted(args: list) -> list:
    """Float torch operands cast to their common dtype by NumPy's rule: torch treats a 0-d
    tensor as weakly typed (float32 with a float64 0-d stays float32), and its matmul and
    convolutions want one dtype."""
    floats = {a.dtype for a in args if a.is_floating_point()}
    if len(floats) < 2:
        return args
    return [a.to(torch.float64) if a.is_floating_point() else a for a in args]


def split(prog: Program, values: list) -> tuple[list, list]:
    """(input values, step values) of a replay."""
    is_input = [isinstance(n, Input) for n in prog.nodes]
    return [v for v, i in zip(values, is_input) if i], [v for v, i in zip(values, is_input) if not i]


def build_symgraph(prog: Program):
    """The program's symgraph inputs and every step's value."""
    def make(i: Input):
        return sg.tensor(i.name, tuple(None if h else d for d, h in zip(i.value.shape, i.hidden)),
                         i.value.dtype.name)
    return split(prog, replay(prog, make, "symgraph"))


def build_torch(prog: Program, as_float64: bool):
    """The program's torch leaves and every step's value: in float64 (the float leaves then
    require grad) or in the program's own dtypes."""
    def make(i: Input):
        t = torch.as_tensor(i.value.copy())
        return t.to(torch.float64).requires_grad_(True) if i.is_float and as_float64 else t
    return split(prog, replay(prog, make, "torch"))


def differentiable(prog: Program) -> list[int]:
    """Indices of the steps whose values enter the cost: float, non-terminal outputs."""
    return [k for k, s in enumerate(prog.steps) if not REGISTRY[s.op].terminal]


def weights(prog: Program, shapes: list[tuple]) -> list[np.ndarray]:
    """The random projection of each differentiable output (the same in both libraries)."""
    rng = np.random.default_rng(prog.seed + 1)
    return [np.round(rng.uniform(-1, 1, size=s) * 8) / 8 for s in shapes]


def directions(prog: Program) -> list[np.ndarray]:
    """The Hessian-vector product's direction for each float input."""
    rng = np.random.default_rng(prog.seed + 2)
    return [np.round(rng.uniform(-1, 1, size=i.value.shape) * 8) / 8 for i in prog.inputs if i.is_float]


def torch_results(prog: Program, hvp: bool):
    """Values in the program's own dtypes; gradients (and Hessian-vector products) in float64."""
    with torch.no_grad():
        _, same = build_torch(prog, as_float64=False)
    values = [_numpy(v) for v in same]
    leaves, outs = build_torch(prog, as_float64=True)
    float_leaves = [t for t in leaves if t.requires_grad]
    diff = differentiable(prog)
    ws = weights(prog, [tuple(outs[k].shape) for k in diff])
    if not diff or not float_leaves:
        return values, None, None
    cost = sum((outs[k] * torch.as_tensor(w)).sum() for k, w in zip(diff, ws))
    if not cost.requires_grad:
        zeros = [np.zeros(t.shape) for t in float_leaves]
        return values, zeros, zeros if hvp else None
    grads = torch.autograd.grad(cost, float_leaves, allow_unused=True, create_graph=hvp)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, float_leaves)]
    hv = _torch_hvp(prog, grads, float_leaves) if hvp else None
    return values, [_numpy(g) for g in grads], hv


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy(force=True)  # force: autograd may hand back a lazy zero tensor


def _torch_hvp(prog: Program, grads: list, leaves: list) -> list[np.ndarray]:
    """Double backward: the gradient of ``sum(grad_i * v_i)``."""
    gv = sum((g * torch.as_tensor(v)).sum() for g, v in zip(grads, directions(prog)))
    if not gv.requires_grad:
        return [np.zeros(t.shape) for t in leaves]
    hv = torch.autograd.grad(gv, leaves, allow_unused=True)
    return [np.zeros(t.shape) if h is None else _numpy(h) for h, t in zip(hv, leaves)]


def symgraph_function(prog: Program, backend: str, hvp: bool, shapes: list[tuple]):
    """Compile the program's values, the gradients of the projected cost and (with ``hvp``)
    the Hessian-vector products; ``backend`` is a backend's name, ``:norewrite`` appended to
    compile with ``rewrite=False``."""
    inputs, outs = build_symgraph(prog)
    float_inputs = [v for v, i in zip(inputs, prog.inputs) if i.is_float]
    diff = differentiable(prog)
    extra = []
    if diff and float_inputs:
        ws = weights(prog, [shapes[k] for k in diff])
        cost = sum((outs[k] * sg.constant(w.astype(outs[k].dtype))).sum() for k, w in zip(diff, ws))
        grads = sg.grad(cost, float_inputs, disconnected="ignore")
        extra = list(grads)
        if hvp:
            gv = sum((g * sg.constant(v.astype(g.dtype))).sum() for g, v in zip(grads, directions(prog)))
            extra += list(sg.grad(gv, float_inputs, disconnected="ignore"))
    name, _, mode = backend.partition(":")
    return sg.compile(inputs, list(outs) + extra, backend=name, rewrite=mode != "norewrite")


# ---------------------------------------------------------------------------------------------
# comparing

def assert_same(got, want, rtol: float, atol: float, what: str) -> None:
    """Same shape; integers and bools equal; floats: NaN where torch has NaN, the same
    infinities, finite values close (``atol`` is relative to the largest finite value)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch's {want.shape}"
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    bad_nan = np.isnan(got) != np.isnan(want)
    assert not bad_nan.any(), f"{what}: NaN mismatch at {np.argwhere(bad_nan)[:4].tolist()}\n" \
                              f"got {got[bad_nan][:4]} want {want[bad_nan][:4]}"
    inf = np.isinf(want) | np.isinf(got)
    assert np.array_equal(got[inf], want[inf]), f"{what}: infinities differ: got {got[inf][:6]} " \
                                                f"want {want[inf][:6]}"
    fin = np.isfinite(want)
    scale = max(1.0, float(np.abs(want[fin]).max())) if fin.any() else 1.0
    np.testing.assert_allclose(got[fin].astype(np.float64), want[fin].astype(np.float64), rtol=rtol,
                               atol=atol * scale, err_msg=what)


def lowest_precision(prog: Program) -> str:
    return "float32" if any(i.value.dtype == np.float32 for i in prog.inputs) else "float64"


def check_program(prog: Program, backends: tuple[str, ...], grads: bool = True, hvp: bool = False,
                  skip=lambda prog, backend: None) -> None:
    """Build ``prog`` in symgraph (each backend) and torch and compare everything; ``skip``
    names the known defect a (program, backend) pair runs into, if any, to skip it."""
    values, tgrads, thv = torch_results(prog, hvp)
    if not grads or prog.special and not _grad_comparable(values, tgrads):
        tgrads = thv = None
    shapes = [tuple(v.shape) for v in values]
    for backend in backends:
        item = skip(prog, backend)
        if item:
            STATS[f"skipped: {item}"] += 1
            continue
        f = symgraph_function(prog, backend, hvp and thv is not None, shapes)
        got = f(*[i.value for i in prog.inputs])
        got = got if isinstance(got, list) else [got]
        _compare(prog, backend, got, values, tgrads, thv)
        STATS["compiled functions"] += 1
    STATS["graphs"] += 1
    STATS["nodes"] += len(prog.steps)
    KINDS_SEEN.update(prog.ops())


def _grad_comparable(values, tgrads) -> bool:
    """With special inputs, gradients are compared only where everything stays finite."""
    finite = all(np.isfinite(v).all() for v in values if v.dtype.kind == "f")
    return finite and tgrads is not None and all(np.isfinite(g).all() for g in tgrads)


def _compare(prog, backend, got, values, tgrads, thv) -> None:
    rt_v, at_v, rt_g, at_g = TOLERANCE[lowest_precision(prog)]
    where = f"backend={backend}\n{prog.describe()}"
    ids = [k for k, node in enumerate(prog.nodes) if isinstance(node, Step)]
    n = len(ids)
    for k, g, w in zip(ids, got[:n], values):
        what = f"v{k} ({prog.nodes[k].op})"
        assert str(g.dtype) == str(w.dtype), f"{what}: dtype {g.dtype} != torch's {w.dtype}\n{where}"
        assert_same(g, w, rt_v, at_v, f"value {what}\n{where}")
    rest = got[n:]
    if tgrads is None:
        return
    names = [i.name for i in prog.inputs if i.is_float]
    for name, g, w in zip(names, rest, tgrads):
        assert_same(g, w, rt_g, at_g, f"gradient wrt {name}\n{where}")
    if thv is not None:
        for name, g, w in zip(names, rest[len(names):], thv):
            assert_same(g, w, rt_g * 10, at_g * 10, f"Hessian-vector product wrt {name}\n{where}")
