"""The pack in ComfyUI's real frontend (comfyui-frontend-package), driven in headless Chromium.

Every test runs against each of FRONTENDS: the frontend ComfyUI 0.3.75 pins, and the newest one (which users of
newer ComfyUI versions get; scripts/setup.sh unpacks it, and a second server serves it with --front-end-root)
with nodes drawn on the canvas and as Vue components. One browser page per frontend is shared by the tests of
this module, in order: the page loads with our extension and no errors from it; the node search finds the three
nodes; EF_NOISE_MAPS sockets and links are drawn in the pack's colour (read back from the canvas pixels or the
slot's element), also after a colour palette change; the sampler's skip widget follows the connected inversion's
steps; an example workflow of the pack opens from the templates dialog and, run with the tiny checkpoint, saves
an image. A screenshot of that workflow goes to the test's temporary folder and, with EF_UPDATE_SCREENSHOT=1
(pinned frontend only), to docs/screenshot-edit-workflow.png. Last, a node's help page (web/docs/) opens in the
documentation panel, and with the locale set to Chinese the panel shows the Chinese page and (newest frontend
only) nodes get their Chinese names from locales/zh/nodeDefs.json.

Chromium comes from Debian's `chromium` package (scripts/setup.sh installs it) and is driven by
Playwright without Playwright's own browser downloads. Without it the tests skip, except under CI
(CI=true), where they fail.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import urllib.request

import comfy_server as host
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NEWEST_FRONTEND = host.CACHE / "frontend-newest" / "static"  # NEWEST_FRONTEND in scripts/setup.sh
# Vue nodes (Nodes 2.0) only with the newest frontend: in the pinned one they were a preview that placed nodes
# added from a script elsewhere than their positions and showed a preview's images one at a time.
FRONTENDS = [("pinned", "classic"), ("newest", "classic"), ("newest", "vue")]
SCREENSHOT = ROOT / "docs" / "screenshot-edit-workflow.png"
TINY_CHECKPOINT = "tiny-sd15.safetensors"
PACK_FOLDER = "edit-friendly-ddpm"
PREFERRED_TEMPLATE = "text_guided_editing"  # else the smallest example that loads, inverts, edits and saves an image
# What identifies a console message or page error as coming from our extension.
OUR_MARKERS = ("edit_friendly.js", "/extensions/edit-friendly-ddpm/", "editFriendlyDDPM")
EXTENSIONS = ("editFriendlyDDPM.socketColour", "editFriendlyDDPM.skipLimit")
NOISE_MAPS_COLOUR = (0x2E, 0xC4, 0xB6)  # NOISE_MAPS_COLOR in web/js/edit_friendly.js
NODES = {
    "EditFriendlyDDPMInversion": "Edit-Friendly DDPM Inversion",
    "EditFriendlySampler": "Edit-Friendly Sampler",
    "EditFriendlyNoiseMapTransform": "Noise Map Transform",
}
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
TIMEOUT_MS = 20_000
DIALOGS = ".p-dialog, [role=dialog]"  # the frontend's dialogs, older (PrimeVue) and newer


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"{reason} The browser tests cannot run; scripts/setup.sh should have installed it.", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    """EF_CHROMIUM if set (and only it), else Debian's chromium."""
    chosen = os.environ.get("EF_CHROMIUM")
    candidates = [chosen] if chosen else ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def is_ours(text: str) -> bool:
    return any(marker in text for marker in OUR_MARKERS)


class BrowserLog:
    """Console messages, page errors and failed requests of one page."""

    def __init__(self):
        self.console: list[str] = []
        self.page_errors: list[str] = []
        self.failed: list[str] = []
        self.our_scripts: list[tuple[int, str]] = []

    def attach(self, page):
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.page_errors.append(f"{error}\n{getattr(error, 'stack', '') or ''}"))
        page.on("requestfailed", lambda request: self.failed.append(request.url))
        page.on("response", self._on_response)

    def _on_response(self, response):
        if response.status >= 400:
            self.failed.append(f"{response.status} {response.url}")
        if is_ours(response.url):
            self.our_scripts.append((response.status, response.url))

    def _on_console(self, message):
        if message.type in ("error", "warning"):
            location = message.location or {}
            self.console.append(f"[{message.type}] {message.text} ({location.get('url', '')}:{location.get('lineNumber', '')})")

    def ours(self) -> list[str]:
        """Errors and warnings that name our extension, its script or come from it."""
        return [entry for entry in self.console + self.page_errors + self.failed if is_ours(entry)]


@pytest.fixture(scope="module", params=FRONTENDS, ids="-".join)
def frontend(request):
    """(frontend, node view): the frontend ComfyUI pins or the newest one setup.sh unpacked, with nodes drawn on
    the canvas ("classic") or as Vue components ("vue", Nodes 2.0)."""
    return request.param


@pytest.fixture(scope="module")
def newest_frontend_server(tmp_path_factory):
    """A second ComfyUI server, started on first use, that serves the newest frontend."""
    started = []

    def get():
        if not started:
            if not (NEWEST_FRONTEND / "index.html").is_file():
                _unavailable(f"The newest frontend was not found in {NEWEST_FRONTEND}; scripts/setup.sh unpacks it (EF_WITH_BROWSER=1).")
            server = host.ComfyServer(tmp_path_factory.mktemp("comfyui-newest-frontend"), host.free_port(), front_end_root=NEWEST_FRONTEND)
            host.tiny_models(server.models_dir)
            started.append(server)
            server.start()
        return started[0]

    try:
        yield get
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def server(request, frontend, newest_frontend_server):
    return newest_frontend_server() if frontend[0] == "newest" else request.getfixturevalue("comfy_server")


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    executable = chromium_path()
    if executable is None:
        where = os.environ.get("EF_CHROMIUM") or "/usr/bin/chromium or on PATH"
        _unavailable(f"Chromium was not found ({where}); install Debian's chromium (scripts/setup.sh does) or set EF_CHROMIUM.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -r requirements-dev.txt).")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 900}, device_scale_factor=1,
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def page(browser_context, server, frontend):
    page = browser_context.new_page()
    log = BrowserLog()
    log.attach(page)
    page.log = log
    page.vue_nodes = frontend[1] == "vue"
    # A new user gets the templates dialog on the first visit; this server's user has seen it.
    _post_json(f"{server.url}/settings/Comfy.TutorialCompleted", True)
    _post_json(f"{server.url}/settings/Comfy.VueNodes.Enabled", page.vue_nodes)
    page.goto(server.url)
    _wait_for_app(page)
    try:
        yield page
    finally:
        page.close()


def _wait_for_app(page):
    """Waits for the app after the page (re)loads, then closes what a first visit shows."""
    # The app is up once the node definitions, ours included, are registered with the canvas.
    page.wait_for_function(
        "() => window.app?.canvas && window.LiteGraph?.registered_node_types?.EditFriendlySampler",
        timeout=TIMEOUT_MS,
    )
    page.wait_for_load_state("networkidle")
    _close_banners(page)
    _close_dialogs(page)


def _post_json(url, value):
    request = urllib.request.Request(url, data=json.dumps(value).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def _close_banners(page):
    """Closes the frontend's announcement banner, which would cover the top of the screenshot."""
    page.evaluate(
        """() => {
            for (const span of document.querySelectorAll('span')) {
                if (!span.textContent.startsWith('Introducing Nodes 2.0')) continue;
                const bar = span.closest('div.w-full');
                bar?.querySelector('button:has(i[class*="lucide--x"])')?.click();
            }
        }"""
    )


def _close_dialogs(page):
    """Closes dialogs a frontend opens on a first visit (newer ones show the templates whatever the setting says)."""
    for attempt in range(5):
        if page.locator(DIALOGS).count() == 0:
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    pytest.fail(f"a dialog stays open after load: {page.locator(DIALOGS).first.inner_text()[:500]}")


def _clear_graph(page):
    page.evaluate("() => { app.graph.clear(); app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1; app.canvas.setDirty(true, true); }")


def test_page_loads_our_extension_without_errors(page):
    names = page.evaluate("() => app.extensions.map((extension) => extension.name)")
    for name in EXTENSIONS:
        assert name in names, f"extension {name} not registered; loaded: {[n for n in names if 'edit' in n.lower()]}"
    fetched = [url for status, url in page.log.our_scripts if status == 200]
    assert any(url.endswith(f"/extensions/{PACK_FOLDER}/js/edit_friendly.js") for url in fetched), page.log.our_scripts
    assert page.log.ours() == [], "\n".join(page.log.ours())


def _open_node_search(page):
    """Double-clicks the empty canvas, as a user does, until the node search box is open."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    search = page.get_by_placeholder(re.compile(r"^(Search Nodes|Add a node)\.\.\.$"))  # the frontend's older and newer text
    box = page.locator("#graph-canvas").bounding_box()
    for attempt in range(3):
        page.mouse.dblclick(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5)
        try:
            search.wait_for(state="visible", timeout=5000)
            return search
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    pytest.fail("double-clicking the canvas did not open the node search box")


@pytest.mark.parametrize("node_type", list(NODES))
def test_node_search_finds_node(page, node_type):
    display_name = NODES[node_type]
    _clear_graph(page)
    search = _open_node_search(page)
    search.fill(display_name)
    option = page.locator('[role="option"]').filter(has_text=display_name).first
    option.wait_for(state="visible")
    # Choosing the result adds the node: the search found ours, not a look-alike.
    option.click()
    page.wait_for_function("(type) => app.graph.nodes.some((node) => node.type === type)", arg=node_type)
    search.wait_for(state="hidden")
    assert page.evaluate("() => app.graph.nodes.length") == 1


def _pixel(page, x, y):
    """The canvas pixel at canvas-space (x, y), after a full redraw."""
    return tuple(page.evaluate(
        """([x, y]) => {
            app.canvas.draw(true, true);
            const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([x, y]);
            const ratio = app.canvas.canvas.width / app.canvas.canvas.clientWidth;
            const data = app.canvas.canvas.getContext('2d').getImageData(Math.round(cx * ratio), Math.round(cy * ratio), 1, 1).data;
            return [data[0], data[1], data[2]];
        }""",
        [x, y],
    ))


def _noise_maps_output_colour(page, position):
    """The colour the inversion's EF_NOISE_MAPS output is drawn in: a canvas pixel, or with Vue nodes the slot's dot."""
    if not page.vue_nodes:
        return _pixel(page, *position)
    dot = page.locator('.lg-slot--output .slot-dot[style*="--color-datatype-EF_NOISE_MAPS"]').first
    colour = dot.evaluate("(element) => getComputedStyle(element).backgroundColor")
    return tuple(int(value) for value in re.findall(r"\d+", colour)[:3])


def _close_to(pixel, colour, tolerance=12):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def _build_chain(page):
    """Adds inversion -> sampler on one row and returns the canvas positions of the link's ends."""
    _clear_graph(page)
    return page.evaluate(
        """() => {
            const inversion = LiteGraph.createNode('EditFriendlyDDPMInversion');
            inversion.pos = [60, 120];
            app.graph.add(inversion);
            const sampler = LiteGraph.createNode('EditFriendlySampler');
            app.graph.add(sampler);
            const input = sampler.inputs.findIndex((slot) => slot.name === 'noise_maps');
            // Put the sampler's noise_maps input level with the inversion's output: a straight link.
            const out = inversion.getConnectionPos(false, 0);
            sampler.pos = [620, 120];
            const inPos = sampler.getConnectionPos(true, input);
            sampler.pos = [620, 120 + out[1] - inPos[1]];
            inversion.connect(0, sampler, input);
            window.efTest = { inversion, sampler };
            return { output: inversion.getConnectionPos(false, 0), input: sampler.getConnectionPos(true, input),
                     type: inversion.outputs[0].type };
        }"""
    )


def test_noise_maps_socket_and_link_colour(page):
    ends = _build_chain(page)
    assert ends["type"] == "EF_NOISE_MAPS"
    output, target = ends["output"], ends["input"]
    middle = ((output[0] + target[0]) / 2, output[1])
    for palette in ("dark", "light"):
        # A palette change resets the colours of all data types; ours must come back.
        page.evaluate("(id) => app.extensionManager.setting.set('Comfy.ColorPalette', id)", palette)
        page.wait_for_timeout(200)
        tables = page.evaluate(
            "() => [LGraphCanvas.link_type_colors.EF_NOISE_MAPS, app.canvas.default_connection_color_byType.EF_NOISE_MAPS,"
            " getComputedStyle(document.body).getPropertyValue('--color-datatype-EF_NOISE_MAPS').trim()]"
        )
        expected = "#%02X%02X%02X" % NOISE_MAPS_COLOUR
        assert [value.upper() for value in tables] == [expected] * 3, (palette, tables)
        slot = _noise_maps_output_colour(page, output)
        link = _pixel(page, *middle)
        assert _close_to(slot, NOISE_MAPS_COLOUR), f"{palette}: output slot drawn in {slot}"
        assert _close_to(link, NOISE_MAPS_COLOUR), f"{palette}: link drawn in {link}"
    page.evaluate("() => app.extensionManager.setting.set('Comfy.ColorPalette', 'dark')")


def test_new_inversion_seed_is_fixed_but_a_saved_choice_is_kept(page):
    _build_chain(page)
    control = "() => efTest.inversion.widgets.find((w) => w.name === 'control_after_generate').value"
    assert page.evaluate(control) == "fixed"
    assert page.evaluate("() => efTest.sampler.widgets.some((w) => w.name === 'control_after_generate')") is False
    # A workflow saved with another choice loads with that choice.
    page.evaluate(
        """async () => {
            efTest.inversion.widgets.find((w) => w.name === 'control_after_generate').value = 'increment';
            const saved = app.graph.serialize();
            await app.loadGraphData(saved);
            efTest.inversion = app.graph.nodes.find((node) => node.type === 'EditFriendlyDDPMInversion');
        }"""
    )
    assert page.evaluate(control) == "increment"


def _skip_state(page):
    return page.evaluate(
        """() => { const skip = efTest.sampler.widgets.find((w) => w.name === 'skip');
                   return { label: skip.label ?? skip.name, max: skip.options.max }; }"""
    )


def _settle(page):
    # Updates run on the next animation frame.
    page.evaluate("() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)))")


def test_skip_limit_follows_connected_inversion(page):
    _build_chain(page)
    _settle(page)
    state = _skip_state(page)
    assert state["max"] == 99 and "100" in state["label"], state

    page.evaluate("() => { const w = efTest.inversion.widgets.find((w) => w.name === 'steps'); w.value = 20; w.callback?.(20); }")
    _settle(page)
    state = _skip_state(page)
    assert state["max"] == 19 and "< 20" in state["label"], state  # the default skip 36 is too large now

    # A transform in between passes the steps on.
    page.evaluate(
        """() => {
            const transform = LiteGraph.createNode('EditFriendlyNoiseMapTransform');
            transform.pos = [340, 500];
            app.graph.add(transform);
            const input = efTest.sampler.inputs.findIndex((slot) => slot.name === 'noise_maps');
            efTest.inversion.connect(0, transform, 0);
            transform.connect(0, efTest.sampler, input);
            efTest.transform = transform;
        }"""
    )
    _settle(page)
    assert _skip_state(page)["max"] == 19

    # Disconnected, removed or half-built graphs fall back to the widget's own limit, read from the node
    # definition the server gives (not a copy of it in the script), without errors.
    page.evaluate("() => efTest.transform.disconnectInput(0)")
    _settle(page)
    state = _skip_state(page)
    defined = page.evaluate("async () => (await (await fetch('api/object_info/EditFriendlySampler')).json()).EditFriendlySampler")
    assert state["max"] == defined["input"]["required"]["skip"][1]["max"] and state["label"] == "skip", state
    # Read at registration (not the script's fallback, which has the same value today).
    assert page.evaluate("() => Object.getPrototypeOf(efTest.sampler).efSkipDefaultMax") == state["max"]
    read = page.evaluate(
        f"""async () => {{
            const {{ skipMaxFromNodeDef }} = await import('/extensions/{PACK_FOLDER}/js/edit_friendly.js');
            return [skipMaxFromNodeDef({{ input: {{ required: {{ skip: ['INT', {{ min: 0, max: 499 }}] }} }} }}),
                    skipMaxFromNodeDef({{ input: {{ required: {{}} }} }}), skipMaxFromNodeDef(undefined)];
        }}"""
    )
    assert read == [499, 999, 999], read
    page.evaluate("() => { app.graph.remove(efTest.inversion); app.graph.remove(efTest.transform); }")
    _settle(page)
    page.evaluate("() => { app.graph.remove(efTest.sampler); app.canvas.draw(true, true); }")
    assert page.log.ours() == [], "\n".join(page.log.ours())


def _pack_templates(server) -> list[str]:
    templates = server.get("/workflow_templates")
    return templates.get(PACK_FOLDER, [])


def _pick_edit_template(server, names: list[str]) -> str:
    """The example workflow that edits an image: an inversion feeding a sampler and an image saved."""
    folder = ROOT / "example_workflows"
    candidates = []
    for name in names:
        try:
            workflow = json.loads((folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            continue
        types = {node.get("type") for node in workflow.get("nodes", [])}
        if {"EditFriendlyDDPMInversion", "EditFriendlySampler", "SaveImage", "LoadImage"} <= types:
            candidates.append(name)
    if not candidates:
        pytest.fail(f"no example workflow with inversion, sampler, LoadImage and SaveImage among {names}")
    if PREFERRED_TEMPLATE in candidates:
        return PREFERRED_TEMPLATE
    return min(candidates, key=lambda name: (len(json.loads((folder / f"{name}.json").read_text())["nodes"]), name))


def _use_small_input_images(page, server, size=64):
    """Points every LoadImage node at a small copy of its picture (the one shipped with the examples,
    else a gradient) in the server's input folder: the tiny model is slow on full-size latents."""
    from PIL import Image

    names = page.evaluate(
        "() => app.graph.nodes.filter((node) => node.type === 'LoadImage').map((node) => node.widgets[0].value)"
    )
    replacements = {}
    for name in names:
        small = f"browser-test-{pathlib.Path(name).stem}.png"
        path = pathlib.Path(server.input_dir) / small
        shipped = ROOT / "example_workflows" / name
        if shipped.is_file():
            picture = Image.open(shipped).convert("RGB").resize((size, size))
        else:
            gradient = Image.linear_gradient("L").resize((size, size))
            picture = Image.merge("RGB", (gradient, gradient.rotate(90), gradient.rotate(180)))
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path)
        replacements[name] = small
    page.evaluate(
        """(replacements) => {
            for (const node of app.graph.nodes) {
                if (node.type === 'LoadImage' && node.widgets[0].value in replacements) {
                    const widget = node.widgets[0];
                    widget.value = replacements[widget.value];
                    widget.callback?.(widget.value);  // shows the picture on the node
                }
            }
        }""",
        replacements,
    )
    return replacements


def _screenshot_graph(page, path, width=1920, height=1080, margin=24):
    """Zooms the canvas so that all nodes fill the part of a width x height page that the side bar,
    tabs, menus and toasts leave free, and saves a picture of that part."""
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(300)
    # The side bar is about 60 px wide; tabs, the workflow menu, the run button and its toast end above 130 px.
    left, top = 64, 136
    clip = page.evaluate(
        """async ([margin, left, top]) => {
            await app.extensionManager.setting.set('Comfy.Minimap.Visible', false);
            app.canvas.min_font_size_for_lod = 0;  // titles and widgets even when zoomed out
            app.canvas.deselectAll();
            let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
            for (const node of app.graph.nodes) {
                const top = node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT;
                x0 = Math.min(x0, node.pos[0]); y0 = Math.min(y0, top);
                x1 = Math.max(x1, node.pos[0] + node.size[0]); y1 = Math.max(y1, node.pos[1] + node.size[1]);
            }
            const canvas = app.canvas.canvas.getBoundingClientRect();
            const free = { x: canvas.x + left, y: canvas.y + top, width: canvas.width - left, height: canvas.height - top };
            const scale = Math.min((free.width - 2 * margin) / (x1 - x0), (free.height - 2 * margin) / (y1 - y0), 1.5);
            app.canvas.ds.scale = scale;
            app.canvas.ds.offset = [(left + margin) / scale - x0, (top + margin) / scale - y0];
            app.canvas.setDirty(true, true);
            app.canvas.draw(true, true);
            return { x: free.x, y: free.y, width: Math.min(free.width, (x1 - x0) * scale + 2 * margin),
                     height: Math.min(free.height, (y1 - y0) * scale + 2 * margin) };
        }""",
        [margin, left, top],
    )
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), clip=clip)


def _use_tiny_settings(page):
    """The examples name the usual SD1.5 checkpoint; the test server has the tiny one. Few steps for speed."""
    page.evaluate(
        """(checkpoint) => {
            for (const node of app.graph.nodes) {
                const widget = (name) => node.widgets?.find((w) => w.name === name);
                if (node.type === 'CheckpointLoaderSimple') widget('ckpt_name').value = checkpoint;
                if (node.type === 'EditFriendlyDDPMInversion') {
                    widget('steps').value = 4;
                    widget('steps').callback?.(4);
                }
                if (node.type === 'EditFriendlySampler') widget('skip').value = 1;
            }
            app.canvas.setDirty(true, true);
        }""",
        TINY_CHECKPOINT,
    )


def _queue_and_wait(page, server) -> dict:
    """Queues the graph with the Queue button and returns the server's history entry of a successful run."""
    with page.expect_response(lambda response: response.url.endswith("/api/prompt") and response.request.method == "POST") as answer:
        page.locator('[data-testid="queue-button"]').click()
    response = answer.value
    body = response.json()
    assert response.status == 200, f"the server refused the workflow: {json.dumps(body, indent=1)[:3000]}"
    entry = server.wait(body["prompt_id"], timeout=120)
    status = entry.get("status", {})
    assert status.get("status_str") == "success", json.dumps(status, indent=1)[:3000]
    return entry


def _check_missing_checkpoint_is_offered(page):
    """The test server lacks the examples' checkpoint, which they declare as ComfyUI's templates do: the frontend
    names it and offers its download (from the declared address), in a dialog (older frontends) or in the
    workflow's list of issues (newer ones)."""
    import make_example_workflows

    checkpoint = make_example_workflows.CHECKPOINT
    missing = page.locator(".p-dialog").filter(has=page.locator(".comfy-missing-models"))
    issues = page.get_by_role("button", name="View details")
    missing.or_(issues).first.wait_for()
    if missing.count():
        assert f"checkpoints / {checkpoint}" in missing.inner_text()
        download = missing.locator(f'button[title="{make_example_workflows.CHECKPOINT_URL}"]')
        assert download.count() == 1 and download.is_enabled(), missing.inner_html()[:3000]
        missing.locator(".p-dialog-close-button").click()
        page.wait_for_function("() => !document.querySelector('.p-dialog')")
        return
    issues.click()
    download = page.get_by_role("button", name=f"Download {checkpoint}")
    download.wait_for()
    assert download.is_enabled()
    shown = page.locator("body").inner_text()
    assert "Missing Models" in shown and f"{checkpoint}\ncheckpoints" in shown, shown[-1500:]


def test_example_workflow_opens_from_templates_and_runs(page, server, frontend, tmp_path):
    names = _pack_templates(server)
    assert names, f"the server lists no example workflows for {PACK_FOLDER}: {server.get('/workflow_templates')}"
    name = _pick_edit_template(server, names)

    _clear_graph(page)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator(DIALOGS)
    dialog.get_by_text(PACK_FOLDER, exact=True).first.click()
    card = dialog.locator(f'[data-testid="template-workflow-{name}"]')
    card.click()
    _check_missing_checkpoint_is_offered(page)
    page.wait_for_function("() => app.graph.nodes.some((node) => node.type === 'EditFriendlySampler')")

    _use_tiny_settings(page)
    _use_small_input_images(page, server)
    before = set(pathlib.Path(server.output_dir).rglob("*.png"))
    entry = _queue_and_wait(page, server)
    saved = [image for output in entry.get("outputs", {}).values() for image in output.get("images", []) if image.get("type") == "output"]
    assert saved, f"the workflow saved no image: {entry.get('outputs')}"
    new_files = set(pathlib.Path(server.output_dir).rglob("*.png")) - before
    assert new_files, "no new PNG in the output folder"

    # The saved image shows up on the Save Image node; then the whole workflow goes into a screenshot.
    _wait_for_images_on_node(page, "SaveImage")
    shot = tmp_path / SCREENSHOT.name
    _screenshot_graph(page, shot)
    print(f"screenshot: {shot}")
    if os.environ.get("EF_UPDATE_SCREENSHOT") == "1" and frontend == FRONTENDS[0]:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    assert page.log.ours() == [], "\n".join(page.log.ours())


def _wait_for_images_on_node(page, node_type, count=None):
    """Waits until the node of `node_type` shows its output images, loaded (`count` of them if given): on the
    canvas the node holds them in node.imgs, with Vue nodes they are <img> elements inside the node."""
    page.wait_for_function(
        """([type, count]) => {
            const node = app.graph.nodes.find((node) => node.type === type);
            const element = document.querySelector(`[data-node-id="${node?.id}"]`);
            const images = node?.imgs?.length ? node.imgs : [...(element?.querySelectorAll('img[src*="/view?"]') ?? [])];
            return images.length > 0 && (count === null || images.length === count) && images.every((img) => img.complete);
        }""",
        arg=[node_type, count],
        timeout=30_000,
    )


def _load_example(page, server, name):
    _clear_graph(page)
    workflow = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
    # Without the missing-models dialog (the template test checks it), which would cover the queue button.
    page.evaluate("(workflow) => app.loadGraphData(workflow, true, true, null, { showMissingModelsDialog: false })", workflow)
    _use_tiny_settings(page)
    _use_small_input_images(page, server)


def test_save_shows_its_file_and_preview_shows_its_pictures_on_the_node(page, server):
    _load_example(page, server, "save_noise_maps")
    _queue_and_wait(page, server)
    shown = "() => app.graph.nodes.find((node) => node.type === 'EditFriendlySaveNoiseMaps').widgets.find((w) => w.name === 'saved_file')?.value"
    page.wait_for_function(shown, timeout=30_000)
    path = page.evaluate(shown)
    assert path.startswith("output/noise_maps/") and path.endswith(".safetensors"), path
    saved = pathlib.Path(server.output_dir) / path.removeprefix("output/")
    assert saved.is_file()
    saved.unlink()  # the server is shared: other tests expect the save example's first file name
    # The shown name stays out of the workflow's widget values and out of the prompt.
    values = page.evaluate("() => app.graph.serialize().nodes.find((node) => node.type === 'EditFriendlySaveNoiseMaps').widgets_values")
    assert values == ["noise_maps/ef"], values
    inputs = page.evaluate("async () => Object.values((await app.graphToPrompt()).output).find((node) => node.class_type === 'EditFriendlySaveNoiseMaps').inputs")
    assert "saved_file" not in inputs, inputs

    _load_example(page, server, "noise_map_preview")
    _queue_and_wait(page, server)
    _wait_for_images_on_node(page, "EditFriendlyNoiseMapPreview", count=2)
    assert page.log.ours() == [], "\n".join(page.log.ours())


# -- Node help pages (web/docs/) and translations (locales/) -------------------------------------------------------
# Both frontends fetch a custom node's help from its WEB_DIRECTORY: /extensions/<pack>/docs/<NodeId>/<locale>.md,
# then /extensions/<pack>/docs/<NodeId>.md (NodeHelpService.fetchCustomNodeHelp); ComfyUI serves the translations
# of locales/<lang>/nodeDefs.json at /i18n. These tests run last on each page: the second one reloads it.
HELP_NODE = "EditFriendlyDDPMInversion"
DOCS = ROOT / "web" / "docs"


def _help_phrases(page_path: pathlib.Path) -> list[str]:
    """What the documentation panel must show of a help page: the start of its first paragraph (as plain text)
    and the names of the node's inputs, each in the page's list of inputs."""
    lines = page_path.read_text(encoding="utf-8").splitlines()
    paragraph = next(line for line in lines[1:] if line.strip())
    plain = re.sub(r"[*`]", "", paragraph)
    names = re.findall(r"^- `([^`]+)`", page_path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [plain[:40], *names]


def _open_node_help(page, node_type):
    """Selects a node of `node_type` and clicks the selection toolbox's Info button, as a user does; returns the
    documentation panel (the node library's help view in the pinned frontend, the right side panel's Info tab in
    the newest)."""
    _clear_graph(page)
    title = page.evaluate(
        """(type) => {
            const node = LiteGraph.createNode(type);
            node.pos = [420, 260];
            app.graph.add(node);
            app.canvas.deselectAll();
            app.canvas.setDirty(true, true);
            app.canvas.draw(true, true);
            const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + 60, node.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2]);
            const box = app.canvas.canvas.getBoundingClientRect();
            return { x: box.x + x, y: box.y + y };
        }""",
        node_type,
    )
    # A click on empty canvas first: after the node search test (a double-click that opens the search box) the
    # newest frontend's canvas ignores the next click.
    page.mouse.click(title["x"] + 500, title["y"] + 400)
    page.wait_for_timeout(400)  # not a double-click
    page.mouse.click(title["x"], title["y"])  # selects the node, which shows the selection toolbox
    page.wait_for_function("() => app.canvas.selected_nodes && Object.keys(app.canvas.selected_nodes).length === 1")
    page.locator('[data-testid="info-button"]').first.click()
    panel = page.locator(".node-help-content").first
    panel.wait_for()
    return panel


def _close_node_help(page, panel):
    if page.evaluate("() => app.extensionManager.setting.get('Comfy.RightSidePanel.IsOpen') === true"):
        # The newest frontend: the right side panel stays open until closed (its open state is this setting).
        page.evaluate("() => app.extensionManager.setting.set('Comfy.RightSidePanel.IsOpen', false)")
    else:
        # The pinned one: the Info button toggles the node library's help view.
        page.locator('[data-testid="info-button"]').first.click()
    panel.wait_for(state="hidden")
    _clear_graph(page)


def _wait_for_text(panel, phrases):
    """Waits until the panel shows all phrases (it shows a loading state first, and the node's description if the
    page cannot be fetched)."""
    panel.page.wait_for_function(
        "([element, phrases]) => phrases.every((phrase) => element.innerText.includes(phrase))",
        arg=[panel.element_handle(), phrases],
        timeout=TIMEOUT_MS,
    )


def _expected_help_probe(entry: str) -> bool:
    """The frontend asking for the page of a locale that has none (en: <NodeId>.md is the English page), a 404 that
    the browser also logs as an error, before it takes <NodeId>.md."""
    return re.search(rf"/extensions/{PACK_FOLDER}/docs/\w+/[\w-]+\.md\b", entry) is not None


def _our_problems(page) -> list[str]:
    return [entry for entry in page.log.ours() if not _expected_help_probe(entry)]


def test_node_help_page_opens_in_the_documentation_panel(page):
    panel = _open_node_help(page, HELP_NODE)
    _wait_for_text(panel, _help_phrases(DOCS / f"{HELP_NODE}.md"))
    # Our page, not the node's description that the panel falls back to.
    assert "Extracts edit-friendly DDPM noise maps" not in panel.inner_text()
    _close_node_help(page, panel)
    assert _our_problems(page) == [], "\n".join(_our_problems(page))


def test_chinese_locale_shows_the_chinese_help_page_and_node_names(page, frontend):
    zh = json.loads((ROOT / "locales" / "zh" / "nodeDefs.json").read_text(encoding="utf-8"))
    # Node names are translated when the node definitions are registered, at page load.
    page.evaluate("() => app.extensionManager.setting.set('Comfy.Locale', 'zh')")
    page.reload()
    try:
        _wait_for_app(page)
        assert page.evaluate("() => app.extensionManager.setting.get('Comfy.Locale')") == "zh"
        panel = _open_node_help(page, HELP_NODE)
        _wait_for_text(panel, _help_phrases(DOCS / HELP_NODE / "zh.md"))
        _close_node_help(page, panel)

        # Not in the pinned frontend (1.32.9): it merges the custom nodes' /i18n messages first and then, loading the
        # chosen locale's own messages, replaces them (setLocaleMessage in loadLocale), so there custom nodes keep
        # their English names in every language. Newer frontends merge them again after loading a locale.
        if frontend[0] != "pinned":
            expected = zh[HELP_NODE]["display_name"]
            title = page.evaluate(
                """(type) => {
                    const node = LiteGraph.createNode(type);
                    node.pos = [420, 260];
                    app.graph.add(node);
                    app.canvas.setDirty(true, true);
                    return node.title;
                }""",
                HELP_NODE,
            )
            assert title == expected
            if page.vue_nodes:
                page.locator("[data-node-id]").filter(has_text=expected).first.wait_for()
            # The other nodes' names come from the same file.
            names = page.evaluate("() => Object.fromEntries(['EditFriendlySampler', 'EditFriendlyNoiseMapTransform'].map("
                                  "(type) => [type, LiteGraph.createNode(type).title]))")
            assert names == {name: zh[name]["display_name"] for name in names}
    finally:
        page.evaluate("() => app.extensionManager.setting.set('Comfy.Locale', 'en')")
        page.reload()
        _wait_for_app(page)
        _clear_graph(page)
    assert _our_problems(page) == [], "\n".join(_our_problems(page))
