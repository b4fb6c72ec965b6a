"""Neural-network building blocks: activations, losses, layers' ops, initialisers, optimisers."""

from ..graph.basic import Variable, as_variable
from ..graph.types import is_int
from ..ops import elemwise as E
from ..ops import reduce as R
from ..ops.indexing import getitem
from ..ops.nn import LogSoftmax, Softmax, SoftmaxCrossEntropy, _axis, avg_pool2d, conv2d, max_pool2d
from ..ops.random import RandomStream, dropout
from ..ops.shape import reshape, shape
from . import init, layers, optimizers, schedules, training
from .layers import (
    Activation,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    Dropout,
    Flatten,
    Layer,
    Maxout,
    MaxPool2d,
    Sequential,
    state_updates,
)
from .optimizers import Optimizer, adadelta, adagrad, adam, momentum, nesterov, rmsprop, sgd
from .training import (
    EarlyStopping,
    accuracy,
    confusion_matrix,
    load_checkpoint,
    minibatches,
    progress,
    save_checkpoint,
    summary,
)

__all__ = ["softmax", "log_softmax", "cross_entropy", "binary_cross_entropy", "mse", "hinge",
           "conv2d", "max_pool2d", "avg_pool2d", "dropout", "maxout", "relu", "sigmoid", "tanh",
           "gelu", "elu", "leaky_relu", "softplus", "init", "optimizers", "sgd", "momentum",
           "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "RandomStream", "Optimizer",
           "layers", "schedules", "training", "Layer", "Dense", "Conv2d", "MaxPool2d", "AvgPool2d",
           "Flatten", "Activation", "Dropout", "Maxout", "BatchNorm", "Sequential", "state_updates",
           "EarlyStopping", "accuracy", "confusion_matrix", "load_checkpoint", "minibatches",
           "progress", "save_checkpoint", "summary"]

relu, sigmoid, tanh, gelu, elu = E.relu, E.sigmoid, E.tanh, E.gelu, E.elu
leaky_relu, softplus = E.leaky_relu, E.softplus


def softmax(x, axis: int = -1) -> Variable:
    """Softmax along ``axis``, computed stably."""
    x = as_variable(x)
    return Softmax(_axis(axis, x.ndim, "softmax"))(x)


def log_softmax(x, axis: int = -1) -> Variable:
    """``log(softmax(x))`` computed stably."""
    x = as_variable(x)
    return LogSoftmax(_axis(axis, x.ndim, "log_softmax"))(x)


def cross_entropy(logits, labels) -> Variable:
    """Mean softmax cross-entropy; ``labels`` are class indices or probability rows."""
    logits, labels = as_variable(logits), as_variable(labels)
    per_row = SoftmaxCrossEntropy(sparse=is_int(labels.dtype))(logits, labels)
    return R.mean(per_row)


def binary_cross_entropy(x, targets, from_logits: bool = True) -> Variable:
    """Mean binary cross-entropy of logits (default) or probabilities against 0/1 targets.

    From logits it is ``softplus(x) - t * x`` (stable for any magnitude); from probabilities the
    logs are clamped at -100, as PyTorch does, except that probabilities ``sigmoid(z)`` (also
    written ``1 / (1 + exp(-z))``) are computed from their logits ``z``, without clamp.
    """
    x, t = as_variable(x), as_variable(targets)
    if not x.dtype.startswith("float"):
        raise TypeError(f"binary_cross_entropy: expected float predictions, got {x.type}")
    t = E.cast(t, x.dtype)
    if not from_logits:
        from ..rewrite.stabilize import sigmoid_logits
        z = sigmoid_logits(x)  # p = sigmoid(z), also written 1 / (1 + exp(-z)): exact from z
        if z is not None:
            x, from_logits = z, True
    if from_logits:
        return R.mean(E.sub(E.softplus(x), E.mul(t, x)))
    # the inner `where`s keep the discarded branch finite, so at p = 0 or 1 the gradient is
    # 0 (the clamp's), not NaN
    pos, below = E.gt(x, 0.0), E.lt(x, 1.0)
    log_p = E.where(pos, E.maximum(E.log(E.where(pos, x, 1.0)), -100.0), -100.0)
    log_1mp = E.where(below, E.maximum(E.log1p(E.neg(E.where(below, x, 0.0))), -100.0), -100.0)
    return E.neg(R.mean(E.add(E.mul(t, log_p), E.mul(E.sub(1.0, t), log_1mp))))


def mse(prediction, target) -> Variable:
    """Mean squared error."""
    return R.mean(E.square(E.sub(prediction, target)))


def hinge(scores, targets) -> Variable:
    """Mean hinge loss ``max(0, 1 - t * s)`` for targets in {-1, +1}."""
    scores = as_variable(scores)
    return R.mean(E.relu(E.sub(1.0, E.mul(E.cast(as_variable(targets), scores.dtype), scores))))


def maxout(x, pieces: int, axis: int = -1) -> Variable:
    """Split ``axis`` into groups of ``pieces`` units and keep each group's maximum."""
    x = as_variable(x)
    axis = _axis(axis, x.ndim, "maxout")
    d = x.type.shape[axis]
    if d is None:
        raise ValueError("maxout: the size of the pooled axis must be static")
    if d % pieces:
        raise ValueError(f"maxout: axis {axis} of size {d} is not divisible by {pieces} pieces")
    lead = list(x.type.shape[:axis])
    if any(v is None for v in lead[1:]):
        raise ValueError("maxout: only the first dimension may be unknown")
    rest = lead[1:] + [d // pieces, pieces] + list(x.type.shape[axis + 1:])
    if any(v is None for v in rest):
        raise ValueError("maxout: dimensions after the pooled axis must be static")
    # the first dim is spelled out (symbolic when unknown), not -1: -1 is ambiguous for an
    # empty tensor
    first = ([lead[0] if lead[0] is not None else getitem(shape(x), 0)] if lead else [])
    return R.max(reshape(x, tuple(first + rest)), axis=axis + 1)
