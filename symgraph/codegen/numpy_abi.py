"""Where CPython/NumPy keep an array's fields, for generated code that reads array objects.

Kept apart from the renderer so the runtime can check the layout without importing llvmlite.
"""

OBJECT_DATA_OFFSET = 16  # offsetof(PyArrayObject, data) on 64-bit CPython
OBJECT_FLAGS_OFFSET = 64  # offsetof(PyArrayObject, flags); bit 0 = C-contiguous
