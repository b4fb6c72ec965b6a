"""A max-pool gradient passed back through the ReLU that fed the pooling -> one
``MaxPool2dGrad(relu=True)`` node.

``sg.grad`` of ``max_pool2d(relu(s))`` builds ``where(0 >= s, 0, MaxPool2dGrad(relu(s), g))``:
one kernel writes the routed gradient, a second reads it and ``s`` again to write the masked
one (and a bias gradient's sum reads both once more).  The mask is a function of the pooled
input: ``0 >= s`` exactly when ``0 >= relu(s)`` (both false for NaN), so the pooling gradient
kernel can apply it to each element it writes.  Fires only when the routed gradient has no
other use.
"""

from __future__ import annotations

from ..graph.basic import Apply
from ..ops.elemwise import Elemwise
from ..ops.nn import MaxPool2dGrad
from .engine import RewriteContext, local_rewrite
from .relu_grad import is_relu, relu_grad_expr


@local_rewrite("specialize", tracks=(Elemwise,))
def max_pool_relu_grad(node: Apply, ctx: RewriteContext):
    """``where(0 >= s, 0, MaxPool2dGrad(relu(s), g))`` -> ``MaxPool2dGrad(relu=True)(relu(s), g)``
    (also with the mask already read from ``relu(s)``, see ``relu_grad_from_output``)."""
    if node.op.nin != 2:
        return None
    s, routed = node.inputs
    pool = routed.owner
    if pool is None or not isinstance(pool.op, MaxPool2dGrad) or pool.op.relu:
        return None
    h = pool.inputs[0]
    if not is_relu(h) or node.op.expr is not relu_grad_expr(s.dtype):
        return None
    pre = h.owner.inputs[0]
    if not (s is pre or s is h or is_relu(s, of=pre)):  # the mask on relu's input or on a relu of it
        return None
    if routed.type.shape != node.outputs[0].type.shape or routed.dtype != node.outputs[0].dtype:
        return None
    if ctx.is_output(routed) or len(ctx.clients(routed)) != 1:
        return None
    return MaxPool2dGrad(pool.op.size, pool.op.stride, relu=True)(h, pool.inputs[1])
