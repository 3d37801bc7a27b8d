#!/usr/bin/env bash
# Sets up (once) a local ComfyUI host with this pack linked into its custom_nodes, then starts it
# on 127.0.0.1:8188. Extra arguments go to ComfyUI's main.py.
#   scripts/start.sh
#   scripts/start.sh --comfyui /path/to/ComfyUI   # use an existing install: its venv/ or .venv/ Python,
#                                                 # else EF_PYTHON, else python3
#   scripts/start.sh --port 8190
# Headless: edit one image with the text-editing example workflow, write the PNG (input | edit), exit.
#   scripts/start.sh --edit photo.png --source "a photo of a cat" --target "a photo of a tiger" --out result.png
#     [--steps 100] [--skip 36] [--cfg 15] [--source-cfg 3.5] [--seed 0] [--checkpoint NAME.safetensors]
# Demo, no checkpoint needed: invert and edit a picture with the shipped toy model on the CPU (about a
# minute), write input | reconstruction | edit as a PNG, exit (scripts/demo.py).
#   scripts/start.sh --demo [--out demo.png] [--force] [--seed 0] [--generate]
# With no checkpoint in ComfyUI's models/checkpoints, the demo runs first (unless --no-demo; its PNG goes
# to ComfyUI's output folder), then a tiny generated SD1.5 checkpoint is put there so that the nodes can
# be tried at once (its pictures are noise), and ComfyUI starts.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=8188
COMFY=""
ARGS=()
EDIT=()
DEMO=0
NO_DEMO=0
while [ $# -gt 0 ]; do
  case "$1" in
    --comfyui|--port|--edit|--source|--target|--out|--steps|--skip|--cfg|--source-cfg|--seed|--checkpoint)
      [ $# -ge 2 ] || { echo "$1 needs a value" >&2; exit 2; } ;;&
    --comfyui) COMFY=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --demo) DEMO=1; shift ;;
    --no-demo) NO_DEMO=1; shift ;;
    --edit|--source|--target|--out|--steps|--skip|--cfg|--source-cfg|--seed|--checkpoint) EDIT+=("$1" "$2"); shift 2 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done

if [ -n "$COMFY" ]; then
  [ -f "$COMFY/main.py" ] || { echo "no ComfyUI at $COMFY (main.py missing)" >&2; exit 2; }
  PY=${EF_PYTHON:-python3}
  for own in "$COMFY/venv/bin/python" "$COMFY/.venv/bin/python"; do
    if [ -z "${EF_PYTHON:-}" ] && [ -x "$own" ]; then PY=$own; break; fi
  done
  "$PY" -c 'import torch' 2>/dev/null || { echo "$PY cannot import torch: set EF_PYTHON to the Python that runs this ComfyUI" >&2; exit 2; }
  "$ROOT/scripts/link_pack.sh" "$COMFY"
else
  paths=$("$ROOT/scripts/setup.sh")  # assigned first: a failed setup stops here (eval would hide its status)
  eval "$paths"
  PY=$EF_PYTHON
  COMFY=$EF_COMFYUI
fi

# --cpu only where torch sees no accelerator ComfyUI can use (CUDA/ROCm, Apple MPS, Intel XPU).
CPU=()
"$PY" -c 'import torch, sys
found = torch.cuda.is_available() or torch.backends.mps.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
sys.exit(0 if found else 1)' 2>/dev/null || CPU=(--cpu)

# The demo runs on the CPU whatever the machine has (the toy model is small); it takes --out, --seed,
# --force and --generate (anything else given here goes to it too, and it says what it does not know).
if [ "$DEMO" = 1 ]; then
  for ((i = 0; i < ${#EDIT[@]}; i += 2)); do
    case "${EDIT[i]}" in
      --out|--seed) ;;
      *) echo "--demo does not take ${EDIT[i]} (it takes --out, --seed, --force, --generate)" >&2; exit 2 ;;
    esac
  done
  exec "$PY" "$ROOT/scripts/demo.py" --comfyui "$COMFY" ${EDIT[@]+"${EDIT[@]}"} ${ARGS[@]+"${ARGS[@]}"}
fi

# No checkpoint at all: generate the tiny seeded one (cached) so the nodes and workflows can be tried.
CKPTS="$COMFY/models/checkpoints"
# -print -quit: one name is enough (a pipe into `grep -q` would fail under pipefail when grep stops early).
found=$(find -L "$CKPTS" -maxdepth 3 -type f \( -name '*.safetensors' -o -name '*.ckpt' -o -name '*.pt' -o -name '*.pth' -o -name '*.sft' \) -print -quit 2>/dev/null || true)
if [ -z "$found" ] && [ ! -f "$COMFY/extra_model_paths.yaml" ]; then
  if [ ${#EDIT[@]} -eq 0 ] && [ "$NO_DEMO" = 0 ]; then
    # First, a real edit a newcomer can see work: the shipped toy model, no checkpoint needed (about a minute).
    demo_png="$COMFY/output/edit-friendly-demo.png"
    echo "No checkpoint in $CKPTS: first a demo on the shipped toy model (about a minute on a CPU; --no-demo skips it)." >&2
    if "$PY" "$ROOT/scripts/demo.py" --comfyui "$COMFY" --out "$demo_png" --force >&2; then
      echo "Demo done: open $demo_png (input | reconstruction | edit)." >&2
    else
      echo "The demo did not succeed (see above); starting ComfyUI anyway." >&2
    fi
  fi
  echo "No checkpoint in $CKPTS: generating tiny-sd15.safetensors (seeded random weights, a few seconds)." >&2
  "$PY" "$ROOT/scripts/make_tiny_checkpoints.py" "$COMFY/models" --comfyui "$COMFY" --only sd15 >/dev/null
  echo "NOTE: tiny-sd15.safetensors is for trying the nodes only: every picture it makes is NOISE." >&2
  echo "      Put a real SD1.5 checkpoint (e.g. v1-5-pruned-emaonly-fp16.safetensors, which the examples name) into $CKPTS for real edits." >&2
  echo "      Then restart (scripts/start.sh) and load example_workflows/text_guided_editing.json, or edit headless:" >&2
  echo "      scripts/start.sh --edit photo.png --source \"a photo of a cat\" --target \"a photo of a tiger\" --out result.png" >&2
fi

if [ ${#EDIT[@]} -gt 0 ]; then
  exec "$PY" "$ROOT/scripts/headless_edit.py" --comfyui "$COMFY" ${CPU[@]+"${CPU[@]}"} "${EDIT[@]}" ${ARGS[@]+"${ARGS[@]}"}
fi

echo "Starting ComfyUI from $COMFY on http://127.0.0.1:$PORT with the Edit-Friendly DDPM nodes" >&2
cd "$COMFY"
exec "$PY" main.py ${CPU[@]+"${CPU[@]}"} --listen 127.0.0.1 --port "$PORT" --disable-auto-launch ${ARGS[@]+"${ARGS[@]}"}
