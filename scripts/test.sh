#!/usr/bin/env bash
# Installs everything (see install.sh) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/install.sh"
# fusepy 3.0.1, kept apart from the venv: one test mounts with it to prove the code runs on both.
fusepy_dir="$top/.venv/fusepy-3.0.1"
if [ ! -f "$fusepy_dir/fuse.py" ]; then
  "$top/.venv/bin/pip" install -q --disable-pip-version-check --target "$fusepy_dir" fusepy==3.0.1 2>&1 \
    | grep -v '^WARNING: Location' >&2 || true
fi
cd "$top"
exec "$top/.venv/bin/python" -m pytest "$@"
