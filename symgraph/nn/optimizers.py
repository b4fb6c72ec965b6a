"""Optimisers: each returns an ``updates`` list of ``(shared, new_value)`` pairs for compile().

The state they need (velocities, accumulators) lives in new shared variables created here.
"""

from __future__ import annotations

import numpy as np

from ..grad import grad
from ..graph.basic import SharedVariable, Variable
from ..ops import elemwise as E


def _grads(cost, params, grads):
    return grads if grads is not None else grad(cost, list(params))


def _state(p: SharedVariable, suffix: str, value: float = 0.0) -> SharedVariable:
    return SharedVariable(np.full(p.shape, value, dtype=p.dtype), name=f"{p.label()}_{suffix}")


def sgd(cost: Variable, params, lr: float = 0.01, grads=None):
    """Plain gradient descent: ``p -= lr * g``."""
    return [(p, E.sub(p, E.mul(lr, g))) for p, g in zip(params, _grads(cost, params, grads))]


def momentum(cost, params, lr=0.01, mu=0.9, grads=None):
    """Heavy-ball momentum."""
    updates = []
    for p, g in zip(params, _grads(cost, params, grads)):
        v = _state(p, "velocity")
        v_new = E.sub(E.mul(mu, v), E.mul(lr, g))
        updates += [(v, v_new), (p, E.add(p, v_new))]
    return updates


def nesterov(cost, params, lr=0.01, mu=0.9, grads=None):
    """Nesterov momentum (the formulation of Sutskever et al.)."""
    updates = []
    for p, g in zip(params, _grads(cost, params, grads)):
        v = _state(p, "velocity")
        v_new = E.sub(E.mul(mu, v), E.mul(lr, g))
        updates += [(v, v_new), (p, E.add(p, E.sub(E.mul(mu, v_new), E.mul(lr, g))))]
    return updates


def adagrad(cost, params, lr=0.01, eps=1e-8, grads=None):
    """Adagrad: per-parameter steps scaled by the root of the summed squared gradients."""
    updates = []
    for p, g in zip(params, _grads(cost, params, grads)):
        acc = _state(p, "accumulator")
        acc_new = E.add(acc, E.square(g))
        updates += [(acc, acc_new), (p, E.sub(p, E.true_divide(E.mul(lr, g), E.add(E.sqrt(acc_new), eps))))]
    return updates


def rmsprop(cost, params, lr=0.001, rho=0.9, eps=1e-8, grads=None):
    """RMSprop: steps scaled by a running root-mean-square of the gradients."""
    updates = []
    for p, g in zip(params, _grads(cost, params, grads)):
        acc = _state(p, "ms")
        acc_new = E.add(E.mul(rho, acc), E.mul(1.0 - rho, E.square(g)))
        updates += [(acc, acc_new), (p, E.sub(p, E.true_divide(E.mul(lr, g), E.add(E.sqrt(acc_new), eps))))]
    return updates


def adadelta(cost, params, lr=1.0, rho=0.95, eps=1e-6, grads=None):
    """Adadelta (Zeiler 2012)."""
    updates = []
    for p, g in zip(params, _grads(cost, params, grads)):
        acc_g, acc_d = _state(p, "acc_grad"), _state(p, "acc_delta")
        acc_g_new = E.add(E.mul(rho, acc_g), E.mul(1.0 - rho, E.square(g)))
        delta = E.mul(E.true_divide(E.sqrt(E.add(acc_d, eps)), E.sqrt(E.add(acc_g_new, eps))), g)
        acc_d_new = E.add(E.mul(rho, acc_d), E.mul(1.0 - rho, E.square(delta)))
        updates += [(acc_g, acc_g_new), (acc_d, acc_d_new), (p, E.sub(p, E.mul(lr, delta)))]
    return updates


def adam(cost, params, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, grads=None):
    """Adam with bias correction."""
    t = SharedVariable(np.zeros((), np.float32), name="adam_t")
    t_new = E.add(t, 1.0)
    updates = [(t, t_new)]
    for p, g in zip(params, _grads(cost, params, grads)):
        m, v = _state(p, "m"), _state(p, "v")
        m_new = E.add(E.mul(beta1, m), E.mul(1.0 - beta1, g))
        v_new = E.add(E.mul(beta2, v), E.mul(1.0 - beta2, E.square(g)))
        tc = E.cast(t_new, p.dtype)
        m_hat = E.true_divide(m_new, E.sub(1.0, E.power(beta1, tc)))
        v_hat = E.true_divide(v_new, E.sub(1.0, E.power(beta2, tc)))
        step = E.true_divide(E.mul(lr, m_hat), E.add(E.sqrt(v_hat), eps))
        updates += [(m, m_new), (v, v_new), (p, E.sub(p, step))]
    return updates
