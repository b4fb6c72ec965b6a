"""Differential tests of symgraph against PyTorch: random graphs of every op family, built in
both libraries from one recorded program, compared on values, gradients and Hessian-vector
products (see ``registry.py`` for the op kinds and their torch twins)."""
