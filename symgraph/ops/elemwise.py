"""Elementwise ops: one op class wrapping a scalar-IR expression, with NumPy broadcasting.

``Elemwise(expr)`` applies ``expr`` (a scalar DAG over input slots) to every element of the
broadcast inputs.  A plain ``exp`` and a fused 20-op kernel are the same class; only the size
of the DAG differs.  Gradients come from the scalar IR's derivative rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import scalar as S
from ..errors import ShapeError
from ..graph.basic import Apply, Op, Variable, as_variable, is_python_scalar
from ..graph.types import TensorType, broadcast_shapes, is_float, is_int, result_dtype


class Elemwise(Op):
    """Apply a scalar expression elementwise.  ``name`` is for printing and kernel names."""

    __props__ = ("expr", "nin", "name", "partials")

    def __init__(self, expr: S.SExpr, nin: int, name: str | None = None,
                 partials: tuple | None = None):
        self.expr = expr
        self.nin = nin
        # optional explicit partial derivatives d expr / d input_i (SymPy-defined ops)
        self.partials = partials
        self.name = name or (expr.op if expr.op not in ("input", "const") else "identity")
        self.slot_dtypes = _slot_dtypes(expr, nin)

    def __str__(self) -> str:
        return self.name

    @property
    def is_fused(self) -> bool:
        return S.count_ops([self.expr]) > 1

    def make_node(self, *inputs) -> Apply:
        inputs = [as_variable(x) for x in inputs]
        if len(inputs) != self.nin:
            raise TypeError(f"{self.name} takes {self.nin} inputs, got {len(inputs)}")
        for i, (x, want) in enumerate(zip(inputs, self.slot_dtypes)):
            if want is not None and x.dtype != want:
                raise TypeError(f"{self.name}: input {i} must be {want}, got {x.dtype}")
        shape = broadcast_shapes(*[x.type.shape for x in inputs], what=self.name)
        return Apply(self, inputs, [TensorType(self.expr.dtype, shape)])

    def perform(self, node, inputs):
        shapes = [np.shape(x) for x in inputs]
        try:
            shape = np.broadcast_shapes(*shapes)
        except ValueError:
            raise ShapeError(f"{self.name}: shapes {' and '.join(map(str, shapes))} cannot be "
                             "broadcast together") from None
        (out,) = S.evaluate([self.expr], inputs)
        if out.shape != shape:
            out = np.broadcast_to(out, shape).copy()
        return [out]

    def L_op(self, node, inputs, outputs, output_grads):
        (gz,) = output_grads
        n = self.nin
        args = list(inputs) + [outputs[0], gz]
        mask, g_slot, upstream = _selected_gradient(gz, len(args))
        args += upstream
        if self.partials is not None:
            grads = {i: S.masked(mask, S.apply("mul", g_slot, d))
                     for i, d in enumerate(self.partials) if d is not None}
        else:
            grads = S.adjoints(self.expr, g_slot, out_slot=S.inp(n, outputs[0].dtype), mask=mask)
        # the upstream selection's inputs give the gradient its full shape
        upstream_slots = list(range(n + 2, len(args)))
        result = []
        for i, x in enumerate(inputs):
            if i not in grads or not is_float(x.dtype):
                result.append(None)
                continue
            # a constant derivative (d x**0 / dx = 0) keeps x as an input for its shape
            keep = ([] if S.inputs_of(grads[i]) else [i]) + upstream_slots
            g = elemwise_from_expr(grads[i], args, name=f"d_{self.name}", keep_shape_of=keep)
            from .shape import sum_to
            result.append(sum_to(g, x))
        return result

    def R_op(self, node, inputs, eval_points):
        one = S.const(1, self.expr.dtype)
        if self.partials is not None:
            partials = {i: d for i, d in enumerate(self.partials) if d is not None}
        else:
            partials = S.adjoints(self.expr, one)
        terms = None
        slots: list[Variable] = list(inputs)
        for i, v in enumerate(eval_points):
            if v is None or i not in partials:
                continue
            slots.append(v)
            term = S.apply("mul", partials[i], S.inp(len(slots) - 1, v.dtype))
            terms = term if terms is None else S.apply("add", terms, term)
        if terms is None:
            return [None]
        # keep every input so the result has the output's broadcast shape
        return [elemwise_from_expr(S.cast(terms, self.expr.dtype), slots + [node.outputs[0]],
                                   name=f"jvp_{self.name}", keep_shape_of=[len(slots)])]

    def batch(self, node, inputs, batched):
        """Batched inputs get size-1 axes after the batch axis up to the output's rank, so
        NumPy broadcasting lines them up; unbatched inputs broadcast as they are."""
        from ..vmap import all_batched, pad_after_batch
        rank = node.outputs[0].ndim
        args = [pad_after_batch(x, rank) if b else x for x, b in zip(inputs, batched)]
        return all_batched(self(*args))


def _selected_gradient(gz: Variable, first_slot: int):
    """``(mask, g, variables)`` for differentiating an op whose output gradient is ``gz``.

    When ``gz`` is a selection with a zero side, ``where(c, v, 0)`` (the gradient of a
    ``where``, ``relu``, ``maximum``... downstream), the gradient is computed from ``v`` and
    masked by ``c`` as a select at the end, so a derivative that is inf where ``gz`` was
    selected to 0 (``exp`` in ``where(x > 0, x, exp(x) - 1)`` at x = 1000) gives 0, not
    ``0 * inf = NaN``.  ``c`` and ``v`` are rebased on slots ``first_slot...`` for
    ``variables`` (the selection's inputs); a ``SumToShape`` between is looked through.
    Otherwise ``(None, gz's slot, [])``.
    """
    from .shape import SumToShape
    plain = (None, S.inp(first_slot - 1, gz.dtype), [])
    owner = gz.owner
    if owner is not None and isinstance(owner.op, SumToShape) and owner.inputs[0].ndim == gz.ndim:
        # summed back over broadcast axes (run-time shapes): the derivative of this op is
        # constant along them, so masking before the final sum_to is the same sum
        owner = owner.inputs[0].owner
    if owner is None or not isinstance(owner.op, Elemwise) or owner.op.expr.op != "where":
        return plain
    cond, then, other = owner.op.expr.args
    if S.is_const(other, 0):
        mask, value = cond, then
    elif S.is_const(then, 0):
        mask, value = S.apply("not", cond), other
    else:
        return plain
    if value.dtype != gz.dtype:
        return plain
    mapping = {j: S.inp(first_slot + j, v.dtype) for j, v in enumerate(owner.inputs)}
    mask, value = S.substitute([mask, value], mapping)
    return mask, value, list(owner.inputs)


def _slot_dtypes(expr: S.SExpr, nin: int) -> list[str | None]:
    dtypes: list[str | None] = [None] * nin
    for node in S.topo([expr]):
        if node.op == "input":
            dtypes[node.value] = node.dtype
    return dtypes


def elemwise_from_expr(expr: S.SExpr, args: Sequence[Variable], name: str | None = None,
                       keep_shape_of: Sequence[int] = ()) -> Variable:
    """Build an Elemwise node for ``expr`` over ``args``, keeping only the slots it uses.

    ``keep_shape_of`` lists slots to keep as inputs even if unused, so the result has their
    broadcast shape.
    """
    used = set(S.inputs_of(expr)) | set(keep_shape_of)
    order = sorted(used)
    if not order:
        raise ValueError("elementwise expression uses no input")
    mapping = {old: S.inp(new, args[old].dtype) for new, old in enumerate(order)}
    (new_expr,) = S.substitute([expr], mapping)
    return Elemwise(new_expr, len(order), name=name)(*[args[i] for i in order])


# --- building elementwise nodes from Python --------------------------------------------

_COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")


def _operands(args, exact: bool = False) -> tuple[list[Variable], list[S.SExpr]]:
    """Variables become input slots; Python scalars become typed constants (NEP 50 weak).

    As in NumPy, a Python int that does not fit the integer dtype it would take is an
    ``OverflowError``, except in comparisons and true division (``exact``), which NumPy
    computes without squeezing the int into the array's dtype.
    """
    tensor_dtypes = [a.dtype for a in args if isinstance(a, Variable)]
    tensor_dtypes += [np.asarray(a).dtype for a in args
                      if not isinstance(a, Variable) and not is_python_scalar(a)]
    variables: list[Variable] = []
    exprs: list[S.SExpr] = []
    for a in args:
        if is_python_scalar(a):
            dtype = result_dtype(*tensor_dtypes, a) if tensor_dtypes else as_default(a)
            if isinstance(a, int) and not isinstance(a, bool) and is_int(dtype):
                info = np.iinfo(dtype)
                if not info.min <= a <= info.max:
                    if not exact:
                        raise OverflowError(f"Python integer {a} out of bounds for {dtype}")
                    dtype = "int64" if -2**63 <= a < 2**63 else "float64"
            exprs.append(S.const(a, dtype))
            continue
        v = as_variable(a)
        if v.ndim == 0 and v.owner is None and hasattr(v, "value") and v.value.size == 1:
            exprs.append(S.const(v.value.item(), v.dtype))  # rank-0 constants inline
            continue
        exprs.append(S.inp(len(variables), v.dtype))
        variables.append(v)
    return variables, exprs


def as_default(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    return "float32"


def apply_scalar(op: str, *args, name: str | None = None):
    """``op`` applied elementwise to tensors and Python scalars."""
    variables, exprs = _operands(args, exact=op in _COMPARISONS or op == "truediv")
    expr = S.apply(op, *exprs)
    if op == "pow" and is_int(expr.dtype) and S.is_const(exprs[1]) and exprs[1].value < 0:
        raise ValueError("Integers to negative integer powers are not allowed (as in NumPy)")
    if not variables:
        from ..graph.basic import Constant
        (value,) = S.evaluate([expr], [])
        return Constant(value)
    return Elemwise(expr, len(variables), name=name or op)(*variables)


def _unary(op: str):
    def fn(x):
        return apply_scalar(op, x)
    fn.__name__ = op
    fn.__doc__ = f"Elementwise ``{op}`` (NumPy semantics)."
    return fn


exp, log, log1p, expm1, sqrt, square = (_unary(n) for n in ("exp", "log", "log1p", "expm1", "sqrt", "square"))
tanh, sigmoid, softplus = (_unary(n) for n in ("tanh", "sigmoid", "softplus"))
erf, sin, cos = (_unary(n) for n in ("erf", "sin", "cos"))
floor, ceil, sign, neg, logical_not = (_unary(n) for n in ("floor", "ceil", "sign", "neg", "not"))
abs_ = _unary("abs")
abs_.__name__ = "abs"


def _binary(op: str):
    def fn(a, b):
        return apply_scalar(op, a, b)
    fn.__name__ = op
    fn.__doc__ = f"Elementwise ``{op}`` with NumPy broadcasting and type promotion."
    return fn


add, sub, mul, true_divide, floor_divide, mod, power = (
    _binary(n) for n in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow"))
maximum, minimum = _binary("maximum"), _binary("minimum")
lt, le, gt, ge, eq, neq = (_binary(n) for n in ("lt", "le", "gt", "ge", "eq", "ne"))
logical_and, logical_or = _binary("and"), _binary("or")


def where(cond, a, b):
    """``a`` where ``cond`` is true, else ``b`` (NumPy ``where``)."""
    variables, exprs = _operands([cond, a, b])
    c = exprs[0] if exprs[0].dtype == "bool" else S.apply("ne", exprs[0], S.const(0, exprs[0].dtype))
    expr = S.apply("where", c, exprs[1], exprs[2])
    return Elemwise(expr, len(variables), name="where")(*variables)


def cast(x, dtype) -> Variable:
    """Convert to ``dtype`` (``x.astype``)."""
    x = as_variable(x)
    from ..graph.types import as_dtype
    dtype = as_dtype(dtype)
    if x.dtype == dtype:
        return x
    return Elemwise(S.cast(S.inp(0, x.dtype), dtype), 1, name=f"cast_{dtype}")(x)


def relu(x):
    """``maximum(0, x)``; its derivative at 0 is 0."""
    x = as_variable(x)
    return Elemwise(S.apply("maximum", S.const(0, x.dtype), S.inp(0, x.dtype)), 1, name="relu")(x)


def _float_arg(x) -> Variable:
    """Integer inputs of activations with float constants compute in float64, as in NumPy."""
    x = as_variable(x)
    return x if is_float(x.dtype) else cast(x, "float64")


def leaky_relu(x, alpha: float = 0.01):
    """``x`` where ``x > 0`` else ``alpha * x``."""
    x = _float_arg(x)
    xi = S.inp(0, x.dtype)
    zero, a = S.const(0, x.dtype), S.const(alpha, x.dtype)
    return Elemwise(S.apply("where", S.apply("gt", xi, zero), xi, S.apply("mul", a, xi)), 1,
                    name="leaky_relu")(x)


def elu(x, alpha: float = 1.0):
    """``x`` where ``x > 0`` else ``alpha * expm1(x)``."""
    x = _float_arg(x)
    xi = S.inp(0, x.dtype)
    neg_part = S.apply("mul", S.const(alpha, x.dtype), S.apply("expm1", xi))
    return Elemwise(S.apply("where", S.apply("gt", xi, S.const(0, x.dtype)), xi, neg_part), 1,
                    name="elu")(x)


def gelu(x, approximate: bool = True):
    """GELU; ``approximate=True`` is the tanh form, ``False`` the exact erf form."""
    x = _float_arg(x)
    xi = S.inp(0, x.dtype)
    c = lambda v: S.const(v, xi.dtype)  # noqa: E731
    if approximate:
        inner = S.apply("mul", c(0.7978845608028654),
                        S.apply("add", xi, S.apply("mul", c(0.044715),
                                                   S.apply("mul", xi, S.apply("mul", xi, xi)))))
        body = S.apply("add", c(1), S.apply("tanh", inner))
    else:
        body = S.apply("add", c(1), S.apply("erf", S.apply("mul", xi, c(0.7071067811865476))))
    expr = S.apply("mul", S.apply("mul", c(0.5), xi), body)
    return Elemwise(expr, 1, name="gelu")(x)


def clip(x, lo, hi):
    """Limit values to ``[lo, hi]`` (``minimum(maximum(x, lo), hi)``)."""
    return minimum(maximum(x, lo), hi)


def fill(like: Variable, value: Variable) -> Variable:
    """``value`` broadcast to the shape of ``like`` (the values of ``like`` are not used)."""
    value = as_variable(value)
    return Elemwise(S.inp(1, value.dtype), 2, name="fill")(like, value)
