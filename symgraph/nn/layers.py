"""Layers: small objects that own named shared parameters and build their graph on demand.

A layer is called on a symbolic value, ``y = layer(x, train=True)``, and returns a symbolic
value; ``train`` switches the layers that behave differently while training (``Dropout``,
``BatchNorm``), so one model object serves the training step and the evaluation function.
``params`` lists the trainable shared variables, ``state`` the others (batch-norm running
statistics). Layers are a convenience over the plain functions of ``sg.nn``: a model may mix
both freely.

Batch normalisation's running statistics advance through updates that the training graph
records; collect them with ``sg.nn.state_updates(loss)`` and pass them to ``compile`` beside
the optimiser's updates.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from ..graph.basic import SharedVariable, Variable, as_variable
from ..graph.types import TensorType
from ..ops import elemwise as E
from ..ops import reduce as R
from ..ops.linalg import matmul
from ..ops.nn import avg_pool2d, conv2d, max_pool2d
from ..ops.random import RandomStream, dropout
from ..ops.shape import reshape, shape
from . import init

_counters: dict[str, itertools.count] = {}

ACTIVATIONS: dict[str, Callable] = {"relu": E.relu, "tanh": E.tanh, "sigmoid": E.sigmoid,
                                    "gelu": E.gelu, "elu": E.elu, "softplus": E.softplus,
                                    "leaky_relu": E.leaky_relu, "linear": lambda x: x}


def _auto_name(kind: str) -> str:
    return f"{kind}{next(_counters.setdefault(kind, itertools.count()))}"


def _activation(fn) -> Callable:
    if fn is None:
        return lambda x: x
    if isinstance(fn, str):
        if fn not in ACTIVATIONS:
            raise ValueError(f"unknown activation {fn!r}; choose one of {sorted(ACTIVATIONS)} "
                             "or pass a function")
        return ACTIVATIONS[fn]
    if not callable(fn):
        raise TypeError(f"activation must be a name or a function, got {fn!r}")
    return fn


def _initialiser(name_or_fn):
    if callable(name_or_fn):
        return name_or_fn
    if name_or_fn not in init.INITIALISERS:
        raise ValueError(f"unknown initialiser {name_or_fn!r}; choose one of {sorted(init.INITIALISERS)}")
    return init.INITIALISERS[name_or_fn]


def state_updates(*outputs) -> list:
    """The updates of layer state (batch-norm running statistics) recorded by the training
    graphs of ``outputs``: pass them to ``compile`` with the optimiser's updates."""
    found, seen, stack = [], set(), [as_variable(o) for o in outputs]
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        found.extend(getattr(v, "_state_updates", ()))
        if v.owner is not None:
            stack.extend(v.owner.inputs)
    unique, targets = [], set()
    for target, value in found:
        if id(target) not in targets:
            targets.add(id(target))
            unique.append((target, value))
    return unique


class Layer:
    """Base class: ``params`` (trainable), ``state`` (not trained), ``__call__(x, train)``."""

    kind = "layer"

    def __init__(self, name: str | None = None):
        self.name = name or _auto_name(self.kind)
        self.params: list[SharedVariable] = []
        self.state: list[SharedVariable] = []

    def _param(self, var: SharedVariable, suffix: str, trainable: bool = True) -> SharedVariable:
        var.name = f"{self.name}.{suffix}"
        (self.params if trainable else self.state).append(var)
        return var

    def __call__(self, x, train: bool = False) -> Variable:  # pragma: no cover - abstract
        raise NotImplementedError

    def count(self) -> int:
        """Number of trainable scalars."""
        return int(sum(np.prod(p.get_value().shape, dtype=np.int64) for p in self.params))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class Dense(Layer):
    """``activation(x @ w + b)`` for ``x`` of shape (batch, n_in)."""

    kind = "dense"

    def __init__(self, n_in: int, n_out: int, activation=None, bias: bool = True,
                 init_w="glorot_uniform", seed=None, dtype="float32", name=None):
        super().__init__(name)
        self.activation = _activation(activation)
        self.w = self._param(_initialiser(init_w)((n_in, n_out), seed=seed, dtype=dtype), "w")
        self.b = self._param(init.zeros((n_out,), dtype=dtype), "b") if bias else None

    def __call__(self, x, train: bool = False) -> Variable:
        y = matmul(x, self.w)
        return self.activation(y if self.b is None else E.add(y, self.b))


class Conv2d(Layer):
    """``activation(conv2d(x, w) + b)`` for NCHW ``x`` and OIHW weights."""

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 activation=None, bias: bool = True, init_w="he_normal", seed=None,
                 dtype="float32", name=None):
        super().__init__(name)
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.padding = stride, padding
        self.activation = _activation(activation)
        self.w = self._param(_initialiser(init_w)((out_channels, in_channels, kh, kw), seed=seed,
                                                  dtype=dtype), "w")
        self.b = self._param(init.zeros((out_channels,), dtype=dtype), "b") if bias else None

    def __call__(self, x, train: bool = False) -> Variable:
        y = conv2d(x, self.w, stride=self.stride, padding=self.padding)
        if self.b is not None:
            y = E.add(y, reshape(self.b, (1, -1, 1, 1)))
        return self.activation(y)


class MaxPool2d(Layer):
    """Max pooling over the last two axes."""

    kind = "maxpool"

    def __init__(self, size, stride=None, name=None):
        super().__init__(name)
        self.size, self.stride = size, stride

    def __call__(self, x, train: bool = False) -> Variable:
        return max_pool2d(x, self.size, self.stride)


class AvgPool2d(MaxPool2d):
    """Average pooling over the last two axes."""

    kind = "avgpool"

    def __call__(self, x, train: bool = False) -> Variable:
        return avg_pool2d(x, self.size, self.stride)


class Flatten(Layer):
    """Keep the batch axis, flatten the rest: (N, C, H, W) -> (N, C*H*W)."""

    kind = "flatten"

    def __call__(self, x, train: bool = False) -> Variable:
        x = as_variable(x)
        if x.ndim < 1:
            raise ValueError(f"{self.name}: needs at least one axis, got {x.type}")
        # both sizes spelled out (no -1, which an empty batch makes ambiguous); symbolic
        # where the dims are unknown
        rest = 1
        for d in x.shape[1:]:
            rest = rest * d
        return reshape(x, (x.shape[0], rest))


class Activation(Layer):
    """An elementwise function as a layer."""

    kind = "act"

    def __init__(self, fn, name=None):
        super().__init__(name)
        self.fn = _activation(fn)

    def __call__(self, x, train: bool = False) -> Variable:
        return self.fn(x)


class Dropout(Layer):
    """Zero each element with probability ``p`` while training (scaled); the identity in eval."""

    kind = "dropout"

    def __init__(self, p: float, rng: RandomStream | None = None, name=None):
        super().__init__(name)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{self.name}: p must be in [0, 1), got {p}")
        self.p = p
        self.rng = rng if rng is not None else RandomStream()

    def __call__(self, x, train: bool = False) -> Variable:
        return dropout(x, self.p, self.rng) if train else as_variable(x)


class Maxout(Layer):
    """Groups of ``pieces`` units along ``axis`` reduced to their maximum."""

    kind = "maxout"

    def __init__(self, pieces: int, axis: int = -1, name=None):
        super().__init__(name)
        self.pieces, self.axis = pieces, axis

    def __call__(self, x, train: bool = False) -> Variable:
        from . import maxout
        return maxout(x, self.pieces, self.axis)


class BatchNorm(Layer):
    """Batch normalisation over every axis but ``axis`` (the features / channels).

    Training graphs normalise with the batch's statistics and record updates of the running
    mean and (unbiased) variance, ``running = (1 - momentum) * running + momentum * batch``,
    collected by ``sg.nn.state_updates``; evaluation graphs use the running statistics."""

    kind = "batchnorm"

    def __init__(self, n_features: int, axis: int = 1, momentum: float = 0.1, eps: float = 1e-5,
                 dtype="float32", name=None):
        super().__init__(name)
        self.axis, self.momentum, self.eps = axis, momentum, eps
        self.gamma = self._param(init.ones((n_features,), dtype=dtype), "gamma")
        self.beta = self._param(init.zeros((n_features,), dtype=dtype), "beta")
        self.running_mean = self._param(init.zeros((n_features,), dtype=dtype), "running_mean",
                                        trainable=False)
        self.running_var = self._param(init.ones((n_features,), dtype=dtype), "running_var",
                                       trainable=False)

    def _broadcast(self, v, ndim: int, axis: int) -> Variable:
        shape = [1] * ndim
        shape[axis] = -1
        return reshape(v, tuple(shape))

    def __call__(self, x, train: bool = False) -> Variable:
        x = as_variable(x)
        axis = self.axis % x.ndim
        axes = tuple(a for a in range(x.ndim) if a != axis)
        if train:
            mean = R.mean(x, axis=axes, keepdims=True)
            var = R.var(x, axis=axes, keepdims=True)
        else:
            mean = self._broadcast(self.running_mean, x.ndim, axis)
            var = self._broadcast(self.running_var, x.ndim, axis)
        inv_std = E.true_divide(1.0, E.sqrt(E.add(var, self.eps)))
        scale = E.mul(self._broadcast(self.gamma, x.ndim, axis), inv_std)
        y = E.add(E.mul(E.sub(x, mean), scale), self._broadcast(self.beta, x.ndim, axis))
        if train:
            y._state_updates = self._running_updates(x, mean, var, axes)
        return y

    def _running_updates(self, x, mean, var, axes) -> list:
        dims = [x.type.shape[a] for a in axes]
        if all(d is not None for d in dims):
            n = int(np.prod(dims, dtype=np.int64))
            correction = n / max(n - 1, 1)  # Bessel's correction, as a weakly typed Python float
        else:
            n = _count(x, axes, var.dtype)
            correction = E.true_divide(n, E.maximum(E.sub(n, 1.0), 1.0))
        unbiased = E.mul(reshape(var, (-1,)), correction)
        m = self.momentum
        new_mean = E.add(E.mul(1.0 - m, self.running_mean), E.mul(m, reshape(mean, (-1,))))
        new_var = E.add(E.mul(1.0 - m, self.running_var), E.mul(m, unbiased))
        return [(self.running_mean, E.cast(new_mean, self.running_mean.dtype)),
                (self.running_var, E.cast(new_var, self.running_var.dtype))]


def _count(x, axes, dtype: str) -> Variable:
    """The number of elements of ``x`` along ``axes``, as a ``dtype`` scalar."""
    n = None
    for a in axes:
        d = E.cast(shape(x)[a], dtype)
        n = d if n is None else E.mul(n, d)
    return n


class Sequential(Layer):
    """Layers applied in order; ``params`` and ``state`` are theirs, in order."""

    kind = "sequential"

    def __init__(self, *layers: Layer, name=None):
        super().__init__(name)
        self.layers = list(layers)
        for layer in self.layers:
            self.params += layer.params
            self.state += layer.state

    def __call__(self, x, train: bool = False) -> Variable:
        for layer in self.layers:
            x = layer(x, train=train)
        return x

    def summary(self, input_shape, dtype: str = "float32") -> str:
        """A table of the layers: output shape (for ``input_shape``) and parameter counts."""
        x = Variable(TensorType(dtype, tuple(input_shape)), name="x")
        rows = [("layer", "output shape", "params")]
        for layer in self.layers:
            x = layer(x)
            rows.append((f"{layer.name} ({type(layer).__name__})", str(tuple(x.type.shape)),
                         f"{layer.count():,}"))
        total = sum(layer.count() for layer in self.layers)
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
        rule = "-" * len(lines[0])
        return "\n".join([lines[0], rule, *lines[1:], rule,
                          f"trainable parameters: {total:,}; state variables: {len(self.state)}"])


__all__ = ["Layer", "Dense", "Conv2d", "MaxPool2d", "AvgPool2d", "Flatten", "Activation",
           "Dropout", "Maxout", "BatchNorm", "Sequential", "state_updates", "ACTIVATIONS"]
