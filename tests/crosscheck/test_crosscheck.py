"""symgraph against PyTorch on random graphs of every op family (values, gradients of a random
projection against float64 autograd, Hessian-vector products, special values), on the llvm and
reference backends.

The number of examples is bounded for CI and reproducible (derandomized);
``SYMGRAPH_CROSSCHECK_EXAMPLES=N`` runs N fresh random examples per test instead.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import symgraph as sg  # noqa: E402

from .graphs import STATS, check_program, programs  # noqa: E402
from .known import known_broken  # noqa: E402
from .registry import DROPOUT_COVERS, REGISTRY  # noqa: E402

BACKENDS = ("llvm", "reference")
# the graph as built, before any rewrite: the oracle for what the rewrites may change
UNREWRITTEN = "reference:norewrite"
LOCAL_EXAMPLES = int(os.environ.get("SYMGRAPH_CROSSCHECK_EXAMPLES", "0"))


def budget(ci_examples: int) -> settings:
    """CI: a fixed, derandomized number of examples; locally, as many random ones as asked."""
    return settings(max_examples=LOCAL_EXAMPLES or ci_examples, deadline=None,
                    derandomize=not LOCAL_EXAMPLES, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("SYMGRAPH_CACHE_DIR", "off")


ALL = tuple(sorted(REGISTRY))
SPECIAL = tuple(k for k in ALL if REGISTRY[k].special)


# ---------------------------------------------------------------------------------------------
# the registry covers the public API

# the public names that are not tensor operations
NOT_OPS = {"CompileError", "CompiledFunction", "Constant", "GradientError", "ShapeError", "SharedVariable",
           "TensorType", "Variable", "Lop", "Rop", "compile", "constant", "debugprint", "grad", "hessian",
           "jacobian", "matrix", "scalar", "shared", "tensor", "tensor3", "tensor4", "to_dot", "vector",
           "verify_grad", "seed", "vmap", "export_library"}
NN_NOT_OPS = {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "state_updates",
              "accuracy", "confusion_matrix", "load_checkpoint", "minibatches", "progress", "save_checkpoint",
              "summary"}
# the methods and operators of a symbolic value that API.md lists
VARIABLE_API = ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__", "__pow__",
                "__matmul__", "__neg__", "__abs__", "__getitem__", "T", "transpose", "reshape", "astype",
                "sum", "mean", "max", "min", "prod", "argmax")


def public_ops() -> set[str]:
    """Every public tensor operation: the functions of ``sg`` and ``sg.nn`` (classes, modules and
    the non-op utilities above aside) and the methods of a symbolic value."""
    def ops(module, names, skip):
        return {n for n in names if not n.startswith("_") and n not in skip and callable(getattr(module, n))
                and not inspect.isclass(getattr(module, n)) and not inspect.ismodule(getattr(module, n))}
    names = {f"sg.{n}" for n in ops(sg, dir(sg), NOT_OPS)}
    names |= {f"sg.nn.{n}" for n in ops(sg.nn, sg.nn.__all__, NN_NOT_OPS)}
    names |= {f"Variable.{n}" for n in VARIABLE_API}
    return names


def test_every_public_op_has_a_torch_twin():
    covered = {c for kind in REGISTRY.values() for c in kind.covers} | set(DROPOUT_COVERS)
    missing = sorted(public_ops() - covered)
    assert not missing, f"public ops without a torch twin in tests/crosscheck/registry.py: {missing}"
    assert "sg.where" in public_ops() and "sg.nn.conv2d" in public_ops()  # the scan finds ops


# ---------------------------------------------------------------------------------------------
# random graphs

@pytest.mark.parametrize("kind", ALL)
@given(data=st.data())
@budget(3)
def test_op_kind_matches_torch(kind, data):
    """Each op kind leads a small random graph (1-3 nodes) on both backends."""
    prog = data.draw(programs(ALL, max_ops=3, first=kind), label="program")
    check_program(prog, BACKENDS + (UNREWRITTEN,), skip=known_broken)


@given(prog=programs(ALL, max_ops=5))
@budget(40)
def test_random_graphs_match_torch(prog):
    """Graphs of up to five nodes of any kinds, dims sometimes unknown until the call."""
    check_program(prog, BACKENDS, skip=known_broken)


@given(prog=programs(SPECIAL, max_ops=3, special=True))
@budget(40)
def test_special_values_match_torch(prog):
    """Elementwise, reduction and softmax graphs on inputs with inf, -inf, nan, -0.0, tiny and
    huge entries: NaNs and infinities exactly where torch has them."""
    check_program(prog, BACKENDS, skip=known_broken)


@given(prog=programs(ALL, max_ops=3, dtypes=("float64",)))
@budget(25)
def test_hessian_vector_products_match_torch(prog):
    """sg.grad of (gradient . v) against torch's double backward."""
    check_program(prog, BACKENDS, hvp=True, skip=known_broken)


# ---------------------------------------------------------------------------------------------
# dropout: symgraph's own random stream, checked through the mask it drew

@given(shape=st.sampled_from([(7,), (3, 5), (2, 3, 4)]), p=st.sampled_from([0.0, 0.25, 0.5, 0.9]),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2 ** 16))
@budget(6)
def test_dropout_matches_torch_given_its_mask(shape, p, dtype, seed):
    x = sg.tensor("x", shape, dtype)
    out = sg.nn.dropout(x, p, sg.RandomStream(seed))
    w = np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)
    g = sg.grad((out * sg.constant(w)).sum(), x)
    xv = np.random.default_rng(seed + 1).uniform(0.5, 2.0, shape).astype(dtype)  # never 0
    for backend in BACKENDS:
        got, grad = sg.compile([x], [out, g], backend=backend)(xv)
        mask = torch.as_tensor(got != 0)
        xt = torch.as_tensor(xv).to(torch.float64).requires_grad_(True)
        want = xt * mask / (1 - p)
        (want * torch.as_tensor(w)).sum().backward()
        rtol = 1e-6 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=rtol)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=rtol)
        if p == 0.0:
            assert mask.all()
        STATS["compiled functions"] += 1
