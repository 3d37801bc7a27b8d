"""The nodes' public API (IDs, inputs, defaults), their ComfyUI conventions, progress, previews and interrupt."""

import asyncio

import comfy.cli_args
import comfy.model_management
import pytest
import tiny_models
import torch
from comfy_api.latest import io
from comfy_hooks import recorded_progress
from edit_friendly_ddpm.nodes import comfy_nodes

# Public API: renaming any of these breaks users' saved workflows.
PUBLIC_INPUTS = {
    "EditFriendlyDDPMInversion": {
        "model": None, "positive": None, "negative": None, "latent_image": None,
        "steps": 100, "cfg": 3.5, "scheduler": "ddim_uniform", "eta": 1.0, "seed": 0, "variations": 1,
        "rule": "ddpm", "parallel_steps": 1, "precision": "auto",
    },
    "EditFriendlySampler": {"model": None, "positive": None, "negative": None, "noise_maps": None, "cfg": 15.0, "skip": 36, "mask": None},
    "EditFriendlyNoiseMapTransform": {
        "noise_maps": None, "dx": 0, "dy": 0, "fill": "noise", "fill_seed": 0, "color": "#ff0000",
        "color_strength": 0.0, "start_percent": 0.0, "end_percent": 1.0, "mask": None, "dt": 0,
    },
    "EditFriendlySamplerCustom": {"noise_maps": None, "skip": 36, "mask": None},
    "EditFriendlySaveNoiseMaps": {"noise_maps": None, "filename_prefix": "noise_maps/ef"},
    "EditFriendlyLoadNoiseMaps": {"file": None},
    "EditFriendlyNoiseMapPreview": {"noise_maps": None, "count": 8, "batch_index": 0, "frame": 0},
    "EditFriendlyAttentionControl": {
        "model": None, "noise_maps": None, "source_positive": None, "positive": None, "negative": None,
        "cfg": 9.0, "self_attention": 0.2, "cross_attention": 0.6,
    },
    "EditFriendlyPromptPair": {"clip": None, "source_prompt": None, "target_prompt": None},
    "EditFriendlyImplicitMask": {
        "model": None, "noise_maps": None, "source_positive": None, "positive": None, "threshold": 0.5, "start_percent": 0.25,
        "end_percent": 0.75, "grow": 1,
    },
    "EditFriendlyEditConcept": {
        "conditioning": None, "scale": 5.0, "direction": "add", "warmup": 0, "cooldown": 1000, "threshold": 0.9, "concepts": None,
    },
    "EditFriendlySemanticGuider": {"model": None, "positive": None, "negative": None, "cfg": 3.5, "concepts": None, "mask": None},
    "EditFriendlyFlowEdit": {
        "model": None, "source_positive": None, "source_negative": None, "positive": None, "negative": None, "latent_image": None,
        "steps": 28, "skip": 4, "n_min": 0, "n_avg": 1, "source_cfg": 1.5, "cfg": 5.5, "scheduler": "simple", "seed": 0, "mask": None,
    },
    "EditFriendlyFlowEditGuider": {
        "model": None, "source_positive": None, "source_negative": None, "positive": None, "negative": None, "source_cfg": 1.5, "cfg": 5.5,
    },
    "EditFriendlyFlowEditSampler": {"n_min": 0, "n_avg": 1, "seed": 0, "mask": None},
}
DISPLAY_NAMES = {
    "EditFriendlyDDPMInversion": "Edit-Friendly DDPM Inversion",
    "EditFriendlySampler": "Edit-Friendly Sampler",
    "EditFriendlyNoiseMapTransform": "Noise Map Transform",
    "EditFriendlySamplerCustom": "Edit-Friendly Sampler (Custom Sampling)",
    "EditFriendlySaveNoiseMaps": "Save Noise Maps",
    "EditFriendlyLoadNoiseMaps": "Load Noise Maps",
    "EditFriendlyNoiseMapPreview": "Noise Map Preview",
    "EditFriendlyAttentionControl": "Edit-Friendly Attention Control",
    "EditFriendlyPromptPair": "Edit-Friendly Prompt Pair",
    "EditFriendlyImplicitMask": "Edit-Friendly Implicit Mask",
    "EditFriendlyEditConcept": "Edit Concept",
    "EditFriendlySemanticGuider": "Edit-Friendly Semantic Guidance",
    "EditFriendlyFlowEdit": "FlowEdit",
    "EditFriendlyFlowEditGuider": "FlowEdit Guider",
    "EditFriendlyFlowEditSampler": "FlowEdit Sampler",
}


def node_info(node):
    return node.GET_NODE_INFO_V1()


def info_of(node_id: str) -> dict:
    """The V1 info of the node with this ID, from the list the pack registers."""
    return next(node_info(node) for node in comfy_nodes.NODES if node_info(node)["name"] == node_id)


def test_entrypoint_lists_every_node():
    extension = asyncio.run(comfy_nodes.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    assert {node.GET_SCHEMA().node_id: node.GET_SCHEMA().display_name for node in nodes} == DISPLAY_NAMES
    assert set(PUBLIC_INPUTS) == set(DISPLAY_NAMES)


def test_seed_widgets_with_control_after_generate_are_pinned():
    """The frontend saves a control value after such a seed in widgets_values: adding or removing one shifts saved widgets."""
    found = set()
    for node in comfy_nodes.NODES:
        info = node_info(node)
        for section in ("required", "optional"):
            found |= {(info["name"], name) for name, spec in info["input"].get(section, {}).items() if spec[1:] and spec[1].get("control_after_generate")}
    assert found == {("EditFriendlyDDPMInversion", "seed"), ("EditFriendlyFlowEdit", "seed"), ("EditFriendlyFlowEditSampler", "seed")}


@pytest.mark.parametrize("node", comfy_nodes.NODES, ids=lambda node: node.__name__)
def test_public_inputs_and_defaults_are_pinned(node):
    info = node_info(node)
    inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
    assert list(inputs) == list(PUBLIC_INPUTS[info["name"]])
    for name, default in PUBLIC_INPUTS[info["name"]].items():
        assert inputs[name][1].get("default") == default, name


@pytest.mark.parametrize("node", comfy_nodes.NODES, ids=lambda node: node.__name__)
def test_every_input_and_output_has_a_tooltip_and_the_node_a_description(node):
    info = node_info(node)
    assert len(info["description"]) > 40
    assert info["category"].split("/")[0] == "edit_friendly_ddpm"
    inputs = {**info["input"]["required"], **info["input"].get("optional", {})}
    for name, (_, options) in inputs.items():
        assert len(options.get("tooltip", "")) > 15, name
    assert len(info["output_tooltips"]) == len(info["output"]) and all(len(t) > 15 for t in info["output_tooltips"])


def test_noise_maps_socket_is_the_custom_type():
    assert node_info(comfy_nodes.EditFriendlyDDPMInversion)["output"] == ["EF_NOISE_MAPS"]
    assert node_info(comfy_nodes.EditFriendlySampler)["input"]["required"]["noise_maps"][0] == "EF_NOISE_MAPS"
    assert node_info(comfy_nodes.EditFriendlyNoiseMapTransform)["output"] == ["EF_NOISE_MAPS"]
    assert info_of("EditFriendlyAttentionControl")["input"]["required"]["noise_maps"][0] == "EF_NOISE_MAPS"


def test_edit_concepts_socket_is_the_custom_type():
    concept, guider = info_of("EditFriendlyEditConcept"), info_of("EditFriendlySemanticGuider")
    assert concept["output"] == ["EF_EDIT_CONCEPTS"] and concept["output_name"] == ["concepts"]
    assert concept["input"]["optional"]["concepts"][0] == "EF_EDIT_CONCEPTS"
    assert guider["input"]["required"]["concepts"][0] == "EF_EDIT_CONCEPTS"


@pytest.mark.parametrize("node, kind", [
    ("EditFriendlyAttentionControl", "GUIDER"), ("EditFriendlySemanticGuider", "GUIDER"), ("EditFriendlyFlowEdit", "LATENT"),
    ("EditFriendlyFlowEditGuider", "GUIDER"), ("EditFriendlyFlowEditSampler", "SAMPLER"),
    ("EditFriendlyPromptPair", ["CONDITIONING", "CONDITIONING"]), ("EditFriendlyImplicitMask", "MASK"),
])
def test_editing_nodes_output_comfyuis_types(node, kind):
    assert info_of(node)["output"] == (kind if isinstance(kind, list) else [kind])


@pytest.mark.parametrize("node", ["EditFriendlyDDPMInversion", "EditFriendlyFlowEdit"])
def test_scheduler_choices_are_comfyuis(node):
    import comfy.samplers

    kind, options = info_of(node)["input"]["required"]["scheduler"]
    assert kind == "COMBO" and options["options"] == comfy.samplers.SCHEDULER_NAMES


def test_nodes_reconstruct_and_report_progress_with_previews(monkeypatch):
    monkeypatch.setattr(comfy.cli_args.args, "preview_method", comfy.cli_args.LatentPreviewMethod.Latent2RGB)
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, batch=2, height=8, width=8)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    with recorded_progress() as reports:
        (maps,) = comfy_nodes.EditFriendlyDDPMInversion.execute(tiny.patcher, positive, negative, latent, 12, 4.0, "ddim_uniform", 1.0, 7).result
    steps = maps.steps  # ComfyUI's ddim_uniform gives 13 steps for 12 on a 1000-step table
    assert [(value, total) for value, total, _ in reports] == [(i, steps) for i in range(1, steps + 1)]
    assert all(preview is not None for _, _, preview in reports)
    with recorded_progress() as reports:
        (output,) = comfy_nodes.EditFriendlySampler.execute(tiny.patcher, positive, negative, maps, 4.0, 5).result
    assert [(value, total) for value, total, _ in reports] == [(i, steps - 5) for i in range(1, steps - 4)]
    assert set(output) == {"samples"}
    assert (output["samples"] - latent["samples"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("stage", ["inversion", "sampler"])
def test_interrupt_stops_the_loop_within_a_step(stage):
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = None
    if stage == "sampler":
        maps = comfy_nodes.EditFriendlyDDPMInversion.execute(tiny.patcher, positive, negative, latent, 40, 3.5, "ddim_uniform", 1.0, 0).result[0]
    with recorded_progress(interrupt_at=3) as reports, pytest.raises(comfy.model_management.InterruptProcessingException):
        if stage == "inversion":
            comfy_nodes.EditFriendlyDDPMInversion.execute(tiny.patcher, positive, negative, latent, 40, 3.5, "ddim_uniform", 1.0, 0)
        else:
            comfy_nodes.EditFriendlySampler.execute(tiny.patcher, positive, negative, maps, 3.5, 0)
    assert max(value for value, _, _ in reports) <= 4


def test_transform_node_returns_new_maps_and_keeps_the_input():
    tiny = tiny_models.sd15_eps(seed=0)
    maps = comfy_nodes.EditFriendlyDDPMInversion.execute(
        tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), tiny_models.latent(tiny), 6, 3.5, "ddim_uniform", 1.0, 0
    ).result[0]
    before = maps.maps.clone()
    (shifted,) = comfy_nodes.EditFriendlyNoiseMapTransform.execute(maps, 2, 1, "wrap", 0, "#00ff00", 0.5, 0.0, 1.0, None).result
    assert shifted is not maps and torch.equal(maps.maps, before)
    assert torch.equal(shifted.maps[0], torch.roll(colour_only(maps).maps[0], (1, 2), (-2, -1)))


def colour_only(maps):
    (coloured,) = comfy_nodes.EditFriendlyNoiseMapTransform.execute(maps, 0, 0, "wrap", 0, "#00ff00", 0.5, 0.0, 1.0, None).result
    return coloured


def test_sockets_declare_the_type_once():
    from edit_friendly_ddpm.nodes import sockets

    assert sockets.NoiseMapsSocket.io_type == "EF_NOISE_MAPS"
    assert issubclass(sockets.NoiseMapsSocket, io.ComfyTypeIO)
    assert sockets.EditConceptsSocket.io_type == "EF_EDIT_CONCEPTS"
    assert issubclass(sockets.EditConceptsSocket, io.ComfyTypeIO)
