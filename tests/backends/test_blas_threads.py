"""OpenBLAS's parallel sections on libgomp's threads (symgraph.backends.blas_threads)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import symgraph as sg
from symgraph.backends import blas_threads, llvm_jit

pytestmark = pytest.mark.skipif(not blas_threads.install(),
                                reason="needs libgomp and an OpenBLAS with a threads callback")


def _product_checks(n: int = 300) -> None:
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n + 3))
    b = rng.standard_normal((n + 3, n - 1))
    np.testing.assert_allclose(a @ b, np.einsum("ik,kj->ij", a, b), rtol=1e-10, atol=1e-10)


def test_numpy_products_stay_correct_with_two_threads():
    llvm_jit.set_blas_threads(2)
    for n in (64, 300, 517):  # big enough for OpenBLAS to split the work
        _product_checks(n)


def test_products_from_several_python_threads_at_once():
    llvm_jit.set_blas_threads(2)
    errors = []

    def work():
        try:
            for _ in range(3):
                _product_checks(256)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors


def test_compiled_matmul_gradients_with_two_threads_match_reference():
    rng = np.random.default_rng(0)
    x = sg.matrix("x")
    w = sg.shared(rng.standard_normal((200, 300)).astype("float32"), "w")
    loss = sg.sum(sg.tanh(x @ w) ** 2)
    outs = [loss, sg.grad(loss, w)]
    xv = rng.standard_normal((257, 200)).astype("float32")
    ref = sg.compile([x], outs, backend="reference")(xv)
    got = sg.compile([x], outs, backend="llvm", threads=2)(xv)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=2e-3, atol=2e-3)
