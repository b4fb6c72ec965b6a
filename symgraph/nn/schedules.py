"""Learning-rate schedules: functions of the optimiser's step counter.

A schedule is evaluated symbolically inside the compiled training step (the optimiser passes its
step counter, a shared variable, so the rate changes with no recompilation) and numerically
with ``schedule.value(step)`` for plots and logs. Each formula is written once against a small
math namespace, so both evaluations agree by construction.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from ..ops import elemwise as E

_NUMERIC = SimpleNamespace(cos=np.cos, floor=np.floor, minimum=np.minimum, power=np.power,
                           where=np.where, lt=np.less)
_SYMBOLIC = SimpleNamespace(cos=E.cos, floor=E.floor, minimum=E.minimum, power=E.power,
                            where=E.where, lt=E.lt)


class Schedule:
    """A learning rate as a function of the step count ``t`` (0 for the first step)."""

    def formula(self, t, m):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t):
        """The rate at step ``t``: symbolic for a graph value, a float for a number."""
        from ..graph.basic import Variable
        if isinstance(t, Variable):
            return self.formula(t, _SYMBOLIC)
        return float(self.formula(np.float64(t), _NUMERIC))

    def value(self, t) -> float | np.ndarray:
        """The rate at step(s) ``t`` as NumPy values."""
        return self.formula(np.asarray(t, dtype=np.float64), _NUMERIC)


class constant(Schedule):
    """The same rate at every step."""

    def __init__(self, lr: float):
        self.lr = float(lr)

    def formula(self, t, m):
        return t * 0.0 + self.lr

    def __repr__(self):
        return f"constant({self.lr})"


class step_decay(Schedule):
    """``lr * gamma ** floor(t / step_size)``: the rate drops by ``gamma`` every ``step_size`` steps."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        if step_size <= 0:
            raise ValueError(f"step_decay: step_size must be positive, got {step_size}")
        self.lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)

    def formula(self, t, m):
        return self.lr * m.power(self.gamma, m.floor(t * (1.0 / self.step_size)))

    def __repr__(self):
        return f"step_decay({self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class exponential(Schedule):
    """``lr * gamma ** t``."""

    def __init__(self, lr: float, gamma: float):
        self.lr, self.gamma = float(lr), float(gamma)

    def formula(self, t, m):
        return self.lr * m.power(self.gamma, t)

    def __repr__(self):
        return f"exponential({self.lr}, gamma={self.gamma})"


class cosine(Schedule):
    """Cosine annealing from ``lr`` to ``final_lr`` over ``total_steps``, then ``final_lr``."""

    def __init__(self, lr: float, total_steps: int, final_lr: float = 0.0):
        if total_steps <= 0:
            raise ValueError(f"cosine: total_steps must be positive, got {total_steps}")
        self.lr, self.total_steps, self.final_lr = float(lr), int(total_steps), float(final_lr)

    def formula(self, t, m):
        progress = m.minimum(t, float(self.total_steps)) * (1.0 / self.total_steps)
        return self.final_lr + 0.5 * (self.lr - self.final_lr) * (1.0 + m.cos(math.pi * progress))

    def __repr__(self):
        return f"cosine({self.lr}, total_steps={self.total_steps}, final_lr={self.final_lr})"


class warmup(Schedule):
    """Linear warm-up over ``steps`` steps (rate ``(t + 1) / steps`` of the base), then the base
    schedule (or constant rate) ``base``."""

    def __init__(self, base, steps: int):
        if steps <= 0:
            raise ValueError(f"warmup: steps must be positive, got {steps}")
        self.base = base if isinstance(base, Schedule) else constant(base)
        self.steps = int(steps)

    def formula(self, t, m):
        ramp = m.minimum((t + 1.0) * (1.0 / self.steps), 1.0)
        return self.base.formula(t, m) * ramp

    def __repr__(self):
        return f"warmup({self.base!r}, steps={self.steps})"


__all__ = ["Schedule", "constant", "step_decay", "exponential", "cosine", "warmup"]
