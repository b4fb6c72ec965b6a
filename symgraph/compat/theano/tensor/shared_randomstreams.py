"""``RandomStreams(seed)`` with Theano's keyword names (``size=``, ``avg=``, ``n=1, p=``)."""

from __future__ import annotations

from ....graph.basic import Variable
from ....ops import elemwise as E
from ....ops.random import RandomStream
from .. import core


class RandomStreams:
    """Theano's ``RandomStreams`` (also ``MRG_RandomStreams``) on symgraph's counter-based
    generator: the numbers differ from Theano's, the distributions are the same."""

    def __init__(self, seed: int | None = None):
        self._stream = RandomStream(seed)

    def uniform(self, size, low=0.0, high=1.0, dtype=None, ndim=None) -> Variable:
        return self._stream.uniform(size, low, high, dtype=dtype or core.config.floatX)

    def normal(self, size, avg=0.0, std=1.0, dtype=None, ndim=None) -> Variable:
        return self._stream.normal(size, avg, std, dtype=dtype or core.config.floatX)

    def binomial(self, size, n: int = 1, p=0.5, dtype="int64", ndim=None) -> Variable:
        if n != 1:
            raise NotImplementedError("binomial: only n=1 (Bernoulli draws) is supported")
        return E.cast(self._stream.bernoulli(size, p, dtype="float64" if dtype == "float64" else "float32"),
                      dtype)


MRG_RandomStreams = RandomStreams
