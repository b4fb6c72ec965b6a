"""symgraph: graphs with shared parameters and ``updates``, compiled with ``sg.compile``.

``options["backend"]`` picks the backend; ``options["trust_input"]`` compiles with
``trust_input=True`` (W3's extra row).
"""

from __future__ import annotations

import symgraph as sg

from ..workloads import GELU_A, GELU_C, LR
from .base import Runner


def available() -> bool:
    return True


def gelu(x):
    return 0.5 * x * (1 + sg.tanh(GELU_C * (x + GELU_A * x ** 3)))


def mlp_loss(params, x, y):
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        h = h @ params[2 * i] + params[2 * i + 1]
        if i < n_layers - 1:
            h = sg.relu(h)
    return sg.nn.cross_entropy(h, y)


def logreg_loss(params, x, y):
    w, b = params
    p = sg.sigmoid(x @ w + b)
    return -sg.mean(y * sg.log(p) + (1 - y) * sg.log(1 - p))


def convnet_loss(params, x, y):
    w1, b1, w2, b2, w3, b3 = params
    h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(x, w1) + b1[None, :, None, None]), 2)
    h = sg.nn.max_pool2d(sg.relu(sg.nn.conv2d(h, w2) + b2[None, :, None, None]), 2)
    h = h.reshape((h.shape[0], -1))
    return sg.nn.cross_entropy(h @ w3 + b3, y)


LOSSES = {"w2": mlp_loss, "w3": logreg_loss, "w4": convnet_loss}


def build_step(workload: str, data: dict, threads: int | None, backend: str, trust_input: bool = False,
               profile: bool = False):
    """The compiled function and the shared parameters of one workload."""
    kw = {"backend": backend, "threads": threads, "trust_input": trust_input, "profile": profile}
    if workload in ("w1f", "w1b"):
        x = sg.tensor("x", data["x"].shape)
        y = gelu(x)
        out = y if workload == "w1f" else sg.grad(sg.sum(y), x)
        return sg.compile([x], out, **kw), []
    if workload == "w6":
        logits = sg.tensor("logits", data["logits"].shape)
        labels = sg.tensor("labels", data["labels"].shape, dtype="int64")
        loss = sg.nn.cross_entropy(logits, labels)
        return sg.compile([logits, labels], [loss, sg.grad(loss, logits)], **kw), []
    params = [sg.shared(p.copy(), name=f"p{i}") for i, p in enumerate(data["params"])]
    x = sg.tensor("x", data["x"].shape)
    y = sg.tensor("y", data["y"].shape, dtype=str(data["y"].dtype))
    loss = LOSSES[workload](params, x, y)
    grads = sg.grad(loss, params)
    updates = [(p, p - LR * g) for p, g in zip(params, grads)]
    return sg.compile([x, y], loss, updates=updates, **kw), params


def build(workload: str, data: dict, sizes, threads: int, options: dict) -> Runner:
    f, params = build_step(workload, data, threads, options.get("backend", "reference"),
                           options.get("trust_input", False))
    if workload in ("w1f", "w1b"):
        x = data["x"]
        return Runner(lambda: f(x), lambda h: [h])
    if workload == "w6":
        logits, labels = data["logits"], data["labels"]
        return Runner(lambda: f(logits, labels), lambda h: list(h))
    x, y = data["x"], data["y"]
    return Runner(lambda: f(x, y), lambda h: [h, *(p.get_value() for p in params)])
