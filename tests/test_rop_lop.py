"""Products with the Jacobian: ``sg.Rop`` (forward mode) against finite-difference JVPs,
``sg.Lop`` (reverse mode), and the full ``sg.jacobian`` / ``sg.hessian`` matrices."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from helpers import fd_jacobian

import symgraph as sg
from symgraph.graph.basic import Apply, Op, as_variable
from symgraph.ops.nn import SoftmaxCrossEntropy

RNG = np.random.default_rng(11)


def f64(name, shape):
    return sg.tensor(name, shape, "float64")


def compile_ref(inputs, outputs):
    return sg.compile(inputs, outputs, backend="reference")


def distinct(*shape):
    n = int(np.prod(shape))
    return (RNG.permutation(n) * 0.29 - n * 0.1).reshape(shape)


def fd_jvp(fn, values, directions, eps=1e-6):
    """Central finite difference of ``fn`` (NumPy in, NumPy out) along ``directions``."""
    plus = fn(*[v + eps * d for v, d in zip(values, directions)])
    minus = fn(*[v - eps * d for v, d in zip(values, directions)])
    return (plus - minus) / (2 * eps)


def check_rop(fn, values):
    xs = [f64(f"x{i}", v.shape) for i, v in enumerate(values)]
    vs = [f64(f"v{i}", v.shape) for i, v in enumerate(values)]
    y = fn(*xs)
    jvp = sg.Rop(y, xs, vs)
    assert jvp.ndim == y.ndim and jvp.dtype == y.dtype
    directions = [RNG.standard_normal(v.shape) for v in values]
    got = compile_ref(xs + vs, jvp)(*values, *directions)
    forward = compile_ref(xs, y)
    expected = fd_jvp(forward, values, directions)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


ROP_CASES = {
    "elementwise": (lambda a, b: sg.tanh(a) * b + sg.exp(b) / (1.0 + a * a), [(3, 4), (4,)]),
    "elementwise_sympy": (lambda a: sg.elementwise(lambda t: t ** 3 / (1 + t ** 2), "f")(a), [(3, 4)]),
    "matmul": (lambda a, b: a @ b, [(3, 4), (4, 2)]),
    "matmul_batched": (lambda a, b: sg.matmul(a, b), [(2, 1, 3, 4), (5, 4, 2)]),
    "matvec": (lambda a, b: sg.dot(a, b), [(3, 4), (4,)]),
    "outer": (lambda a, b: sg.outer(a, b), [(3,), (4,)]),
    "sum": (lambda a: a.sum(axis=1), [(3, 4)]),
    "mean_var": (lambda a: sg.mean(a, axis=0) + sg.var(a, axis=0), [(3, 4)]),
    "max": (lambda a: sg.max(a, axis=1, keepdims=True), [(3, 4)]),
    "min": (lambda a: a.min(axis=0), [(3, 4)]),
    "prod": (lambda a: a.prod(axis=1), [(3, 4)]),
    "logsumexp": (lambda a: sg.logsumexp(a, axis=1), [(3, 4)]),
    "reshape_transpose": (lambda a: sg.reshape(a.T, (2, 6)), [(3, 4)]),
    "broadcast_to": (lambda a: sg.broadcast_to(a, (2, 3, 4)), [(3, 1)]),
    "concatenate_stack": (lambda a, b: sg.stack([sg.concatenate([a, b], 0), sg.concatenate([b, a], 0)]),
                          [(3, 4), (3, 4)]),
    "squeeze_expand_flatten": (lambda a: sg.flatten(sg.expand_dims(sg.squeeze(a, 1), 0)), [(3, 1, 4)]),
    "indexing": (lambda a: a[np.array([0, 0, 2]), 1:] + a[1, :0:-1], [(3, 4)]),
    "take": (lambda a: sg.take(a, np.array([3, 3, 0]), axis=1), [(3, 4)]),
    "softmax": (lambda a: sg.nn.softmax(a), [(3, 4)]),
    "log_softmax": (lambda a: sg.nn.log_softmax(a, axis=0), [(3, 4)]),
    "conv2d": (lambda x, w: sg.nn.conv2d(x, w, stride=2, padding=1), [(2, 2, 5, 5), (3, 2, 3, 3)]),
    "avg_pool": (lambda x: sg.nn.avg_pool2d(x, 2), [(2, 2, 4, 4)]),
    "mlp": (lambda x, w: sg.nn.softmax(sg.tanh(x @ w)), [(3, 4), (4, 5)]),
    "cross_entropy_prob": (lambda z, t: SoftmaxCrossEntropy(False)(z, sg.nn.softmax(t)),
                           [(3, 4), (3, 4)]),
    "cross_entropy_int": (lambda z: sg.nn.cross_entropy(z, np.array([1, 0, 3])), [(3, 4)]),
    # the gradient graph (Split, IndexAdd, Conv2dGrad* ops) differentiated forward again
    "gradient_graph": (lambda a, w: sg.grad((sg.concatenate([a, a * a])[np.array([0, 0, 3])] ** 2).sum()
                                            + (sg.nn.conv2d(sg.reshape(a, (1, 1, 3, 4)), w) ** 2).sum(), a),
                       [(3, 4), (1, 1, 2, 2)]),
}


@pytest.mark.parametrize("name", sorted(ROP_CASES))
def test_rop_matches_finite_differences(name):
    fn, shapes = ROP_CASES[name]
    check_rop(fn, [RNG.standard_normal(s) for s in shapes])


def test_rop_max_pooling():
    check_rop(lambda x: sg.nn.max_pool2d(x, 2), [distinct(2, 2, 4, 6)])
    check_rop(lambda x: sg.nn.max_pool2d(x, 3, 1), [distinct(1, 2, 5, 5)])
    # second order through the pooling gradient ops (MaxPool2dGrad, MaxPoolSelect)
    check_rop(lambda x: sg.grad((sg.nn.max_pool2d(x, 2, 1) ** 2).sum(), x), [distinct(1, 1, 4, 4)])
    check_rop(lambda x: sg.grad((sg.nn.avg_pool2d(x, 2, 1) ** 2).sum(), x), [distinct(1, 1, 4, 4)])


class ProductAndSine(Op):
    """Two outputs, ``(a * b, sin(a))``, with an L_op and deliberately no R_op."""

    def make_node(self, a, b) -> Apply:
        a, b = as_variable(a), as_variable(b)
        return Apply(self, [a, b], [a.type, a.type])

    def perform(self, node, inputs):
        a, b = inputs
        return [a * b, np.sin(a)]

    def L_op(self, node, inputs, outputs, output_grads):
        (a, b), (g1, g2) = inputs, output_grads
        return [sg.add(sg.mul(g1, b), sg.mul(g2, sg.cos(a))), sg.mul(g1, a)]


def test_double_lop_fallback_for_an_op_without_r_op(monkeypatch):
    grad_module = importlib.import_module("symgraph.grad")  # the module, not sg.grad
    calls = []
    real = grad_module._rop_by_double_lop
    monkeypatch.setattr(grad_module, "_rop_by_double_lop",
                        lambda node, points: calls.append(node.op) or real(node, points))
    assert ProductAndSine.R_op is None
    for k in range(2):
        check_rop(lambda a, b, k=k: sg.exp(ProductAndSine()(sg.tanh(a), b)[k]), [
            RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))])
    assert len(calls) == 2 and all(isinstance(op, ProductAndSine) for op in calls)
    # the dummy cotangent is substituted away: the result only needs the real inputs
    a, b, va = f64("a", (2,)), f64("b", (2,)), f64("va", (2,))
    jvp = sg.Rop(ProductAndSine()(a, b)[0], a, va)
    got = compile_ref([a, b, va], jvp)(np.array([1.0, 2.0]), np.array([3.0, -1.0]), np.array([0.5, 2.0]))
    np.testing.assert_allclose(got, [1.5, -2.0])


def test_rop_of_grad_is_a_hessian_vector_product():
    x, v = f64("x", (4,)), f64("v", (4,))
    cost = (sg.tanh(x) ** 2).sum() + x[0] * x[1] * x[2]
    hv = sg.Rop(sg.grad(cost, x), x, v)
    h = sg.hessian(cost, x)
    xv, vv = RNG.standard_normal(4), RNG.standard_normal(4)
    got_hv, got_h = compile_ref([x, v], [hv, h])(xv, vv)
    np.testing.assert_allclose(got_hv, got_h @ vv, rtol=1e-12)


def test_rop_partial_eval_points_and_disconnected():
    a, b, va = f64("a", (3,)), f64("b", (3,)), f64("va", (3,))
    jvp = sg.Rop(a * b, a, va)  # b is a constant direction-wise
    av, bv, vv = RNG.standard_normal(3), RNG.standard_normal(3), RNG.standard_normal(3)
    np.testing.assert_allclose(compile_ref([a, b, va], jvp)(av, bv, vv), vv * bv)
    zero = sg.Rop(sg.exp(b), a, va)
    np.testing.assert_array_equal(compile_ref([b, va], zero)(bv, vv), np.zeros(3))
    many = sg.Rop([a * b, sg.sin(a)], [a, b], [va, va])
    r1, r2 = compile_ref([a, b, va], many)(av, bv, vv)
    np.testing.assert_allclose(r1, vv * bv + av * vv)
    np.testing.assert_allclose(r2, np.cos(av) * vv)
    with pytest.raises(ValueError, match="eval points"):
        sg.Rop(a * b, [a, b], [va])
    with pytest.raises(ValueError, match="rank"):
        sg.Rop(a * b, a, f64("m", (3, 3)))


def test_lop_is_a_vector_jacobian_product():
    w, x, u = f64("w", (2, 3)), f64("x", (3,)), f64("u", (2,))
    y = sg.tanh(w @ x)
    gx, gw = sg.Lop(y, [x, w], u)
    wv, xv, uv = RNG.standard_normal((2, 3)), RNG.standard_normal(3), RNG.standard_normal(2)
    rx, rw = compile_ref([w, x, u], [gx, gw])(wv, xv, uv)
    dy = uv * (1 - np.tanh(wv @ xv) ** 2)
    np.testing.assert_allclose(rx, wv.T @ dy, rtol=1e-12)
    np.testing.assert_allclose(rw, np.outer(dy, xv), rtol=1e-12)
    # several outputs: the products add up
    both = sg.Lop([y, x * 2.0], x, [u, sg.constant(np.ones(3))])
    np.testing.assert_allclose(compile_ref([w, x, u], both)(wv, xv, uv), wv.T @ dy + 2, rtol=1e-12)
    with pytest.raises(ValueError, match="eval points"):
        sg.Lop([y, x], x, [u])
    with pytest.raises(ValueError, match="rank"):
        sg.Lop(y, x, f64("bad", (2, 2)))


def test_lop_and_rop_are_adjoint():
    x, u, v = f64("x", (2, 3)), f64("u", (3, 3)), f64("v", (2, 3))
    y = sg.nn.softmax(sg.transpose(x) @ x)  # (3, 3)
    lhs = (sg.Lop(y, x, u) * v).sum()
    rhs = (u * sg.Rop(y, x, v)).sum()
    vals = [RNG.standard_normal(s) for s in ((2, 3), (3, 3), (2, 3))]
    left, right = compile_ref([x, u, v], [lhs, rhs])(*vals)
    assert left == pytest.approx(right, rel=1e-10)


# --- jacobian and hessian ---------------------------------------------------------------

def test_jacobian_of_a_vector_function():
    w, x = f64("w", (2, 3)), f64("x", (3,))
    jx, jw = sg.jacobian(sg.tanh(w @ x), [x, w])
    assert jx.shape == (2, 3) and jw.shape == (2, 2, 3)
    wv, xv = RNG.standard_normal((2, 3)), RNG.standard_normal(3)
    rx, rw = compile_ref([w, x], [jx, jw])(wv, xv)
    d = 1 - np.tanh(wv @ xv) ** 2
    np.testing.assert_allclose(rx, d[:, None] * wv, rtol=1e-12)
    expected_w = np.zeros((2, 2, 3))
    for i in range(2):
        expected_w[i, i] = d[i] * xv
    np.testing.assert_allclose(rw, expected_w, rtol=1e-12)


def test_jacobian_of_a_matrix_function_against_finite_differences():
    x = f64("x", (2, 3))
    expr = sg.nn.softmax(x * x, axis=0)
    jac = sg.jacobian(expr, x)
    assert jac.shape == (2, 3, 2, 3)
    xv = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(compile_ref([x], jac)(xv), fd_jacobian(compile_ref([x], expr), xv),
                               rtol=1e-6, atol=1e-8)


def test_jacobian_of_a_scalar_is_the_gradient_and_errors():
    x = f64("x", (3,))
    j = sg.jacobian((x ** 3).sum(), x)
    np.testing.assert_allclose(compile_ref([x], j)(np.array([1.0, 2.0, -1.0])), [3.0, 12.0, 3.0])
    u = f64("u", (None,))  # unknown sizes are fine (tests/test_jacobian.py); not a variable is not
    assert sg.jacobian(u * 2.0, x).type.shape == (None, 3)
    with pytest.raises(TypeError, match="wrt is ndarray"):
        sg.jacobian(u * 2.0, np.ones(3))


def test_hessian_analytic_and_finite_differences():
    x = f64("x", (3,))
    h = sg.hessian((x ** 3).sum() + x[0] * x[1], x)
    xv = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(compile_ref([x], h)(xv),
                               np.diag(6 * xv) + np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]]))
    w = f64("w", (2, 2))
    cost = sg.logsumexp(sg.tanh(w @ np.array([1.0, -0.5])) * 3.0)
    hw = sg.hessian(cost, w)
    assert hw.shape == (2, 2, 2, 2)
    wv = RNG.standard_normal((2, 2))
    grad_fn = compile_ref([w], sg.grad(cost, w))
    got = compile_ref([w], hw)(wv)
    np.testing.assert_allclose(got, fd_jacobian(grad_fn, wv), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(got.reshape(4, 4), got.reshape(4, 4).T, atol=1e-12)


def test_common_ops_define_their_r_op_directly(monkeypatch):
    grad_module = importlib.import_module("symgraph.grad")

    def no_fallback(node, points):
        raise AssertionError(f"{node.op} fell back to the double-Lop trick")

    monkeypatch.setattr(grad_module, "_rop_by_double_lop", no_fallback)
    for fn, shapes in ROP_CASES.values():
        xs = [f64(f"x{i}", s) for i, s in enumerate(shapes)]
        sg.Rop(fn(*xs), xs, [f64(f"v{i}", s) for i, s in enumerate(shapes)])
    x, v = f64("x", (1, 1, 4, 4)), f64("v", (1, 1, 4, 4))
    sg.Rop(sg.grad((sg.nn.max_pool2d(x, 2, 1) ** 2).sum() + (sg.nn.avg_pool2d(x, 2) ** 2).sum(), x), x, v)
