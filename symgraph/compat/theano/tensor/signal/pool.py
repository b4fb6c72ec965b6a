"""``theano.tensor.signal.pool.pool_2d``."""

from __future__ import annotations

from .....graph.basic import Variable, as_variable
from .....ops.nn import avg_pool2d, max_pool2d


def pool_2d(input, ws=None, ignore_border: bool = True, stride=None, pad=(0, 0), mode: str = "max",
            ds=None, st=None) -> Variable:
    """Pooling over the last two axes. ``ignore_border=False`` is accepted where no partial
    window exists (the sizes divide); ``pad`` must be (0, 0)."""
    ws = ws if ws is not None else ds
    stride = stride if stride is not None else st
    x = as_variable(input)
    if tuple(pad) != (0, 0):
        raise NotImplementedError("pool_2d: padding is not supported")
    if not ignore_border:
        step = stride or ws
        h, w = x.type.shape[-2], x.type.shape[-1]
        if h is None or w is None or (h - ws[0]) % step[0] or (w - ws[1]) % step[1]:
            raise NotImplementedError(
                "pool_2d: ignore_border=False with partial windows is not supported; use "
                "ignore_border=True (the default) or sizes the window tiles exactly")
    if mode == "max":
        return max_pool2d(x, tuple(ws), None if stride is None else tuple(stride))
    if mode in ("average_exc_pad", "average_inc_pad", "sum"):
        y = avg_pool2d(x, tuple(ws), None if stride is None else tuple(stride))
        return y * (ws[0] * ws[1]) if mode == "sum" else y
    raise ValueError(f"pool_2d: unknown mode {mode!r}")
