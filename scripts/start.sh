#!/usr/bin/env bash
# Sets up (once) a local ComfyUI host with this pack linked into its custom_nodes, then starts it
# on 127.0.0.1:8188. Extra arguments go to ComfyUI's main.py.
#   scripts/start.sh
#   scripts/start.sh --comfyui /path/to/ComfyUI   # use an existing install (its own Python env)
#   scripts/start.sh --port 8190
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=8188
COMFY=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --comfyui) COMFY=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [ -n "$COMFY" ]; then
  PY=${EF_PYTHON:-python3}
  [ -f "$COMFY/main.py" ] || { echo "no ComfyUI at $COMFY (main.py missing)" >&2; exit 2; }
  ln -sfn "$ROOT" "$COMFY/custom_nodes/edit-friendly-ddpm"
else
  eval "$("$ROOT/scripts/setup.sh")"
  PY=$EF_PYTHON
  COMFY=$EF_COMFYUI
fi

CPU=()
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || CPU=(--cpu)
echo "Starting ComfyUI from $COMFY on http://127.0.0.1:$PORT with the Edit-Friendly DDPM nodes" >&2
cd "$COMFY"
exec "$PY" main.py "${CPU[@]}" --listen 127.0.0.1 --port "$PORT" --disable-auto-launch "${ARGS[@]}"
