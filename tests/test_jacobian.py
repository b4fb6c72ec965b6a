"""``sg.jacobian`` / ``sg.hessian`` built as one batched vector-Jacobian product (``sg.vmap``):
unknown sizes against finite differences and ``torch.autograd.functional``; graph size
independent of the number of elements."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import fd_jacobian

import symgraph as sg
from symgraph.graph.fgraph import toposort

RNG = np.random.default_rng(13)
BACKENDS = ["reference", "llvm"]


def vector_fn(x, w):
    """A vector of the same (unknown) length as ``x``, mixing its entries."""
    return sg.tanh(x * w.sum()) * sg.nn.softmax(x) + x.sum() * x ** 2


def vector_fn_torch(x, w):
    return torch.tanh(x * w.sum()) * torch.softmax(x, 0) + x.sum() * x ** 2


def cost_fn(x):
    return sg.logsumexp(sg.sin(x) * 3.0) + (x ** 4).sum() * 0.1 + sg.nn.softmax(x)[0] * x.prod()


def cost_fn_torch(x):
    return torch.logsumexp(torch.sin(x) * 3.0, 0) + (x ** 4).sum() * 0.1 + torch.softmax(x, 0)[0] * x.prod()


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacobian_of_an_unknown_length_vector(backend):
    x, w = sg.vector("x", "float64"), sg.vector("w", "float64")
    jx, jw = sg.jacobian(vector_fn(x, w), [x, w])
    f = sg.compile([x, w], [jx, jw], backend=backend)
    y = sg.compile([x, w], vector_fn(x, w), backend="reference")
    for n, m in ((3, 2), (7, 5)):  # one compiled function, any length
        xv, wv = RNG.standard_normal(n), RNG.standard_normal(m)
        gx, gw = f(xv, wv)
        assert gx.shape == (n, n) and gw.shape == (n, m)
        np.testing.assert_allclose(gx, fd_jacobian(lambda v: y(v, wv), xv), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gw, fd_jacobian(lambda v: y(xv, v), wv), rtol=1e-6, atol=1e-8)
        tx, tw = torch.autograd.functional.jacobian(vector_fn_torch,
                                                    (torch.tensor(xv), torch.tensor(wv)))
        np.testing.assert_allclose(gx, tx.numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(gw, tw.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hessian_of_an_unknown_length_vector(backend):
    x = sg.vector("x", "float64")
    h = sg.compile([x], sg.hessian(cost_fn(x), x), backend=backend)
    g = sg.compile([x], sg.grad(cost_fn(x), x), backend="reference")
    for n in (2, 6):
        xv = RNG.standard_normal(n)
        got = h(xv)
        want = torch.autograd.functional.hessian(cost_fn_torch, torch.tensor(xv)).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(got, fd_jacobian(g, xv), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jacobian_and_hessian_of_unknown_shape_matrices(backend):
    w, x = sg.matrix("w", "float64"), sg.matrix("x", "float64")
    y = sg.nn.softmax(sg.tanh(x @ w), axis=0)  # (n, k) from (n, m) @ (m, k)
    jac = sg.jacobian(y, w)
    hess = sg.hessian(sg.logsumexp(y * 2.0) + (w ** 3).sum(), w)
    f = sg.compile([x, w], [jac, hess], backend=backend)
    xv, wv = RNG.standard_normal((2, 3)), RNG.standard_normal((3, 4))
    got_j, got_h = f(xv, wv)
    assert got_j.shape == (2, 4, 3, 4) and got_h.shape == (3, 4, 3, 4)
    y_fn = sg.compile([x, w], y, backend="reference")
    np.testing.assert_allclose(got_j, fd_jacobian(lambda v: y_fn(xv, v), wv), rtol=1e-6, atol=1e-8)

    def torch_cost(wt):
        yt = torch.softmax(torch.tanh(torch.tensor(xv) @ wt), 0)
        return torch.logsumexp((yt * 2.0).reshape(-1), 0) + (wt ** 3).sum()

    want = torch.autograd.functional.hessian(torch_cost, torch.tensor(wv)).numpy()
    np.testing.assert_allclose(got_h, want, rtol=1e-11, atol=1e-12)


def test_jacobian_of_a_scalar_is_the_gradient_and_disconnected_inputs_give_zeros():
    x, u = sg.vector("x", "float64"), sg.vector("u", "float64")
    j = sg.jacobian((x ** 3).sum(), x)
    np.testing.assert_allclose(j.eval({x: np.array([1.0, 2.0, -1.0])}), [3.0, 12.0, 3.0])
    ju = sg.jacobian(u * 2.0, x)  # u does not depend on x
    np.testing.assert_array_equal(sg.compile([u, x], ju)(np.ones(2), np.ones(3)), np.zeros((2, 3)))
    hu = sg.hessian(u.sum(), x)
    np.testing.assert_array_equal(sg.compile([u, x], hu)(np.ones(2), np.ones(3)), np.zeros((3, 3)))


def node_count(outputs) -> int:
    return len(toposort(outputs if isinstance(outputs, list) else [outputs]))


def static_hessian(n: int):
    p = sg.tensor("p", (n,), "float64")
    return p, sg.hessian(cost_fn(p), p)


def test_hessian_graph_size_does_not_grow_with_the_number_of_parameters():
    (p10, h10), (p100, h100) = static_hessian(10), static_hessian(100)
    assert h100.shape == (100, 100)
    assert node_count(h10) == node_count(h100)
    f10 = sg.compile([p10], h10, backend="llvm")
    f100 = sg.compile([p100], h100, backend="llvm")
    assert len(f10.fgraph.nodes) == len(f100.fgraph.nodes)
    pv = RNG.standard_normal(100) * 0.5
    want = torch.autograd.functional.hessian(cost_fn_torch, torch.tensor(pv)).numpy()
    np.testing.assert_allclose(f100(pv), want, rtol=1e-10, atol=1e-12)
    assert len(f100.kernels) == len(f10.kernels)


def test_jacobian_graph_size_does_not_grow_with_the_output_length():
    def jac(n):
        x = sg.tensor("x", (n,), "float64")
        return sg.jacobian(sg.tanh(x) * x.sum(), x)

    assert node_count(jac(5)) == node_count(jac(200))
