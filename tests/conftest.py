"""Puts the real ComfyUI host (set up by scripts/setup.sh) on the path and loads this pack as a package."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMFYUI = pathlib.Path(os.environ.get("EF_COMFYUI", ROOT / ".cache" / "ComfyUI"))
PACKAGE = "edit_friendly_ddpm"

if not (COMFYUI / "comfy").is_dir():
    raise pytest.UsageError(f"ComfyUI not found at {COMFYUI}: run scripts/setup.sh (or scripts/test.sh) first.")

sys.path.insert(0, str(COMFYUI))
sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(0, str(ROOT / "benchmarks"))  # the toy model and the baselines some tests check

import comfy.cli_args  # noqa: E402

# Tests run on the CPU, as on a machine without a GPU, and must not depend on one being present.
# benchmarks/speed.py, which loads ComfyUI through this file, times a GPU with EF_DEVICE=cuda.
comfy.cli_args.args.cpu = os.environ.get("EF_DEVICE", "cpu") == "cpu"


def _load_pack():
    spec = importlib.util.spec_from_file_location(PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


pack = _load_pack()
pytest_plugins = ["comfy_server"]
