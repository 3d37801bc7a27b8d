#!/usr/bin/env python
"""Edits one image without the browser: starts ComfyUI, runs the pack's text-editing example workflow
through /prompt with your image and prompts, shows progress, writes the result PNG and stops the server.

Called by `scripts/start.sh --edit IMAGE --source "..." --target "..." --out result.png`, which supplies
--comfyui and the Python environment. The result is the example's output: the input and the edit side
by side. With no real checkpoint in the models folder it uses the tiny generated one, whose pictures
are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from workflow_api import ui_to_api, validate, with_overrides  # noqa: E402

WORKFLOW = ROOT / "example_workflows" / "text_guided_editing.json"
# The same SD1.5 weights under the name earlier versions of the examples used (full precision rather than
# the fp16 file the examples name now): taken when the example's own file is not installed.
SD15_OTHER_NAMES = ("v1-5-pruned-emaonly.safetensors",)


def _get(url, timeout=30):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _post(url, payload, timeout=30):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Edit an image with the Edit-Friendly DDPM nodes, headless.")
    parser.add_argument("--comfyui", required=True)
    parser.add_argument("--edit", required=True, metavar="IMAGE", help="the image to edit")
    parser.add_argument("--source", required=True, help="prompt describing the image as it is")
    parser.add_argument("--target", required=True, help="prompt describing the image as you want it")
    parser.add_argument("--out", required=True, help="PNG to write (input and edit side by side)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file name in models/checkpoints (default: the example's SD1.5 one if present, else the only one there)")
    parser.add_argument("--steps", type=int, default=None, help="inversion steps (default 100)")
    parser.add_argument("--skip", type=int, default=None, help="skip (default 36)")
    parser.add_argument("--cfg", type=float, default=None, help="target CFG (default 15)")
    parser.add_argument("--source-cfg", type=float, default=None, help="source CFG (default 3.5)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU")
    parser.add_argument("--timeout", type=float, default=3600)
    args, extra = parser.parse_known_args(argv)

    comfyui = pathlib.Path(args.comfyui).resolve()
    image = pathlib.Path(args.edit).resolve()
    if not image.is_file():
        parser.error(f"no image at {image}")
    out = pathlib.Path(args.out).resolve()
    work = pathlib.Path(tempfile.mkdtemp(prefix="ef-edit-"))
    for folder in ("input", "output", "temp", "user"):
        (work / folder).mkdir()
    shutil.copy(image, work / "input" / image.name)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = work / "comfyui.log"
    # Folders of its own: ComfyUI empties its temp folder at start-up, and a user's server may be using the install's.
    command = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
               "--input-directory", str(work / "input"), "--output-directory", str(work / "output"),
               "--temp-directory", str(work / "temp"), "--user-directory", str(work / "user"),
               "--database-url", "sqlite:///:memory:", *extra]
    if args.cpu:
        command.append("--cpu")
    print(f"[edit] starting ComfyUI from {comfyui} (log: {log_path})", file=sys.stderr)
    # A kill or a closed terminal ends this script through its `finally`, which stops the server too.
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, _exit_on_signal)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    succeeded = False
    try:
        deadline = time.monotonic() + 300
        info = None
        while info is None:
            if process.poll() is not None:
                raise SystemExit(f"ComfyUI exited during start-up; see {log_path}:\n{log_path.read_text(errors='replace')[-4000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"ComfyUI did not start within 300 s; see {log_path}")
            try:
                info = _get(f"{url}/object_info")
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        if "EditFriendlyDDPMInversion" not in info:
            raise SystemExit(f"ComfyUI started without the Edit-Friendly DDPM nodes; see {log_path}")
        workflow = json.loads(WORKFLOW.read_text())
        checkpoints = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        checkpoint = args.checkpoint or choose_checkpoint(checkpoints, _named_checkpoint(workflow))
        if checkpoint.startswith("tiny-"):
            print(f"[edit] using {checkpoint}: seeded random weights, so the picture will be NOISE. Put a real SD1.5 "
                  "checkpoint into models/checkpoints for real edits.", file=sys.stderr)

        prompt = ui_to_api(workflow, info)
        texts = {}
        for node_id, node in prompt.items():
            if node["class_type"] == "EditFriendlyDDPMInversion":
                texts["source"] = node["inputs"]["positive"][0]
            if node["class_type"] == "EditFriendlySampler":
                texts["target"] = node["inputs"]["positive"][0]
        prompt[texts["source"]]["inputs"]["text"] = args.source
        prompt[texts["target"]]["inputs"]["text"] = args.target
        inversion, sampler = {}, {}
        for key, value in (("steps", args.steps), ("cfg", args.source_cfg), ("seed", args.seed)):
            if value is not None:
                inversion[key] = value
        for key, value in (("skip", args.skip), ("cfg", args.cfg)):
            if value is not None:
                sampler[key] = value
        prompt = with_overrides(prompt, {
            "CheckpointLoaderSimple": {"ckpt_name": checkpoint},
            "LoadImage": {"image": image.name},
            "EditFriendlyDDPMInversion": inversion,
            "EditFriendlySampler": sampler,
            "SaveImage": {"filename_prefix": "edit"},
        })
        problems = validate(prompt, info)
        if problems:
            raise SystemExit("the workflow does not validate:\n  " + "\n  ".join(problems))
        try:
            prompt_id = _post(f"{url}/prompt", {"prompt": prompt})["prompt_id"]
        except urllib.error.HTTPError as error:
            raise SystemExit(f"ComfyUI refused the prompt: {error.read().decode(errors='replace')}")

        names = {node_id: node["class_type"] for node_id, node in prompt.items()}
        deadline = time.monotonic() + args.timeout
        last = ""
        while True:
            entry = _get(f"{url}/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                break
            if process.poll() is not None:
                raise SystemExit(f"ComfyUI stopped while editing; see {log_path}")
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            line = _progress_line(log_path, names)
            if line != last:
                print(f"\r[edit] {line}".ljust(79), end="", file=sys.stderr, flush=True)
                last = line
            time.sleep(0.5)
        print(file=sys.stderr)
        status = entry["status"]
        if status.get("status_str") != "success":
            for kind, data in status.get("messages", []):
                if kind == "execution_error":
                    raise SystemExit(f"{data.get('node_type')}: {data.get('exception_message')}")
            raise SystemExit(f"the edit failed: {json.dumps(status)[:2000]}")
        images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
        if not images:
            raise SystemExit("the workflow saved no image")
        produced = work / "output" / images[0].get("subfolder", "") / images[0]["filename"]
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(produced, out)
        print(f"[edit] wrote {out} (input | edit)", file=sys.stderr)
        succeeded = True
        return 0
    finally:
        _stop(process)
        if succeeded:
            shutil.rmtree(work, ignore_errors=True)
        else:  # the messages above point at the log: keep it
            print(f"[edit] kept {work} (ComfyUI's log: {log_path})", file=sys.stderr)


def choose_checkpoint(available: list[str], preferred: str | None) -> str:
    """The checkpoint to edit with when none is named: the workflow's own (or the same SD1.5 weights under their
    other usual name), else the only real one, else the tiny one.

    Several real checkpoints and none of them the workflow's: refused, since the example's settings suit SD1.5
    and picking one by name order could pick an SDXL or Flux file.
    """
    real = [name for name in available if not name.startswith("tiny-")]
    for name in (preferred, *SD15_OTHER_NAMES):
        if name in available:
            return name
    if len(real) == 1:
        return real[0]
    if real:
        raise SystemExit(f"several checkpoints and no --checkpoint: pass one of {', '.join(real)}")
    if available:
        return available[0]
    raise SystemExit("no checkpoint in ComfyUI's models/checkpoints")


def _named_checkpoint(workflow: dict) -> str | None:
    loaders = [node for node in workflow["nodes"] if node["type"] == "CheckpointLoaderSimple"]
    return loaders[0]["widgets_values"][0] if loaders else None


def _exit_on_signal(number, frame):
    raise SystemExit(f"stopped by signal {number}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT to the server's process group, SIGKILL if it is still there after 15 s (also if interrupted meanwhile)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(15)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _progress_line(log_path: pathlib.Path, names: dict) -> str:
    """The latest progress bar ComfyUI printed (tqdm writes them to its log), or a waiting note."""
    try:
        text = log_path.read_bytes()[-4000:].decode(errors="replace")
    except OSError:
        return "waiting"
    bars = [part.strip() for part in text.replace("\n", "\r").split("\r") if "it/s]" in part or "s/it]" in part]
    return f"sampling {bars[-1]}" if bars else "loading models and encoding"


if __name__ == "__main__":
    sys.exit(main())
