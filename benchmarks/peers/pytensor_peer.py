"""PyTensor: shared variables and ``updates``; the default (Numba) mode as ``pytensor-numba`` and
the classic C backend (``mode="CVM"``) as ``pytensor-c``.

PyTensor 3 has no 2-D multi-channel convolution or pooling op, so W4 is written as im2col
(25 shifted slices stacked, one GEMM) and pooling as reshape + max; gradients come from
``pytensor.grad``.
"""

from __future__ import annotations

import importlib.util
import os

from ..workloads import GELU_A, GELU_C, LR
from .base import Runner


def available() -> bool:
    return importlib.util.find_spec("pytensor") is not None


def build(workload: str, data: dict, sizes, threads: int, options: dict) -> Runner:
    # Python float constants must stay float32 (PyTensor's default floatX is float64)
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    if "floatX" not in flags:
        os.environ["PYTENSOR_FLAGS"] = ",".join(f for f in (flags, "floatX=float32") if f)
    import pytensor
    import pytensor.tensor as pt

    mode = options.get("mode")  # None = PyTensor's default (Numba); "CVM" = C backend
    kw = {"mode": mode} if mode else {}

    def gelu(x):
        return 0.5 * x * (1 + pt.tanh(GELU_C * (x + GELU_A * x ** 3)))

    def ce(logits, labels):
        logp = pt.special.log_softmax(logits, axis=-1)
        return -pt.mean(logp[pt.arange(labels.shape[0]), labels])

    if workload in ("w1f", "w1b"):
        x = pt.tensor("x", shape=data["x"].shape, dtype="float32")
        y = gelu(x)
        out = y if workload == "w1f" else pytensor.grad(pt.sum(y), x)
        fn = pytensor.function([x], out, **kw)
        xv = data["x"]
        return Runner(lambda: fn(xv), lambda h: [h])
    if workload == "w6":
        logits = pt.tensor("logits", shape=data["logits"].shape, dtype="float32")
        labels = pt.tensor("labels", shape=data["labels"].shape, dtype="int64")
        loss = ce(logits, labels)
        fn = pytensor.function([logits, labels], [loss, pytensor.grad(loss, logits)], **kw)
        lv, yv = data["logits"], data["labels"]
        return Runner(lambda: fn(lv, yv), lambda h: list(h))

    def mlp(params, x, y):
        h = x
        n = len(params) // 2
        for i in range(n):
            h = pt.dot(h, params[2 * i]) + params[2 * i + 1]
            if i < n - 1:
                h = pt.maximum(h, 0)
        return ce(h, y)

    def logreg(params, x, y):
        w, b = params
        p = pt.sigmoid(pt.dot(x, w) + b)
        return -pt.mean(y * pt.log(p) + (1 - y) * pt.log(1 - p))

    def conv_relu_pool(h, w, b, k=5):
        n, c, hh, ww = h.shape
        oh, ow = hh - k + 1, ww - k + 1
        slices = [h[:, :, i:i + oh, j:j + ow] for i in range(k) for j in range(k)]
        cols = pt.stack(slices, axis=2)                       # (N, C, k*k, OH, OW)
        cols = cols.reshape((n, c * k * k, oh * ow))
        wmat = w.reshape((w.shape[0], c * k * k))
        out = pt.tensordot(wmat, cols, axes=[[1], [1]])       # (O, N, OH*OW)
        out = out.dimshuffle(1, 0, 2).reshape((n, w.shape[0], oh, ow)) + b.dimshuffle("x", 0, "x", "x")
        out = pt.maximum(out, 0)
        return out.reshape((n, w.shape[0], oh // 2, 2, ow // 2, 2)).max(axis=(3, 5))

    def convnet(params, x, y):
        w1, b1, w2, b2, w3, b3 = params
        h = conv_relu_pool(conv_relu_pool(x, w1, b1), w2, b2)
        return ce(pt.dot(h.reshape((h.shape[0], -1)), w3) + b3, y)

    loss_fn = {"w2": mlp, "w3": logreg, "w4": convnet}[workload]
    params = [pytensor.shared(p.copy(), name=f"p{i}") for i, p in enumerate(data["params"])]
    x = pt.tensor("x", shape=data["x"].shape, dtype="float32")
    y = pt.tensor("y", shape=data["y"].shape, dtype=str(data["y"].dtype))
    loss = loss_fn(params, x, y)
    grads = pytensor.grad(loss, params)
    fn = pytensor.function([x, y], loss, updates=[(p, p - LR * g) for p, g in zip(params, grads)], **kw)
    xv, yv = data["x"], data["y"]
    return Runner(lambda: fn(xv, yv), lambda h: [h, *(p.get_value() for p in params)])
