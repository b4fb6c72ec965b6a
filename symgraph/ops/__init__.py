"""All tensor operations, by family.  ``symgraph`` re-exports the public ones."""

from .elemwise import (
                       Elemwise,
                       abs_,
                       add,
                       cast,
                       ceil,
                       clip,
                       cos,
                       elu,
                       eq,
                       erf,
                       exp,
                       expm1,
                       fill,
                       floor,
                       floor_divide,
                       ge,
                       gelu,
                       gt,
                       le,
                       leaky_relu,
                       log,
                       log1p,
                       logical_and,
                       logical_not,
                       logical_or,
                       lt,
                       maximum,
                       minimum,
                       mod,
                       mul,
                       neg,
                       neq,
                       power,
                       relu,
                       sigmoid,
                       sign,
                       sin,
                       softplus,
                       sqrt,
                       square,
                       sub,
                       tanh,
                       true_divide,
                       where,
)
from .indexing import IndexAdd, Subtensor, getitem, inc_subtensor, one_hot, take
from .linalg import MatMul, dot, matmul, outer
from .nn import (
                       ARange,
                       Conv2d,
                       LogSoftmax,
                       Pool2d,
                       Softmax,
                       SoftmaxCrossEntropy,
                       arange,
                       avg_pool2d,
                       conv2d,
                       max_pool2d,
)
from .random import RandomDraw, RandomStream, dropout
from .reduce import Argmax, Reduce, argmax, argmin, logsumexp, max, mean, min, prod, std, sum, var
from .shape import (
                       BroadcastTo,
                       Concatenate,
                       DimShuffle,
                       Reshape,
                       Shape,
                       SumToShape,
                       broadcast_to,
                       concatenate,
                       expand_dims,
                       flatten,
                       reshape,
                       shape,
                       squeeze,
                       stack,
                       transpose,
                       zeros_like,
)

abs = abs_  # noqa: A001 - NumPy's name
divide = true_divide

__all__ = [n for n in dir() if not n.startswith("_")]
