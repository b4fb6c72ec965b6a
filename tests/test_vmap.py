"""``sg.vmap`` against a Python loop over the batch, for every op family, on the reference
and llvm backends; ``in_axes`` / ``out_axes``; random draws; errors."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg
from symgraph.graph.basic import Apply, Op, as_variable
from symgraph.ops.elemwise import S  # the scalar IR module (sg.scalar is a function)
from symgraph.ops.fused import FusedReduce, MatMulEpilogue, SoftmaxCrossEntropyWithGrad
from symgraph.ops.nn import (
    AvgPool2dGrad,
    Conv2dGradInput,
    Conv2dGradWeight,
    MaxPool2dGrad,
    MaxPoolSelect,
)

RNG = np.random.default_rng(7)
BACKENDS = ["reference", "llvm"]
B = 4  # batch size of most cases


def sym(arr: np.ndarray, name: str):
    """A symbolic input of ``arr``'s dtype and rank, every dim unknown."""
    return sg.tensor(name, (None,) * arr.ndim, dtype=arr.dtype.name)


def loop_reference(fn, args, in_axes, out_axes=0):
    """``fn`` compiled per example (reference backend) and called in a Python loop."""
    axes = in_axes if isinstance(in_axes, (list, tuple)) else [in_axes] * len(args)
    size = next(a.shape[ax] for a, ax in zip(args, axes) if ax is not None)
    per_example = [a if ax is None else np.take(a, 0, axis=ax) for a, ax in zip(args, axes)]
    syms = [sym(p, f"e{k}") for k, p in enumerate(per_example)]
    out = fn(*syms)
    single = not isinstance(out, (list, tuple))
    f = sg.compile(syms, [out] if single else list(out), backend="reference")
    rows = [f(*[a if ax is None else np.take(a, i, axis=ax) for a, ax in zip(args, axes)])
            for i in range(size)]
    outs = [np.stack([r[k] for r in rows], axis=0) for k in range(len(rows[0]))]
    oaxes = out_axes if isinstance(out_axes, (list, tuple)) else [out_axes] * len(outs)
    outs = [np.moveaxis(o, 0, ax) for o, ax in zip(outs, oaxes)]
    return outs[0] if single else outs


def run_vmap(fn, args, in_axes=0, out_axes=0, backend="reference"):
    syms = [sym(a, f"a{k}") for k, a in enumerate(args)]
    out = sg.vmap(fn, in_axes, out_axes)(*syms)
    single = not isinstance(out, (list, tuple))
    got = sg.compile(syms, [out] if single else list(out), backend=backend)(*args)
    return got[0] if single else got


def check(fn, args, in_axes=0, out_axes=0, backend="reference", rtol=1e-12):
    got = run_vmap(fn, args, in_axes, out_axes, backend)
    want = loop_reference(fn, args, in_axes, out_axes)
    for g, w in zip(*(([got], [want]) if not isinstance(want, list) else (got, want))):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-12)


def f64(*shape):
    return RNG.standard_normal(shape)


def ints(high, *shape):
    return RNG.integers(0, high, size=shape).astype(np.int64)


# --- the op families: (fn, args, in_axes) ---------------------------------------------------

ELEMWISE = {
    "unary": (lambda x: sg.exp(sg.tanh(x)), [f64(B, 3, 4)], 0),
    "batched operands of different ranks": (lambda x, y: x * y + 1.0, [f64(B, 3, 4), f64(B, 4)], 0),
    "unbatched operand of larger rank": (lambda x, w: x - w, [f64(B, 3), f64(2, 3)], (0, None)),
    "per-example scalar": (lambda x, w: x * w, [f64(B), f64(4)], (0, None)),
    "where and comparisons": (lambda x, y: sg.where(x > 0, x, y * 2.0) + sg.cast(x < y, "float64"),
                              [f64(B, 5), f64(B, 5)], 0),
    "cast to int": (lambda x: sg.cast(x * 3.0, "int64") + 1, [f64(B, 3)], 0),
    "zeros_like and clip": (lambda x: sg.zeros_like(x) + sg.clip(x, -0.5, 0.5), [f64(B, 2, 3)], 0),
}

REDUCE = {
    "sum over an axis": (lambda x: x.sum(axis=1), [f64(B, 3, 4)], 0),
    "mean of everything": (lambda x: x.mean(), [f64(B, 3, 4)], 0),
    "max keepdims": (lambda x: sg.max(x, axis=0, keepdims=True), [f64(B, 3, 4)], 0),
    "prod, min": (lambda x: sg.prod(x, axis=-1) + sg.min(x, axis=-1), [f64(B, 3, 4)], 0),
    "argmax flattened": (lambda x: sg.argmax(x), [f64(B, 3, 4)], 0),
    "argmax flattened keepdims": (lambda x: sg.argmax(x, keepdims=True), [f64(B, 3, 4)], 0),
    "argmin over an axis": (lambda x: sg.argmin(x, axis=1), [f64(B, 3, 4)], 0),
    "var, std": (lambda x: sg.var(x, axis=0) + sg.std(x), [f64(B, 3, 4)], 0),
    "logsumexp": (lambda x: sg.logsumexp(x, axis=1), [f64(B, 3, 4)], 0),
}

MATMUL = {
    "batched @ unbatched": (lambda a, b: a @ b, [f64(B, 3, 4), f64(4, 2)], (0, None)),
    "unbatched @ batched": (lambda a, b: a @ b, [f64(3, 4), f64(B, 4, 2)], (None, 0)),
    "batched @ batched": (lambda a, b: a @ b, [f64(B, 3, 4), f64(B, 4, 2)], 0),
    "vector @ matrix": (lambda x, w: x @ w, [f64(B, 4), f64(4, 2)], (0, None)),
    "matrix @ vector": (lambda w, x: w @ x, [f64(3, 4), f64(B, 4)], (None, 0)),
    "vector . vector": (lambda x, y: sg.dot(x, y), [f64(B, 4), f64(B, 4)], 0),
    "stacked @ matrix": (lambda a, b: sg.matmul(a, b), [f64(B, 2, 3, 4), f64(4, 2)], (0, None)),
    "matrix @ stacked": (lambda a, b: sg.matmul(a, b), [f64(3, 4), f64(B, 2, 4, 5)], (None, 0)),
    "outer": (lambda x, y: sg.outer(x, y), [f64(B, 3), f64(B, 2)], 0),
}

SHAPE = {
    "reshape with -1": (lambda x: sg.reshape(x, (2, -1)), [f64(B, 3, 4)], 0),
    "reshape to a symbolic shape": (lambda x: sg.reshape(x, (sg.shape(x)[1], sg.shape(x)[0])),
                                    [f64(B, 3, 4)], 0),
    "transpose": (lambda x: sg.transpose(x), [f64(B, 2, 3, 4)], 0),
    "expand_dims, squeeze": (lambda x: sg.squeeze(sg.expand_dims(x, 1), 1) + sg.expand_dims(x, -1)[..., 0],
                             [f64(B, 3, 4)], 0),
    "broadcast_to": (lambda x: sg.broadcast_to(x, (2, 3, 4)), [f64(B, 3, 1)], 0),
    "broadcast_to a symbolic shape": (lambda x, y: sg.broadcast_to(x, sg.shape(y)),
                                      [f64(B, 3, 1), f64(2, 3, 4)], (0, None)),
    "flatten": (lambda x: sg.flatten(x), [f64(B, 3, 4)], 0),
    "concatenate with an unbatched part": (lambda x, y: sg.concatenate([x, y], axis=0),
                                           [f64(B, 2, 3), f64(1, 3)], (0, None)),
    "stack": (lambda x, y: sg.stack([x, y, x], axis=1), [f64(B, 2, 3), f64(B, 2, 3)], 0),
    "shape as a value": (lambda x: x * sg.cast(sg.shape(x)[0], "float64"), [f64(B, 3, 4)], 0),
}

INDEXING = {
    "int and slices": (lambda x: x[1, ::2], [f64(B, 3, 5)], 0),
    "newaxis and ellipsis": (lambda x: x[None, ..., 0], [f64(B, 3, 4)], 0),
    "unbatched index array": (lambda x, i: x[i], [f64(B, 5, 2), ints(5, 3)], (0, None)),
    "unbatched, non-adjacent arrays": (lambda x, i, j: x[i, :, j],
                                       [f64(B, 4, 3, 5), ints(4, 2), ints(5, 2)], (0, None, None)),
    "batched index array": (lambda x, i: x[i], [f64(B, 5, 2), ints(5, B, 3)], 0),
    "batched index, adjacent, not first": (lambda x, i: x[:, i], [f64(B, 3, 5), ints(5, B, 2, 2)], 0),
    "batched index, non-adjacent arrays": (lambda x, i, j: x[i, :, j],
                                           [f64(B, 4, 3, 5), ints(4, B, 2), ints(5, 2)], (0, 0, None)),
    "unbatched tensor, batched index": (lambda x, i: x[:, i], [f64(3, 5), ints(5, B, 2)], (None, 0)),
    "int scalar among arrays": (lambda x, i: x[1, :, i], [f64(B, 3, 2, 5), ints(5, B, 4)], 0),
    "take": (lambda x, i: sg.take(x, i, axis=1), [f64(B, 3, 5), ints(5, B, 2)], 0),
    "inc_subtensor, repeated indices": (lambda x, y: sg.inc_subtensor(x, np.array([0, 2, 0]), y),
                                        [f64(B, 4, 2), f64(B, 3, 2)], 0),
    "inc_subtensor, batched indices": (lambda x, i, y: sg.inc_subtensor(x, i, y),
                                       [f64(B, 4, 2), ints(4, B, 3), f64(B, 3, 2)], 0),
    "inc_subtensor, unbatched x": (lambda x, i, y: sg.inc_subtensor(x, (slice(None), i), y),
                                   [f64(3, 4), ints(4, B, 2), f64(B, 3, 2)], (None, 0, 0)),
    "inc_subtensor non-adjacent, unbatched y": (
        lambda x, i, j, y: sg.inc_subtensor(x, (i, slice(None), j), y),
        [f64(B, 4, 3, 5), ints(4, 2), ints(5, 2), f64(3)], (0, None, None, None)),
    "one_hot": (lambda y: sg.one_hot(y, 5, dtype="float64"), [ints(5, B, 3)], 0),
}

NN = {
    "softmax": (lambda x: sg.nn.softmax(x, axis=0), [f64(B, 3, 4)], 0),
    "log_softmax": (lambda x: sg.nn.log_softmax(x), [f64(B, 3, 4)], 0),
    "cross entropy, labels": (lambda z, y: sg.nn.cross_entropy(z, y), [f64(B, 3, 5), ints(5, B, 3)], 0),
    "cross entropy, unbatched labels": (lambda z, y: sg.nn.cross_entropy(z, y),
                                        [f64(B, 3, 5), ints(5, 3)], (0, None)),
    "cross entropy, probabilities": (lambda z, t: sg.nn.cross_entropy(z, sg.nn.softmax(t)),
                                     [f64(3, 5), f64(B, 3, 5)], (None, 0)),
    "conv2d, batched images": (lambda x, w: sg.nn.conv2d(x, w, stride=2, padding=1),
                               [f64(B, 2, 3, 6, 5), f64(4, 3, 3, 3)], (0, None)),
    "conv2d, batched weights": (lambda x, w: sg.nn.conv2d(x, w), [f64(2, 3, 5, 5), f64(B, 4, 3, 2, 2)],
                                (None, 0)),
    "conv2d, both batched": (lambda x, w: sg.nn.conv2d(x, w, padding=1),
                             [f64(B, 2, 3, 5, 5), f64(B, 4, 3, 3, 3)], 0),
    "max_pool2d": (lambda x: sg.nn.max_pool2d(x, 2), [f64(B, 2, 3, 4, 6)], 0),
    "avg_pool2d": (lambda x: sg.nn.avg_pool2d(x, 2, stride=1), [f64(B, 3, 4, 5)], 0),
}


def mlp_example_grads(x, y, w1, w2):
    h = sg.tanh(x @ w1)
    loss = sg.nn.cross_entropy(sg.expand_dims(h @ w2, 0), sg.expand_dims(y, 0))
    return tuple(sg.grad(loss, [w1, w2]))


def conv_grads(x, w):
    y = sg.nn.max_pool2d(sg.tanh(sg.nn.conv2d(x, w, padding=1)), 2)
    cost = (y * y).sum() + sg.nn.avg_pool2d(sg.nn.conv2d(x, w), 2).sum()
    return tuple(sg.grad(cost, [x, w]))


def index_grads(x, i):
    parts = sg.concatenate([x[i] * 2.0, x[1:]], axis=0)
    return sg.grad((parts ** 2).sum() + sg.nn.softmax(x, axis=0)[0, 0], x)


GRADS = {  # per-example gradients: L_op graphs (SumToShape, Split, IndexAdd, conv/pool grads)
    "per-example MLP gradients": (mlp_example_grads, [f64(B, 3), ints(2, B), f64(3, 4), f64(4, 2)],
                                  (0, 0, None, None)),
    "conv and pool gradients, batched images": (conv_grads, [f64(B, 1, 2, 4, 4), f64(3, 2, 3, 3)],
                                                (0, None)),
    "conv and pool gradients, batched weights": (conv_grads, [f64(1, 2, 4, 4), f64(B, 3, 2, 3, 3)],
                                                 (None, 0)),
    "conv and pool gradients, both batched": (conv_grads, [f64(B, 1, 2, 4, 4), f64(B, 3, 2, 3, 3)], 0),
    "index, concatenate, softmax gradients": (index_grads, [f64(B, 4, 3), ints(4, B, 2)], 0),
}


def conv_grad_input(g, w, like):
    return Conv2dGradInput((1, 1), (1, 1))(g, w, like)


def conv_grad_weight(x, g, like):
    return Conv2dGradWeight((2, 1), (0, 1))(x, g, like)


SQUARE_SUM = S.apply("mul", S.inp(0, "float64"), S.inp(1, "float64"))
EPILOGUE = S.apply("tanh", S.apply("add", S.inp(0, "float64"), S.inp(1, "float64")))

OP_LEVEL = {  # ops that only gradients or rewrites build, called directly
    "Conv2dGradInput, batched g": (conv_grad_input, [f64(B, 2, 4, 5, 5), f64(4, 3, 3, 3),
                                                     f64(2, 3, 5, 5)], (0, None, None)),
    "Conv2dGradInput, batched w": (conv_grad_input, [f64(2, 4, 5, 5), f64(B, 4, 3, 3, 3),
                                                     f64(2, 3, 5, 5)], (None, 0, None)),
    "Conv2dGradInput, both": (conv_grad_input, [f64(B, 2, 4, 5, 5), f64(B, 4, 3, 3, 3),
                                                f64(2, 3, 5, 5)], (0, 0, None)),
    "Conv2dGradInput, only the shape source": (conv_grad_input, [f64(2, 4, 5, 5), f64(4, 3, 3, 3),
                                                                 f64(B, 2, 3, 5, 5)], (None, None, 0)),
    "Conv2dGradWeight, batched x": (conv_grad_weight, [f64(B, 2, 3, 6, 4), f64(2, 4, 2, 4),
                                                       f64(4, 3, 3, 3)], (0, None, None)),
    "Conv2dGradWeight, batched g": (conv_grad_weight, [f64(2, 3, 6, 4), f64(B, 2, 4, 2, 4),
                                                       f64(4, 3, 3, 3)], (None, 0, None)),
    "Conv2dGradWeight, both": (conv_grad_weight, [f64(B, 2, 3, 6, 4), f64(B, 2, 4, 2, 4),
                                                  f64(4, 3, 3, 3)], (0, 0, None)),
    "MaxPool2dGrad, unbatched g": (lambda x, g: MaxPool2dGrad((2, 2), (1, 2))(x, g),
                                   [f64(B, 2, 4, 6), f64(2, 3, 3)], (0, None)),
    "MaxPoolSelect": (lambda x, h: MaxPoolSelect((2, 2), (2, 2))(x, h),
                      [f64(B, 2, 4, 6), f64(B, 2, 4, 6)], 0),
    "AvgPool2dGrad, unbatched g": (lambda g, like: AvgPool2dGrad((2, 2), (2, 2))(g, like),
                                   [f64(2, 2, 3), f64(B, 2, 4, 6)], (None, 0)),
    "FusedReduce": (lambda x, y: FusedReduce("sum", (0,), True, SQUARE_SUM, 2)(x, y),
                    [f64(B, 3, 4), f64(4)], (0, None)),
    "MatMulEpilogue": (lambda a, b, c: MatMulEpilogue(EPILOGUE, 2)(a, b, c),
                       [f64(3, 4), f64(B, 4, 2), f64(B, 2)], (None, 0, 0)),
    "SoftmaxCrossEntropyWithGrad": (
        lambda z, y, g: list(SoftmaxCrossEntropyWithGrad(True)(z, y, g)),
        [f64(B, 3, 5), ints(5, 3), f64(B, 3)], (0, None, 0)),
}

CASES = {f"{family}: {name}": case for family, table in
         [("elementwise", ELEMWISE), ("reduce", REDUCE), ("matmul", MATMUL), ("shape", SHAPE),
          ("indexing", INDEXING), ("nn", NN), ("grad", GRADS), ("op", OP_LEVEL)]
         for name, case in table.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(CASES))
def test_vmap_matches_a_python_loop(name, backend):
    fn, args, in_axes = CASES[name]
    check(fn, args, in_axes, backend=backend, rtol=1e-10)


def test_vmap_batched_gather_longer_than_the_fold_limit_on_llvm():
    # the batch rows are picked with arange(B): over 4096 it is a kernel, not a folded constant
    x, i = sg.matrix("x", "float64"), sg.vector("i", "int64")
    f = sg.compile([x, i], sg.vmap(lambda row, k: row[k])(x, i), backend="llvm")
    xv, iv = f64(5000, 3), ints(3, 5000)
    np.testing.assert_array_equal(f(xv, iv), xv[np.arange(5000), iv])


def test_arange_of_a_long_shape_derived_length_on_llvm():
    x = sg.vector("x", "float64")
    f = sg.compile([x], sg.arange(sg.shape(x)[0]) * x, backend="llvm")
    np.testing.assert_array_equal(f(np.ones(5000)), np.arange(5000.0))


# --- in_axes, out_axes, structure -------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_in_axes_and_out_axes(backend):
    fn = lambda x, w: sg.tanh(x @ w)  # noqa: E731
    args = [f64(3, B), f64(3, 2)]  # x batched along axis 1
    check(fn, args, in_axes=(1, None), out_axes=1, backend=backend)
    check(fn, args, in_axes=[-1, None], out_axes=-1, backend=backend)


def test_several_outputs_and_an_unbatched_output():
    x, w = sg.matrix("x", "float64"), sg.vector("w", "float64")
    outs = sg.vmap(lambda r: (r * 2.0, w.sum(), r.sum()), out_axes=(0, 0, None))
    with pytest.raises(ValueError, match="out_axes is None for output 2"):
        outs(x)
    a, b, c = sg.vmap(lambda r: [r * 2.0, w.sum(), w * 3.0], out_axes=[1, 0, None])(x)
    assert c.ndim == 1
    xv, wv = f64(B, 3), f64(5)
    ra, rb, rc = sg.compile([x, w], [a, b, c], backend="reference")(xv, wv)
    np.testing.assert_allclose(ra, (xv * 2.0).T)
    np.testing.assert_allclose(rb, np.full(B, wv.sum()))  # unbatched: repeated over the batch
    np.testing.assert_allclose(rc, wv * 3.0)


def test_nested_vmap_is_an_outer_product_of_batches():
    x, y = sg.vector("x", "float64"), sg.vector("y", "float64")
    table = sg.vmap(lambda a: sg.vmap(lambda b: a * b + b)(y))(x)
    xv, yv = f64(3), f64(5)
    np.testing.assert_allclose(sg.compile([x, y], table, backend="llvm")(xv, yv),
                               np.outer(xv, yv) + yv)


def test_static_batch_sizes_stay_static():
    x = sg.tensor("x", (B, 3), "float64")
    assert sg.vmap(lambda r: r[1:] * 2.0)(x).shape == (B, 2)


# --- random draws -------------------------------------------------------------------------------

def test_draws_inside_the_function_are_independent_per_example():
    rng = sg.nn.RandomStream(3)
    shared_noise = rng.normal((4,), dtype="float64")
    x = sg.matrix("x", "float64")
    fresh = sg.vmap(lambda r: r + rng.normal(sg.shape(r), dtype="float64"))(x)
    fixed = sg.vmap(lambda r: r + shared_noise)(x)
    a, b = sg.compile([x], [fresh, fixed], backend="reference")(np.zeros((B, 4)))
    assert len({tuple(row) for row in a}) == B  # every example its own numbers
    assert all(np.array_equal(row, b[0]) for row in b)  # drawn outside: the same for all


def test_dropout_inside_vmap_draws_a_mask_per_example():
    rng = sg.nn.RandomStream(5)
    x = sg.matrix("x", "float64")
    out = sg.vmap(lambda r: sg.nn.dropout(r, 0.5, rng))(x)
    for backend in BACKENDS:
        got = sg.compile([x], out, backend=backend)(np.ones((64, 32)))
        assert set(np.unique(got)) <= {0.0, 2.0}
        assert len({tuple(row) for row in got}) > 60


# --- errors -------------------------------------------------------------------------------------

class NoRule(Op):
    def make_node(self, x) -> Apply:
        x = as_variable(x)
        return Apply(self, [x], [x.type])

    def perform(self, node, inputs):
        return [inputs[0]]


def test_an_op_without_a_rule_is_named():
    x = sg.matrix("x", "float64")
    with pytest.raises(NotImplementedError, match=r"NoRule has no batching rule(.|\n)*test_vmap.py"):
        sg.vmap(lambda r: NoRule()(r * 2.0))(x)


def test_values_that_would_change_shapes_between_examples_are_refused():
    x = sg.vector("x", "int64")
    with pytest.raises(NotImplementedError, match="ARange.*its length would differ"):
        sg.vmap(lambda n: sg.arange(n))(x)
    m = sg.matrix("m", "int64")
    with pytest.raises(NotImplementedError, match="MakeVector.*shape would differ"):
        sg.vmap(lambda r: sg.reshape(r, (r[0], -1)))(m)


def test_argument_errors():
    x, s = sg.matrix("x"), sg.scalar("s")
    with pytest.raises(ValueError, match="no argument as batched"):
        sg.vmap(lambda a: a, in_axes=None)(x)
    with pytest.raises(ValueError, match="2 entries for 1 argument"):
        sg.vmap(lambda a: a, in_axes=(0, 0))(x)
    with pytest.raises(sg.ShapeError, match="argument 0 .*scalar"):
        sg.vmap(lambda a: a)(s)
    with pytest.raises(sg.ShapeError, match="in_axes 2 is out of bounds"):
        sg.vmap(lambda a: a, in_axes=2)(x)
    with pytest.raises(sg.ShapeError, match=r"different batch sizes: argument 0 \(a: .*\) has 2, "
                                            r"argument 1 \(b: .*\) has 3"):
        sg.vmap(lambda a, b: a + b)(sg.tensor("a", (2, 3)), sg.tensor("b", (3, 3)))
    with pytest.raises(TypeError, match="in_axes entries must be ints or None"):
        sg.vmap(lambda a: a, in_axes="0")
    with pytest.raises(TypeError, match="fn must be callable"):
        sg.vmap(3)


@pytest.mark.parametrize("backend", ["reference", "llvm"])
def test_vmap_of_set_subtensor_matches_a_loop(backend):
    x, y = sg.tensor3("x", "float64"), sg.matrix("y", "float64")
    f = sg.compile([x, y], sg.vmap(lambda a, b: sg.set_subtensor(a, (slice(None), 1), b))(x, y),
                   backend=backend)
    rng = np.random.default_rng(0)
    xv, yv = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3))
    want = np.stack([np.where(np.arange(4) == 1, yv[k][:, None], xv[k]) for k in range(2)])
    np.testing.assert_array_equal(f(xv, yv), want)
