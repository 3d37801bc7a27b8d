"""End-to-end tests against a real ComfyUI server (tests/comfy_server.py) with the tiny seeded models.

They check what a ComfyUI user sees: the node definitions in /object_info, the example workflows
served as templates and run through /prompt, validation and execution errors that leave the server
working, and interrupting a long inversion.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import pytest
from test_node_api import PUBLIC_INPUTS
from PIL import Image

from comfy_server import PACK_NAME, TINY_SD3, TINY_SD3_VAE, TINY_SD15, QueueError, execution_error
from workflow_api import ui_to_api, validate, with_overrides

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_workflows"
EXAMPLE_IMAGE = "chelsea-cat.png"
SIZE = 64  # test images: 64x64 pixels, an 8x8 latent
FAST_STEPS = 6
WORKFLOWS = sorted(path.stem for path in EXAMPLES.glob("*.json"))
# The feature examples (saved maps, SamplerCustomAdvanced, masks, variations, previews) have runs of
# their own in test_server_power.py; the generic checks below cover the others.
import make_example_workflows  # noqa: E402  (scripts/ is on the path once comfy_server is imported)

# The examples of other model families (Wan, Qwen-Image) run with tiny models of their own in test_server_video.py.
BASIC_WORKFLOWS = [name for name in WORKFLOWS if name not in make_example_workflows.FEATURE_WORKFLOWS + make_example_workflows.FAMILY_WORKFLOWS]

# The server must publish exactly the public inputs and defaults that test_node_api pins.
OUTPUTS = {
    "EditFriendlyDDPMInversion": ["EF_NOISE_MAPS"],
    "EditFriendlySampler": ["LATENT"],
    "EditFriendlyNoiseMapTransform": ["EF_NOISE_MAPS"],
    "EditFriendlySamplerCustom": ["SAMPLER", "SIGMAS", "LATENT"],
    "EditFriendlySaveNoiseMaps": [],
    "EditFriendlyLoadNoiseMaps": ["EF_NOISE_MAPS"],
    "EditFriendlyNoiseMapPreview": ["IMAGE", "IMAGE"],
    "EditFriendlyAttentionControl": ["GUIDER"],
    "EditFriendlyPromptPair": ["CONDITIONING", "CONDITIONING"],
    "EditFriendlyImplicitMask": ["MASK"],
    "EditFriendlyEditConcept": ["EF_EDIT_CONCEPTS"],
    "EditFriendlySemanticGuider": ["GUIDER"],
    "EditFriendlyFlowEdit": ["LATENT"],
    "EditFriendlyFlowEditGuider": ["GUIDER"],
    "EditFriendlyFlowEditSampler": ["SAMPLER"],
}


@pytest.fixture(scope="module")
def server(comfy_server):
    """The session server with a 64x64 copy of the example photo in its input folder."""
    image = Image.open(EXAMPLES / EXAMPLE_IMAGE).convert("RGB").resize((SIZE, SIZE), Image.LANCZOS)
    image.save(comfy_server.input_dir / EXAMPLE_IMAGE)
    return comfy_server


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


def load_example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def fast(prompt: dict, steps: int = FAST_STEPS, checkpoint: str = TINY_SD15) -> dict:
    """The example's prompt on the tiny checkpoint, with `steps` and the skips scaled to match."""

    def scaled_skip(skip):
        return min(steps - 1, round(skip * steps / 100))

    return with_overrides(prompt, {
        "CheckpointLoaderSimple": {"ckpt_name": checkpoint},
        "EditFriendlyDDPMInversion": {"steps": steps},
        "EditFriendlySampler": {"skip": scaled_skip},
        # Shifts are in latent pixels of a 512 px image; the test image is SIZE px.
        "EditFriendlyNoiseMapTransform": {"dx": lambda dx: round(dx * SIZE / 512), "dy": lambda dy: round(dy * SIZE / 512)},
    })


def read_png(path: pathlib.Path) -> np.ndarray:
    assert path.is_file(), f"{path} was not written"
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def assert_success(server, entry: dict) -> None:
    status = entry["status"]
    assert status["status_str"] == "success", f"{json.dumps(status, indent=1)[:3000]}\n{server.log(3000)}"


def _conditioning(prompt: dict, text: str, node_id: str, clip=("1", 1)) -> None:
    prompt[node_id] = {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": list(clip)}}


def small_graph(steps=3, skip=1, cfg=3.5, latent_from=("3", 0), model=("1", 0)) -> dict:
    """Checkpoint -> LoadImage -> VAEEncode -> inversion -> sampler -> decode -> save, in API format."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": TINY_SD15}},
        "2": {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "6": {"class_type": "EditFriendlyDDPMInversion", "inputs": {
            "model": list(model), "positive": ["4", 0], "negative": ["5", 0], "latent_image": list(latent_from),
            "steps": steps, "cfg": 3.5, "scheduler": "ddim_uniform", "eta": 1.0, "seed": 0}},
        "7": {"class_type": "EditFriendlySampler", "inputs": {
            "model": list(model), "positive": ["4", 0], "negative": ["5", 0], "noise_maps": ["6", 0], "cfg": cfg, "skip": skip}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "test/small"}},
    }
    _conditioning(prompt, "a photo of a cat", "4")
    _conditioning(prompt, "", "5")
    return prompt


# -- node definitions and templates ------------------------------------------------------------

@pytest.mark.parametrize("node", list(PUBLIC_INPUTS))
def test_object_info_documents_the_node(object_info, node):
    info = object_info[node]
    expected = PUBLIC_INPUTS[node]
    order = info["input_order"]["required"] + info["input_order"].get("optional", [])
    assert order == list(expected)
    assert info["output"] == OUTPUTS[node]
    assert info["category"].split("/")[0] == "edit_friendly_ddpm"
    assert info["description"].strip()
    specs = {**info["input"]["required"], **info["input"].get("optional", {})}
    for name in order:
        assert specs[name][1].get("tooltip", "").strip(), f"{node}.{name} has no tooltip"
    for name, default in expected.items():
        if default is not None:
            assert specs[name][1]["default"] == default, name
    assert len(info["output_tooltips"]) == len(info["output"]) and all(t.strip() for t in info["output_tooltips"])
    if node == "EditFriendlyDDPMInversion":
        assert specs["seed"][1].get("control_after_generate") is True
    if node == "EditFriendlyNoiseMapTransform":
        assert "mask" in info["input"]["optional"]


def test_noise_maps_type_links_the_nodes(object_info):
    assert object_info["EditFriendlyDDPMInversion"]["output"] == ["EF_NOISE_MAPS"]
    assert object_info["EditFriendlySampler"]["input"]["required"]["noise_maps"][0] == "EF_NOISE_MAPS"
    assert object_info["EditFriendlyNoiseMapTransform"]["input"]["required"]["noise_maps"][0] == "EF_NOISE_MAPS"


def test_workflow_templates_list_the_examples(server):
    templates = server.get("/workflow_templates")
    assert sorted(templates.get(PACK_NAME, [])) == WORKFLOWS
    assert len(WORKFLOWS) >= 4
    # The frontend fetches a template's JSON from here.
    served = server.get(f"/api/workflow_templates/{PACK_NAME}/{WORKFLOWS[0]}.json")
    assert served == load_example(WORKFLOWS[0])


# -- example workflows ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", BASIC_WORKFLOWS)
def test_example_workflow_is_valid(object_info, name):
    workflow = load_example(name)
    prompt = ui_to_api(workflow, object_info)
    checkpoint_names = [node["inputs"]["ckpt_name"] for node in prompt.values() if node["class_type"] == "CheckpointLoaderSimple"]
    assert checkpoint_names == [make_example_workflows.CHECKPOINT]
    # The real checkpoint is not here; everything else must validate as the workflow ships.
    assert validate(fast(prompt, steps=100), object_info) == []
    assert validate(prompt, object_info) == [
        f"node {node_id} (CheckpointLoaderSimple).ckpt_name: '{make_example_workflows.CHECKPOINT}' not among "
        f"{object_info['CheckpointLoaderSimple']['input']['required']['ckpt_name'][0][:20]}"
        for node_id, node in prompt.items() if node["class_type"] == "CheckpointLoaderSimple"
    ]
    inversion = [node["inputs"] for node in prompt.values() if node["class_type"] == "EditFriendlyDDPMInversion"]
    assert inversion and all(i["steps"] == 100 and i["cfg"] == 3.5 and i["scheduler"] == "ddim_uniform" for i in inversion)
    assert any(node["type"] == "MarkdownNote" for node in workflow["nodes"])


def test_primitive_nodes_convert_as_the_frontend_queues_them(object_info):
    # A frontend PrimitiveNode drives the inversion's seed (its value also sits in the seed widget) and a
    # server-side PrimitiveString gives a prompt's text through a link.
    workflow = load_example("text_guided_editing")
    nodes = {node["type"]: node for node in workflow["nodes"]}
    inversion, encoder = nodes["EditFriendlyDDPMInversion"], nodes["CLIPTextEncode"]
    first_id, link_id = max(node["id"] for node in workflow["nodes"]) + 1, max(link[0] for link in workflow["links"]) + 1
    inversion["widgets_values"][4] = 42
    inversion["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": link_id})
    encoder["inputs"].append({"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": link_id + 1})
    workflow["nodes"] += [
        {"id": first_id, "type": "PrimitiveNode", "mode": 0, "inputs": [], "widgets_values": [42, "fixed"],
         "outputs": [{"name": "INT", "type": "INT", "links": [link_id], "widget": {"name": "seed"}}]},
        {"id": first_id + 1, "type": "PrimitiveString", "mode": 0, "inputs": [], "widgets_values": ["a photo of a dog"],
         "outputs": [{"name": "STRING", "type": "STRING", "links": [link_id + 1]}]},
    ]
    workflow["links"] += [[link_id, first_id, 0, inversion["id"], len(inversion["inputs"]) - 1, "INT"],
                          [link_id + 1, first_id + 1, 0, encoder["id"], len(encoder["inputs"]) - 1, "STRING"]]
    prompt = ui_to_api(workflow, object_info)
    assert prompt[str(inversion["id"])]["inputs"]["seed"] == 42
    assert prompt[str(encoder["id"])]["inputs"]["text"] == [str(first_id + 1), 0]
    assert prompt[str(first_id + 1)] == {"class_type": "PrimitiveString", "inputs": {"value": "a photo of a dog"}}
    assert str(first_id) not in prompt
    assert validate(fast(prompt), object_info) == []


def test_text_editing_workflow_uses_paper_defaults(object_info):
    prompt = ui_to_api(load_example("text_guided_editing"), object_info)
    samplers = [node["inputs"] for node in prompt.values() if node["class_type"] == "EditFriendlySampler"]
    assert [(s["cfg"], s["skip"]) for s in samplers] == [(15.0, 36)]
    assert {node["class_type"] for node in prompt.values()} >= {"LoadImage", "VAEEncode", "VAEDecode", "ImageStitch", "SaveImage"}


@pytest.mark.parametrize("name", BASIC_WORKFLOWS)
def test_example_workflow_runs(server, object_info, name):
    prompt = fast(ui_to_api(load_example(name), object_info))
    # A seed of its own, so that no other test's inversion is reused from ComfyUI's cache.
    prompt = with_overrides(prompt, {"EditFriendlyDDPMInversion": {"seed": 1000 + WORKFLOWS.index(name)}})
    assert validate(prompt, object_info) == []
    entry, messages = server.run_watching(prompt, timeout=120)
    assert_success(server, entry)
    images = server.output_images(entry)
    assert images
    arrays = {path.name: read_png(path) for path in images}
    for path_name, array in arrays.items():
        assert array.shape[0] == SIZE and array.shape[1] % SIZE == 0, (path_name, array.shape)
        assert np.isfinite(array).all()
    executed = [m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"].get("node")]
    inversions = [node_id for node_id, node in prompt.items() if node["class_type"] == "EditFriendlyDDPMInversion"]
    for node_id in inversions:
        assert executed.count(node_id) <= 1, "the inversion ran more than once"

    if name == "exact_reconstruction":
        by_prefix = {path.name.split("_0")[0]: read_png(path) for path in images}
        reconstruction, decoded_input, difference = by_prefix["reconstruction"], by_prefix["decoded_input"], by_prefix["difference"]
        assert reconstruction.shape == decoded_input.shape == (SIZE, SIZE, 3)
        assert np.abs(reconstruction - decoded_input).max() <= 1.5 / 255
        assert difference.max() <= 1.5 / 255
    if name == "multiple_edits_one_inversion":
        samplers = [node_id for node_id, node in prompt.items() if node["class_type"] == "EditFriendlySampler"]
        assert len(samplers) >= 3 and len(inversions) == 1
        assert executed.count(inversions[0]) == 1 and all(executed.count(s) == 1 for s in samplers)
        (stitched,) = arrays.values()
        assert stitched.shape == (SIZE, SIZE * (len(samplers) + 1), 3)
        # Queued again with one target prompt changed, only that edit runs: the inversion is cached.
        changed = json.loads(json.dumps(prompt))
        target = changed[samplers[0]]["inputs"]["positive"][0]
        changed[target]["inputs"]["text"] += ", snow"
        entry, messages = server.run_watching(changed, timeout=120)
        assert_success(server, entry)
        executed = [m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"].get("node")]
        assert inversions[0] not in executed and samplers[0] in executed
    if name == "text_guided_editing":
        (stitched,) = arrays.values()
        assert stitched.shape == (SIZE, 2 * SIZE, 3)


def test_flow_model_graph_reconstructs(server, object_info):
    """An SD3-style rectified-flow model (UNETLoader + its own 16-channel VAE) inverts and reconstructs."""
    prompt = small_graph(steps=4, skip=0, model=("10", 0))
    prompt["10"] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_SD3, "weight_dtype": "default"}}
    prompt["11"] = {"class_type": "VAELoader", "inputs": {"vae_name": TINY_SD3_VAE}}
    prompt["6"]["inputs"]["scheduler"] = "simple"
    prompt["3"]["inputs"]["vae"] = ["11", 0]
    prompt["8"]["inputs"]["vae"] = ["11", 0]
    prompt["12"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["11", 0]}}
    prompt["13"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "test/flow_input"}}
    prompt["9"]["inputs"]["filename_prefix"] = "test/flow_reconstruction"
    assert validate(prompt, object_info) == []
    entry = server.run(prompt)
    assert_success(server, entry)
    outputs = entry["outputs"]
    reconstruction = read_png(server.output_images({"outputs": {"9": outputs["9"]}})[0])
    decoded_input = read_png(server.output_images({"outputs": {"13": outputs["13"]}})[0])
    assert reconstruction.shape == (SIZE, SIZE, 3)
    assert np.abs(reconstruction - decoded_input).max() <= 1.5 / 255


# -- errors ----------------------------------------------------------------------------------

def assert_server_still_works(server):
    entry = server.run(small_graph(steps=2, skip=0))
    assert_success(server, entry)


def test_wrong_socket_type_is_refused_by_validation(server):
    prompt = small_graph()
    prompt["7"]["inputs"]["noise_maps"] = ["3", 0]  # a LATENT where EF_NOISE_MAPS belongs
    with pytest.raises(QueueError) as caught:
        server.queue(prompt)
    assert caught.value.status == 400
    response = caught.value.response
    errors = response["node_errors"]["7"]["errors"]
    assert any(error["type"] == "return_type_mismatch" and "noise_maps" in json.dumps(error) for error in errors), response
    assert_server_still_works(server)


def test_out_of_range_widget_is_refused_by_validation(server):
    prompt = small_graph()
    prompt["6"]["inputs"]["eta"] = 1.5
    with pytest.raises(QueueError) as caught:
        server.queue(prompt)
    assert caught.value.status == 400
    assert "value_bigger_than_max" in json.dumps(caught.value.response)


def _execution_failure(server, prompt, node_id, needle):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "error", entry["status"]
    error = execution_error(entry)
    assert error is not None, entry["status"]
    assert error["node_id"] == node_id, error
    assert needle in error["exception_message"], error["exception_message"]
    assert error["exception_type"].endswith("EditFriendlyInputError"), error["exception_type"]
    return error


def test_skip_not_below_steps_fails_with_a_clear_message(server):
    _execution_failure(server, small_graph(steps=3, skip=3), "7", "skip must be at least 0 and less than the number of steps")
    assert_server_still_works(server)


def test_latent_of_another_model_family_fails_clearly(server):
    """A 4-channel SD1.5 latent inverted with the 16-channel SD3 model."""
    prompt = small_graph(model=("10", 0))
    prompt["10"] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_SD3, "weight_dtype": "default"}}
    _execution_failure(server, prompt, "6", "has 4 channels but the model works on 16")
    assert_server_still_works(server)


def test_noise_maps_replayed_on_another_model_family_fail_clearly(server):
    prompt = small_graph()
    prompt["10"] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_SD3, "weight_dtype": "default"}}
    prompt["7"]["inputs"]["model"] = ["10", 0]
    _execution_failure(server, prompt, "7", "made with another model family or schedule")
    assert_server_still_works(server)


def test_mask_of_another_shape_fails_clearly(server):
    prompt = small_graph(skip=0)
    prompt["20"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 128, "height": 32}}
    prompt["21"] = {"class_type": "EditFriendlyNoiseMapTransform", "inputs": {
        "noise_maps": ["6", 0], "dx": 0, "dy": 0, "fill": "noise", "fill_seed": 0, "color": "#00ff00",
        "color_strength": 1.0, "start_percent": 0.0, "end_percent": 1.0, "mask": ["20", 0]}}
    prompt["7"]["inputs"]["noise_maps"] = ["21", 0]
    _execution_failure(server, prompt, "21", "aspect ratios differ")
    assert_server_still_works(server)


# -- interrupt ----------------------------------------------------------------------------------

def test_interrupt_stops_a_long_inversion(server):
    prompt = small_graph(steps=1000, skip=0)
    prompt["2"] = {"class_type": "ImageScale", "inputs": {"image": ["22", 0], "upscale_method": "bilinear", "width": 256, "height": 256, "crop": "disabled"}}
    prompt["22"] = {"class_type": "LoadImage", "inputs": {"image": EXAMPLE_IMAGE}}
    prompt["6"]["inputs"]["seed"] = 12345  # not cached from another test
    interrupted = {}

    def interrupt_inside_the_loop(message):
        # Once the inversion (node 6) reports its fifth step: the interrupt lands in its sampling loop.
        body = message.get("data", {})
        if not interrupted and message.get("type") == "progress" and body.get("node") == "6" and body.get("value", 0) >= 5:
            interrupted.update(step=body["value"], at=time.monotonic())
            server.interrupt()

    entry, messages = server.run_watching(prompt, timeout=120, on_message=interrupt_inside_the_loop)
    assert interrupted and interrupted["step"] < 1000, "the inversion never reported its steps"
    stopped_after = time.monotonic() - interrupted["at"]  # an upper bound: includes waiting for the history
    assert stopped_after < 10, f"interrupt took {stopped_after:.1f} s"
    last_step = max(m["data"]["value"] for m in messages if m.get("type") == "progress" and m["data"].get("node") == "6")
    assert last_step < 1000, "the inversion ran to its end"
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, entry["status"]
    assert "9" not in entry.get("outputs", {})
    assert_server_still_works(server)


def test_shipped_examples_match_their_generator():
    import make_example_workflows

    for name, workflow in make_example_workflows.build_all().items():
        assert load_example(name) == json.loads(json.dumps(workflow)), f"run scripts/make_example_workflows.py ({name})"


def test_examples_that_load_the_example_photo_say_where_to_put_it():
    # The template browser opens an example, but the photo is only in this pack's folder: the note says so.
    loading = [name for name in WORKFLOWS if any(
        node["type"] == "LoadImage" and node["widgets_values"][0] == EXAMPLE_IMAGE for node in load_example(name)["nodes"]
    )]
    assert len(loading) >= 10
    for name in loading:
        notes = [node["widgets_values"][0] for node in load_example(name)["nodes"] if node["type"] == "MarkdownNote"]
        assert any(f"copy `example_workflows/{EXAMPLE_IMAGE}` from this pack into `ComfyUI/input/`" in note for note in notes), name


def bundled_template(template_id: str) -> dict:
    templates = pytest.importorskip("comfyui_workflow_templates")  # installed with ComfyUI's requirements
    return json.loads(pathlib.Path(templates.get_asset_path(template_id, f"{template_id}.json")).read_text())


def test_examples_declare_the_default_graphs_checkpoint_as_comfyuis_templates_do():
    # ComfyUI's own default template names its SD1.5 checkpoint in the loader's properties["models"] (name,
    # url, directory), from which the frontend offers the download of a missing file; the examples copy
    # that entry exactly. It is metadata only: nothing in the pack downloads anything.
    default = bundled_template("default")
    (declared,) = [node["properties"]["models"] for node in default["nodes"] if node["type"] == "CheckpointLoaderSimple"]
    assert [model["name"] for model in declared] == [make_example_workflows.CHECKPOINT]
    # (The other families' examples declare their loaders' files from their own templates: test_server_video.py.)
    for name in set(WORKFLOWS) - set(make_example_workflows.FAMILY_WORKFLOWS):
        loaders = [node for node in load_example(name)["nodes"] if node["type"] == "CheckpointLoaderSimple"]
        assert loaders, name
        for node in loaders:
            assert node["widgets_values"] == [make_example_workflows.CHECKPOINT], name
            assert node["properties"]["models"] == declared, name


def test_tiny_models_are_cached_by_content_hash(server):
    import make_tiny_checkpoints

    before = {path: path.resolve().stat().st_mtime_ns for path in server.models_dir.rglob("*.safetensors")}
    assert len(before) == len(make_tiny_checkpoints.TARGETS)
    make_tiny_checkpoints.make(next(iter(before)).resolve().parents[1])
    assert {path: path.resolve().stat().st_mtime_ns for path in before} == before
