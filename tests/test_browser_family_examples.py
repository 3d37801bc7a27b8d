"""The Wan and Qwen-Image examples in the real frontends (each of test_browser.FRONTENDS, with its fixtures).

test_server_video.py runs both end to end after scripts/workflow_api.py converts them to API prompts; here the
frontend itself loads them and must queue exactly that prompt: Load Video's file, Create Video's fps linked
from the video, the loaders' files and every widget value.
"""

from __future__ import annotations

import json
import pathlib

import make_example_workflows
import pytest
from test_browser import _clear_graph, browser_context, frontend, newest_frontend_server, page, server  # noqa: F401 (fixtures)
from workflow_api import ui_to_api

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", make_example_workflows.FAMILY_WORKFLOWS)
def test_family_example_queues_as_the_api_conversion_of_the_tests(page, server, name):
    _clear_graph(page)
    workflow = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
    page.evaluate("(workflow) => app.loadGraphData(workflow, true, true, null, { showMissingModelsDialog: false })", workflow)
    queued = page.evaluate("async () => (await app.graphToPrompt()).output")
    converted = ui_to_api(workflow, server.get("/object_info"))
    for prompt in (queued, converted):
        for node in prompt.values():
            node.pop("_meta", None)
            node["inputs"].pop("upload", None)  # the upload button's value, which the server ignores
    assert queued == converted
    assert page.log.ours() == [], "\n".join(page.log.ours())
