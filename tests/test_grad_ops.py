"""Every differentiable op of API.md against finite differences (``sg.verify_grad``).

Inputs are random float64 tensors whose shapes broadcast against each other; inputs of
piecewise ops (relu, abs, maximum, max...) are drawn away from their kinks.  Ops with an
exact combinatorial rule (max ties, prod at zeros, dropout's mask) are checked against
the expected values directly.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import symgraph as sg

RNG = np.random.default_rng(20261123)


def normal(*shape, rng=RNG):
    return rng.standard_normal(shape)


def positive(*shape, rng=RNG):
    return rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape, rng=RNG):
    """Normal values pushed at least 0.3 away from 0 (the kink of relu / abs / sign)."""
    x = rng.standard_normal(shape)
    return x + 0.3 * np.where(x >= 0, 1.0, -1.0)


def distinct(*shape, rng=RNG):
    """A random permutation of well-separated values: no ties for max / min / pooling."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.37 - n * 0.15).reshape(shape)


mish = sg.elementwise(lambda x: x * sympy.tanh(sympy.log(1 + sympy.exp(x))), name="mish")
smooth_hinge = sg.elementwise(lambda x, y: sympy.log(1 + sympy.exp(x - 2 * y)) * y, name="shinge")

# name -> (unary function, input generator)
UNARY = {
    "exp": (sg.exp, normal),
    "log": (sg.log, positive),
    "log1p": (sg.log1p, positive),
    "expm1": (sg.expm1, normal),
    "sqrt": (sg.sqrt, positive),
    "square": (sg.square, normal),
    "abs": (sg.abs, away_from_zero),
    "neg": (lambda x: -x, normal),
    "tanh": (sg.tanh, normal),
    "sigmoid": (sg.sigmoid, normal),
    "softplus": (sg.softplus, normal),
    "relu": (sg.relu, away_from_zero),
    "leaky_relu": (lambda x: sg.leaky_relu(x, alpha=0.1), away_from_zero),
    "elu": (sg.elu, away_from_zero),
    "gelu": (sg.gelu, normal),
    "gelu_exact": (lambda x: sg.gelu(x, approximate=False), normal),
    "erf": (sg.erf, normal),
    "sin": (sg.sin, normal),
    "cos": (sg.cos, normal),
    "reciprocal": (lambda x: 1.0 / x, positive),
    "power_const": (lambda x: x ** 3, normal),
    "const_power": (lambda x: 2.0 ** x, normal),
    "mod": (lambda x: x % 1.7, positive),
    "clip": (lambda x: sg.clip(x, -0.5, 0.5), distinct),  # no value near ±0.5
    "nn.sigmoid": (sg.nn.sigmoid, normal),
    "elementwise_mish": (mish, normal),
}

# name -> (binary function, generator a, generator b); shapes (3, 4) and (4,) broadcast
BINARY = {
    "add": (lambda a, b: a + b, normal, normal),
    "sub": (lambda a, b: a - b, normal, normal),
    "mul": (lambda a, b: a * b, normal, normal),
    "divide": (lambda a, b: a / b, normal, positive),
    "power": (sg.power, positive, normal),
    "maximum": (sg.maximum, distinct, normal),
    "minimum": (sg.minimum, distinct, normal),
    "where": (lambda a, b: sg.where(a > 0, a * b, b - a), away_from_zero, normal),
    "elementwise_2args": (smooth_hinge, normal, positive),
}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_first_derivative(name):
    fn, gen = UNARY[name]
    sg.verify_grad(fn, [gen(3, 4)])


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_second_derivative(name):
    fn, gen = UNARY[name]

    def first(x):
        return sg.grad(fn(x).sum(), x)

    sg.verify_grad(first, [gen(3, 4)])


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (4,)), ((3, 1), (1, 4)), ((2, 3, 4), (3, 1))])
def test_binary_broadcasting(name, shapes):
    fn, ga, gb = BINARY[name]
    sg.verify_grad(fn, [ga(*shapes[0]), gb(*shapes[1])])


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: size-1 and missing leading dims on either side."""
    full = draw(st.lists(st.integers(2, 3), min_size=1, max_size=3))
    shapes = []
    for _ in range(2):
        drop = draw(st.integers(0, len(full) - 1))
        dims = [1 if draw(st.booleans()) else d for d in full[drop:]]
        shapes.append(tuple(dims))
    return shapes


@settings(max_examples=25, deadline=None)
@given(shapes=broadcast_pair(), name=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2 ** 16))
def test_binary_random_broadcasting(shapes, name, seed):
    fn, ga, gb = BINARY[name]
    rng = np.random.default_rng(seed)
    sg.verify_grad(fn, [ga(*shapes[0], rng=rng), gb(*shapes[1], rng=rng)])


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_second_derivative(name):
    fn, ga, gb = BINARY[name]

    def first(a, b):
        da, db = sg.grad(fn(a, b).sum(), [a, b])
        # a non-linear use of both first derivatives, so every second-order term matters
        return (da * da).sum() + (sg.sin(db) * db).sum()

    sg.verify_grad(first, [ga(3, 4), gb(4)])


def test_where_with_broadcast_condition_and_constants():
    c = np.array([True, False, True, False])
    sg.verify_grad(lambda a, b: sg.where(sg.constant(c), a, b), [normal(3, 4), normal(3, 1)])
    sg.verify_grad(lambda a: sg.where(a > 0, a, 0.5), [away_from_zero(3, 4)])


def test_clip_with_symbolic_bounds():
    x = distinct(3, 4)
    lo, hi = np.full((4,), -0.8), np.full((3, 1), 1.1)
    sg.verify_grad(lambda x, lo, hi: sg.clip(x, lo, hi), [x, lo, hi])


# --- reductions -------------------------------------------------------------------------

REDUCTIONS = {
    "sum": (lambda x: x.sum(axis=1), normal),
    "sum_all": (lambda x: sg.sum(x), normal),
    "sum_keepdims": (lambda x: sg.sum(x, axis=(0, 2), keepdims=True), normal),
    "mean": (lambda x: sg.mean(x, axis=0), normal),
    "mean_all": (lambda x: x.mean(), normal),
    "var": (lambda x: sg.var(x, axis=1), normal),
    "var_ddof": (lambda x: sg.var(x, axis=0, ddof=1), normal),
    "std": (lambda x: sg.std(x, axis=(1, 2)), normal),
    "max": (lambda x: x.max(axis=1), distinct),
    "max_all": (lambda x: sg.max(x), distinct),
    "min_keepdims": (lambda x: sg.min(x, axis=2, keepdims=True), distinct),
    "prod": (lambda x: x.prod(axis=1), positive),
    "prod_signed": (lambda x: sg.prod(x, axis=(0, 2)), normal),
    "logsumexp": (lambda x: sg.logsumexp(x, axis=1), normal),
    "logsumexp_all": (lambda x: sg.logsumexp(x * 10.0), normal),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reduction(name):
    fn, gen = REDUCTIONS[name]
    sg.verify_grad(fn, [gen(2, 3, 4)])


@pytest.mark.parametrize("name", ["mean", "var", "std", "logsumexp", "prod", "max"])
def test_reduction_second_derivative(name):
    fn, gen = REDUCTIONS[name]
    sg.verify_grad(lambda x: sg.grad((fn(x) ** 2).sum(), x), [gen(2, 3, 4)])


def test_max_and_min_ties_split_the_gradient_evenly():
    x = sg.tensor("x", (2, 4), "float64")
    up = sg.tensor("up", (2,), "float64")
    gmax = sg.grad((x.max(axis=1) * up).sum(), x)
    gmin = sg.grad((x.min(axis=1) * up).sum(), x)
    gall = sg.grad(sg.max(x), x)
    f = sg.compile([x, up], [gmax, gmin, gall], backend="reference")
    xv = np.array([[1.0, 3.0, 3.0, -2.0],
                   [5.0, 5.0, 5.0, 5.0]])
    upv = np.array([2.0, 1.2])
    got_max, got_min, got_all = f(xv, upv)
    np.testing.assert_allclose(got_max, [[0, 1, 1, 0], [0.3, 0.3, 0.3, 0.3]])
    np.testing.assert_allclose(got_min, [[0, 0, 0, 2], [0.3, 0.3, 0.3, 0.3]])
    # over all axes the five maxima of value 5 share the gradient
    np.testing.assert_allclose(got_all, [[0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    # and the split gradient is what the tie-free limit averages to
    assert got_max.sum() == pytest.approx(upv.sum())


def test_maxout_ties_split_and_maxout_gradient():
    sg.verify_grad(lambda x: sg.nn.maxout(x, 2), [distinct(3, 6)])
    sg.verify_grad(lambda x: sg.nn.maxout(x, 3, axis=1), [distinct(2, 6, 2)])
    x = sg.tensor("x", (1, 4), "float64")
    g = sg.compile([x], sg.grad(sg.nn.maxout(x, 2).sum(), x), backend="reference")
    np.testing.assert_allclose(g(np.array([[2.0, 2.0, 1.0, 3.0]])), [[0.5, 0.5, 0, 1]])


@pytest.mark.parametrize("values, expected", [
    ([2.0, 3.0, 4.0], [12.0, 8.0, 6.0]),
    ([2.0, 0.0, 4.0], [0.0, 8.0, 0.0]),
    ([0.0, 3.0, 0.0], [0.0, 0.0, 0.0]),
    ([-1.5, 0.0, 0.0], [0.0, 0.0, 0.0]),
])
def test_prod_gradient_with_zeros(values, expected):
    x = sg.tensor("x", (3,), "float64")
    f = sg.compile([x], sg.grad(sg.prod(x), x), backend="reference")
    np.testing.assert_allclose(f(np.array(values)), expected)


def test_prod_with_zeros_verify_and_hessian():
    x = np.array([[1.5, 0.0, -2.0], [0.7, 1.3, 0.0]])
    sg.verify_grad(lambda x: sg.prod(x, axis=1), [x])
    # second derivatives stay finite and exact at zeros: H_ij = prod of the entries but i, j
    v = sg.tensor("v", (4,), "float64")
    h = sg.compile([v], sg.hessian(sg.prod(v), v), backend="reference")
    for point in ([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 3.0, 4.0], [0.0, 2.0, 0.0, 4.0], [0.0, 0.0, 0.0, 4.0]):
        p = np.array(point)
        expected = np.zeros((4, 4))
        for i in range(4):
            for j in range(4):
                if i != j:
                    expected[i, j] = np.prod(np.delete(p, [i, j]))
        np.testing.assert_allclose(h(p), expected, err_msg=str(point))


# --- linear algebra ---------------------------------------------------------------------

@pytest.mark.parametrize("shapes", [
    ((3, 4), (4, 2)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),      # broadcast batch
    ((3, 4), (2, 4, 5)),            # a matrix against a batch
    ((4,), (2, 4, 3)),              # vector @ batch
    ((3, 4), (4,)),                 # matrix @ vector
    ((4,), (4,)),
])
def test_matmul(shapes):
    sg.verify_grad(lambda a, b: sg.matmul(a, b), [normal(*shapes[0]), normal(*shapes[1])])


def test_matmul_operator_and_second_derivative():
    sg.verify_grad(lambda a, b: sg.tanh(a @ b), [normal(2, 3, 4), normal(4, 2)])
    sg.verify_grad(lambda a, b: sg.grad(sg.tanh(a @ b).sum(), a), [normal(3, 4), normal(4, 2)])


def test_dot_and_outer():
    sg.verify_grad(lambda a, b: sg.dot(a, b), [normal(4), normal(4)])
    sg.verify_grad(lambda a, b: sg.dot(a, b), [normal(3, 4), normal(4, 2)])
    sg.verify_grad(lambda a, b: sg.dot(a, b), [normal(3, 4), normal(4)])
    sg.verify_grad(lambda a, b: sg.dot(a, b), [normal(3, 4), normal()])
    sg.verify_grad(lambda a, b: sg.outer(a, b), [normal(4), normal(3)])
    sg.verify_grad(lambda a, b: sg.outer(a, b), [normal(2, 2), normal(3)])


# --- shape ops and indexing -------------------------------------------------------------

SHAPE_OPS = {
    "reshape": (lambda x: sg.reshape(x, (4, -1)), (2, 3, 4)),
    "method_reshape": (lambda x: x.reshape((6, 4)), (2, 3, 4)),
    "transpose": (lambda x: sg.transpose(x, (2, 0, 1)), (2, 3, 4)),
    "T": (lambda x: x.T, (2, 3, 4)),
    "method_transpose": (lambda x: x.transpose(1, 0, 2), (2, 3, 4)),
    "broadcast_to": (lambda x: sg.broadcast_to(x, (2, 3, 4)), (3, 1)),
    "squeeze": (lambda x: sg.squeeze(x, 1), (3, 1, 4)),
    "squeeze_all": (lambda x: sg.squeeze(x), (1, 3, 1)),
    "expand_dims": (lambda x: sg.expand_dims(x, (0, 2)), (3, 4)),
    "flatten": (lambda x: sg.flatten(x), (2, 3, 4)),
    "flatten2": (lambda x: sg.flatten(x, 2), (2, 3, 4)),
    "basic_index": (lambda x: x[1:, ::-2, None, 0], (3, 4, 2)),
    "int_index": (lambda x: x[1, -1], (3, 4, 2)),
    "ellipsis": (lambda x: x[..., 1], (3, 4, 2)),
    "array_index_repeated": (lambda x: x[np.array([0, 2, 0, 0])], (3, 4)),
    "array_index_2d": (lambda x: x[:, np.array([[1, 1], [3, 0]])], (3, 4)),
    "array_index_pair": (lambda x: x[np.array([0, 2, 2]), np.array([1, 1, 3])], (3, 4)),
    "take_axis": (lambda x: sg.take(x, np.array([1, 1, 0, 3]), axis=1), (3, 4)),
    "take_flat": (lambda x: sg.take(x, np.array([1, 1, 5, 11])), (3, 4)),
    "take_negative_axis": (lambda x: sg.take(x, np.array([[2, 0], [2, 2]]), axis=-1), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_and_index_ops(name):
    fn, shape = SHAPE_OPS[name]
    sg.verify_grad(fn, [normal(*shape)])


def test_concatenate_and_stack():
    sg.verify_grad(lambda a, b, c: sg.concatenate([a, b, c], axis=1),
                   [normal(3, 2), normal(3, 4), normal(3, 1)])
    sg.verify_grad(lambda a, b: sg.concatenate([a, b]), [normal(2, 3), normal(1, 3)])
    sg.verify_grad(lambda a, b: sg.stack([a, b], axis=1), [normal(3, 2), normal(3, 2)])
    sg.verify_grad(lambda a, b: sg.stack([a, b, a], axis=-1), [normal(3), normal(3)])
    sg.verify_grad(lambda a: sg.grad((sg.concatenate([a, a * a]) ** 2).sum(), a), [normal(2, 3)])


def test_repeated_indices_accumulate():
    x = sg.tensor("x", (3, 2), "float64")
    idx = sg.tensor("idx", (None,), "int64")
    cost = (x[idx] * np.array([1.0, 10.0])).sum() + sg.take(x, idx, axis=0)[:, 0].sum()
    f = sg.compile([x, idx], sg.grad(cost, x), backend="reference")
    got = f(np.zeros((3, 2)), np.array([2, 0, 2, 2]))
    np.testing.assert_allclose(got, [[2, 10], [0, 0], [6, 30]])


def test_indexing_second_derivative():
    sg.verify_grad(lambda x: sg.grad((x[np.array([0, 0, 2])] ** 3).sum(), x), [normal(3, 2)])


# --- neural-network ops -----------------------------------------------------------------

NN_OPS = {
    "softmax": (lambda x: sg.nn.softmax(x), [(3, 4)]),
    "softmax_axis0": (lambda x: sg.nn.softmax(x, axis=0), [(3, 4)]),
    "log_softmax": (lambda x: sg.nn.log_softmax(x), [(2, 3, 4)]),
    "cross_entropy_int": (lambda x: sg.nn.cross_entropy(x, np.array([0, 3, 1])), [(3, 4)]),
    "cross_entropy_prob": (lambda x, t: sg.nn.cross_entropy(x, sg.nn.softmax(t)), [(3, 4), (3, 4)]),
    "bce_logits": (lambda x: sg.nn.binary_cross_entropy(x, np.array([[0.0, 1.0, 1.0]])), [(2, 3)]),
    "bce_probs": (lambda x: sg.nn.binary_cross_entropy(sg.sigmoid(x), np.array([0.0, 1.0, 1.0]),
                                                       from_logits=False), [(2, 3)]),
    "mse": (lambda a, b: sg.nn.mse(a, b), [(3, 4), (4,)]),
    "hinge": (lambda s: sg.nn.hinge(s * 0.2, np.array([1.0, -1.0, 1.0])), [(2, 3)]),
}


@pytest.mark.parametrize("name", sorted(NN_OPS))
def test_nn_ops(name):
    fn, shapes = NN_OPS[name]
    sg.verify_grad(fn, [normal(*s) for s in shapes])


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "cross_entropy_int", "cross_entropy_prob"])
def test_nn_ops_second_derivative(name):
    fn, shapes = NN_OPS[name]

    def first(*xs):
        gs = sg.grad((fn(*xs) ** 2).sum(), list(xs))
        return sum(((g * g).sum() for g in gs[1:]), (gs[0] ** 2).sum())

    sg.verify_grad(first, [normal(*s) for s in shapes])


def test_hinge_away_from_the_kink():
    scores = np.array([[0.3, -2.0, 1.7], [-0.4, 0.6, 2.5]])  # 1 - t*s never 0
    t = np.array([1.0, -1.0, 1.0])
    sg.verify_grad(lambda s: sg.nn.hinge(s, t), [scores])


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), ((1, 2), (0, 1)), (3, 2)])
def test_conv2d_input_and_filters(stride, padding):
    sg.verify_grad(lambda x, w: sg.nn.conv2d(x, w, stride=stride, padding=padding),
                   [normal(2, 3, 6, 5), normal(4, 3, 3, 2)])


def test_conv2d_second_derivative():
    def first(x, w):
        gx, gw = sg.grad((sg.nn.conv2d(x, w, stride=2, padding=1) ** 2).sum(), [x, w])
        return (gx * gx).sum() + (gw * gw).sum()

    sg.verify_grad(first, [normal(1, 2, 5, 5), normal(3, 2, 3, 3)])


@pytest.mark.parametrize("size, stride", [(2, None), (3, 1), ((2, 3), (1, 2))])
def test_pooling(size, stride):
    x = distinct(2, 2, 6, 7)
    sg.verify_grad(lambda x: sg.nn.max_pool2d(x, size, stride), [x])
    sg.verify_grad(lambda x: sg.nn.avg_pool2d(x, size, stride), [normal(2, 2, 6, 7)])


def test_pooling_second_derivative():
    x = distinct(1, 2, 4, 4)
    sg.verify_grad(lambda x: sg.grad((sg.nn.max_pool2d(x, 2, 1) ** 2).sum(), x), [x])
    sg.verify_grad(lambda x: sg.grad((sg.nn.avg_pool2d(x, 2) ** 3).sum(), x), [normal(1, 2, 4, 4)])


def test_dropout_gradient_uses_the_forward_mask():
    x = sg.tensor("x", (64,), "float64")
    up = sg.tensor("up", (64,), "float64")
    p = 0.3
    y = sg.nn.dropout(x, p, sg.RandomStream(7))
    f = sg.compile([x, up], [y, sg.grad((y * up).sum(), x)], backend="reference")
    xv = RNG.uniform(1.0, 2.0, 64)  # never 0, so y == 0 exactly where the mask drops
    upv = normal(64)
    masks = []
    for _ in range(3):  # every call draws a fresh mask; forward and gradient share it
        yv, gv = f(xv, upv)
        mask = (yv != 0).astype(np.float64)
        assert 0 < mask.sum() < 64
        np.testing.assert_allclose(yv, xv * mask / (1 - p))
        np.testing.assert_allclose(gv, mask / (1 - p) * upv)
        masks.append(mask)
    assert not np.array_equal(masks[0], masks[1])


# --- piecewise-constant and integer outputs --------------------------------------------

PIECEWISE = {
    "argmax": lambda x: sg.argmax(x, axis=1).astype("float64").sum(),
    "argmin": lambda x: sg.argmin(x).astype("float64"),
    "greater": lambda x: (x > 0.1).astype("float64").sum(),
    "less_equal": lambda x: (x <= 0.1).astype("float64").sum(),
    "eq": lambda x: sg.eq(x, 0.5).astype("float64").sum(),
    "floor": lambda x: sg.floor(x).sum(),
    "ceil": lambda x: sg.ceil(x).sum(),
    "sign": lambda x: sg.sign(x).sum(),
    "floor_divide": lambda x: (x // 0.5).sum(),
    "to_int": lambda x: x.astype("int64").astype("float64").sum(),
}


@pytest.mark.parametrize("name", sorted(PIECEWISE))
def test_piecewise_constant_outputs_give_zero_gradients(name):
    x = sg.tensor("x", (2, 3), "float64")
    g = sg.grad(PIECEWISE[name](x), x)  # disconnected="raise" by default: must not raise
    assert g.dtype == "float64"
    got = sg.compile([x], g, backend="reference")(away_from_zero(2, 3))
    np.testing.assert_array_equal(got, np.zeros((2, 3)))


def test_piecewise_constant_mixed_with_smooth_paths():
    x = sg.tensor("x", (2, 3), "float64")
    cost = (sg.floor(x) * x).sum() + x[0, sg.argmax(x[0])] + ((x > 0) * x).sum()
    xv = np.array([[0.5, 2.3, -1.2], [1.7, -0.6, 0.2]])
    got = sg.compile([x], sg.grad(cost, x), backend="reference")(xv)
    expected = np.floor(xv) + (xv > 0)
    expected[0, 1] += 1
    np.testing.assert_allclose(got, expected)


def test_gradients_flow_through_random_parameters():
    mu, sd = sg.tensor("mu", (), "float64"), sg.tensor("sd", (), "float64")
    rng = sg.RandomStream(1)
    z = rng.normal((5,), mu, sd, dtype="float64")
    u = rng.uniform((4,), mu, mu + sd, dtype="float64")
    g_mu, g_sd = sg.grad(z.sum() + (u ** 2).sum(), [mu, sd])
    zv, uv, got_mu, got_sd = sg.compile([mu, sd], [z, u, g_mu, g_sd], backend="reference")(1.0, 2.0)
    # reparameterised: z = mu + sd * eps, u = mu + sd * r with the same draws
    eps, r = (zv - 1.0) / 2.0, (uv - 1.0) / 2.0
    assert got_mu == pytest.approx(5 + (2 * uv).sum())
    assert got_sd == pytest.approx(eps.sum() + (2 * uv * r).sum())
