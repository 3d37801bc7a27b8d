#!/usr/bin/env bash
# Links this checkout into a ComfyUI's custom_nodes as edit-friendly-ddpm (edits are live), and never
# replaces a real folder there: that would be an installed copy the user may want to keep.
#   scripts/link_pack.sh /path/to/ComfyUI
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODES=$1/custom_nodes
LINK=$NODES/edit-friendly-ddpm

mkdir -p "$NODES"
if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
  echo "$LINK is a folder, not a link (an installed copy of the pack?); move it away to use this checkout." >&2
  exit 1
fi
if [ -L "$LINK" ] && [ "$(readlink "$LINK")" != "$ROOT" ]; then
  echo "note: $LINK pointed at $(readlink "$LINK"); it now points at $ROOT" >&2
fi
ln -sfn "$ROOT" "$LINK"
# Another copy under another name would register the same nodes twice.
for other in "$NODES"/*/pyproject.toml; do
  [ -f "$other" ] || continue
  folder=$(dirname "$other")
  [ "$folder" = "$LINK" ] && continue
  if grep -qE '^name = "edit-friendly-ddpm"' "$other"; then
    echo "warning: $folder is another copy of this pack; ComfyUI would load its nodes twice. Move one away." >&2
  fi
done
