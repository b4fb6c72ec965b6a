"""JAX: ``jax.jit`` of ``value_and_grad`` plus the SGD update, parameters donated."""

from __future__ import annotations

import importlib.util

import numpy as np

from ..workloads import GELU_A, GELU_C, LR
from .base import Runner


def available() -> bool:
    return importlib.util.find_spec("jax") is not None


def build(workload: str, data: dict, sizes, threads: int, options: dict) -> Runner:
    import jax
    import jax.numpy as jnp

    def gelu(x):
        return 0.5 * x * (1 + jnp.tanh(GELU_C * (x + GELU_A * x ** 3)))

    def ce(logits, labels):
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    def block(h):
        jax.block_until_ready(h)

    if workload in ("w1f", "w1b"):
        x = jnp.asarray(data["x"])
        fn = jax.jit(gelu if workload == "w1f" else jax.grad(lambda v: jnp.sum(gelu(v))))
        return Runner(lambda: fn(x), lambda h: [np.asarray(h)], block)
    if workload == "w6":
        logits = jnp.asarray(data["logits"])
        labels = jnp.asarray(data["labels"].astype(np.int32))
        fn = jax.jit(jax.value_and_grad(ce))
        return Runner(lambda: fn(logits, labels), lambda h: [np.asarray(h[0]), np.asarray(h[1])], block)

    def mlp(params, x, y):
        h = x
        n = len(params) // 2
        for i in range(n):
            h = h @ params[2 * i] + params[2 * i + 1]
            if i < n - 1:
                h = jax.nn.relu(h)
        return ce(h, y)

    def logreg(params, x, y):
        w, b = params
        p = jax.nn.sigmoid(x @ w + b)
        return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))

    def conv_block(h, w, b):
        h = jax.lax.conv_general_dilated(h, w, (1, 1), "VALID",
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        h = jax.nn.relu(h + b[None, :, None, None])
        return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def convnet(params, x, y):
        w1, b1, w2, b2, w3, b3 = params
        h = conv_block(conv_block(x, w1, b1), w2, b2)
        return ce(h.reshape(h.shape[0], -1) @ w3 + b3, y)

    loss_fn = {"w2": mlp, "w3": logreg, "w4": convnet}[workload]

    def step(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return loss, [p - LR * g for p, g in zip(params, grads)]

    jstep = jax.jit(step, donate_argnums=(0,))
    state = {"params": [jnp.asarray(p) for p in data["params"]]}
    y_np = data["y"].astype(np.int32) if data["y"].dtype.kind == "i" else data["y"]
    x, y = jnp.asarray(data["x"]), jnp.asarray(y_np)

    def call():
        loss, state["params"] = jstep(state["params"], x, y)
        return loss

    return Runner(call, lambda h: [np.asarray(h), *(np.asarray(p) for p in state["params"])], block)
