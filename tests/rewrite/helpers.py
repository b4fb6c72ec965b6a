"""Shared helpers of the rewrite tests: compile with and without rewrites and compare."""

from __future__ import annotations

import numpy as np

import symgraph as sg


def compile_both(inputs, outputs, **kw):
    """The reference backend with and without rewrites."""
    f0 = sg.compile(inputs, outputs, backend="reference", rewrite=False, **kw)
    f1 = sg.compile(inputs, outputs, backend="reference", **kw)
    return f0, f1


def check_same(inputs, outputs, values, rtol=1e-5, atol=1e-6, **kw):
    """Compile both ways, check equal results, return the rewritten function."""
    f0, f1 = compile_both(inputs, outputs, **kw)
    r0, r1 = f0(*values), f1(*values)
    if not isinstance(r0, list):
        r0, r1 = [r0], [r1]
    for a, b in zip(r0, r1):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
    return f1


def nodes(f):
    """Apply nodes of a compiled function's rewritten graph, in run order."""
    return f.fgraph.toposort()


def op_names(f):
    return [type(n.op).__name__ for n in nodes(f)]


def fired(f, name: str) -> bool:
    """Did rewrite ``name`` (or scalar rule ``name``, logged as ``rewrite/rule``) fire?"""
    return any(name == r.rewrite or name in r.rewrite.replace("+", "/").split("/")
               for r in f.rewrite_log)
