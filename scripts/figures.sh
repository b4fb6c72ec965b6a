#!/usr/bin/env bash
# Run every lecture example at full length and write its figures to docs/images/.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check -e ".[examples]"
for script in examples/lectures/*.py; do
    name=$(basename "$script" .py)
    [ "$name" = common ] && continue
    echo "== $name"
    python3 "$script" --plot docs/images "$@"
done
