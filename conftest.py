"""Make ``import symgraph`` resolve to this checkout (also from git worktrees), and the shared
test helpers (``tests/helpers.py``) importable from every test folder."""

import os
import sys

_ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _ROOT)
sys.path.insert(1, os.path.join(_ROOT, "tests"))
