"""The optional C call path ``symgraph._fastcall`` and the base class of ``CompiledFunction``.

The extension is built by ``setup.py`` when a C compiler is available.  Without it (or with
``SYMGRAPH_NO_FASTCALL=1`` in the environment when a function is compiled) every call runs
the Python call path; results and errors are the same either way.
"""

from __future__ import annotations

import os


def fastcall_module():
    """The C call path module, or None when it was not built or ``SYMGRAPH_NO_FASTCALL`` is set."""
    if os.environ.get("SYMGRAPH_NO_FASTCALL", "") not in ("", "0"):
        return None
    try:
        from . import _fastcall
    except ImportError:
        return None
    return _fastcall


try:
    from ._fastcall import FunctionBase
except ImportError:
    class FunctionBase:  # type: ignore[no-redef]
        """Calling an instance runs ``_caller(args)`` when a backend provided one and there
        are no keyword arguments, else ``_call(*args, **kwargs)`` (the C version of this class
        does the same without a Python frame)."""

        _caller = None

        def __call__(self, *args, **kwargs):
            caller = self._caller
            if caller is not None and not kwargs:
                return caller(args)
            return self._call(*args, **kwargs)
