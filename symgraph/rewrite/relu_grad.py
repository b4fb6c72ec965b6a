"""The ReLU gradient's mask read from the ReLU's output instead of its input.

``sg.grad`` of ``relu(s)`` builds ``where(0 >= s, 0, g)``, which keeps the pre-activation
``s`` alive into the backward pass: ``s`` then has two readers (the ReLU and the mask), so the
bias-and-ReLU epilogue cannot be fused into the matrix product or convolution that computes
``s``, and ``s`` is written to memory and read back.  ``0 >= s`` exactly when
``0 >= relu(s)`` (``relu(-0.0)`` is 0.0, and both tests are false for NaN), so the mask may
read the ReLU's output, which the forward pass keeps anyway.  Fires when ``relu(s)`` is in the
graph.
"""

from __future__ import annotations

from ..graph.basic import Apply, Variable
from ..ops.elemwise import (
    Elemwise,
    S,  # the scalar IR module (symgraph.scalar is also a function name)
)
from .engine import RewriteContext, local_rewrite


def relu_expr(dtype: str) -> S.SExpr:
    """``relu``'s expression (``maximum(0, in0)``), as ``sg.relu`` builds it."""
    return S.apply("maximum", S.const(0, dtype), S.inp(0, dtype))


def relu_grad_expr(dtype: str) -> S.SExpr:
    """The ReLU gradient ``sg.grad`` builds: ``where(0 >= in0, 0, in1)`` (mask, output gradient)."""
    return S.apply("where", S.apply("ge", S.const(0, dtype), S.inp(0, dtype)), S.const(0, dtype),
                   S.inp(1, dtype))


def is_relu(v: Variable, of: Variable | None = None) -> bool:
    """Whether ``v`` is ``relu(x)`` (of ``of``, when given)."""
    node = v.owner
    return (node is not None and isinstance(node.op, Elemwise) and node.op.nin == 1
            and node.op.expr is relu_expr(node.inputs[0].dtype)
            and (of is None or node.inputs[0] is of))


@local_rewrite("specialize", tracks=(Elemwise,))
def relu_grad_from_output(node: Apply, ctx: RewriteContext):
    """``where(0 >= s, 0, g)`` -> ``where(0 >= relu(s), 0, g)`` where ``relu(s)`` exists."""
    if node.op.nin != 2:
        return None
    s, g = node.inputs
    if node.op.expr is not relu_grad_expr(s.dtype) or is_relu(s):
        return None
    for client, _ in ctx.clients(s):
        if isinstance(client, Apply) and client is not node and is_relu(client.outputs[0], of=s):
            h = client.outputs[0]
            if h.type.shape == s.type.shape:
                return node.op(h, g)
    return None
