"""The scalar-IR module (``symgraph.scalar`` is shadowed by the ``sg.scalar`` constructor)."""

import importlib

S = importlib.import_module("symgraph.scalar")
