"""symgraph: a symbolic graph compiler for NumPy-style tensor programs.

Build a graph with symbolic tensors, differentiate it symbol to symbol with ``grad``, and
``compile`` it into a callable on NumPy arrays.
"""

from __future__ import annotations

from . import distributed, nn
from .compile import CompiledFunction, compile
from .errors import CompileError, GradientError, ShapeError
from .formula import elementwise
from .grad import Lop, Rop, grad, hessian, jacobian, stop_gradient
from .graph.basic import Constant, SharedVariable, Variable
from .graph.basic import check_name as _check_name
from .graph.types import TensorType
from .graph.types import static_shape as _static_shape
from .ops import (
    abs,
    add,
    arange,
    argmax,
    argmin,
    broadcast_to,
    cast,
    ceil,
    clip,
    concatenate,
    cos,
    divide,
    dot,
    elu,
    eq,
    erf,
    exp,
    expand_dims,
    expm1,
    flatten,
    floor,
    full,
    full_like,
    ge,
    gelu,
    gt,
    inc_subtensor,
    le,
    leaky_relu,
    log,
    log1p,
    logsumexp,
    lt,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mul,
    neq,
    one_hot,
    ones,
    ones_like,
    outer,
    power,
    prod,
    relu,
    reshape,
    set_subtensor,
    shape,
    sigmoid,
    sign,
    sin,
    softplus,
    sqrt,
    square,
    squeeze,
    stack,
    std,
    sub,
    sum,
    take,
    tanh,
    transpose,
    var,
    where,
    zeros,
    zeros_like,
)
from .ops.random import RandomStream, seed
from .printing import debugprint, to_dot
from .verify import verify_grad
from .vmap import vmap

__version__ = "0.1.0"


def tensor(name: str | None = None, shape=(None,), dtype: str = "float32") -> Variable:  # noqa: F811
    """A symbolic input; each dim of ``shape`` is an int (static) or ``None``."""
    _check_name(name, "tensor")
    return Variable(TensorType(dtype, _static_shape(shape, "tensor: shape")), name=name)


def scalar(name: str | None = None, dtype: str = "float32") -> Variable:
    """A rank-0 symbolic input."""
    return tensor(name, (), dtype)


def vector(name: str | None = None, dtype: str = "float32") -> Variable:
    """A rank-1 symbolic input of unknown length."""
    return tensor(name, (None,), dtype)


def matrix(name: str | None = None, dtype: str = "float32") -> Variable:
    """A rank-2 symbolic input of unknown shape."""
    return tensor(name, (None, None), dtype)


def tensor3(name: str | None = None, dtype: str = "float32") -> Variable:
    """A rank-3 symbolic input of unknown shape."""
    return tensor(name, (None,) * 3, dtype)


def tensor4(name: str | None = None, dtype: str = "float32") -> Variable:
    """A rank-4 symbolic input of unknown shape (e.g. NCHW images)."""
    return tensor(name, (None,) * 4, dtype)


def constant(value, name: str | None = None, dtype=None) -> Constant:
    """A constant folded into the graph (Python floats default to float32)."""
    _check_name(name, "constant")
    return Constant(value, dtype=dtype, name=name)


def shared(value, name: str | None = None, dtype=None,
           shape=None) -> SharedVariable:  # noqa: F811 - the keyword is NumPy's name
    """Persistent state such as model parameters; read with ``get_value``, set with ``set_value``.

    ``shape`` declares the static shape, ``None`` for dims that ``set_value`` may change (a
    data set whose number of rows varies: ``shape=(None, 784)``); by default every dim is the
    value's."""
    _check_name(name, "shared")
    return SharedVariable(value, name=name, dtype=dtype, shape=shape)


def export_library(path, functions: dict, kind: str = "shared", name: str | None = None,
                   target="x86-64-v3", threads: int = 1, example_inputs: dict | None = None) -> dict:
    """Several compiled llvm functions (``{"train": f, "predict": g}``) in one self-contained C
    library sharing their shared variables through one context (docs/deployment.md)."""
    from .export import export_library as _export_library
    return _export_library(path, functions, kind=kind, name=name, target=target, threads=threads,
                           example_inputs=example_inputs)


__all__ = [n for n in dir() if not n.startswith("_")]
