"""The op kinds of the differential test, each with its PyTorch twin.

An :class:`OpKind` knows how to build one symgraph node (``build``), how to compute the same
thing with torch (``twin``), and how to draw the parameters and the other operands' shapes for
a given first operand (``plan``).  ``REGISTRY`` maps every kind's name to it; ``covers`` lists
the public symgraph names a kind exercises, so a test can check that every public op has a
twin.  Twins follow symgraph's documented semantics where they are a convention (``maximum``
sends the gradient of a tie to its first argument; ``max_pool2d`` to the first maximum).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import symgraph as sg

Draw = Callable[[st.SearchStrategy], Any]


@dataclass(frozen=True)
class Operand:
    """A further operand an op needs: a float value of ``shape`` (the graph's dtype unless
    ``dtype``), a graph input when ``leaf``, or an integer input with values in ``ints``."""
    shape: tuple
    dtype: str | None = None
    leaf: bool = False
    ints: tuple[int, int] | None = None


@dataclass
class Plan:
    """What ``OpKind.plan`` decided: the op's parameters and its further operands."""
    params: dict = field(default_factory=dict)
    operands: list[Operand] = field(default_factory=list)


@dataclass(frozen=True)
class OpKind:
    """One kind of node in the random graphs, with its torch twin (see the module docstring)."""
    name: str
    family: str
    covers: tuple[str, ...]
    build: Callable[..., Any]           # build(args, params) -> symgraph value
    twin: Callable[..., Any]            # twin(args, params) -> torch tensor
    plan: Callable[[Draw, tuple], Plan | None]
    fresh: Callable[[Draw], tuple] | None = None  # shape of a new first operand (default: any)
    accepts: Callable[[tuple], bool] = lambda shape: True
    leaf_only: bool = False             # discontinuous in its operands: they are graph inputs
    terminal: bool = False              # integer/bool output, or no gradient: never an operand
    special: bool = False               # takes inf/nan/-0.0/tiny/huge inputs (value check)
    needs_static: bool = False          # needs static shapes (no dims hidden as None)
    promotes: bool = True               # the result's dtype is the operands' common dtype


REGISTRY: dict[str, OpKind] = {}


def register(kind: OpKind) -> None:
    assert kind.name not in REGISTRY, kind.name
    REGISTRY[kind.name] = kind


# ---------------------------------------------------------------------------------------------
# shapes

SIDES = (1, 2, 3, 4, 5)


def any_shape(draw: Draw, min_dims: int = 0, max_dims: int = 4, zero: bool = True) -> tuple:
    """A small shape; sides 1-5, and now and then a 0 where ``zero``."""
    n = draw(st.integers(min_dims, max_dims))
    sides = st.sampled_from(SIDES + ((0,) if zero else ()))
    shape = tuple(draw(sides) for _ in range(n))
    while int(np.prod(shape)) > 96:
        shape = tuple(max(1, d // 2) for d in shape)
    return shape


def broadcast_partner(draw: Draw, shape: tuple) -> tuple:
    """A shape that broadcasts with ``shape``: per dim the same size or 1, with leading dims
    dropped or added."""
    dims = [d if draw(st.integers(0, 3)) else 1 for d in shape]
    if dims and draw(st.booleans()):
        dims = dims[draw(st.integers(0, len(dims))):]
    elif len(dims) < 4 and draw(st.integers(0, 3)) == 0:
        dims = [draw(st.sampled_from((1, 2)))] + dims
    if dims and 1 in shape and draw(st.booleans()):  # a 1 of ``shape`` meets a larger size
        i = len(dims) - len(shape) + shape.index(1)
        if i >= 0:
            dims[i] = draw(st.sampled_from((2, 3)))
    return tuple(dims)


def draw_axes(draw: Draw, ndim: int, single: bool = False):
    """An axis argument: None, an int, or (not ``single``) a tuple, negative entries too."""
    choices = ["none"] + (["int"] if ndim else []) + (["tuple"] if ndim and not single else [])
    kind = draw(st.sampled_from(choices))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def norm_axes(axis, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return tuple(sorted(a % ndim for a in axes))


def reduced_size_positive(shape, axis) -> bool:
    return all(shape[a] > 0 for a in norm_axes(axis, len(shape)))


# ---------------------------------------------------------------------------------------------
# domains: the same transform in both libraries keeps an operand where the op is defined
# (skipped for special-value examples, which test the raw op)

def _pos(lib, x):
    return lib.abs(x) + 0.5


def _nonzero(lib, x):
    return lib.where(x >= 0, x + 0.5, x - 0.5)


def _trig_range(lib, x):
    """Finite |x| > 1e6 clamped to 1e6: docs/math-accuracy.md documents that the llvm backend's
    sin and cos give nan beyond 6.5e6 (float32) where NumPy still reduces the argument."""
    big = lib.abs(x) > 1e6
    return lib.where(big, lib.where(lib.abs(x) < np.inf, lib.sign(x) * 1e6, x), x)


def domain(kind: str | None, lib, x, params):
    if kind == "trig":  # a documented limit, so also for the special values
        return _trig_range(lib, x)
    if kind is None or params.get("raw"):
        return x
    if kind == "pos":
        return _pos(lib, x)
    if kind == "nonneg":
        return lib.abs(x)
    if kind == "nonzero":
        return _nonzero(lib, x)
    if kind == "unit":
        return lib.sigmoid(x)
    raise ValueError(kind)


def no_plan(draw: Draw, shape: tuple) -> Plan:
    return Plan()


# ---------------------------------------------------------------------------------------------
# elementwise

def unary(name, sg_fn, torch_fn, dom=None, params=None, covers=None, **flags) -> None:
    """Register a one-operand elementwise kind; ``params`` draws keyword arguments."""
    def build(a, p):
        return sg_fn(domain(dom, sg, a[0], p), **p.get("kw", {}))

    def twin(a, p):
        return torch_fn(domain(dom, torch, a[0], p), **p.get("kw", {}))

    def plan(draw, shape):
        return Plan({"kw": params(draw) if params else {}})

    flags.setdefault("special", True)
    register(OpKind(name, "elementwise", covers or (f"sg.{name}",), build, twin, plan, **flags))


def _gelu_t(x, approximate):
    return F.gelu(x, approximate="tanh" if approximate else "none")


def _cast_plan(draw):
    return {"dtype": draw(st.sampled_from(["float32", "float64"]))}


unary("exp", sg.exp, torch.exp)
unary("log", sg.log, torch.log, "pos")
unary("log1p", sg.log1p, torch.log1p, "nonneg")
unary("expm1", sg.expm1, torch.expm1)
unary("sqrt", sg.sqrt, torch.sqrt, "pos")
unary("square", sg.square, torch.square)
unary("abs", sg.abs, torch.abs, covers=("sg.abs", "Variable.__abs__"))
unary("neg", operator.neg, torch.neg, covers=("Variable.__neg__",))
unary("sign", sg.sign, lambda x: torch.where(torch.isnan(x), x, torch.sign(x)),  # NumPy: sign(nan) is nan
      leaf_only=True)
unary("floor", sg.floor, torch.floor, leaf_only=True)
unary("ceil", sg.ceil, torch.ceil, leaf_only=True)
unary("tanh", sg.tanh, torch.tanh, covers=("sg.tanh", "sg.nn.tanh"))
unary("sigmoid", sg.sigmoid, torch.sigmoid, covers=("sg.sigmoid", "sg.nn.sigmoid"))
unary("softplus", sg.softplus, F.softplus, covers=("sg.softplus", "sg.nn.softplus"))
unary("relu", sg.relu, F.relu, covers=("sg.relu", "sg.nn.relu"))
unary("leaky_relu", lambda x, alpha: sg.leaky_relu(x, alpha), lambda x, alpha: F.leaky_relu(x, alpha),
      params=lambda d: {"alpha": d(st.sampled_from([0.01, 0.2, 1.5]))},
      covers=("sg.leaky_relu", "sg.nn.leaky_relu"))
unary("elu", lambda x, alpha: sg.elu(x, alpha), lambda x, alpha: F.elu(x, alpha),
      params=lambda d: {"alpha": d(st.sampled_from([1.0, 0.5]))}, covers=("sg.elu", "sg.nn.elu"))
unary("gelu", lambda x, approximate: sg.gelu(x, approximate), _gelu_t,
      params=lambda d: {"approximate": d(st.booleans())}, covers=("sg.gelu", "sg.nn.gelu"))
unary("erf", sg.erf, torch.erf)
unary("sin", sg.sin, torch.sin, "trig")
unary("cos", sg.cos, torch.cos, "trig")
unary("cast", lambda x, dtype: x.astype(dtype) if dtype == "float64" else sg.cast(x, dtype),
      lambda x, dtype: x.to(getattr(torch, dtype)), params=_cast_plan,
      covers=("sg.cast", "Variable.astype"))
unary("stop_gradient", sg.stop_gradient, torch.Tensor.detach)

MISH = sg.elementwise(lambda x: x * sympy.tanh(sympy.log(1 + sympy.exp(x))), name="mish")
BUMP = sg.elementwise(lambda x, y: x * sympy.exp(-y ** 2) + sympy.sinh(y) / 4, name="bump")
unary("elementwise.mish", MISH, F.mish, covers=("sg.elementwise",))


def binary(name, sg_fn, torch_fn, dom_b=None, dom_a=None, covers=None, **flags) -> None:
    """Register a two-operand elementwise kind; the second operand broadcasts with the first
    and may be of the other float dtype."""
    def build(a, p):
        return sg_fn(domain(dom_a, sg, a[0], p), domain(dom_b, sg, a[1], p))

    def twin(a, p):
        return torch_fn(domain(dom_a, torch, a[0], p), domain(dom_b, torch, a[1], p))

    leaf = flags.get("leaf_only", False)

    def plan(draw, shape):
        dtype = draw(st.sampled_from([None] * 5 + ["float32", "float64"]))
        return Plan({}, [Operand(broadcast_partner(draw, shape), dtype, leaf)])

    flags.setdefault("special", True)
    register(OpKind(name, "elementwise", covers or (f"sg.{name}",), build, twin, plan, **flags))


def _max_t(a, b):
    """torch.maximum's values; the gradient of a tie goes to ``a`` (symgraph's rule)."""
    nan = torch.isnan(a) | torch.isnan(b)
    return torch.where(nan, a + b, torch.where(a >= b, a, b))


def _min_t(a, b):
    nan = torch.isnan(a) | torch.isnan(b)
    return torch.where(nan, a + b, torch.where(a <= b, a, b))


binary("add", operator.add, torch.add, covers=("sg.add", "Variable.__add__"))
binary("sub", operator.sub, torch.sub, covers=("sg.sub", "Variable.__sub__"))
binary("mul", sg.mul, torch.mul, covers=("sg.mul", "Variable.__mul__"))
binary("divide", operator.truediv, torch.div, "nonzero", covers=("sg.divide", "Variable.__truediv__"))
binary("floor_divide", operator.floordiv, lambda a, b: torch.div(a, b, rounding_mode="floor"),
       "nonzero", covers=("Variable.__floordiv__",), leaf_only=True)
binary("mod", operator.mod, torch.remainder, "nonzero", covers=("Variable.__mod__",), leaf_only=True)
binary("power", sg.power, torch.pow, dom_a="pos", covers=("sg.power", "Variable.__pow__"))
binary("maximum", sg.maximum, _max_t)
binary("minimum", sg.minimum, _min_t)
binary("elementwise.bump", BUMP, lambda x, y: x * torch.exp(-y ** 2) + torch.sinh(y) / 4,
       covers=("sg.elementwise",))
for _name, _op, _t in [("eq", sg.eq, torch.eq), ("neq", sg.neq, torch.ne), ("lt", operator.lt, torch.lt),
                       ("le", operator.le, torch.le), ("gt", operator.gt, torch.gt),
                       ("ge", sg.ge, torch.ge)]:
    binary(_name, _op, _t, covers=(f"sg.{_name}",), leaf_only=True, terminal=True)


def _int_power_plan(draw, shape):
    return Plan({"k": draw(st.sampled_from([0, 1, 2, 3, -1, -2, 0.5, 2.0]))})


def _int_power_dom(p):
    return "pos" if p["k"] == 0.5 else "nonzero" if p["k"] < 0 else None


register(OpKind(
    "power_scalar", "elementwise", ("Variable.__pow__",),
    lambda a, p: domain(_int_power_dom(p), sg, a[0], p) ** p["k"],
    lambda a, p: domain(_int_power_dom(p), torch, a[0], p) ** p["k"], _int_power_plan, special=True))


def _where_plan(draw, shape):
    return Plan({}, [Operand(broadcast_partner(draw, shape)),
                     Operand(broadcast_partner(draw, shape), leaf=True)])


register(OpKind("where", "elementwise", ("sg.where",),
                lambda a, p: sg.where(a[2] > 0, a[0], a[1]),
                lambda a, p: torch.where(a[2] > 0, a[0], a[1]), _where_plan, special=True))


def _clip_plan(draw, shape):
    lo = draw(st.sampled_from([-1.0, -0.5, 0.0]))
    return Plan({"lo": lo, "hi": lo + draw(st.sampled_from([0.0, 0.5, 1.5]))})


register(OpKind("clip", "elementwise", ("sg.clip",),
                lambda a, p: sg.clip(a[0], p["lo"], p["hi"]),
                lambda a, p: torch.clamp(a[0], p["lo"], p["hi"]), _clip_plan, special=True))


# ---------------------------------------------------------------------------------------------
# reductions

def _torch_reduce(fn: Callable, x, axis, keepdims: bool, **kw):
    """``fn(x, dim=axes, keepdim=...)`` with NumPy's axis conventions (None: all axes)."""
    axes = norm_axes(axis, x.ndim)
    if not axes:  # a 0-d tensor
        return fn(x.reshape(1), dim=(0,), keepdim=False, **kw).reshape(())
    return fn(x, dim=axes, keepdim=keepdims, **kw)


def _prod_t(x, dim, keepdim):
    for a in sorted(dim, reverse=True):
        x = torch.prod(x, dim=a, keepdim=keepdim)
    return x


def _lse_t(x, dim, keepdim):
    return torch.logsumexp(x, dim=dim, keepdim=keepdim)


def reduction(name, sg_fn, torch_fn, nonempty=False, ddof=False, covers=None, **flags) -> None:
    """Register a reduction with an axis (None, int or tuple) and keepdims."""
    def build(a, p):
        kw = {"ddof": p["ddof"]} if ddof else {}
        if p["method"]:
            return getattr(a[0], name)(axis=p["axis"], keepdims=p["keepdims"])
        return sg_fn(a[0], p["axis"], p["keepdims"], **kw)

    def twin(a, p):
        kw = {"correction": p["ddof"]} if ddof else {}
        return _torch_reduce(torch_fn, a[0], p["axis"], p["keepdims"], **kw)

    def plan(draw, shape):
        axis = draw_axes(draw, len(shape))
        if nonempty and not reduced_size_positive(shape, axis):
            return None
        method = not ddof and name in ("sum", "mean", "max", "min", "prod") and draw(st.booleans())
        return Plan({"axis": axis, "keepdims": draw(st.booleans()), "method": method,
                     "ddof": draw(st.sampled_from([0, 1])) if ddof else 0})

    flags.setdefault("special", True)
    register(OpKind(name, "reduction", covers or (f"sg.{name}", f"Variable.{name}"), build, twin, plan,
                    **flags))


reduction("sum", sg.sum, torch.sum)
reduction("mean", sg.mean, torch.mean)
reduction("prod", sg.prod, _prod_t)
reduction("max", sg.max, torch.amax, nonempty=True)
reduction("min", sg.min, torch.amin, nonempty=True)
reduction("logsumexp", sg.logsumexp, _lse_t, covers=("sg.logsumexp",))
reduction("var", sg.var, torch.var, ddof=True, covers=("sg.var",))
reduction("std", sg.std, torch.std, ddof=True, covers=("sg.std",))


def _arg_plan(draw, shape):
    axis = draw_axes(draw, len(shape), single=True)
    if not reduced_size_positive(shape, axis) or (axis is None and 0 in shape):
        return None
    return Plan({"axis": axis, "keepdims": draw(st.booleans()), "method": draw(st.booleans())})


def _arg_twin(fn):
    def twin(a, p):
        x, axis = a[0], p["axis"]
        if axis is None and p["keepdims"]:  # NumPy: every axis kept as 1
            return fn(x.reshape(-1)).reshape((1,) * x.ndim)
        return fn(x, dim=axis, keepdim=p["keepdims"]) if axis is not None else fn(x)
    return twin


def _arg_build(name):
    def build(a, p):
        if p["method"] and name == "argmax":
            return a[0].argmax(axis=p["axis"], keepdims=p["keepdims"])
        return getattr(sg, name)(a[0], p["axis"], p["keepdims"])
    return build


for _name, _fn in [("argmax", torch.argmax), ("argmin", torch.argmin)]:
    register(OpKind(_name, "reduction", (f"sg.{_name}", "Variable.argmax"), _arg_build(_name),
                    _arg_twin(_fn), _arg_plan, leaf_only=True, terminal=True, special=True))


# ---------------------------------------------------------------------------------------------
# linear algebra

def _matmul_plan(draw, shape):
    if not shape:
        return None
    k = shape[-1]
    if len(shape) >= 2 and draw(st.integers(0, 3)) == 0 or len(shape) == 1 and draw(st.booleans()):
        return Plan({"op": draw(st.booleans())}, [Operand((k,))])
    m = draw(st.sampled_from((1, 2, 3)))
    batch = broadcast_partner(draw, shape[:-2]) if len(shape) > 2 else \
        tuple(draw(st.sampled_from((1, 2))) for _ in range(draw(st.integers(0, 1))))
    return Plan({"op": draw(st.booleans())}, [Operand(batch + (k, m))])


def _dot_plan(draw, shape):
    if not shape:
        return Plan({}, [Operand(any_shape(draw, 0, 2))])
    k = shape[-1]
    return Plan({}, [Operand((k,) if draw(st.booleans()) else (k, draw(st.sampled_from((1, 3)))))])


register(OpKind("matmul", "linalg", ("sg.matmul", "Variable.__matmul__"),
                lambda a, p: a[0] @ a[1] if p["op"] else sg.matmul(a[0], a[1]),
                lambda a, p: torch.matmul(a[0], a[1]), _matmul_plan,
                accepts=lambda s: len(s) >= 1))
register(OpKind("dot", "linalg", ("sg.dot",), lambda a, p: sg.dot(a[0], a[1]),
                lambda a, p: a[0] * a[1] if a[0].ndim == 0 or a[1].ndim == 0 else torch.matmul(a[0], a[1]),
                _dot_plan, accepts=lambda s: len(s) <= 3))
register(OpKind("outer", "linalg", ("sg.outer",), lambda a, p: sg.outer(a[0], a[1]),
                lambda a, p: torch.outer(a[0].reshape(-1), a[1].reshape(-1)),
                lambda draw, shape: Plan({}, [Operand(any_shape(draw, 0, 2))]),
                accepts=lambda s: int(np.prod(s)) <= 12))


# ---------------------------------------------------------------------------------------------
# shapes

def _factor(draw: Draw, size: int) -> tuple:
    """A random shape with ``size`` elements (one entry may be -1)."""
    new, rest = [], size
    for _ in range(draw(st.integers(0, 3))):
        if rest == 0:
            new.append(draw(st.sampled_from((0, 1, 2))))
            continue
        d = draw(st.sampled_from([d for d in range(1, rest + 1) if rest % d == 0]))
        new.append(d)
        rest //= d
    new.append(rest)
    new = draw(st.permutations(new))
    if size and draw(st.booleans()):
        new[draw(st.integers(0, len(new) - 1))] = -1
    return tuple(new)


def _reshape_plan(draw, shape):
    return Plan({"shape": _factor(draw, int(np.prod(shape))), "method": draw(st.booleans())})


register(OpKind("reshape", "shape", ("sg.reshape", "Variable.reshape"),
                lambda a, p: a[0].reshape(p["shape"]) if p["method"] else sg.reshape(a[0], p["shape"]),
                lambda a, p: torch.reshape(a[0], _explicit(p["shape"], a[0])), _reshape_plan))


def _explicit(shape: tuple, x) -> tuple:
    """``shape`` with its -1 resolved (torch cannot infer -1 for zero-size tensors)."""
    if -1 not in shape:
        return shape
    known = int(np.prod([d for d in shape if d != -1]))
    return tuple(x.numel() // known if d == -1 else d for d in shape)


def _transpose_plan(draw, shape):
    how = draw(st.sampled_from(["perm", "none", "T", "method"]))
    return Plan({"how": how, "perm": tuple(draw(st.permutations(range(len(shape)))))})


def _transpose_build(a, p):
    x, how = a[0], p["how"]
    if how == "T":
        return x.T
    if how == "method":
        return x.transpose(*p["perm"])
    return sg.transpose(x, None if how == "none" else p["perm"])


def _transpose_twin(a, p):
    x = a[0]
    perm = tuple(range(x.ndim))[::-1] if p["how"] in ("none", "T") else p["perm"]
    return x.permute(perm)


register(OpKind("transpose", "shape", ("sg.transpose", "Variable.T", "Variable.transpose"),
                _transpose_build, _transpose_twin, _transpose_plan))


def _broadcast_to_plan(draw, shape):
    new = [draw(st.sampled_from((2, 3))) if d == 1 and draw(st.booleans()) else d for d in shape]
    lead = [draw(st.sampled_from((1, 2, 3))) for _ in range(draw(st.integers(0, 2)))]
    return Plan({"shape": tuple(lead + new)})


register(OpKind("broadcast_to", "shape", ("sg.broadcast_to",),
                lambda a, p: sg.broadcast_to(a[0], p["shape"]),
                lambda a, p: torch.broadcast_to(a[0], p["shape"]), _broadcast_to_plan))


def _concat_plan(draw, shape):
    if not shape:
        return None
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(draw(st.integers(1, 2))):
        s = list(shape)
        s[axis] = draw(st.sampled_from((0, 1, 2, 3)))
        parts.append(Operand(tuple(s)))
    return Plan({"axis": axis}, parts)


def _stack_plan(draw, shape):
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    return Plan({"axis": axis}, [Operand(shape) for _ in range(draw(st.integers(0, 2)))])


register(OpKind("concatenate", "shape", ("sg.concatenate",),
                lambda a, p: sg.concatenate(list(a), axis=p["axis"]),
                lambda a, p: torch.cat(list(a), dim=p["axis"]), _concat_plan,
                accepts=lambda s: len(s) >= 1))
register(OpKind("stack", "shape", ("sg.stack",),
                lambda a, p: sg.stack(list(a), axis=p["axis"]),
                lambda a, p: torch.stack(list(a), dim=p["axis"]), _stack_plan))


def _squeeze_plan(draw, shape):
    ones = [i for i, d in enumerate(shape) if d == 1]
    if not ones:
        return None
    axes = draw(st.lists(st.sampled_from(ones), min_size=1, unique=True))
    axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    return Plan({"axis": axes[0] if len(axes) == 1 and draw(st.booleans()) else tuple(axes)})


def _expand_plan(draw, shape):
    n = len(shape) + 2
    axes = draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=2, unique_by=lambda a: a % n))
    if len({a % (len(shape) + len(axes)) for a in axes}) < len(axes):
        return None
    axes = [a for a in axes if -(len(shape) + len(axes)) <= a < len(shape) + len(axes)]
    if not axes:
        return None
    return Plan({"axis": axes[0] if len(axes) == 1 else tuple(axes)})


def _expand_t(a, p):
    axis = p["axis"] if isinstance(p["axis"], tuple) else (p["axis"],)
    out_ndim = a[0].ndim + len(axis)
    x = a[0]
    for ax in sorted(ax % out_ndim for ax in axis):
        x = x.unsqueeze(ax)
    return x


def _flatten_t(a, p):
    x, n = a[0], p["ndim"]
    lead = tuple(x.shape[:n - 1])
    return x.reshape(lead + (int(np.prod(x.shape[n - 1:])),))


register(OpKind("squeeze", "shape", ("sg.squeeze",), lambda a, p: sg.squeeze(a[0], p["axis"]),
                lambda a, p: torch.squeeze(a[0], tuple(np.atleast_1d(p["axis"]).tolist())),
                _squeeze_plan, accepts=lambda s: 1 in s))
register(OpKind("expand_dims", "shape", ("sg.expand_dims",), lambda a, p: sg.expand_dims(a[0], p["axis"]),
                _expand_t, _expand_plan))
register(OpKind("flatten", "shape", ("sg.flatten",), lambda a, p: sg.flatten(a[0], p["ndim"]), _flatten_t,
                lambda draw, shape: Plan({"ndim": draw(st.integers(1, len(shape)))}),
                accepts=lambda s: len(s) >= 1))
register(OpKind("zeros_like", "shape", ("sg.zeros_like",), lambda a, p: sg.zeros_like(a[0]),
                lambda a, p: torch.zeros_like(a[0]), no_plan, terminal=True))
register(OpKind("ones_like", "shape", ("sg.ones_like",), lambda a, p: sg.ones_like(a[0]),
                lambda a, p: torch.ones_like(a[0]), no_plan, terminal=True))
register(OpKind("full_like", "shape", ("sg.full_like",), lambda a, p: sg.full_like(a[0], 2.5),
                lambda a, p: torch.full_like(a[0], 2.5), no_plan, terminal=True))


def _filled(fill):
    """zeros/ones/full of the operand's shape, given as the symbolic shape vector."""
    def build(a, p):
        shape = sg.shape(a[0])
        if fill == "zeros":
            return sg.zeros(shape, a[0].dtype)
        if fill == "ones":
            return sg.ones(shape, a[0].dtype)
        return sg.full(shape, -1.5, a[0].dtype)
    return build


def _filled_t(fill):
    value = {"zeros": 0.0, "ones": 1.0, "full": -1.5}[fill]
    return lambda a, p: torch.full(tuple(a[0].shape), value, dtype=a[0].dtype)


for _fill in ("zeros", "ones", "full"):
    register(OpKind(_fill, "shape", (f"sg.{_fill}",), _filled(_fill), _filled_t(_fill), no_plan,
                    terminal=True))
register(OpKind("shape", "shape", ("sg.shape",), lambda a, p: sg.shape(a[0]),
                lambda a, p: torch.tensor(tuple(a[0].shape), dtype=torch.int64), no_plan, terminal=True))
def _arange_build(a, p):
    # ``x.shape[i]`` is None for a dim unknown at build time (API.md promises a symbolic
    # scalar there), so the symbolic length comes from sg.shape
    n = a[0].shape[p["axis"]]
    return sg.arange(sg.shape(a[0])[p["axis"]] if n is None or p["symbolic"] else n)


register(OpKind("arange", "shape", ("sg.arange",), _arange_build,
                lambda a, p: torch.arange(a[0].shape[p["axis"]], dtype=torch.int64),
                lambda draw, shape: Plan({"axis": draw(st.integers(0, len(shape) - 1)),
                                          "symbolic": draw(st.booleans())}),
                accepts=lambda s: len(s) >= 1, terminal=True))


# ---------------------------------------------------------------------------------------------
# indexing: the twins gather/scatter through flat positions NumPy computes for the key, so
# they follow NumPy's indexing rules exactly

def _positions(shape: tuple, key) -> torch.Tensor:
    return torch.as_tensor(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[key])


def _gather_t(x, pos):
    return x.reshape(-1)[pos.reshape(-1)].reshape(pos.shape)


def _index_plan(draw, shape):
    from helpers import index_key
    key = index_key(draw, shape)
    try:
        np.zeros(shape)[key]
    except IndexError:
        return None
    return Plan({"key": key})


def _inc_plan(draw, shape):
    plan = _index_plan(draw, shape)
    if plan is None:
        return None
    target = np.zeros(shape)[plan.params["key"]].shape
    value = broadcast_partner(draw, target) if draw(st.booleans()) else target
    if np.broadcast_shapes(value, target) != target:
        value = target
    return Plan(plan.params, [Operand(value)])


def _inc_twin(a, p):
    x, y = a
    pos = _positions(tuple(x.shape), p["key"])
    vals = torch.broadcast_to(y, tuple(pos.shape)).reshape(-1)
    return x.reshape(-1).index_add(0, pos.reshape(-1), vals.to(x.dtype)).reshape(x.shape)


def _set_plan(draw, shape):
    plan = _inc_plan(draw, shape)
    if plan is None:
        return None
    pos = _positions(shape, plan.params["key"]).reshape(-1)
    if len(torch.unique(pos)) != pos.numel():  # repeated positions: which write wins is the
        return None                             # backend's order, not a value to compare
    return plan


def _set_twin(a, p):
    x, y = a
    pos = _positions(tuple(x.shape), p["key"])
    vals = torch.broadcast_to(y, tuple(pos.shape)).reshape(-1).to(x.dtype)
    return x.reshape(-1).index_put((pos.reshape(-1),), vals).reshape(x.shape)


register(OpKind("getitem", "indexing", ("Variable.__getitem__",), lambda a, p: a[0][p["key"]],
                lambda a, p: _gather_t(a[0], _positions(tuple(a[0].shape), p["key"])), _index_plan,
                accepts=lambda s: len(s) >= 1))
register(OpKind("inc_subtensor", "indexing", ("sg.inc_subtensor",),
                lambda a, p: sg.inc_subtensor(a[0], p["key"], a[1]), _inc_twin, _inc_plan,
                accepts=lambda s: len(s) >= 1, promotes=False))
register(OpKind("set_subtensor", "indexing", ("sg.set_subtensor",),
                lambda a, p: sg.set_subtensor(a[0], p["key"], a[1]), _set_twin, _set_plan,
                accepts=lambda s: len(s) >= 1, promotes=False))


def _take_plan(draw, shape):
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1))) if shape else None
    d = int(np.prod(shape)) if axis is None else shape[axis]
    if d == 0:
        return None
    ishape = any_shape(draw, 0, 2, zero=False)
    return Plan({"axis": axis}, [Operand(ishape, "int64", True, (-d, d - 1))])


def _take_t(a, p):
    x, idx = a
    pos = np.take(np.arange(x.numel()).reshape(tuple(x.shape)), idx.numpy(), axis=p["axis"])
    return _gather_t(x, torch.as_tensor(pos))


register(OpKind("take", "indexing", ("sg.take",), lambda a, p: sg.take(a[0], a[1], p["axis"]),
                _take_t, _take_plan))


def _one_hot_plan(draw, shape):
    n = draw(st.integers(1, 4))
    return Plan({"n": n}, [Operand(any_shape(draw, 0, 2), "int64", True, (-1, n))])


# one_hot reads only its labels (an int input); the first operand just anchors the step
register(OpKind("one_hot", "indexing", ("sg.one_hot",), lambda a, p: sg.one_hot(a[1], p["n"]) * 1.0,
                lambda a, p: (a[1][..., None] == torch.arange(p["n"])).to(torch.float32),
                _one_hot_plan, terminal=True))


# ---------------------------------------------------------------------------------------------
# sg.nn

def _axis_plan(draw, shape):
    return Plan({"axis": draw(st.integers(-len(shape), len(shape) - 1))})


register(OpKind("nn.softmax", "nn", ("sg.nn.softmax",), lambda a, p: sg.nn.softmax(a[0], p["axis"]),
                lambda a, p: torch.softmax(a[0], p["axis"]), _axis_plan, accepts=lambda s: len(s) >= 1,
                special=True))
register(OpKind("nn.log_softmax", "nn", ("sg.nn.log_softmax",),
                lambda a, p: sg.nn.log_softmax(a[0], p["axis"]),
                lambda a, p: torch.log_softmax(a[0], p["axis"]), _axis_plan, accepts=lambda s: len(s) >= 1,
                special=True))


def _matrix(draw):
    return (draw(st.sampled_from((1, 2, 3, 4))), draw(st.sampled_from((1, 2, 3, 5))))


def _ce_plan(draw, shape):
    n, c = shape
    if draw(st.booleans()):
        return Plan({"sparse": True}, [Operand((n,), "int64", True, (0, c - 1))])
    return Plan({"sparse": False}, [Operand((n, c), leaf=True)])


def _ce_build(a, p):
    targets = a[1] if p["sparse"] else sg.nn.softmax(a[1])
    return sg.nn.cross_entropy(a[0], targets)


def _ce_twin(a, p):
    targets = a[1] if p["sparse"] else torch.softmax(a[1], -1).to(a[0].dtype)  # the logits' dtype
    return F.cross_entropy(a[0], targets)


register(OpKind("nn.cross_entropy", "nn", ("sg.nn.cross_entropy",), _ce_build, _ce_twin, _ce_plan,
                fresh=_matrix, accepts=lambda s: len(s) == 2 and s[1] > 0, promotes=False))


def _bce_plan(draw, shape):
    return Plan({"logits": draw(st.booleans())}, [Operand(shape, "int64", True, (0, 1))])


def _bce_build(a, p):
    x = a[0] if p["logits"] else sg.sigmoid(a[0])
    return sg.nn.binary_cross_entropy(x, a[1], from_logits=p["logits"])


def _bce_twin(a, p):
    t = a[1].to(a[0].dtype)
    if p["logits"]:
        return F.binary_cross_entropy_with_logits(a[0], t)
    return F.binary_cross_entropy(torch.sigmoid(a[0]), t)


register(OpKind("nn.binary_cross_entropy", "nn", ("sg.nn.binary_cross_entropy",), _bce_build, _bce_twin,
                _bce_plan, accepts=lambda s: len(s) >= 1))
register(OpKind("nn.mse", "nn", ("sg.nn.mse",), lambda a, p: sg.nn.mse(a[0], a[1]),
                lambda a, p: torch.mean((a[0] - a[1]) ** 2),
                lambda draw, shape: Plan({}, [Operand(broadcast_partner(draw, shape))])))
register(OpKind("nn.hinge", "nn", ("sg.nn.hinge",), lambda a, p: sg.nn.hinge(a[0], a[1] * 2 - 1),
                lambda a, p: torch.mean(F.relu(1 - (a[1] * 2 - 1).to(a[0].dtype) * a[0])),
                lambda draw, shape: Plan({}, [Operand(shape, "int64", True, (0, 1))])))


def _image(draw):
    return (draw(st.sampled_from((1, 2))), draw(st.sampled_from((1, 2, 3))),
            draw(st.sampled_from((1, 3, 4, 5))), draw(st.sampled_from((1, 2, 4, 5))))


def _pair_or_int(draw, values):
    a = draw(st.sampled_from(values))
    return a if draw(st.booleans()) else (a, draw(st.sampled_from(values)))


def _conv_plan(draw, shape):
    _, c, h, w = shape
    stride, padding = _pair_or_int(draw, (1, 2)), _pair_or_int(draw, (0, 1))
    ph, pw = np.broadcast_to(padding, 2)
    kh, kw = draw(st.integers(1, h + 2 * ph)), draw(st.integers(1, w + 2 * pw))
    return Plan({"stride": stride, "padding": padding},
                [Operand((draw(st.sampled_from((1, 2, 3))), c, min(kh, 3), min(kw, 3)))])


register(OpKind("nn.conv2d", "nn", ("sg.nn.conv2d",),
                lambda a, p: sg.nn.conv2d(a[0], a[1], p["stride"], p["padding"]),
                lambda a, p: F.conv2d(a[0], a[1], stride=p["stride"], padding=p["padding"]),
                _conv_plan, fresh=_image, accepts=lambda s: len(s) == 4 and 0 not in s))


def _pool_plan(draw, shape):
    h, w = shape[-2:]
    size = (draw(st.integers(1, min(h, 3))), draw(st.integers(1, min(w, 3))))
    size = size[0] if size[0] == size[1] and draw(st.booleans()) else size
    stride = draw(st.one_of(st.none(), st.integers(1, 2)))
    return Plan({"size": size, "stride": stride})


def _pool(name, torch_fn):
    register(OpKind(f"nn.{name}", "nn", (f"sg.nn.{name}",),
                    lambda a, p: getattr(sg.nn, name)(a[0], p["size"], p["stride"]),
                    lambda a, p: torch_fn(a[0], p["size"], p["stride"]), _pool_plan,
                    fresh=_image, accepts=lambda s: len(s) in (3, 4) and 0 not in s))


_pool("max_pool2d", F.max_pool2d)
_pool("avg_pool2d", F.avg_pool2d)


def _maxout_plan(draw, shape):
    axes = [i for i, d in enumerate(shape) if d and d % 2 == 0 or d == 3]
    if not axes:
        return None
    axis = draw(st.sampled_from(axes))
    pieces = draw(st.sampled_from([k for k in (1, 2, 3) if shape[axis] % k == 0]))
    return Plan({"pieces": pieces, "axis": axis - len(shape) if draw(st.booleans()) else axis})


def _maxout_t(a, p):
    x, axis, k = a[0], p["axis"] % a[0].ndim, p["pieces"]
    s = tuple(x.shape)
    return torch.amax(x.reshape(s[:axis] + (s[axis] // k, k) + s[axis + 1:]), dim=axis + 1)


register(OpKind("nn.maxout", "nn", ("sg.nn.maxout",), lambda a, p: sg.nn.maxout(a[0], p["pieces"], p["axis"]),
                _maxout_t, _maxout_plan, accepts=lambda s: len(s) >= 1, needs_static=True))


# sg.nn.dropout draws from symgraph's own random stream: test_crosscheck checks it against
# torch through the mask it drew (see test_dropout_matches_torch_given_its_mask).
DROPOUT_COVERS = ("sg.nn.dropout", "sg.nn.RandomStream", "sg.RandomStream")
