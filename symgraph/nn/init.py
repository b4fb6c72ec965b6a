"""Parameter initialisers: return ``sg.shared`` variables holding fresh NumPy arrays.

``seed`` may be an int, a ``np.random.Generator`` or None; None (the default) draws from the
package-level generator, so two layers of the same shape start from different weights and
``sg.seed(n)`` makes a whole program reproducible.
"""

from __future__ import annotations

import numpy as np

from ..graph.basic import SharedVariable
from ..ops.random import package_rng


def _rng(seed) -> np.random.Generator:
    if seed is None:
        return package_rng()
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def glorot_uniform(shape, seed=None, name=None, dtype="float32") -> SharedVariable:
    """Uniform in ±sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return SharedVariable(_rng(seed).uniform(-limit, limit, shape).astype(dtype), name=name)


def glorot_normal(shape, seed=None, name=None, dtype="float32") -> SharedVariable:
    """Normal with std sqrt(2 / (fan_in + fan_out)) (Glorot & Bengio)."""
    fan_in, fan_out = _fans(shape)
    std = np.sqrt(2.0 / (fan_in + fan_out))
    return SharedVariable((_rng(seed).standard_normal(shape) * std).astype(dtype), name=name)


def he_normal(shape, seed=None, name=None, dtype="float32") -> SharedVariable:
    """Normal with std sqrt(2 / fan_in) (He et al.), for ReLU networks."""
    fan_in, _ = _fans(shape)
    return SharedVariable((_rng(seed).standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype),
                          name=name)


def he_uniform(shape, seed=None, name=None, dtype="float32") -> SharedVariable:
    """Uniform in ±sqrt(6 / fan_in) (He et al.), for ReLU networks."""
    fan_in, _ = _fans(shape)
    limit = np.sqrt(6.0 / fan_in)
    return SharedVariable(_rng(seed).uniform(-limit, limit, shape).astype(dtype), name=name)


def zeros(shape, name=None, dtype="float32") -> SharedVariable:
    """All zeros (biases)."""
    return SharedVariable(np.zeros(shape, dtype=dtype), name=name)


def ones(shape, name=None, dtype="float32") -> SharedVariable:
    """All ones (normalisation scales)."""
    return SharedVariable(np.ones(shape, dtype=dtype), name=name)


INITIALISERS = {"glorot_uniform": glorot_uniform, "glorot_normal": glorot_normal,
                "he_normal": he_normal, "he_uniform": he_uniform}


def _fans(shape) -> tuple[int, int]:
    shape = tuple(shape)
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:  # OIHW convolution weights
        receptive = shape[2] * shape[3]
        return shape[1] * receptive, shape[0] * receptive
    n = int(np.prod(shape))
    return n, n
