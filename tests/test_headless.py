"""The README's headless mode: scripts/headless_edit.py (what `scripts/start.sh --edit` runs) starts its own
ComfyUI, runs the text-editing example through /prompt with progress, writes the PNG and stops the server."""

import json
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from comfy_server import COMFYUI, TINY_SD15, tiny_models
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]


def edit_command(tmp_path, out, *options) -> tuple[list[str], pathlib.Path]:
    """The headless edit of a small copy of the example cat with the tiny checkpoint; returns it and the image."""
    models = tiny_models(tmp_path / "models")
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"tiny:\n  base_path: {models}\n  checkpoints: checkpoints\n")
    image = tmp_path / "cat.png"
    Image.open(ROOT / "example_workflows" / "chelsea-cat.png").convert("RGB").resize((64, 64)).save(image)
    command = [
        sys.executable, str(ROOT / "scripts" / "headless_edit.py"), "--comfyui", str(COMFYUI),
        "--edit", str(image), "--source", "a photo of a cat", "--target", "a photo of a dog", "--out", str(out),
        "--checkpoint", TINY_SD15, "--cpu", "--extra-model-paths-config", str(config), *options,
    ]
    return command, image


def test_headless_edit_writes_input_and_edit_side_by_side(tmp_path):
    out = tmp_path / "edited.png"
    command, image = edit_command(tmp_path, out, "--steps", "4", "--skip", "1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "will be NOISE" in result.stderr  # says plainly that the tiny checkpoint's pictures are noise
    assert "sampling" in result.stderr and f"wrote {out}" in result.stderr  # progress, then the result
    pixels = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32)
    assert pixels.shape == (64, 128, 3)
    source = np.asarray(Image.open(image), dtype=np.float32)
    assert np.abs(pixels[:, :64] - source).max() <= 2  # the left half is the input as loaded


def test_headless_edit_stopped_by_a_signal_stops_its_server_and_keeps_the_log(tmp_path):
    command, _ = edit_command(tmp_path, tmp_path / "never.png", "--steps", "999")
    script = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in script.stderr:  # wait until the server is up, then stop the script as `timeout` would
            lines.append(line)
            if "will be NOISE" in line:  # printed once the server is up, just before the prompt is queued
                break
        script.send_signal(signal.SIGTERM)
        _, rest = script.communicate(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
    stderr = "".join(lines) + rest
    assert script.returncode != 0
    work = next(line.split("(log: ")[1].rstrip(")\n") for line in lines if "(log: " in line)
    work = pathlib.Path(work).parent
    assert f"kept {work}" in stderr and (work / "comfyui.log").is_file()
    servers = [p for p in pathlib.Path("/proc").iterdir() if p.name.isdigit() and str(work) in _cmdline(p)]
    assert servers == [], "the ComfyUI server outlived the script"
    shutil.rmtree(work)


def _cmdline(process: pathlib.Path) -> str:
    try:
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_the_default_checkpoint_is_the_examples_or_the_only_one():
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_example_workflows
    from headless_edit import WORKFLOW, _named_checkpoint, choose_checkpoint

    example = _named_checkpoint(json.loads(WORKFLOW.read_text()))
    assert example == make_example_workflows.CHECKPOINT == "v1-5-pruned-emaonly-fp16.safetensors"
    assert choose_checkpoint(["a-sdxl.safetensors", example, "tiny-sd15.safetensors"], example) == example
    older = "v1-5-pruned-emaonly.safetensors"  # the name the examples used before: the same SD1.5 weights
    assert choose_checkpoint(["a-sdxl.safetensors", older, "tiny-sd15.safetensors"], example) == older
    assert choose_checkpoint([older, example], example) == example
    assert choose_checkpoint(["my-sd15.safetensors", "tiny-sd15.safetensors"], example) == "my-sd15.safetensors"
    assert choose_checkpoint(["tiny-sd15.safetensors"], example) == "tiny-sd15.safetensors"
    with pytest.raises(SystemExit, match="pass one of a-sdxl.safetensors, b-flux.safetensors"):
        choose_checkpoint(["a-sdxl.safetensors", "b-flux.safetensors"], example)
    with pytest.raises(SystemExit, match="no checkpoint"):
        choose_checkpoint([], example)
