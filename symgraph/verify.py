"""``sg.verify_grad``: check symbolic gradients against central finite differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .errors import GradientError
from .graph.basic import Variable
from .graph.types import TensorType


def verify_grad(fn: Callable, inputs: Sequence, eps: float | None = None, rtol: float | None = None,
                atol: float | None = None, n_directions: int = 3, seed: int = 0,
                backend: str = "reference") -> None:
    """Compare ``fn``'s symbolic gradient with finite differences at ``inputs`` (float64).

    ``fn`` takes symbolic variables (one per NumPy input) and returns a symbolic value; a
    non-scalar result is projected on a fixed random tensor.  Each input is checked along
    ``n_directions`` random directions; on a mismatch the worst element is located by
    per-element differences (after a bisection narrowing large inputs down to 64
    candidates) and reported in ``sg.GradientError``.
    """
    from .compile import compile
    from .grad import grad
    from .ops.elemwise import mul
    from .ops.reduce import sum as sum_

    values = [np.array(v, dtype=np.float64) for v in inputs]
    eps = 1e-6 if eps is None else eps
    rtol = 1e-4 if rtol is None else rtol
    atol = 1e-6 if atol is None else atol
    rng = np.random.default_rng(seed)
    syms = [Variable(TensorType("float64", v.shape), name=f"input{i}") for i, v in enumerate(values)]
    out = fn(*syms)
    if not isinstance(out, Variable):
        raise TypeError("verify_grad: fn must return a symbolic value")
    if out.ndim:
        from .graph.basic import Constant
        weights = rng.standard_normal(tuple(d if d is not None else 1 for d in out.type.shape))
        if any(d is None for d in out.type.shape):
            raise ValueError("verify_grad: fn's output must have a static shape")
        out = sum_(mul(out, Constant(weights)))
    from .ops.elemwise import cast
    cost = cast(out, "float64")
    grads = grad(cost, syms, disconnected="ignore")
    f_cost = compile(syms, cost, backend=backend)
    f_grad = compile(syms, grads, backend=backend)
    analytic = [np.asarray(g, dtype=np.float64) for g in f_grad(*values)]

    def cost_at(i, x):
        args = list(values)
        args[i] = x
        return float(f_cost(*args))

    for i, (x, g) in enumerate(zip(values, analytic)):
        for _ in range(n_directions):
            d = rng.standard_normal(x.shape)
            numeric = (cost_at(i, x + eps * d) - cost_at(i, x - eps * d)) / (2 * eps)
            symbolic = float(np.sum(g * d))
            if abs(numeric - symbolic) > atol + rtol * max(abs(numeric), abs(symbolic)):
                _report(i, x, g, cost_at, eps, numeric, symbolic)


_EXHAUSTIVE = 4096  # inputs up to this size are searched element by element


def _candidates(x, g, cost_i, eps) -> np.ndarray:
    """Flat indices that may hold the worst element.

    Small inputs: all of them.  Large ones: bisection, keeping at each step the half of the
    indices along which (a random direction restricted to it) the symbolic and numeric
    directional derivatives disagree most; 2 cost evaluations per halving.
    """
    flat_g = g.reshape(-1)
    idx = np.arange(flat_g.size)
    if idx.size <= _EXHAUSTIVE:
        return idx
    n = idx.size
    d = np.random.default_rng(1).standard_normal(n)

    def mismatch(part):
        dp = np.zeros(n)
        dp[part] = d[part]
        dp = dp.reshape(x.shape)
        numeric = (cost_i(x + eps * dp) - cost_i(x - eps * dp)) / (2 * eps)
        return abs(numeric - float(np.sum(flat_g[part] * d[part])))

    while idx.size > 64:
        halves = np.array_split(idx, 2)
        idx = max(halves, key=mismatch)
    return idx


def _report(i, x, g, cost_at, eps, numeric, symbolic):
    """Find the worst element by per-element finite differences and raise."""
    flat = x.reshape(-1)
    worst, worst_err, worst_num = None, -1.0, None
    for k in _candidates(x, g, lambda v: cost_at(i, v), eps):
        e = np.zeros_like(flat)
        e[k] = eps
        num = (cost_at(i, (flat + e).reshape(x.shape)) - cost_at(i, (flat - e).reshape(x.shape))) / (2 * eps)
        err = abs(num - g.reshape(-1)[k])
        if err > worst_err:
            worst, worst_err, worst_num = k, err, num
    idx = np.unravel_index(worst, x.shape) if x.ndim else ()
    raise GradientError(
        f"verify_grad: gradient of input {i} (shape {x.shape}) disagrees with finite differences: "
        f"along a random direction symbolic={symbolic:.6g}, numeric={numeric:.6g}; worst element "
        f"{tuple(int(v) for v in idx)}: symbolic={g.reshape(-1)[worst]:.6g}, numeric={worst_num:.6g}",
        input_index=i, worst_index=tuple(int(v) for v in idx), analytic=float(g.reshape(-1)[worst]),
        numeric=float(worst_num))
