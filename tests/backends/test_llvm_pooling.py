"""Max-pooling gradients on llvm against the reference: ties, NaN, sizes that windows do not
tile, tiled (stride == size) and overlapping windows."""

from __future__ import annotations

import numpy as np
import pytest

import symgraph as sg


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,size,stride", [
    ((2, 3, 7, 9), 2, None),       # tiled, a row and a column left over
    ((1, 2, 6, 6), 3, None),       # tiled exactly
    ((2, 1, 5, 8), (2, 3), None),  # rectangular windows
    ((1, 1, 1, 1), 1, None),       # one element
    ((2, 2, 6, 7), 3, 2),          # overlapping windows (the scatter path)
])
def test_max_pool_gradient_matches_reference(dtype, shape, size, stride):
    rng = np.random.default_rng(sum(shape))
    x = sg.tensor4("x", dtype=dtype)
    cost = (sg.nn.max_pool2d(x, size, stride=stride) ** 2).sum()
    gx = sg.grad(cost, x)
    xv = rng.integers(-2, 3, size=shape).astype(dtype)  # small integers: many ties
    if xv.size > 4:
        xv.flat[rng.choice(xv.size, 3, replace=False)] = np.nan
    ref = sg.compile([x], gx, backend="reference")(xv)
    got = sg.compile([x], gx, backend="llvm")(xv)
    np.testing.assert_array_equal(got, ref)
