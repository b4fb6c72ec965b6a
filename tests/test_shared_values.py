"""Shared variables: the dtype of NumPy scalars is kept, and a shared variable is truthy."""

import numpy as np

import symgraph as sg


def test_numpy_scalars_keep_their_dtype_python_floats_are_float32():
    assert sg.shared(np.float64(1.5)).dtype == "float64"
    assert sg.shared(np.float32(1.5)).dtype == "float32"
    assert sg.shared(np.int32(3)).dtype == "int32"
    assert sg.shared(1.5).dtype == "float32"
    assert sg.shared([1.0, 2.0]).dtype == "float32"
    assert sg.shared(np.array([1.0, 2.0])).dtype == "float64"


def test_shared_variables_are_truthy_like_objects():
    w = sg.shared(np.zeros(3))
    assert w and not (not sg.shared(0.0))
