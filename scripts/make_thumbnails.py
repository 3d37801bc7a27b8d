#!/usr/bin/env python
"""Writes example_workflows/<name>.jpg for every example workflow: the thumbnail the frontend's templates browser
shows for it (newer frontends show a placeholder without one).

The thumbnail is a picture of the workflow's graph as the frontend draws it, not of an output: the outputs need the
real model weights. It is taken the way tests/test_browser.py drives the frontend: a ComfyUI server with this pack
(tests/comfy_server.py), the newest frontend that scripts/setup.sh unpacks (the one that shows the thumbnails) with
nodes on the canvas, in headless Chromium; the example's input image is in the server's input folder, so Load Image
shows it. Each picture is WIDTH x HEIGHT, JPEG quality QUALITY.

    python scripts/make_thumbnails.py            # all examples
    python scripts/make_thumbnails.py masked_edit fast_edit
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

import comfy_server as host
import make_example_workflows
from test_browser import CHROMIUM_ARGS, NEWEST_FRONTEND, _post_json, _wait_for_app, chromium_path

WIDTH, HEIGHT, QUALITY = 512, 288, 80
VIEWPORT = {"width": 1600, "height": 900}
# The part of the page that the newest frontend's side bar (left), tabs and menus (top) leave to the canvas.
LEFT, TOP, MARGIN = 64, 136, 24

# Fits all nodes (title bars included) into the largest WIDTH:HEIGHT box of the free part of the canvas and
# returns that box in page pixels.
FIT = """async ([left, top, margin, aspect]) => {
    await app.extensionManager.setting.set('Comfy.Minimap.Visible', false);
    app.canvas.min_font_size_for_lod = 0;  // titles and widgets even when zoomed out
    app.canvas.show_info = false;  // no rendering statistics in the corner
    app.canvas.deselectAll();
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const node of app.graph.nodes) {
        x0 = Math.min(x0, node.pos[0]); y0 = Math.min(y0, node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT);
        x1 = Math.max(x1, node.pos[0] + node.size[0]); y1 = Math.max(y1, node.pos[1] + node.size[1]);
    }
    const canvas = app.canvas.canvas.getBoundingClientRect();
    // Clear of the canvas' zoom buttons at the bottom right, too.
    let width = canvas.width - left - 3 * margin, height = canvas.height - top - 3 * margin;
    if (width / height > aspect) width = height * aspect; else height = width / aspect;
    const scale = Math.min((width - 2 * margin) / (x1 - x0), (height - 2 * margin) / (y1 - y0));
    // The graph in the middle of the box.
    const boxLeft = left, boxTop = top;
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [(boxLeft + width / 2) / scale - (x0 + x1) / 2, (boxTop + height / 2) / scale - (y0 + y1) / 2];
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
    return { x: canvas.x + boxLeft, y: canvas.y + boxTop, width, height };
}"""


def thumbnail(page, name: str) -> bytes:
    from PIL import Image

    workflow = json.loads((make_example_workflows.OUT / f"{name}.json").read_text())
    page.evaluate("() => { app.graph.clear(); }")
    page.evaluate("(workflow) => app.loadGraphData(workflow, true, true, null, { showMissingModelsDialog: false })", workflow)
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)  # images on Load Image nodes
    clip = page.evaluate(FIT, [LEFT, TOP, MARGIN, WIDTH / HEIGHT])
    page.wait_for_timeout(500)
    picture = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB").resize((WIDTH, HEIGHT), Image.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=QUALITY, optimize=True, progressive=True)
    return out.getvalue()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="example workflows (default: all)")
    args = parser.parse_args(argv)
    names = args.names or list(make_example_workflows.WORKFLOWS)
    executable = chromium_path()
    if executable is None or not (NEWEST_FRONTEND / "index.html").is_file():
        print("needs Chromium and the newest frontend: run scripts/setup.sh with EF_WITH_BROWSER=1", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="ef-thumbnails-") as temp:
        server = host.ComfyServer(pathlib.Path(temp) / "comfyui", host.free_port(), front_end_root=NEWEST_FRONTEND)
        server.input_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(make_example_workflows.OUT / make_example_workflows.IMAGE, server.input_dir / make_example_workflows.IMAGE)
        # Empty stand-ins for the files the examples name (nothing is run): the frontend lists them and so does not
        # outline their loaders in red as missing, which a thumbnail should not show.
        for model in [*make_example_workflows.CHECKPOINT_MODELS, *make_example_workflows.MODEL_FILES.values()]:
            stand_in = server.models_dir / model["directory"] / model["name"]
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.touch()
        for name in (make_example_workflows.VIDEO, make_example_workflows.MAPS_FILE):
            (server.input_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (server.input_dir / name).touch()
        server.start()
        try:
            _post_json(f"{server.url}/settings/Comfy.TutorialCompleted", True)
            _post_json(f"{server.url}/settings/Comfy.VueNodes.Enabled", False)
            with sync_playwright() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    str(pathlib.Path(temp) / "profile"), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
                    viewport=VIEWPORT, device_scale_factor=1,
                )
                page = context.new_page()
                page.goto(server.url)
                _wait_for_app(page)
                for name in names:
                    path = make_example_workflows.OUT / f"{name}.jpg"
                    path.write_bytes(thumbnail(page, name))
                    print(f"{path} ({path.stat().st_size // 1024} KB)")
                context.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
