#!/usr/bin/env bash
# Sets up (once) a local ComfyUI host with this pack linked into its custom_nodes, then starts it
# on 127.0.0.1:8188. Extra arguments go to ComfyUI's main.py.
#   scripts/start.sh
#   scripts/start.sh --comfyui /path/to/ComfyUI   # use an existing install (its own Python env)
#   scripts/start.sh --port 8190
# Headless: edit one image with the text-editing example workflow, write the PNG (input | edit), exit.
#   scripts/start.sh --edit photo.png --source "a photo of a cat" --target "a photo of a tiger" --out result.png
#     [--steps 100] [--skip 36] [--cfg 15] [--source-cfg 3.5] [--seed 0] [--checkpoint NAME.safetensors]
# With no checkpoint in ComfyUI's models/checkpoints, a tiny generated SD1.5 checkpoint is put there
# so that the nodes can be tried at once; its pictures are noise.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=8188
COMFY=""
ARGS=()
EDIT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --comfyui) COMFY=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --edit|--source|--target|--out|--steps|--skip|--cfg|--source-cfg|--seed|--checkpoint) EDIT+=("$1" "$2"); shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [ -n "$COMFY" ]; then
  PY=${EF_PYTHON:-python3}
  [ -f "$COMFY/main.py" ] || { echo "no ComfyUI at $COMFY (main.py missing)" >&2; exit 2; }
  ln -sfn "$ROOT" "$COMFY/custom_nodes/edit-friendly-ddpm"
else
  paths=$("$ROOT/scripts/setup.sh")  # assigned first: a failed setup stops here (eval would hide its status)
  eval "$paths"
  PY=$EF_PYTHON
  COMFY=$EF_COMFYUI
fi

CPU=()
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || CPU=(--cpu)

# No checkpoint at all: generate the tiny seeded one (cached) so the nodes and workflows can be tried.
CKPTS="$COMFY/models/checkpoints"
if ! find -L "$CKPTS" -maxdepth 3 -type f \( -name '*.safetensors' -o -name '*.ckpt' -o -name '*.pt' -o -name '*.pth' -o -name '*.sft' \) 2>/dev/null | grep -q .; then
  echo "No checkpoint in $CKPTS: generating tiny-sd15.safetensors (seeded random weights, a few seconds)." >&2
  "$PY" "$ROOT/scripts/make_tiny_checkpoints.py" "$COMFY/models" --comfyui "$COMFY" --only sd15 >/dev/null
  echo "NOTE: tiny-sd15.safetensors is for trying the nodes only: every picture it makes is NOISE." >&2
  echo "      Put a real SD1.5 checkpoint (e.g. v1-5-pruned-emaonly.safetensors) into $CKPTS for real edits." >&2
fi

if [ ${#EDIT[@]} -gt 0 ]; then
  exec "$PY" "$ROOT/scripts/headless_edit.py" --comfyui "$COMFY" "${CPU[@]}" "${EDIT[@]}" "${ARGS[@]}"
fi

echo "Starting ComfyUI from $COMFY on http://127.0.0.1:$PORT with the Edit-Friendly DDPM nodes" >&2
cd "$COMFY"
exec "$PY" main.py "${CPU[@]}" --listen 127.0.0.1 --port "$PORT" --disable-auto-launch "${ARGS[@]}"
