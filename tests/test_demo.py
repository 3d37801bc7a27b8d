"""The newcomer's demo (scripts/demo.py, what `scripts/start.sh --demo` runs): a real edit on the shipped toy
model with no checkpoint, input | reconstruction | edit in one PNG, and no overwriting without --force."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import numpy as np
from comfy_server import COMFYUI
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ef_demo_script", ROOT / "scripts" / "demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)  # only its constants: the heavy imports happen in main()


def run_demo(out: pathlib.Path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / "demo.py"), "--comfyui", str(COMFYUI), "--out", str(out), *options]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, cwd=out.parent)


def test_demo_reconstructs_exactly_recolours_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "demo.png"
    result = run_demo(out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    printed = result.stdout

    error = float(re.search(r"reconstruction max \|error\| (\S+)", printed).group(1))
    assert error <= 1e-4
    assert "COLOUR CHANGED: red -> blue" in printed
    assert "the toy classifier reads: input red circle" in printed
    change = float(re.search(r"largest channel change (\S+)", printed).group(1))
    assert change > 0.2
    assert f"wrote {out}" in printed

    panel = 32 * demo.SCALE
    pixels = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32)
    assert pixels.shape == (demo.LABEL_HEIGHT + panel, demo.PANELS * panel + (demo.PANELS - 1) * demo.GAP, 3)
    panels = [pixels[demo.LABEL_HEIGHT:, i * (panel + demo.GAP):i * (panel + demo.GAP) + panel] for i in range(demo.PANELS)]
    assert np.abs(panels[0] - panels[1]).max() <= 1  # the reconstruction is the input, to a grey level
    # Measured on the PNG itself: the input's red pixels turned blue in the edit.
    red = (panels[0][..., 0] > 150) & (panels[0][..., 2] < 100)
    assert red.sum() > 100
    before, after = panels[0][red].mean(0), panels[2][red].mean(0)
    assert after[2] - before[2] > 50 and before[0] - after[0] > 50

    written = out.read_bytes()
    again = run_demo(out)
    assert again.returncode != 0
    assert "not overwriting" in again.stderr and "--force" in again.stderr
    assert out.read_bytes() == written
