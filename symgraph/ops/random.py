"""Random numbers: a counter-based generator, so every backend can reproduce the same stream.

Each draw hashes ``(seed, draw id, call counter, element index)`` with the SplitMix64
finaliser.  A ``RandomStream`` owns a shared ``[seed, counter]`` state whose default update
advances the counter, so every call of a compiled function draws fresh numbers and the same
seed always gives the same sequence.  Parameters (``low``, ``high``, ``mean``, ``std``, ``p``)
enter through ordinary elementwise ops, so gradients flow through them.
"""

from __future__ import annotations

import numpy as np

from ..graph.basic import Apply, Op, SharedVariable, Variable, as_variable
from ..graph.types import TensorType, as_dtype
from . import elemwise as E
from .shape import as_shape_vector, static_shape_value

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_package_rng = np.random.default_rng(0)


def seed(n: int) -> None:
    """Reset the package-level generator that unseeded initialisers and streams draw from."""
    global _package_rng
    _package_rng = np.random.default_rng(int(n))


def next_seed() -> int:
    """A fresh seed from the package-level generator (each call a different one)."""
    return int(_package_rng.integers(0, 2 ** 62))


def package_rng() -> np.random.Generator:
    """The package-level generator (reset by ``seed``)."""
    return _package_rng
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def random_bits(seed: int, draw_id: int, counter: int, n: int) -> np.ndarray:
    """``n`` 64-bit words for one draw of one call."""
    with np.errstate(over="ignore"):
        base = splitmix64(np.array([seed], dtype=np.uint64) ^ (np.uint64(draw_id) * _M1))
        base = splitmix64(base ^ (np.uint64(counter) * _M2))
        return splitmix64(base + np.arange(n, dtype=np.uint64))


def uniform01(bits: np.ndarray, dtype: str) -> np.ndarray:
    """Uniform in [0, 1) from the top 24 (float32) or 53 (float64) bits."""
    if dtype == "float64":
        return (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return ((bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)).astype(dtype)


class RandomDraw(Op):
    """Standard samples: ``uniform`` in [0, 1) or ``normal`` N(0, 1) of a given shape."""

    __props__ = ("dist", "draw_id", "dtype", "ndim")
    nondeterministic = True

    def __init__(self, dist: str, draw_id: int, dtype: str, ndim: int):
        self.dist, self.draw_id, self.dtype, self.ndim = dist, draw_id, as_dtype(dtype), ndim

    def __str__(self):
        return f"Random{self.dist.capitalize()}{{draw={self.draw_id}}}"

    def make_node(self, state, shape_vec) -> Apply:
        known = static_shape_value(shape_vec) or (None,) * self.ndim
        return Apply(self, [state, shape_vec], [TensorType(self.dtype, tuple(known))])

    def perform(self, node, inputs):
        state, shp = inputs
        shape = tuple(int(d) for d in shp)
        n = int(np.prod(shape, dtype=np.int64))
        seed, counter = int(state[0]), int(state[1])
        if self.dist == "uniform":
            return [uniform01(random_bits(seed, self.draw_id, counter, n), self.dtype).reshape(shape)]
        bits = random_bits(seed, self.draw_id, counter, 2 * n)
        u1 = 1.0 - uniform01(bits[0::2], "float64")  # (0, 1]
        u2 = uniform01(bits[1::2], "float64")
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        return [z.astype(self.dtype).reshape(shape)]

    def L_op(self, node, inputs, outputs, output_grads):
        return [None, None]

    def batch(self, node, inputs, batched):
        """One independent draw per example: the same stream, one more leading axis (a draw
        made inside the mapped function is a fresh draw for every example, as in a loop)."""
        from ..vmap import all_batched, batch_size, not_batchable
        from .shape import prepend_dim
        state, vec = inputs
        if any(batched):
            raise not_batchable(node, "the random state or the shape would differ between "
                                      "examples")
        size = batch_size(inputs, batched)
        op = RandomDraw(self.dist, self.draw_id, self.dtype, self.ndim + 1)
        return all_batched(op(state, as_shape_vector(prepend_dim(size, vec))))


class RandomStream:
    """A seeded source of random tensors: ``uniform``, ``normal``, ``bernoulli``.

    Without ``seed`` the stream takes a fresh one from the package-level generator
    (``sg.seed(n)`` makes the whole program reproducible), so two streams never repeat
    each other by accident."""

    def __init__(self, seed: int | None = None):
        self.seed = next_seed() if seed is None else int(seed)
        self.state = SharedVariable(np.array([self.seed, 0], dtype=np.int64),
                                    name=f"rng_state_{self.seed}")
        self.state.default_update = E.add(self.state, np.array([0, 1], dtype=np.int64))
        self._draws = 0

    def _draw(self, dist: str, shape, dtype) -> Variable:
        vec = as_shape_vector(shape)
        op = RandomDraw(dist, self._draws, dtype, vec.type.shape[0])
        self._draws += 1
        return op(self.state, vec)

    def uniform(self, shape, low=0.0, high=1.0, dtype: str = "float32") -> Variable:
        """Uniform samples in ``[low, high)``."""
        u = self._draw("uniform", shape, dtype)
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and (low, high) == (0.0, 1.0):
            return u
        return E.add(low, E.mul(E.sub(high, low), u))

    def normal(self, shape, mean=0.0, std=1.0, dtype: str = "float32") -> Variable:
        """Normal samples with the given ``mean`` and ``std``."""
        z = self._draw("normal", shape, dtype)
        if isinstance(mean, (int, float)) and isinstance(std, (int, float)) and (mean, std) == (0.0, 1.0):
            return z
        return E.add(mean, E.mul(std, z))

    def bernoulli(self, shape, p=0.5, dtype: str = "float32") -> Variable:
        """1 with probability ``p``, else 0."""
        u = self._draw("uniform", shape, "float32" if dtype != "float64" else "float64")
        return E.cast(E.lt(u, p), dtype)

    def __getstate__(self):
        return self.__dict__

    def __repr__(self):
        return f"RandomStream(seed={self.seed})"


def _shape_of(x) -> Variable:
    from .shape import shape
    return shape(as_variable(x))


def dropout(x, p: float, rng: RandomStream) -> Variable:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``."""
    x = as_variable(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if p == 0.0:
        return x
    keep = rng.bernoulli(_shape_of(x), 1.0 - p, dtype=x.dtype)
    return E.mul(x, E.mul(keep, 1.0 / (1.0 - p)))
