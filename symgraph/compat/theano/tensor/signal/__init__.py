"""``theano.tensor.signal``."""

from . import pool

__all__ = ["pool"]
