"""Pytest plugin: a real ComfyUI server with this pack, the tiny models and temporary folders.

`comfy_server` (session scope) starts ComfyUI's own `main.py` as a subprocess on a free port, with
`--base-directory` pointing at a temporary folder that holds `custom_nodes/` (this pack linked in),
`models/` (the tiny seeded checkpoints of scripts/make_tiny_checkpoints.py), `input/` and `output/`.
It waits until `/object_info` lists the pack's nodes and always stops the whole process group at the
end. The object it yields talks to the server with the standard library only:

    server.url, server.port, server.models_dir, server.input_dir, server.output_dir, server.log_path
    server.get("/object_info")                -> JSON
    server.queue(api_prompt)                  -> prompt_id (raises QueueError with the 400 JSON)
    server.wait(prompt_id, timeout=120)       -> the /history entry of that prompt
    server.interrupt()
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMFYUI = pathlib.Path(os.environ.get("EF_COMFYUI", ROOT / ".cache" / "ComfyUI")).resolve()
CACHE = pathlib.Path(os.environ.get("EF_CACHE_DIR", ROOT / ".cache")).resolve()
PACK_NAME = "edit-friendly-ddpm"
PACK_NODES = ("EditFriendlyDDPMInversion", "EditFriendlySampler", "EditFriendlyNoiseMapTransform")
START_TIMEOUT = float(os.environ.get("EF_SERVER_START_TIMEOUT", "180"))

sys.path.insert(0, str(ROOT / "scripts"))
import make_tiny_checkpoints  # noqa: E402

TINY_SD15 = make_tiny_checkpoints.SD15_CHECKPOINT
TINY_SD3 = make_tiny_checkpoints.SD3_DIFFUSION_MODEL
TINY_SD3_VAE = make_tiny_checkpoints.SD3_VAE


class QueueError(RuntimeError):
    """POST /prompt refused the prompt; `.response` holds the server's error JSON."""

    def __init__(self, status: int, response):
        self.status = status
        self.response = response
        super().__init__(f"POST /prompt returned HTTP {status}: {json.dumps(response, indent=1)[:4000]}")


class ExecutionTimeout(TimeoutError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_models(models_dir: pathlib.Path) -> pathlib.Path:
    """Generates the tiny models once into the cache and links them into `models_dir`."""
    cached = CACHE / "tiny-models"
    paths = make_tiny_checkpoints.make(cached, comfyui=COMFYUI, log=lambda message: print(message, file=sys.stderr))
    for path in paths.values():
        link = models_dir / path.relative_to(cached)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path)
    return models_dir


class ComfyServer:
    def __init__(self, base: pathlib.Path, port: int, front_end_root: pathlib.Path | None = None):
        self.base = base
        self.port = port
        self.front_end_root = front_end_root  # another frontend's static files; None: the one ComfyUI pins
        self.url = f"http://127.0.0.1:{port}"
        self.models_dir = base / "models"
        self.input_dir = base / "input"
        self.output_dir = base / "output"
        self.custom_nodes_dir = base / "custom_nodes"
        self.log_path = base / "comfyui.log"
        self.process: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle -------------------------------------------------------------------------------
    def command(self) -> list[str]:
        return [
            sys.executable, "main.py", "--cpu",
            "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
            "--base-directory", str(self.base),
            "--input-directory", str(self.input_dir),
            "--output-directory", str(self.output_dir),
            "--temp-directory", str(self.base / "temp"),
            "--database-url", "sqlite:///:memory:",
            *(["--front-end-root", str(self.front_end_root)] if self.front_end_root else []),
        ]

    def start(self, timeout: float = START_TIMEOUT) -> None:
        for folder in (self.input_dir, self.output_dir, self.custom_nodes_dir, self.models_dir):
            folder.mkdir(parents=True, exist_ok=True)
        link = self.custom_nodes_dir / PACK_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        self._log_file = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.command(), cwd=COMFYUI, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.fail(f"ComfyUI exited with code {self.process.returncode} during start-up")
            try:
                info = self.get("/object_info", timeout=10)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                info = None
            if info is not None:
                missing = [name for name in PACK_NODES if name not in info]
                if missing:
                    self.fail(f"ComfyUI started but /object_info lacks {missing}: the pack failed to load")
                return
            if time.monotonic() > deadline:
                self.fail(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            for sig, grace in ((signal.SIGINT, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if process is not None:
            # Whatever the server itself started (it should start nothing) goes too.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log(self, tail: int = 20000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def fail(self, message: str):
        raise RuntimeError(f"{message}\n--- ComfyUI log ({self.log_path}) ---\n{self.log()}")

    # -- HTTP ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload=None, timeout: float = 30):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def get(self, path: str, timeout: float = 30):
        return self._request("GET", path, timeout=timeout)

    def post(self, path: str, payload=None, timeout: float = 30):
        return self._request("POST", path, payload if payload is not None else {}, timeout=timeout)

    def queue(self, api_prompt: dict, client_id: str | None = None) -> str:
        payload = {"prompt": api_prompt}
        if client_id:
            payload["client_id"] = client_id
        try:
            answer = self.post("/prompt", payload)
        except urllib.error.HTTPError as error:
            body = error.read()
            try:
                response = json.loads(body)
            except ValueError:
                response = body.decode(errors="replace")
            raise QueueError(error.code, response) from None
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120) -> dict:
        """Polls /history/<id> until the prompt has finished (success, error or interrupt)."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                status = entry["status"]
                if status.get("completed") or status.get("status_str") in ("success", "error"):
                    return entry
            if self.process is None or self.process.poll() is not None:
                self.fail(f"ComfyUI stopped while prompt {prompt_id} was running")
            if time.monotonic() > deadline:
                raise ExecutionTimeout(f"prompt {prompt_id} did not finish within {timeout} s\n{self.log(4000)}")
            time.sleep(0.2)

    def run(self, api_prompt: dict, timeout: float = 120) -> dict:
        return self.wait(self.queue(api_prompt), timeout)

    def run_watching(self, api_prompt: dict, timeout: float = 120, on_message=None) -> tuple[dict, list[dict]]:
        """Runs a prompt while listening on /ws; returns (history entry, the websocket messages of that prompt).

        The messages show which nodes ran ("executing"), which were cached and each node's progress.
        `on_message(message)`, if given, sees each message as it arrives (to act at a chosen moment).
        """
        import asyncio
        import uuid

        import aiohttp  # a ComfyUI requirement, so present in its environment

        client_id = uuid.uuid4().hex

        async def watch():
            messages = []
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{self.url}/ws?clientId={client_id}") as ws:
                    prompt_id = await asyncio.to_thread(self.queue, api_prompt, client_id)
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline:
                        try:
                            message = await ws.receive(timeout=max(0.1, deadline - time.monotonic()))
                        except asyncio.TimeoutError:
                            break
                        if message.type != aiohttp.WSMsgType.TEXT:
                            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                                break
                            continue  # binary previews
                        data = json.loads(message.data)
                        if data.get("data", {}).get("prompt_id") not in (None, prompt_id):
                            continue
                        messages.append(data)
                        if on_message is not None:
                            await asyncio.to_thread(on_message, data)
                        kind, body = data.get("type"), data.get("data", {})
                        if kind in ("execution_success", "execution_error", "execution_interrupted"):
                            break
                        if kind == "executing" and body.get("node") is None and body.get("prompt_id") == prompt_id:
                            break
            return prompt_id, messages

        prompt_id, messages = asyncio.run(watch())
        return self.wait(prompt_id, timeout), messages

    def interrupt(self, prompt_id: str | None = None) -> None:
        self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})

    def queue_state(self) -> dict:
        return self.get("/queue")

    def output_images(self, entry: dict) -> list[pathlib.Path]:
        """Paths of the images a finished prompt saved, in node-id order."""
        paths = []
        for node_id in sorted(entry.get("outputs", {}), key=lambda key: (len(key), key)):
            for image in entry["outputs"][node_id].get("images", []):
                if image.get("type") != "output":
                    continue
                folder = self.output_dir / image.get("subfolder", "")
                paths.append(folder / image["filename"])
        return paths


def execution_error(entry: dict) -> dict | None:
    """The execution_error message of a history entry, if the prompt failed."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui")
    server = ComfyServer(base, free_port())
    tiny_models(server.models_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
