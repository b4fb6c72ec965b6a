"""symgraph's benchmark suite: symgraph beside NumPy, PyTensor, JAX and PyTorch (see run.py)."""
