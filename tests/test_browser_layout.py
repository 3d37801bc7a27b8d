"""The example workflows' layout as the real frontends draw it: no node or note covers another.

scripts/make_example_workflows.py places the nodes on a grid from sizes it stores; the frontend draws a node at
least as large as its widgets and sockets need, whatever size the file stores (and Vue nodes size themselves from
their contents). For every example workflow and each of test_browser.FRONTENDS (with its fixtures), the test loads
the workflow and reads back each node's drawn rectangle: on the canvas `node.pos` and `node.size` plus the title
bar above `pos` (LiteGraph.NODE_TITLE_HEIGHT); with Vue nodes the bounding box of the node's element, in canvas
units. No two rectangles may intersect (groups are not nodes and are not checked).

With EF_LAYOUT_DUMP=<folder>, the rectangles of each workflow go to <folder>/<frontend>-<view>-<name>.json (what
the generator's sizes were checked against).
"""

from __future__ import annotations

import json
import os
import pathlib

import make_example_workflows
import pytest
from test_browser import _clear_graph, browser_context, frontend, newest_frontend_server, page, server  # noqa: F401 (fixtures)

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_workflows"

# The drawn rectangle of every node, in canvas units: [x, y, width, height] with the title bar included.
DRAWN_RECTANGLES = """async (vue) => {
    const frame = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    app.canvas.setDirty(true, true);
    app.canvas.draw(true, true);
    await frame();
    const title = LiteGraph.NODE_TITLE_HEIGHT;
    const nodes = app.graph._nodes;
    if (!vue) {
        return nodes.map((node) => ({ id: node.id, type: node.type, title: node.title,
            rect: [node.pos[0], node.pos[1] - title, node.size[0], node.size[1] + title] }));
    }
    const box = app.canvas.canvas.getBoundingClientRect();
    const { scale, offset } = app.canvas.ds;
    return nodes.map((node) => {
        const element = document.querySelector(`[data-node-id="${node.id}"]`);
        if (!element) return { id: node.id, type: node.type, title: node.title, rect: null };
        const r = element.getBoundingClientRect();
        return { id: node.id, type: node.type, title: node.title,
                 rect: [(r.x - box.x) / scale - offset[0], (r.y - box.y) / scale - offset[1], r.width / scale, r.height / scale] };
    });
}"""


def _intersection(a, b) -> tuple[float, float]:
    """Width and height of the overlap of two [x, y, w, h] rectangles (<= 0 where they do not meet)."""
    return min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]), min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])


def overlaps(nodes: list[dict]) -> list[str]:
    """Every pair of nodes whose drawn rectangles intersect (touching edges do not count)."""
    found = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            width, height = _intersection(a["rect"], b["rect"])
            if width > 0.5 and height > 0.5:
                found.append(f"#{a['id']} {a['title']!r} and #{b['id']} {b['title']!r} overlap by {width:.0f} x {height:.0f}")
    return found


def drawn_rectangles(page, name: str) -> list[dict]:
    """Loads example `name` as the templates browser does and returns its nodes' drawn rectangles."""
    _clear_graph(page)
    workflow = json.loads((EXAMPLES / f"{name}.json").read_text())
    page.evaluate("(workflow) => app.loadGraphData(workflow, true, true, null, { showMissingModelsDialog: false })", workflow)
    if page.vue_nodes:
        # At scale 1 with the graph's corner at the canvas' corner: Vue nodes are drawn at full detail (a node far
        # out of view may be left out of the DOM; it is then scrolled into view and read there).
        page.evaluate("() => { app.canvas.ds.scale = 1; app.canvas.ds.offset = [40, 60]; app.canvas.setDirty(true, true); }")
        page.wait_for_function("() => app.graph._nodes.length > 0 && document.querySelectorAll('[data-node-id]').length > 0")
        page.wait_for_timeout(300)
    nodes = page.evaluate(DRAWN_RECTANGLES, page.vue_nodes)
    if page.vue_nodes:
        for node in nodes:
            if node["rect"] is None:
                # Scroll the node into view and read it there.
                page.evaluate(
                    "(id) => { const node = app.graph.getNodeById(id); app.canvas.ds.offset = [200 - node.pos[0], 200 - node.pos[1]];"
                    " app.canvas.setDirty(true, true); }", node["id"])
                page.wait_for_timeout(300)
                again = {n["id"]: n for n in page.evaluate(DRAWN_RECTANGLES, True)}
                node["rect"] = again[node["id"]]["rect"]
    missing = [node for node in nodes if node["rect"] is None]
    assert not missing, f"nodes not drawn: {missing}"
    assert len(nodes) == len(workflow["nodes"])
    return nodes


@pytest.mark.parametrize("name", list(make_example_workflows.WORKFLOWS))
def test_example_workflow_nodes_do_not_overlap(page, frontend, name):
    nodes = drawn_rectangles(page, name)
    dump = os.environ.get("EF_LAYOUT_DUMP")
    if dump:
        folder = pathlib.Path(dump)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{'-'.join(frontend)}-{name}.json").write_text(json.dumps(nodes, indent=1))
    found = overlaps(nodes)
    assert not found, f"{name} ({'-'.join(frontend)}): {len(found)} overlapping pairs\n" + "\n".join(found)
    assert page.log.ours() == [], "\n".join(page.log.ours())


def test_templates_browser_shows_the_thumbnails(page, server):
    """Each example's thumbnail (example_workflows/<name>.jpg, made by scripts/make_thumbnails.py) is fetched from
    the pack's templates folder and shown on its card in the templates browser, rather than a placeholder (the
    frontends show the fetched file through a blob: address)."""
    from test_browser import DIALOGS, PACK_FOLDER

    names = list(make_example_workflows.WORKFLOWS)
    missing = [name for name in names if not (EXAMPLES / f"{name}.jpg").is_file()]
    assert not missing, f"no thumbnail for {missing}: run scripts/make_thumbnails.py"
    fetched = {}

    def on_response(response):
        if f"/workflow_templates/{PACK_FOLDER}/" in response.url and response.url.endswith(".jpg"):
            fetched[response.url.rsplit("/", 1)[1].removesuffix(".jpg")] = response.status

    _clear_graph(page)
    page.on("response", on_response)
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.locator(DIALOGS)
    try:
        dialog.get_by_text(PACK_FOLDER, exact=True).first.click()
        for name in names:
            card = dialog.locator(f'[data-testid="template-workflow-{name}"]')
            card.scroll_into_view_if_needed()
            image = card.locator(f'img[alt="{name}"]').first
            image.wait_for()
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            size = image.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
            assert size == [512, 288], f"{name}: the card shows a {size} picture, not the thumbnail"
        assert fetched == {name: 200 for name in names}, fetched
    finally:
        page.remove_listener("response", on_response)
        # Escape closes the older dialog; the newer one has only its close button (an x icon).
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
        if dialog.count():
            page.evaluate(
                """() => [...document.querySelectorAll('[role=dialog] button')].find((button) =>
                    /close/i.test(button.getAttribute('aria-label') ?? '') || /lucide--x\\b|pi-times/.test(button.innerHTML))?.click()"""
            )
        dialog.first.wait_for(state="hidden")
    assert page.log.ours() == [], "\n".join(page.log.ours())
