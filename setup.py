"""Build the optional C call path ``symgraph._fastcall``; metadata lives in pyproject.toml.

The extension is optional: without a C compiler (or NumPy headers) the build of the
extension is skipped with a warning and symgraph runs its pure-Python call path.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that leaves the extension out instead of failing the installation."""

    def finalize_options(self) -> None:
        super().finalize_options()
        try:
            import numpy as np
        except ImportError:  # no headers: nothing to build against
            self.extensions = []
            return
        for ext in self.extensions:
            ext.include_dirs.append(np.get_include())

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # noqa: BLE001 - any failure means "no fast path"
            self._skip(e)

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # noqa: BLE001
            self._skip(e)

    @staticmethod
    def _skip(e: Exception) -> None:
        print(f"symgraph: building the optional C call path failed ({e}); "
              "using the pure-Python call path", file=sys.stderr)


setup(
    ext_modules=[Extension("symgraph._fastcall", ["symgraph/_fastcall.c"],
                           extra_compile_args=["-O2"], optional=True)],
    cmdclass={"build_ext": OptionalBuildExt},
)
