"""PyTorch eager (``torch.autograd.grad`` + ``torch._foreach_add_``) and torch.compile (the loss
function and the update compiled; backward through AOTAutograd)."""

from __future__ import annotations

import importlib.util

import numpy as np

from ..workloads import GELU_A, GELU_C, LR
from .base import Runner


def available() -> bool:
    return importlib.util.find_spec("torch") is not None


def build(workload: str, data: dict, sizes, threads: int, options: dict) -> Runner:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    compiled = options.get("compiled", False)
    wrap = torch.compile if compiled else (lambda f: f)

    def gelu(x):
        return 0.5 * x * (1 + torch.tanh(GELU_C * (x + GELU_A * x ** 3)))

    def out_np(t):
        return t.detach().numpy()

    if workload == "w1f":
        x = torch.from_numpy(data["x"])
        fn = wrap(gelu)

        def call():
            with torch.no_grad():
                return fn(x)
        return Runner(call, lambda h: [out_np(h)])
    if workload == "w1b":
        x = torch.from_numpy(data["x"]).requires_grad_(True)
        fwd = wrap(lambda v: gelu(v).sum())
        return Runner(lambda: torch.autograd.grad(fwd(x), x)[0], lambda h: [out_np(h)])
    if workload == "w6":
        logits = torch.from_numpy(data["logits"]).requires_grad_(True)
        labels = torch.from_numpy(data["labels"])
        fwd = wrap(F.cross_entropy)

        def call():
            loss = fwd(logits, labels)
            return loss, torch.autograd.grad(loss, logits)[0]
        return Runner(call, lambda h: [out_np(h[0]), out_np(h[1])])

    def mlp(params, x, y):
        h = x
        n = len(params) // 2
        for i in range(n):
            h = torch.addmm(params[2 * i + 1], h, params[2 * i])
            if i < n - 1:
                h = torch.relu(h)
        return F.cross_entropy(h, y)

    def logreg(params, x, y):
        w, b = params
        p = torch.sigmoid(x @ w + b)
        return -torch.mean(y * torch.log(p) + (1 - y) * torch.log(1 - p))

    def convnet(params, x, y):
        w1, b1, w2, b2, w3, b3 = params
        h = F.max_pool2d(torch.relu(F.conv2d(x, w1, b1)), 2)
        h = F.max_pool2d(torch.relu(F.conv2d(h, w2, b2)), 2)
        return F.cross_entropy(h.reshape(h.shape[0], -1) @ w3 + b3, y)

    loss_fn = wrap({"w2": mlp, "w3": logreg, "w4": convnet}[workload])
    params = [torch.from_numpy(p.copy()).requires_grad_(True) for p in data["params"]]
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])

    def update(ps, gs):
        torch._foreach_add_(ps, gs, alpha=-LR)

    update_fn = wrap(update)

    def call():
        loss = loss_fn(params, x, y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            update_fn(params, list(grads))
        return loss

    return Runner(call, lambda h: [out_np(h), *(out_np(p) for p in params)])


def torch_threads_note() -> str:
    import torch
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"


_ = np  # NumPy arrays come in through data; kept for symmetry with the other peers
