"""NumPy by hand: forward written out, backward derived by hand, for every workload.

It is both a peer and the reference every other peer's outputs are checked against.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..workloads import GELU_A, GELU_C, LR
from .base import Runner


def available() -> bool:
    return True


def gelu(x):
    return 0.5 * x * (1 + np.tanh(GELU_C * (x + GELU_A * x ** 3)))


def gelu_grad(x):
    t = np.tanh(GELU_C * (x + GELU_A * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * GELU_A * x * x)


def softmax_ce(logits, labels):
    """Mean softmax cross-entropy and its gradient w.r.t. the logits."""
    n = logits.shape[0]
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = np.mean(np.log(s[:, 0]) + m[:, 0] - logits[rows, labels])
    g = e / s
    g[rows, labels] -= 1
    g /= n
    return np.float32(loss), g


def mlp_step(params, x, y):
    """One SGD step of the ReLU MLP; updates ``params`` in place and returns the loss."""
    acts = [x]
    h = x
    n_layers = len(params) // 2
    for i in range(n_layers):
        z = h @ params[2 * i] + params[2 * i + 1]
        h = np.maximum(z, 0) if i < n_layers - 1 else z
        acts.append(h)
    loss, g = softmax_ce(acts[-1], y)
    grads = [None] * len(params)
    for i in reversed(range(n_layers)):
        if i < n_layers - 1:
            g = g * (acts[i + 1] > 0)
        grads[2 * i] = acts[i].T @ g
        grads[2 * i + 1] = g.sum(axis=0)
        if i > 0:
            g = g @ params[2 * i].T
    for p, gp in zip(params, grads):
        p -= LR * gp
    return loss


def logreg_step(params, x, y):
    """One SGD step of logistic regression with the literal BCE loss."""
    w, b = params
    p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    dz = (p - y) / x.shape[0]
    w -= LR * (x.T @ dz)
    b -= LR * dz.sum()
    return np.float32(loss)


def _im2col(x, k):
    """(N, C, H, W) -> (N, OH, OW, C, k, k) windows (a view)."""
    return sliding_window_view(x, (k, k), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5)


def conv_forward(x, w, b):
    cols = _im2col(x, w.shape[2])
    out = np.tensordot(cols, w, axes=([3, 4, 5], [1, 2, 3]))  # (N, OH, OW, O)
    return out.transpose(0, 3, 1, 2) + b[None, :, None, None]


def conv_backward(x, w, gout):
    """Gradients of a valid stride-1 conv w.r.t. input and weight."""
    k = w.shape[2]
    cols = _im2col(x, k)
    gw = np.tensordot(gout, cols, axes=([0, 2, 3], [0, 1, 2]))  # (O, C, k, k)
    gb = gout.sum(axis=(0, 2, 3))
    padded = np.pad(gout, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
    wflip = w[:, :, ::-1, ::-1]
    gx = np.tensordot(_im2col(padded, k), wflip, axes=([3, 4, 5], [0, 2, 3])).transpose(0, 3, 1, 2)
    return gx, gw, gb


def pool_forward(x):
    n, c, h, w = x.shape
    blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
    return blocks.max(axis=(3, 5))


def pool_backward(x, out, gout):
    """Route each pooled gradient to the first maximum of its 2x2 window."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    first = np.argmax(win, axis=-1)
    mask = np.zeros_like(win)
    np.put_along_axis(mask, first[..., None], 1.0, axis=-1)
    g = mask * gout[..., None]
    return g.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def convnet_step(params, x, y):
    """One SGD step of the two-conv convnet; updates ``params`` in place, returns the loss."""
    w1, b1, w2, b2, w3, b3 = params
    z1 = conv_forward(x, w1, b1)
    a1 = np.maximum(z1, 0)
    p1 = pool_forward(a1)
    z2 = conv_forward(p1, w2, b2)
    a2 = np.maximum(z2, 0)
    p2 = pool_forward(a2)
    flat = p2.reshape(p2.shape[0], -1)
    logits = flat @ w3 + b3
    loss, g = softmax_ce(logits, y)
    gw3 = flat.T @ g
    gb3 = g.sum(axis=0)
    gp2 = (g @ w3.T).reshape(p2.shape)
    ga2 = pool_backward(a2, p2, gp2) * (z2 > 0)
    gp1, gw2, gb2 = conv_backward(p1, w2, ga2)
    ga1 = pool_backward(a1, p1, gp1) * (z1 > 0)
    _, gw1, gb1 = conv_backward(x, w1, ga1)
    for p, gp in zip(params, [gw1, gb1, gw2, gb2, gw3, gb3]):
        p -= LR * gp
    return loss


def build(workload: str, data: dict, sizes, threads: int, options: dict) -> Runner:
    if workload == "w1f":
        x = data["x"]
        return Runner(lambda: gelu(x), lambda h: [h])
    if workload == "w1b":
        x = data["x"]
        return Runner(lambda: gelu_grad(x), lambda h: [h])
    if workload == "w6":
        logits, labels = data["logits"], data["labels"]
        return Runner(lambda: softmax_ce(logits, labels), lambda h: list(h))
    step = {"w2": mlp_step, "w3": logreg_step, "w4": convnet_step}[workload]
    params = [p.copy() for p in data["params"]]
    x, y = data["x"], data["y"]
    return Runner(lambda: step(params, x, y), lambda h: [h, *params])
