"""Theano/PyTensor compatibility: run Theano-style programs with an import change.

    import symgraph.compat.theano as theano
    import symgraph.compat.theano.tensor as T

What it maps, and where symgraph differs, is in docs/coming-from-theano.md.
"""

from __future__ import annotations

from . import tensor
from .core import config, function, grad, pp, shared
from .tensor import shared_randomstreams

printing = type("printing", (), {"pp": staticmethod(pp)})

__all__ = ["config", "function", "grad", "pp", "printing", "shared", "shared_randomstreams", "tensor"]
