"""Small graphs covering every op, shared by the CUDA code-generation tests (nvcc, no GPU) and
the GPU tests (every backend against the reference).

Each case builds fresh symbolic inputs and returns ``Case(inputs, outputs, values, updates)``
with concrete NumPy values for the inputs, so the same case can be rendered for its shapes or
run and compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import symgraph as sg
from symgraph.codegen._scalar import S
from symgraph.ops.fused import FusedReduce, MatMulEpilogue


@dataclass
class Case:
    inputs: list
    outputs: list
    values: list
    updates: list = field(default_factory=list)
    rtol: float = 1e-4


def _r(*shape, seed=0, dtype="float32", lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(dtype)


def elementwise_unary():
    x = sg.matrix("x")
    xp = sg.matrix("xp")  # positive, for log / sqrt
    outs = [sg.exp(x), sg.log(xp), sg.log1p(xp), sg.expm1(x), sg.sqrt(xp), sg.square(x), sg.abs(x),
            sg.sign(x), sg.tanh(x), sg.sigmoid(x * 30), sg.softplus(x * 30), sg.relu(x),
            sg.leaky_relu(x, 0.1), sg.elu(x), sg.gelu(x), sg.gelu(x, approximate=False), sg.erf(x),
            sg.sin(x), sg.cos(x), sg.floor(x * 3), sg.ceil(x * 3), -x, sg.clip(x, -0.5, 0.5)]
    return Case([x, xp], outs, [_r(5, 7), _r(5, 7, seed=1, lo=0.1, hi=3.0)])


def elementwise_binary():
    a, b = sg.matrix("a"), sg.vector("b")
    i, j = sg.matrix("i", dtype="int64"), sg.vector("j", dtype="int32")
    bits = sg.matrix("bits", dtype="bool")
    outs = [a + b, a - b, a * b, a / b, a // b, a % b, a ** 2, sg.power(sg.abs(a) + 0.5, b),
            sg.maximum(a, b), sg.minimum(a, b), a < b, a <= b, a > b, a >= b, sg.eq(a, b), sg.neq(a, b),
            sg.where(a > 0, a, b), i + j, i * j, i // (sg.abs(j) + 1), i % (sg.abs(j) + 1), -i,
            sg.abs(i), i.astype("float32") * a, a.astype("int32"), a.astype("float64") + 1.0,
            sg.ops.logical_and(bits, a > 0), sg.ops.logical_or(bits, a > 0), sg.ops.logical_not(bits),
            bits.astype("float32"),
            sg.maximum(i, j), a ** j]
    vals = [_r(4, 6), _r(6, seed=1, lo=0.5, hi=2.0),
            np.random.default_rng(2).integers(-9, 9, (4, 6)), np.arange(-3, 3, dtype=np.int32),
            np.random.default_rng(3).integers(0, 2, (4, 6)).astype(bool)]
    return Case([a, b, i, j, bits], outs, vals)


def fused_dag():
    x, y = sg.matrix("x"), sg.matrix("y")
    # one Elemwise holding a large DAG (what the fuse rewrite produces)
    xi, yi = S.inp(0, "float32"), S.inp(1, "float32")
    t = S.apply("tanh", S.apply("add", S.apply("mul", xi, yi), S.const(0.5, "float32")))
    e = S.apply("add", S.apply("mul", t, t), S.apply("where", S.apply("gt", xi, yi), S.apply("exp", t), xi))
    from symgraph.ops.elemwise import Elemwise
    out = Elemwise(e, 2, name="fused_tanh_exp")(x, y)
    s = FusedReduce("sum", (1,), False, S.apply("exp", S.apply("sub", xi, yi)), 2)(x, y)
    return Case([x, y], [out, s], [_r(6, 9), _r(6, 9, seed=1)])


def reductions():
    x = sg.tensor3("x")
    k = sg.matrix("k", dtype="int64")
    outs = [x.sum(), x.sum(axis=0), x.sum(axis=(0, 2)), x.mean(axis=1, keepdims=True), x.max(axis=2),
            x.min(axis=0), x.prod(axis=1), sg.argmax(x, axis=1), sg.argmin(x, axis=2), sg.argmax(x),
            sg.logsumexp(x, axis=2), x.var(axis=1), x.std(), k.sum(axis=1), k.max(),
            (x > 0).astype("bool").sum(axis=2)]
    vals = [_r(3, 5, 300), np.random.default_rng(1).integers(-5, 5, (4, 6))]
    return Case([x, k], outs, vals, rtol=1e-3)


def big_reductions():
    """Long rows (block-per-row kernels) and a leading-axis sum (thread per column)."""
    from symgraph.ops import reduce as R
    x = sg.matrix("x")
    small = (x * 100).astype("int8")
    return Case([x], [x.sum(axis=1), x.max(axis=1), x.sum(axis=0), x.sum(), sg.nn.softmax(x),
                      sg.nn.log_softmax(x), R.any(x > 0.99, axis=1), R.all(x > -0.99, axis=1),
                      small.max(axis=1), small.min(axis=1)], [_r(16, 1000)], rtol=1e-3)


def whole_reductions():
    """Reductions of a long vector to one value: many blocks and a last-block combine."""
    x = sg.vector("x")
    return Case([x], [x.sum(), x.max(), (x * x).mean(), sg.exp(x).sum() * 2, sg.argmax(x)],
                [_r(70001)], rtol=1e-4)


def matmuls():
    a, b = sg.matrix("a"), sg.matrix("b")
    p, q = sg.tensor3("p"), sg.tensor3("q")
    v = sg.vector("v")
    ia, ib = sg.matrix("ia", dtype="int32"), sg.matrix("ib", dtype="int32")
    # big enough (m*n*k > 2^14) for GEMM calls; smaller products are lowered to loops
    outs = [a @ b, a.T @ a, p @ q, p @ b, sg.dot(a, v[:30]), sg.outer(v, v), ia @ ib,
            (a.astype("float64") @ b.astype("float64")), a[:5, :7] @ b[:7, :9]]
    bias = sg.vector("bias")
    epi = MatMulEpilogue(S.apply("maximum", S.const(0.0, "float32"),
                                 S.apply("add", S.inp(0, "float32"), S.inp(1, "float32"))), 2)(a, b, bias)
    vals = [_r(40, 30), _r(30, 20, seed=1), _r(3, 20, 30, seed=2), _r(3, 30, 40, seed=3), _r(40, seed=4),
            np.arange(12, dtype=np.int32).reshape(3, 4), np.arange(8, dtype=np.int32).reshape(4, 2),
            _r(20, seed=5)]
    return Case([a, b, p, q, v, ia, ib, bias], outs + [epi], vals)


def shapes_and_indexing():
    x = sg.tensor3("x")
    m = sg.matrix("m")
    idx = sg.vector("idx", dtype="int64")
    lab = sg.vector("lab", dtype="int64")
    outs = [x.reshape((6, -1)), x.transpose(2, 0, 1) * 1.0, sg.broadcast_to(m[0], (3, 5)) + 0.0,
            sg.concatenate([m, m * 2], axis=1), sg.stack([m, m], axis=0), sg.flatten(x),
            sg.expand_dims(m, 1) + 0.0, x[1], x[:, 1:3, ::2] * 1.0, x[..., -1] + 0.0, m[idx],
            sg.take(m, idx, axis=1), x[lab[:2] % 2, :, idx[1:3]], sg.one_hot(lab, 5),
            sg.inc_subtensor(m, idx, m[0] * 0 + 1.0), sg.inc_subtensor(m, (slice(None), 1), 2.0),
            sg.squeeze(sg.expand_dims(m, 0), 0) + 0.0]
    vals = [_r(2, 3, 4), _r(3, 5, seed=1), np.array([0, 2, 1, 2], dtype=np.int64),
            np.array([0, 4, 2], dtype=np.int64)]
    return Case([x, m, idx, lab], outs, vals)


def softmax_family():
    z = sg.matrix("z")
    z3 = sg.tensor3("z3")
    y = sg.vector("y", dtype="int64")
    t = sg.matrix("t")
    loss = sg.nn.cross_entropy(z, y)
    dense = sg.nn.cross_entropy(z, sg.nn.softmax(t))
    outs = [sg.nn.softmax(z), sg.nn.log_softmax(z), sg.nn.softmax(z3, axis=1), loss, sg.grad(loss, z),
            dense, sg.grad(dense, [z, t])[0], sg.grad(dense, [z, t])[1]]
    vals = [_r(6, 10) * 3, _r(2, 4, 3, seed=1), np.array([0, 9, 3, 3, 1, 5], dtype=np.int64),
            _r(6, 10, seed=2)]
    return Case([z, z3, y, t], outs, vals)


def softmax_ce_grad():
    """Cross-entropy with its logits gradient (one fused kernel): labels with per-row weights
    and probability targets, rows long enough for one block per row."""
    from symgraph.ops.nn import SoftmaxCrossEntropy
    z, t = sg.matrix("z"), sg.matrix("t")
    y, w = sg.vector("y", dtype="int64"), sg.vector("w")
    sparse = sg.sum(SoftmaxCrossEntropy(True)(z, y) * w)
    dense = sg.nn.cross_entropy(z, sg.nn.softmax(t))
    outs = [sparse, sg.grad(sparse, z), dense, sg.grad(dense, z)]
    vals = [_r(4, 300) * 4, _r(4, 300, seed=2), np.array([0, 299, 7, 150], dtype=np.int64), _r(4, seed=3)]
    return Case([z, t, y, w], outs, vals)


def convolution():
    x, w = sg.tensor4("x"), sg.tensor4("w")
    out = sg.nn.conv2d(x, w, stride=2, padding=1)
    cost = (out * out).sum()
    gx, gw = sg.grad(cost, [x, w])
    same = sg.nn.conv2d(x, w[:, :, :3, :3] * 1.0, padding=1)
    return Case([x, w], [out, gx, gw, same], [_r(2, 3, 9, 8), _r(4, 3, 3, 3, seed=1)], rtol=1e-3)


def pooling():
    x = sg.tensor4("x")
    v = sg.tensor4("v")
    mp = sg.nn.max_pool2d(x, 2)
    ap = sg.nn.avg_pool2d(x, (3, 2), stride=(2, 1))
    gmax = sg.grad((mp * mp).sum(), x)
    gavg = sg.grad((ap * ap).sum(), x)
    (jvp,) = sg.Rop([mp], [x], [v])
    return Case([x, v], [mp, ap, gmax, gavg, jvp], [_r(2, 3, 6, 7), _r(2, 3, 6, 7, seed=1)])


def randomness():
    rng = sg.RandomStream(7)
    x = sg.matrix("x")
    u = rng.uniform((4, 5))
    n = rng.normal((3, 3), mean=1.0, std=2.0, dtype="float64")
    b = rng.bernoulli((4, 5), p=0.3)
    d = sg.nn.dropout(x, 0.5, rng)
    return Case([x], [u, n, b, d], [_r(4, 5)])


CASES = {f.__name__: f for f in (elementwise_unary, elementwise_binary, fused_dag, reductions,
                                big_reductions, whole_reductions, matmuls, shapes_and_indexing,
                                softmax_family, softmax_ce_grad, convolution, pooling, randomness)}


def mlp_step(batch=32, n_in=64, hidden=128, n_out=10, lr=0.1):
    """The fused MLP training step (forward, backward, SGD on every parameter)."""
    x = sg.tensor("x", (None, n_in))
    y = sg.tensor("y", (None,), dtype="int64")
    w1 = sg.nn.init.he_normal((n_in, hidden), seed=0, name="w1")
    b1 = sg.nn.init.zeros((hidden,), name="b1")
    w2 = sg.nn.init.glorot_uniform((hidden, n_out), seed=1, name="w2")
    b2 = sg.nn.init.zeros((n_out,), name="b2")
    params = [w1, b1, w2, b2]
    logits = sg.relu(x @ w1 + b1) @ w2 + b2
    loss = sg.nn.cross_entropy(logits, y)
    grads = sg.grad(loss, params)
    vals = [_r(batch, n_in), np.random.default_rng(1).integers(0, n_out, batch)]
    return Case([x, y], [loss], vals, [(p, p - lr * g) for p, g in zip(params, grads)])


def convnet_step(batch=8, lr=0.05):
    """A small convnet training step on 8x8 images: conv, ReLU, max pool, dense, softmax CE."""
    x = sg.tensor("x", (None, 1, 8, 8))
    y = sg.tensor("y", (None,), dtype="int64")
    wc = sg.nn.init.he_normal((6, 1, 3, 3), seed=0, name="wc")
    bc = sg.nn.init.zeros((6,), name="bc")
    wd = sg.nn.init.glorot_uniform((6 * 4 * 4, 10), seed=1, name="wd")
    bd = sg.nn.init.zeros((10,), name="bd")
    params = [wc, bc, wd, bd]
    h = sg.relu(sg.nn.conv2d(x, wc, padding=1) + bc.reshape((1, 6, 1, 1)))
    h = sg.nn.max_pool2d(h, 2)
    logits = sg.flatten(h, 2) @ wd + bd
    loss = sg.nn.cross_entropy(logits, y)
    grads = sg.grad(loss, params)
    vals = [_r(batch, 1, 8, 8), np.random.default_rng(1).integers(0, 10, batch)]
    return Case([x, y], [loss], vals, [(p, p - lr * g) for p, g in zip(params, grads)])
