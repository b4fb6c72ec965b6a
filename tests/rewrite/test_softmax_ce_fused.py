"""The softmax_ce_grad rewrite and the SoftmaxCrossEntropyWithGrad op it produces."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.ops.fused import SoftmaxCrossEntropyWithGrad
from symgraph.ops.nn import SoftmaxCrossEntropy
from tests.rewrite.helpers import fired, op_names

FUSED = "SoftmaxCrossEntropyWithGrad"


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", str(tmp_path / "cache"))


def np_loss_and_grad(z, labels=None, targets=None, g=None):
    """Per-row cross-entropy and its logits gradient in float64 NumPy."""
    z = z.astype(np.float64)
    m = z.max(axis=-1, keepdims=True)
    ls = z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))
    p = np.exp(ls)
    if labels is not None:
        t = (np.arange(z.shape[-1]) == labels[..., None]).astype(np.float64)
    else:
        t = np.broadcast_to(targets.astype(np.float64), z.shape)
    loss = -(t * ls).sum(axis=-1)
    g = np.ones(loss.shape) if g is None else np.broadcast_to(g, loss.shape)
    return loss, (p * t.sum(axis=-1, keepdims=True) - t) * g[..., None]


def w6_graph(shape=(None, 7), dtype="float32", label_dtype="int64"):
    z = sg.tensor("z", shape, dtype=dtype)
    t = sg.tensor("t", shape[:-1], dtype=label_dtype)
    loss = sg.nn.cross_entropy(z, t)
    return z, t, loss, sg.grad(loss, z)


def data(rows, classes, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (rows, classes)).astype(dtype),
            rng.integers(0, classes, rows).astype(np.int64))


# --- where it fires -----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(None, 7), (6, 7)])
def test_fires_on_the_w6_graph(shape):
    z, t, loss, dz = w6_graph(shape)
    f = sg.compile([z, t], [loss, dz], backend="reference")
    names = op_names(f)
    assert names.count(FUSED) == 1 and "Softmax" not in names and "SoftmaxCrossEntropy" not in names
    assert fired(f, "softmax_ce_grad")
    Z, T = data(6, 7)
    want_loss, want_dz = np_loss_and_grad(Z, T)
    got_loss, got_dz = f(Z, T)
    np.testing.assert_allclose(got_loss, want_loss.mean(), rtol=1e-5)
    np.testing.assert_allclose(got_dz, want_dz / 6, rtol=1e-5, atol=1e-7)


def test_forward_alone_stays_a_plain_cross_entropy():
    z, t, loss, _ = w6_graph()
    f = sg.compile([z, t], loss, backend="reference")
    assert FUSED not in op_names(f) and "SoftmaxCrossEntropy" in op_names(f)


def test_softmax_of_other_logits_is_not_taken_for_the_gradient():
    z, t, loss, _ = w6_graph()
    z2 = sg.tensor("z2", (None, 7))
    like_grad = (sg.nn.softmax(z2) - sg.ops.nn.dense_targets(t, z2)) * 0.25
    f = sg.compile([z, z2, t], [loss, like_grad], backend="reference")
    assert FUSED not in op_names(f)


def test_one_hot_of_other_labels_is_not_taken_for_the_gradient():
    z, t, loss, _ = w6_graph()
    t2 = sg.tensor("t2", (None,), dtype="int64")
    like_grad = (sg.nn.softmax(z) - sg.ops.nn.dense_targets(t2, z)) * 0.25
    f = sg.compile([z, t, t2], [loss, like_grad], backend="reference")
    assert FUSED not in op_names(f)


def test_gradient_that_needs_the_loss_values_is_left_alone():
    z = sg.tensor("z", (None, 7))
    t = sg.tensor("t", (None,), dtype="int64")
    ce = SoftmaxCrossEntropy(True)(z, t)
    cost = sg.sum(ce * ce)  # upstream gradient 2 * ce: fusing would need ce before computing it
    f = sg.compile([z, t], [cost, sg.grad(cost, z)], backend="reference")
    assert FUSED not in op_names(f)
    Z, T = data(5, 7)
    loss, dz = np_loss_and_grad(Z, T)
    np.testing.assert_allclose(f(Z, T)[1], dz * 2 * loss[:, None], rtol=1e-4, atol=1e-6)


def test_softmax_used_elsewhere_still_fuses_the_loss_and_gradient():
    z, t, loss, dz = w6_graph()
    f = sg.compile([z, t], [loss, dz, sg.nn.softmax(z)], backend="reference")
    names = op_names(f)
    assert names.count(FUSED) == 1 and names.count("Softmax") == 1
    Z, T = data(4, 7)
    r = sg.compile([z, t], [loss, dz, sg.nn.softmax(z)], backend="reference", rewrite=False)
    for a, b in zip(f(Z, T), r(Z, T)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["sum", "weighted", "scaled", "dense", "int32", "grad_only", "3d"])
def test_fuses_the_usual_variants_and_matches_the_unfused_graph(kind):
    rng = np.random.default_rng(1)
    z = sg.tensor("z", (None, 7))
    t = sg.tensor("t", (None,), dtype="int64")
    Z, T = data(5, 7)
    ins, vals = [z, t], [Z, T]
    if kind == "sum":
        cost = sg.sum(SoftmaxCrossEntropy(True)(z, t))
    elif kind == "weighted":
        w = sg.tensor("w", (None,))
        cost = sg.sum(SoftmaxCrossEntropy(True)(z, t) * w)
        ins, vals = [z, t, w], [Z, T, rng.random(5).astype(np.float32)]
    elif kind == "scaled":
        cost = 3.0 * sg.nn.cross_entropy(z, t) + 1.0
    elif kind == "dense":
        p = sg.tensor("p", (None, 7))
        cost = sg.nn.cross_entropy(z, p)
        ins, vals = [z, p], [Z, rng.random((5, 7)).astype(np.float32)]
    elif kind == "int32":
        t = sg.tensor("t", (None,), dtype="int32")
        cost = sg.nn.cross_entropy(z, t)
        ins, vals = [z, t], [Z, T.astype(np.int32)]
    elif kind == "grad_only":
        cost = sg.nn.cross_entropy(z, t)
    else:
        z = sg.tensor("z", (2, None, 7))
        t = sg.tensor("t", (2, None), dtype="int64")
        cost = sg.nn.cross_entropy(z, t)
        ins, vals = [z, t], [np.stack([Z, -Z]), np.stack([T, T[::-1]])]
    outs = [sg.grad(cost, z)] if kind == "grad_only" else [cost, sg.grad(cost, z)]
    r = sg.compile(ins, outs, backend="reference", rewrite=False)
    for backend in ("reference", "llvm"):
        f = sg.compile(ins, outs, backend=backend)
        assert op_names(f).count(FUSED) == 1 and "Softmax" not in op_names(f)
        for a, b in zip(f(*vals), r(*vals)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-7)


# --- values on the llvm backend -------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,classes", [(1, 1), (3, 7), (1, 1023), (3, 1023), (2, 1)])
def test_llvm_matches_numpy_and_the_reference(dtype, rows, classes):
    z, t, loss, dz = w6_graph((None, None), dtype)
    Z, T = data(rows, classes, dtype, seed=rows + classes)
    f = sg.compile([z, t], [loss, dz], backend="llvm")
    assert op_names(f).count(FUSED) == 1
    got = f(Z, T)
    ref = sg.compile([z, t], [loss, dz], backend="reference", rewrite=False)(Z, T)
    want_loss, want_dz = np_loss_and_grad(Z, T)
    tol = dict(rtol=2e-5, atol=1e-7) if dtype == "float32" else dict(rtol=1e-12, atol=1e-15)
    assert got[1].dtype == np.dtype(dtype)
    np.testing.assert_allclose(got[0], want_loss.mean(), **tol)
    np.testing.assert_allclose(got[1], want_dz / rows, **tol)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, **tol)


def test_llvm_dense_targets_and_per_row_upstream_gradients():
    rng = np.random.default_rng(2)
    z, p, w = sg.tensor("z", (None, 300)), sg.tensor("p", (None, 300)), sg.tensor("w", (None,))
    cost = sg.sum(SoftmaxCrossEntropy(False)(z, p) * w)
    Z = rng.normal(0, 4, (5, 300)).astype(np.float32)
    P = rng.random((5, 300)).astype(np.float32)
    P[:, ::3] = 0  # zero targets contribute nothing, not 0 * -inf
    W = rng.random(5).astype(np.float32)
    f = sg.compile([z, p, w], [cost, sg.grad(cost, z)], backend="llvm")
    assert op_names(f).count(FUSED) == 1
    loss, dz = np_loss_and_grad(Z, targets=P, g=W)
    got = f(Z, P, W)
    np.testing.assert_allclose(got[0], (loss * W).sum(), rtol=1e-5)
    np.testing.assert_allclose(got[1], dz, rtol=1e-4, atol=1e-6)


def test_nan_and_infinite_logits_behave_like_the_reference():
    z, t, loss, dz = w6_graph((None, 9))
    per_row = SoftmaxCrossEntropy(True)(z, t)
    Z, T = data(8, 9)
    Z[0, 3] = np.nan
    Z[1, 2] = np.inf
    Z[2, T[2]] = np.inf  # the label's own logit is infinite
    Z[3, :] = -np.inf
    Z[4, 5] = -np.inf
    Z[5, :] = 1e30
    Z[6, 1] = -1e30
    outs = [per_row, dz]
    f = sg.compile([z, t], outs, backend="llvm")
    assert op_names(f).count(FUSED) == 1
    r = sg.compile([z, t], outs, backend="reference", rewrite=False)
    with np.errstate(all="ignore"):
        want = r(Z, T)
    for a, b in zip(f(Z, T), want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7, equal_nan=True)
    assert np.isnan(want[1][0]).all() and np.isfinite(want[1][7]).all()


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_verify_grad_of_the_whole_loss(backend):
    labels = np.array([2, 0, 4], dtype=np.int64)
    Z = np.random.default_rng(3).normal(size=(3, 5))
    sg.verify_grad(lambda v: sg.nn.cross_entropy(v, sg.constant(labels)), [Z], backend=backend)
    P = np.random.default_rng(4).random((3, 5))
    sg.verify_grad(lambda v: sg.nn.cross_entropy(v, sg.constant(P)), [Z], backend=backend)


@pytest.mark.parametrize("step", ["mlp_step", "convnet_step"])
def test_training_steps_use_the_fused_op_and_match_the_reference(step):
    from tests.gpu import cases
    results = []
    for backend, rewrite in (("llvm", True), ("reference", False)):
        case = getattr(cases, step)()
        f = sg.compile(case.inputs, case.outputs, updates=case.updates, backend=backend, rewrite=rewrite)
        if rewrite:
            names = op_names(f)
            assert names.count(FUSED) == 1 and "Softmax" not in names
        loss = f(*case.values)
        results.append([loss] + [p.get_value() for p, _ in case.updates])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# --- the op itself --------------------------------------------------------------------------

def test_op_perform_shapes_and_errors():
    z, t, g = sg.tensor("z", (None, 4)), sg.tensor("t", (None,), dtype="int64"), sg.scalar("g")
    loss, dz = SoftmaxCrossEntropyWithGrad(True)(z, t, g)
    assert loss.type.shape == (None,) and dz.type.shape == (None, 4)
    f = sg.compile([z, t, g], [loss, dz], backend="reference")
    Z, T = data(3, 4)
    want_loss, want_dz = np_loss_and_grad(Z, T, g=0.5)
    got = f(Z, T, np.float32(0.5))
    np.testing.assert_allclose(got[0], want_loss, rtol=1e-5)
    np.testing.assert_allclose(got[1], want_dz, rtol=1e-5, atol=1e-7)
    with pytest.raises(IndexError, match="labels must be in"):
        f(Z, np.array([0, 4, 1]), np.float32(1))
    with pytest.raises(sg.ShapeError):
        SoftmaxCrossEntropyWithGrad(True)(z, t, sg.matrix("g2"))
    with pytest.raises(TypeError, match="integer labels"):
        SoftmaxCrossEntropyWithGrad(True)(z, z, g)


def test_op_gradients_are_exact_to_second_order():
    # the op's L_op (built from ordinary ops) differentiates both outputs for every input
    T = np.array([1, 0, 3], dtype=np.int64)
    Z = np.random.default_rng(5).normal(size=(3, 4))
    G = np.random.default_rng(6).normal(size=3)
    P = np.random.default_rng(7).random((3, 4))

    def sparse(z, g):
        loss, dz = SoftmaxCrossEntropyWithGrad(True)(z, sg.constant(T), g)
        return sg.sum(dz * dz) + sg.sum(loss * 3.0)

    def dense(z, p, g):
        loss, dz = SoftmaxCrossEntropyWithGrad(False)(z, p, g)
        return sg.sum(dz * dz) + sg.sum(loss * 3.0)

    sg.verify_grad(sparse, [Z, G])
    sg.verify_grad(dense, [Z, P, G])
    sg.verify_grad(dense, [Z, P[:1], np.float64(0.7)])  # broadcast targets, scalar g


def test_second_order_graphs_keep_their_values():
    # a Hessian-vector product: the first gradient fuses with the loss, the softmax it also
    # needs for the second order stays
    z, t, loss, dz = w6_graph()
    v = sg.tensor("v", (None, 7))
    hv = sg.grad(sg.sum(dz * v), z)
    Z, T = data(5, 7)
    V = np.random.default_rng(8).normal(size=(5, 7)).astype(np.float32)
    want = sg.compile([z, t, v], [loss, dz, hv], backend="reference", rewrite=False)(Z, T, V)
    f = sg.compile([z, t, v], [loss, dz, hv], backend="llvm")
    assert op_names(f).count(FUSED) == 1
    for a, b in zip(f(Z, T, V), want):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    sg.verify_grad(lambda zz: sg.sum(sg.grad(sg.nn.cross_entropy(zz, sg.constant(T)), zz) * sg.constant(V)),
                   [Z.astype(np.float64)], backend="llvm")


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_out_of_range_labels_raise_through_the_fused_op(backend):
    classes = 7
    z, t, loss, dz = w6_graph((None, None))
    f = sg.compile([z, t], [loss, dz], backend=backend)
    assert op_names(f).count(FUSED) == 1
    Z = np.zeros((4, classes), np.float32)
    for labels in ([0, 7, 2, 1], [0, -1, 2, 3]):
        with pytest.raises(IndexError, match=rf"labels must be in \[0, {classes}\), got values in "
                                             rf"\[{min(labels)}, {max(labels)}\]"):
            f(Z, np.array(labels))
    got = f(Z, np.array([6, 0, 1, 2]))  # still usable after the failures
    np.testing.assert_allclose(got[0], np.log(7), rtol=1e-6)
