#!/usr/bin/env bash
# Install symgraph, then run the main demo: build an MLP, differentiate it, compile it,
# train it on the scikit-learn digits and print what was generated.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[examples]"
python3 examples/digits_mlp.py "$@"
