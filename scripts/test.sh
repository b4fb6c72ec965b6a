#!/usr/bin/env bash
# Install symgraph with its test dependencies (torch for the cross-check against PyTorch, MPI
# for the distributed tests, MkDocs for the docs site), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[test,docs,crosscheck,mpi]"
python3 -m ruff check .
python3 -m pytest -q "$@"
