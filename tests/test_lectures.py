"""The lecture examples run (a few steps each, --quick), write their figures and show what they
are meant to show."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LECTURES = os.path.join(ROOT, "examples", "lectures")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def run(name: str, tmp_path, backend: str = "reference", quick: bool = True):
    if LECTURES not in sys.path:
        sys.path.insert(0, LECTURES)
    spec = importlib.util.spec_from_file_location(f"lecture_{name}", os.path.join(LECTURES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--backend", backend, "--plot", str(tmp_path)] + (["--quick"] if quick else [])
    return module.main(args)


def _png(tmp_path, name):
    data = open(tmp_path / f"{name}.png", "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_backprop_graph_second_derivative(tmp_path):
    assert run("backprop_graph", tmp_path, backend="llvm") < 1e-5
    _png(tmp_path, "backprop_second_derivative")
    assert (tmp_path / "backprop_graph.dot").read_text().startswith("digraph")


def test_xor_boundary(tmp_path):
    p = run("xor_boundary", tmp_path, quick=False)
    assert np.array_equal(p > 0.5, [False, True, True, False])
    _png(tmp_path, "xor_boundary")


def test_softmax_regression(tmp_path):
    binary, multi = run("softmax_regression", tmp_path)
    assert binary > 0.9 and multi > 0.8
    _png(tmp_path, "softmax_regression_weights")


@pytest.mark.parametrize("name, figure", [("regularisation", "regularisation"), ("optimisers", "optimisers"),
                                          ("depth_vs_width", "depth_vs_width"),
                                          ("convnet_filters", "convnet_filters"), ("mdn", "mdn")])
def test_runs_and_draws(tmp_path, name, figure):
    result = run(name, tmp_path)
    assert result is not None
    _png(tmp_path, figure)


def test_vanishing_gradients_show_the_sigmoid_shrinking(tmp_path):
    norms = run("vanishing_gradients", tmp_path)
    assert norms["sigmoid"][0] < 0.01 * norms["sigmoid"][-1]  # the first layer gets almost nothing
    assert norms["relu"][0] > 0.1 * norms["relu"][-1]
    _png(tmp_path, "vanishing_gradients")


def test_fgsm_lowers_accuracy(tmp_path):
    acc = run("fgsm_images", tmp_path)
    assert acc[0.2] < acc[0.0]
    _png(tmp_path, "fgsm")
