#!/usr/bin/env bash
# Sets up the ComfyUI host once (scripts/setup.sh, cached in .cache/) and runs the test suite against it.
#   scripts/test.sh                 # everything
#   scripts/test.sh -k reconstruct  # extra arguments go to pytest
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Assigned first so that a failed setup stops here with its own message (eval would hide its status).
paths=$(EF_WITH_BROWSER=1 "$ROOT/scripts/setup.sh")
eval "$paths"
export EF_COMFYUI
cd "$ROOT"
exec "$EF_PYTHON" -m pytest tests "$@"
