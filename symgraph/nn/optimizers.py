"""Optimisers: each returns an ``Optimizer``, the ``updates`` list for compile() plus its state.

An ``Optimizer`` is a list of ``(shared, new_value)`` pairs, so ``updates=sg.nn.adam(loss, params)``
works as it is; it also names the state it created (velocities, moments, the step counter) so a
checkpoint can save and restore it (``state_dict`` / ``load_state_dict``).

Every optimiser accepts:

- ``lr``: a float, a symbolic scalar or shared variable (change it between calls with
  ``set_value``: no recompilation), or a schedule from ``sg.nn.schedules`` evaluated at the step
  counter inside the compiled step;
- ``weight_decay``: an L2 penalty ``weight_decay * p`` added to each gradient (as PyTorch's
  ``weight_decay``; for Adam this is Adam with L2, not AdamW);
- ``clip_norm``: rescale all gradients together so their global L2 norm is at most ``clip_norm``;
- ``clip_value``: clip every gradient element to ``[-clip_value, clip_value]`` (applied first).
"""

from __future__ import annotations

import numpy as np

from ..grad import grad
from ..graph.basic import SharedVariable, Variable
from ..ops import elemwise as E
from ..ops import reduce as R
from .schedules import Schedule


class Optimizer(list):
    """The updates of one optimiser (a list, ready for ``compile(updates=...)``) and its state."""

    def __init__(self, name: str, updates, state: list[SharedVariable], params, lr):
        super().__init__(updates)
        self.name = name
        self.state = list(state)
        self.params = list(params)
        self.lr = lr

    @property
    def updates(self) -> list:
        """The ``(shared, new_value)`` pairs (the list itself, for readability)."""
        return list(self)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The optimiser's state as arrays keyed by position (for ``np.savez``): the same
        optimiser built in another process restores it whatever its variables are named."""
        return {f"{self.name}:{i}": v.get_value() for i, v in enumerate(self.state)}

    def load_state_dict(self, values: dict[str, np.ndarray]) -> None:
        """Restore the state saved by ``state_dict``; every entry is checked before any is set."""
        keys = [f"{self.name}:{i}" for i in range(len(self.state))]
        missing = [k for k in keys if k not in values]
        if missing:
            raise KeyError(f"{self.name}: optimiser state {missing[0]!r} missing from the checkpoint")
        for k, v in zip(keys, self.state):
            arr = np.asarray(values[k])
            if arr.shape != v.get_value().shape:
                raise ValueError(f"{self.name}: optimiser state {k!r} has shape {arr.shape} in the "
                                 f"checkpoint but {v.get_value().shape} here")
        for k, v in zip(keys, self.state):
            v.set_value(np.asarray(values[k]))

    def __repr__(self) -> str:
        return f"<{self.name} optimiser: {len(self.params)} parameters, {len(self.state)} state variables>"


class _Builder:
    """What every optimiser shares: gradients with decay and clipping, the rate, the state."""

    def __init__(self, name, cost, params, lr, grads, weight_decay, clip_norm, clip_value):
        self.name = name
        self.params = list(params)
        self.grads = _preprocess(self.params, _grads(cost, self.params, grads), weight_decay,
                                 clip_norm, clip_value)
        self.state: list[SharedVariable] = []
        self.updates: list = []
        self._step = None
        self._lr = lr

    @property
    def step(self) -> SharedVariable:
        """The number of steps taken so far (float32 shared), incremented by every call."""
        if self._step is None:
            self._step = SharedVariable(np.zeros((), np.float32), name=f"{self.name}_step")
            self.state.append(self._step)
            self.updates.append((self._step, E.add(self._step, 1.0)))
        return self._step

    def lr(self):
        """The learning rate as a graph value (a schedule evaluated at the current step)."""
        if isinstance(self._lr, Schedule):
            return self._lr(self.step)
        return self._lr

    def slot(self, p: SharedVariable, suffix: str, value: float = 0.0) -> SharedVariable:
        v = SharedVariable(np.full(p.shape, value, dtype=p.dtype), name=f"{p.label()}_{suffix}")
        self.state.append(v)
        return v

    def done(self) -> Optimizer:
        return Optimizer(self.name, self.updates, self.state, self.params, self.lr())


def _grads(cost, params, grads):
    return list(grads) if grads is not None else grad(cost, list(params))


def _preprocess(params, grads, weight_decay, clip_norm, clip_value):
    if clip_value is not None:
        if clip_value <= 0:
            raise ValueError(f"clip_value must be positive, got {clip_value}")
        grads = [E.clip(g, -clip_value, clip_value) for g in grads]
    if clip_norm is not None:
        if clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive, got {clip_norm}")
        total = None
        for g in grads:
            sq = R.sum(E.square(g))
            total = sq if total is None else E.add(total, sq)
        scale = E.minimum(1.0, E.true_divide(clip_norm, E.add(E.sqrt(total), 1e-12)))
        grads = [E.mul(g, E.cast(scale, g.dtype)) for g in grads]
    if weight_decay:
        grads = [E.add(g, E.mul(weight_decay, p)) for p, g in zip(params, grads)]
    return grads


def sgd(cost: Variable, params, lr=0.01, grads=None, weight_decay=0.0, clip_norm=None,
        clip_value=None) -> Optimizer:
    """Plain gradient descent: ``p -= lr * g``."""
    b = _Builder("sgd", cost, params, lr, grads, weight_decay, clip_norm, clip_value)
    lr = b.lr()
    b.updates += [(p, E.sub(p, E.mul(lr, g))) for p, g in zip(b.params, b.grads)]
    return b.done()


def momentum(cost, params, lr=0.01, mu=0.9, grads=None, weight_decay=0.0, clip_norm=None,
             clip_value=None) -> Optimizer:
    """Heavy-ball momentum: ``v = mu v - lr g; p += v``."""
    b = _Builder("momentum", cost, params, lr, grads, weight_decay, clip_norm, clip_value)
    lr = b.lr()
    for p, g in zip(b.params, b.grads):
        v = b.slot(p, "velocity")
        v_new = E.sub(E.mul(mu, v), E.mul(lr, g))
        b.updates += [(v, v_new), (p, E.add(p, v_new))]
    return b.done()


def nesterov(cost, params, lr=0.01, mu=0.9, grads=None, weight_decay=0.0, clip_norm=None,
             clip_value=None) -> Optimizer:
    """Nesterov momentum (the formulation of Sutskever et al.)."""
    b = _Builder("nesterov", cost, params, lr, grads, weight_decay, clip_norm, clip_value)
    lr = b.lr()
    for p, g in zip(b.params, b.grads):
        v = b.slot(p, "velocity")
        v_new = E.sub(E.mul(mu, v), E.mul(lr, g))
        b.updates += [(v, v_new), (p, E.add(p, E.sub(E.mul(mu, v_new), E.mul(lr, g))))]
    return b.done()


def adagrad(cost, params, lr=0.01, eps=1e-8, grads=None, weight_decay=0.0, clip_norm=None,
            clip_value=None) -> Optimizer:
    """Adagrad: per-parameter steps scaled by the root of the summed squared gradients."""
    b = _Builder("adagrad", cost, params, lr, grads, weight_decay, clip_norm, clip_value)
    lr = b.lr()
    for p, g in zip(b.params, b.grads):
        acc = b.slot(p, "accumulator")
        acc_new = E.add(acc, E.square(g))
        step = E.true_divide(E.mul(lr, g), E.add(E.sqrt(acc_new), eps))
        b.updates += [(acc, acc_new), (p, E.sub(p, step))]
    return b.done()


def rmsprop(cost, params, lr=0.001, rho=0.9, eps=1e-8, grads=None, weight_decay=0.0,
            clip_norm=None, clip_value=None) -> Optimizer:
    """RMSprop: steps scaled by a running root-mean-square of the gradients."""
    b = _Builder("rmsprop", cost, params, lr, grads, weight_decay, clip_norm, clip_value)
    lr = b.lr()
    for p, g in zip(b.params, b.grads):
        acc = b.slot(p, "ms")
        acc_new = E.add(E.mul(rho, acc), E.mul(1.0 - rho, E.square(g)))
        step = E.true_divide(E.mul(lr, g), E.add(E.sqrt(acc_new), eps))
        b.updates += [(acc, acc_new), (p, E.sub(p, step))]
    return b.done()


def adadelta(cost, params, lr=1.0, rho=0.95, eps=1e-6, grads=None, weight_decay=0.0,
             clip_norm=None, clip_value=None) -> Optimizer:
    """Adadelta (Zeiler 2012)."""
    b = _Builder("adadelta", cost, params, lr, grads, weight_decay, clip_norm, clip_value)
    lr = b.lr()
    for p, g in zip(b.params, b.grads):
        acc_g, acc_d = b.slot(p, "acc_grad"), b.slot(p, "acc_delta")
        acc_g_new = E.add(E.mul(rho, acc_g), E.mul(1.0 - rho, E.square(g)))
        delta = E.mul(E.true_divide(E.sqrt(E.add(acc_d, eps)), E.sqrt(E.add(acc_g_new, eps))), g)
        acc_d_new = E.add(E.mul(rho, acc_d), E.mul(1.0 - rho, E.square(delta)))
        b.updates += [(acc_g, acc_g_new), (acc_d, acc_d_new), (p, E.sub(p, E.mul(lr, delta)))]
    return b.done()


def adam(cost, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, grads=None, weight_decay=0.0,
         clip_norm=None, clip_value=None) -> Optimizer:
    """Adam with bias correction."""
    b = _Builder("adam", cost, params, lr, grads, weight_decay, clip_norm, clip_value)
    lr = b.lr()
    t_new = E.add(b.step, 1.0)
    for p, g in zip(b.params, b.grads):
        m, v = b.slot(p, "m"), b.slot(p, "v")
        m_new = E.add(E.mul(beta1, m), E.mul(1.0 - beta1, g))
        v_new = E.add(E.mul(beta2, v), E.mul(1.0 - beta2, E.square(g)))
        tc = E.cast(t_new, p.dtype)
        m_hat = E.true_divide(m_new, E.sub(1.0, E.power(beta1, tc)))
        v_hat = E.true_divide(v_new, E.sub(1.0, E.power(beta2, tc)))
        step = E.true_divide(E.mul(lr, m_hat), E.add(E.sqrt(v_hat), eps))
        b.updates += [(m, m_new), (v, v_new), (p, E.sub(p, step))]
    return b.done()


OPTIMIZERS = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adagrad": adagrad,
              "rmsprop": rmsprop, "adadelta": adadelta, "adam": adam}
