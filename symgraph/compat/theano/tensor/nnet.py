"""``theano.tensor.nnet``: activations, softmax, cross-entropies and Theano's ``conv2d``."""

from __future__ import annotations

from ....graph.basic import Variable, as_variable
from ....graph.types import is_int
from ....ops import elemwise as E
from ....ops import reduce as R
from ....ops.nn import LogSoftmax, Softmax
from ....ops.nn import conv2d as sg_conv2d

sigmoid, softplus, relu = E.sigmoid, E.softplus, E.relu
ultra_fast_sigmoid = hard_sigmoid = E.sigmoid  # exact sigmoid: symgraph's is fast and accurate


def softmax(x, axis: int = -1) -> Variable:
    """Row-wise softmax (the last axis)."""
    x = as_variable(x)
    return Softmax(axis % x.ndim)(x)


def logsoftmax(x, axis: int = -1) -> Variable:
    """Row-wise log-softmax."""
    x = as_variable(x)
    return LogSoftmax(axis % x.ndim)(x)


def categorical_crossentropy(coding_dist, true_dist) -> Variable:
    """Per-row ``-sum(t * log(p))`` of probabilities ``coding_dist`` (Theano's: not averaged).
    ``true_dist`` holds class indices or probability rows. A softmax input is rewritten to the
    stable log-softmax form."""
    p, t = as_variable(coding_dist), as_variable(true_dist)
    log_p = E.log(p)
    if is_int(t.dtype):
        from ....ops.indexing import one_hot
        t = one_hot(t, p.type.shape[-1], dtype=p.dtype)
    return E.neg(R.sum(E.mul(t, log_p), axis=-1))


def binary_crossentropy(output, target) -> Variable:
    """Elementwise ``-(t log p + (1 - t) log(1 - p))`` of probabilities (Theano's: not averaged)."""
    p, t = as_variable(output), as_variable(target)
    return E.neg(E.add(E.mul(t, E.log(p)), E.mul(E.sub(1.0, t), E.log(E.sub(1.0, p)))))


def sigmoid_binary_crossentropy(output, target) -> Variable:
    """Binary cross-entropy from logits, elementwise."""
    x, t = as_variable(output), as_variable(target)
    return E.sub(E.softplus(x), E.mul(t, x))


def conv2d(input, filters, input_shape=None, filter_shape=None, border_mode="valid",
           subsample=(1, 1), filter_flip: bool = True, image_shape=None, filter_dilation=(1, 1)) -> Variable:
    """Theano's ``conv2d``: a true convolution (``filter_flip=True`` flips the kernels, as Theano
    does; ``sg.nn.conv2d`` correlates). ``border_mode`` 'valid', 'full', 'half' or an int/pair."""
    if tuple(filter_dilation) != (1, 1):
        raise NotImplementedError("conv2d: filter_dilation other than (1, 1) is not supported")
    w = as_variable(filters)
    if filter_flip:
        w = w[:, :, ::-1, ::-1]
    kh, kw = w.type.shape[2], w.type.shape[3]
    if border_mode == "valid":
        padding = (0, 0)
    elif border_mode == "full":
        padding = (kh - 1, kw - 1)
    elif border_mode == "half":
        padding = (kh // 2, kw // 2)
    elif isinstance(border_mode, int):
        padding = (border_mode, border_mode)
    elif isinstance(border_mode, tuple):
        padding = border_mode
    else:
        raise ValueError(f"conv2d: unknown border_mode {border_mode!r}")
    return sg_conv2d(input, w, stride=tuple(subsample), padding=padding)
