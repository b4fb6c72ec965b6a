#!/usr/bin/env bash
# Install symgraph with its test dependencies, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[test,docs,mpi]"
python3 -m ruff check .
python3 -m pytest -q "$@"
