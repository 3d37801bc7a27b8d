"""End-to-end runs of the feature examples (save/load of maps, SamplerCustomAdvanced, masked edits,
batched variations, map previews, the fast edit, attention control, semantic guidance) on the real ComfyUI
server with the tiny models.

Each example is converted from the shipped UI-format JSON through /object_info, shrunk to the tiny
checkpoint and a few steps, and run through /prompt. Probe nodes (decoded input, saved latents) are
added to the API prompt where a check needs them; the shipped workflows stay as they are.
"""

from __future__ import annotations

import json
import shutil

import make_example_workflows
from comfy_server import PACK_NAME, execution_error
import numpy as np
import pytest
import torch
from edit_friendly_ddpm.nodes import inspection
from safetensors import safe_open
from safetensors.torch import load_file
from test_server import EXAMPLES, SIZE, assert_success, fast, load_example, object_info, read_png, server  # noqa: F401 (fixtures)
from workflow_api import combo_options, ui_to_api, validate, with_overrides

FEATURES = make_example_workflows.FEATURE_WORKFLOWS
EXACT = 1.5 / 255  # decoded images: one 8-bit level plus rounding
LATENT_TOLERANCE = 1e-4
STEPS = 4  # fewer than test_server.py's FAST_STEPS: these tests run more prompts


def scaled(skip, steps=STEPS):
    return min(steps - 1, round(skip * steps / 100))


def ids_of(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def one(prompt: dict, class_type: str) -> str:
    (node_id,) = ids_of(prompt, class_type)
    return node_id


def example_prompt(name: str, object_info: dict, seed: int | None = None, steps: int = STEPS) -> dict:
    """The shipped example on the tiny checkpoint with `steps` steps and every skip scaled to match."""
    prompt = fast(ui_to_api(load_example(name), object_info), steps=steps)
    prompt = with_overrides(prompt, {"EditFriendlySamplerCustom": {"skip": lambda skip: scaled(skip, steps)}})
    if seed is not None:  # a seed of its own, so that no other test's inversion comes from ComfyUI's cache
        prompt = with_overrides(prompt, {"EditFriendlyDDPMInversion": {"seed": seed}})
    return prompt


def add_probe(prompt: dict, node_id: str, class_type: str, **inputs) -> str:
    assert node_id not in prompt
    prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return node_id


def probe_decoded(prompt: dict, node_id: str, latent: list, vae: list, prefix: str) -> str:
    """Decode `latent` and save it under `prefix`; returns the SaveImage node's id."""
    add_probe(prompt, f"{node_id}d", "VAEDecode", samples=latent, vae=vae)
    return add_probe(prompt, f"{node_id}s", "SaveImage", images=[f"{node_id}d", 0], filename_prefix=f"power/{prefix}")


def images_of(server, entry: dict, node_id: str, kind: str = "output") -> list[np.ndarray]:
    # --temp-directory DIR makes ComfyUI use DIR/temp; see tests/comfy_server.py for DIR.
    folder = {"output": server.output_dir, "temp": server.base / "temp" / "temp"}[kind]
    found = [image for image in entry["outputs"].get(node_id, {}).get("images", []) if image.get("type") == kind]
    assert found, f"node {node_id} saved no {kind} images: {json.dumps(entry['outputs'])[:2000]}"
    return [read_png(folder / image.get("subfolder", "") / image["filename"]) for image in found]


def saved_latent(server, entry: dict, node_id: str) -> torch.Tensor:
    """The latent a SaveLatent node of the finished prompt `entry` wrote."""
    (saved,) = entry["outputs"][node_id]["latents"]
    return load_file(str(server.output_dir / saved["subfolder"] / saved["filename"]))["latent_tensor"].float()


def run(server, object_info, prompt: dict) -> dict:
    assert validate(prompt, object_info) == []
    entry = server.run(prompt, timeout=180)
    assert_success(server, entry)
    return entry


# -- shipped JSON --------------------------------------------------------------------------------

def test_feature_examples_are_shipped_with_a_note(server):
    templates = server.get("/workflow_templates")[PACK_NAME]
    for name in FEATURES:
        assert (EXAMPLES / f"{name}.json").is_file(), name
        assert name in templates, name
        workflow = load_example(name)
        notes = [node for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
        assert notes and all(len(note["widgets_values"][0]) > 200 for note in notes), name


@pytest.mark.parametrize("name", [name for name in FEATURES if name != "edit_from_saved_noise_maps"])
def test_feature_example_is_valid(object_info, name):
    prompt = ui_to_api(load_example(name), object_info)
    checkpoints = ids_of(prompt, "CheckpointLoaderSimple")
    assert [prompt[node_id]["inputs"]["ckpt_name"] for node_id in checkpoints] == [make_example_workflows.CHECKPOINT]
    assert validate(fast(prompt, steps=100), object_info) == []
    (inversion,) = [prompt[node_id]["inputs"] for node_id in ids_of(prompt, "EditFriendlyDDPMInversion")]
    steps = make_example_workflows.FAST_STEPS if name == "fast_edit" else 100
    assert (inversion["steps"], inversion["cfg"], inversion["scheduler"], inversion["eta"]) == (steps, 3.5, "ddim_uniform", 1.0)


# -- a. save and load ------------------------------------------------------------------------------

def test_saved_maps_loaded_in_the_load_example_reconstruct(server, object_info):
    save = example_prompt("save_noise_maps", object_info, seed=3001)
    saver = one(save, "EditFriendlySaveNoiseMaps")
    encode = one(save, "VAEEncode")
    checkpoint = one(save, "CheckpointLoaderSimple")
    source = save[one(save, "EditFriendlyDDPMInversion")]["inputs"]["positive"][0]
    decoded_input = probe_decoded(save, "900", [encode, 0], [checkpoint, 2], "save_decoded_input")
    entry = run(server, object_info, save)
    (saved,) = entry["outputs"][saver]["text"]
    assert saved == make_example_workflows.MAPS_FILE, "the load example names the file the save example writes first"
    with safe_open(str(server.output_dir / saved), framework="pt") as handle:  # the executor's prompt, as SaveLatent keeps it
        assert json.loads(handle.metadata()["prompt"])[saver]["class_type"] == "EditFriendlySaveNoiseMaps"
    (expected,) = images_of(server, entry, decoded_input)

    # Move the file where the load node looks, and ask the server again for the file list.
    target = server.input_dir / saved
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(server.output_dir / saved, target)
    fresh_info = server.get("/object_info/EditFriendlyLoadNoiseMaps")
    assert saved in combo_options(fresh_info["EditFriendlyLoadNoiseMaps"]["input"]["required"]["file"])
    info = dict(object_info, **fresh_info)

    name = "edit_from_saved_noise_maps"
    load = ui_to_api(load_example(name), info)
    assert load[one(load, "EditFriendlyLoadNoiseMaps")]["inputs"]["file"] == saved
    assert validate(fast(load, steps=100), info) == []  # the shipped workflow, checkpoint aside, now validates as is
    load = fast(load, steps=STEPS)
    sampler = one(load, "EditFriendlySampler")
    text = load[sampler]["inputs"]["positive"][0]
    load[text]["inputs"]["text"] = save[source]["inputs"]["text"]  # the source prompt and CFG: reconstruction
    load[sampler]["inputs"]["cfg"] = save[one(save, "EditFriendlyDDPMInversion")]["inputs"]["cfg"]
    entry = run(server, info, load)
    (reconstruction,) = images_of(server, entry, one(load, "SaveImage"))
    assert reconstruction.shape == expected.shape == (SIZE, SIZE, 3)
    assert np.abs(reconstruction - expected).max() <= EXACT


# -- b. SamplerCustomAdvanced --------------------------------------------------------------------

def test_sampler_custom_advanced_example_edits_and_reconstructs(server, object_info):
    prompt = example_prompt("sampler_custom_advanced", object_info, seed=3002)
    assert {prompt[node_id]["class_type"] for node_id in prompt} >= {"EditFriendlySamplerCustom", "CFGGuider", "DisableNoise", "SamplerCustomAdvanced"}
    advanced, shipped_save = one(prompt, "SamplerCustomAdvanced"), one(prompt, "SaveImage")
    checkpoint = one(prompt, "CheckpointLoaderSimple")
    edited = probe_decoded(prompt, "900", [advanced, 0], [checkpoint, 2], "custom_edit")
    decoded_input = probe_decoded(prompt, "910", [one(prompt, "VAEEncode"), 0], [checkpoint, 2], "custom_decoded_input")
    entry = run(server, object_info, prompt)
    (stitched,) = images_of(server, entry, shipped_save)
    assert stitched.shape == (SIZE, 2 * SIZE, 3) and np.isfinite(stitched).all()
    (edit,), (expected,) = images_of(server, entry, edited), images_of(server, entry, decoded_input)
    assert np.abs(edit - expected).mean() > 0.01, "the target prompt changed nothing"

    # The guider with the source prompt and CFG gives the input back (the inversion comes from the cache).
    inversion = prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]
    guider = one(prompt, "CFGGuider")
    prompt[guider]["inputs"]["positive"] = inversion["positive"]
    prompt[guider]["inputs"]["cfg"] = inversion["cfg"]
    entry = run(server, object_info, prompt)
    (reconstruction,) = images_of(server, entry, edited)  # the decoded input is cached: not saved again
    assert reconstruction.shape == (SIZE, SIZE, 3)
    assert np.abs(reconstruction - expected).max() <= EXACT


# -- c. masked edit ------------------------------------------------------------------------------

def test_masked_example_edits_only_inside_the_mask(server, object_info):
    prompt = example_prompt("masked_edit", object_info, seed=3003)
    sampler = one(prompt, "EditFriendlySampler")
    assert prompt[sampler]["inputs"]["mask"][0] == one(prompt, "MaskComposite")
    checkpoint, encode = one(prompt, "CheckpointLoaderSimple"), one(prompt, "VAEEncode")
    edited = probe_decoded(prompt, "900", [sampler, 0], [checkpoint, 2], "masked_edit")
    decoded_input = probe_decoded(prompt, "910", [encode, 0], [checkpoint, 2], "masked_decoded_input")
    add_probe(prompt, "920", "SaveLatent", samples=[sampler, 0], filename_prefix="power/masked_edit_latent")
    add_probe(prompt, "921", "SaveLatent", samples=[encode, 0], filename_prefix="power/masked_input_latent")
    entry = run(server, object_info, prompt)

    edit_latent, input_latent = saved_latent(server, entry, "920"), saved_latent(server, entry, "921")
    # The example's mask: a 256 px square at (128, 128) of 512 px, the centre half of each side.
    side = edit_latent.shape[-1]
    inside = torch.zeros(edit_latent.shape[-2:], dtype=torch.bool)
    inside[side // 4: 3 * side // 4, side // 4: 3 * side // 4] = True
    difference = (edit_latent - input_latent).abs().amax(dim=(0, 1))
    assert difference[~inside].max().item() <= LATENT_TOLERANCE, "the latent changed outside the mask"
    assert difference[inside].mean().item() > 0.05, "nothing changed inside the mask"

    (edit,), (expected,) = images_of(server, entry, edited), images_of(server, entry, decoded_input)
    assert edit.shape == expected.shape == (SIZE, SIZE, 3)
    pixel_inside = np.zeros((SIZE, SIZE), dtype=bool)
    pixel_inside[SIZE // 4: 3 * SIZE // 4, SIZE // 4: 3 * SIZE // 4] = True
    border = np.ones((SIZE, SIZE), dtype=bool)
    border[SIZE // 8: -SIZE // 8, SIZE // 8: -SIZE // 8] = False  # the outer band, away from the mask's edge
    change = np.abs(edit - expected).mean(axis=2)
    assert change[pixel_inside].mean() > 0.02, "the decoded image did not change inside the mask"
    # Not equal outside: the tiny TAESD decoder sees the whole 8x8 latent, so a change inside leaks into
    # every pixel a little (the latent check above is the exact one); still clearly less than inside.
    assert change[border].mean() < 0.5 * change[pixel_inside].mean(), "the decoded image changed as much outside the mask"


# -- d. variations ------------------------------------------------------------------------------

def test_variations_example_gives_different_edits(server, object_info):
    prompt = example_prompt("batched_variations", object_info, seed=3004)
    assert prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]["variations"] == make_example_workflows.VARIATIONS
    entry = run(server, object_info, prompt)
    images = images_of(server, entry, one(prompt, "SaveImage"))
    assert len(images) == make_example_workflows.VARIATIONS
    for image in images:
        assert image.shape == (SIZE, SIZE, 3) and np.isfinite(image).all()
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 0.005, f"variations {i} and {j} are the same edit"


# -- e. map previews ----------------------------------------------------------------------------

def test_noise_map_preview_example_shows_maps_and_statistics(server, object_info):
    prompt = example_prompt("noise_map_preview", object_info, seed=3005)
    preview = prompt[one(prompt, "EditFriendlyNoiseMapPreview")]["inputs"]
    grid_node, plot_node = sorted(ids_of(prompt, "PreviewImage"), key=int)
    assert prompt[grid_node]["inputs"]["images"] == [one(prompt, "EditFriendlyNoiseMapPreview"), 0]
    assert prompt[plot_node]["inputs"]["images"] == [one(prompt, "EditFriendlyNoiseMapPreview"), 1]
    entry = run(server, object_info, prompt)
    (grid,), (plot,) = images_of(server, entry, grid_node, "temp"), images_of(server, entry, plot_node, "temp")
    latent_side = SIZE // 8
    tile = latent_side * max(1, inspection.TILE // latent_side)
    tiles = len(inspection.chosen_steps(STEPS, preview["count"]))
    assert grid.shape == (tile + inspection.CAPTION, tiles * tile, 3)
    assert plot.shape == (inspection.PLOT_SIZE[1], inspection.PLOT_SIZE[0], 3)
    for image in (grid, plot):
        assert np.isfinite(image).all() and image.std() > 0.01, "a blank image"


# -- f. fast edit --------------------------------------------------------------------------------

def test_fast_edit_example_round_trips_exactly_and_edits(server, object_info):
    shipped = ui_to_api(load_example("fast_edit"), object_info)
    inversion = shipped[one(shipped, "EditFriendlyDDPMInversion")]["inputs"]
    assert (inversion["rule"], inversion["parallel_steps"]) == ("dpmpp_2m_sde", 0)
    steps = 8  # on the CPU the automatic parallel_steps puts 4 steps of this small latent in one batch
    prompt = fast(shipped, steps=steps)
    prompt = with_overrides(prompt, {"EditFriendlyDDPMInversion": {"seed": 3006}})
    edit_sampler, round_trip_sampler = sorted(ids_of(prompt, "EditFriendlySampler"), key=lambda node_id: prompt[node_id]["inputs"]["skip"], reverse=True)
    prompt[edit_sampler]["inputs"]["skip"] = round(make_example_workflows.FAST_SKIP * steps / make_example_workflows.FAST_STEPS)
    assert prompt[edit_sampler]["inputs"]["skip"] > 0 and prompt[round_trip_sampler]["inputs"]["skip"] == 0
    assert prompt[round_trip_sampler]["inputs"]["positive"] == inversion["positive"]
    encode = one(prompt, "VAEEncode")
    add_probe(prompt, "920", "SaveLatent", samples=[round_trip_sampler, 0], filename_prefix="power/fast_round_trip")
    add_probe(prompt, "921", "SaveLatent", samples=[encode, 0], filename_prefix="power/fast_input")
    add_probe(prompt, "922", "SaveLatent", samples=[edit_sampler, 0], filename_prefix="power/fast_edit")
    entry = run(server, object_info, prompt)

    (stitched,) = images_of(server, entry, one(prompt, "SaveImage"))
    assert stitched.shape == (SIZE, 3 * SIZE, 3) and np.isfinite(stitched).all()
    # Step-parallel maps replayed under the inversion's prompts and CFG go through its batches again, so the
    # round trip is as exact as one step at a time (without that, up to about 1e-5 on the CPU).
    round_trip, edit, source = (saved_latent(server, entry, node_id) for node_id in ("920", "922", "921"))
    assert (round_trip - source).abs().max().item() <= 1e-6
    assert (edit - source).abs().mean().item() > 0.01, "the target prompt changed nothing"


# -- g. attention control (Prompt-to-Prompt) ----------------------------------------------------------

CONTROLLED_STEPS = 8  # 7 replayed steps after the scaled skip: the self-attention window (20%) holds 1, cross (60%) 4


def sd1_tokens(text: str) -> list[int]:
    """The prompt's tokens in ComfyUI's SD1 tokenizer, without start, end and padding."""
    import comfy.sd1_clip

    tokenizer = comfy.sd1_clip.SDTokenizer()
    (tokens,) = tokenizer.tokenize_with_weights(text)
    return [token for token, _ in tokens if token not in (tokenizer.start_token, tokenizer.end_token, tokenizer.pad_token)]


def test_attention_control_example_uses_the_papers_p2p_settings(object_info):
    prompt = ui_to_api(load_example("attention_control_edit"), object_info)
    inversion = prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]
    control = prompt[one(prompt, "EditFriendlyAttentionControl")]["inputs"]
    assert (inversion["steps"], inversion["cfg"]) == (100, 3.5)
    assert prompt[one(prompt, "EditFriendlySamplerCustom")]["inputs"]["skip"] == 12
    assert (control["cfg"], control["self_attention"], control["cross_attention"]) == (9.0, 0.2, 0.6)
    assert control["source_positive"] == inversion["positive"] and control["negative"] == inversion["negative"]
    pair = one(prompt, "EditFriendlyPromptPair")
    assert (control["source_positive"], control["positive"]) == ([pair, 0], [pair, 1])
    advanced = prompt[one(prompt, "SamplerCustomAdvanced")]["inputs"]
    assert advanced["guider"] == [one(prompt, "EditFriendlyAttentionControl"), 0]
    assert advanced["noise"] == [one(prompt, "DisableNoise"), 0]
    # Cross-attention control maps the target's tokens onto the source's one for one: a one-token word swap.
    source, target = (sd1_tokens(prompt[pair]["inputs"][name]) for name in ("source_prompt", "target_prompt"))
    assert len(source) == len(target) and sum(a != b for a, b in zip(source, target)) == 1, (source, target)


def test_attention_control_example_edits_and_gives_the_input_back(server, object_info):
    prompt = example_prompt("attention_control_edit", object_info, seed=3007, steps=CONTROLLED_STEPS)
    custom, control = one(prompt, "EditFriendlySamplerCustom"), one(prompt, "EditFriendlyAttentionControl")
    assert prompt[custom]["inputs"]["skip"] > 0
    advanced, checkpoint, encode = one(prompt, "SamplerCustomAdvanced"), one(prompt, "CheckpointLoaderSimple"), one(prompt, "VAEEncode")
    shipped_save = one(prompt, "SaveImage")
    edited = probe_decoded(prompt, "900", [advanced, 0], [checkpoint, 2], "attention_edit")
    decoded_input = probe_decoded(prompt, "910", [encode, 0], [checkpoint, 2], "attention_decoded_input")
    add_probe(prompt, "920", "SaveLatent", samples=[advanced, 0], filename_prefix="power/attention_edit")
    add_probe(prompt, "921", "SaveLatent", samples=[encode, 0], filename_prefix="power/attention_input")
    entry = run(server, object_info, prompt)
    (stitched,) = images_of(server, entry, shipped_save)
    assert stitched.shape == (SIZE, 2 * SIZE, 3) and np.isfinite(stitched).all()
    edit, source = saved_latent(server, entry, "920"), saved_latent(server, entry, "921")
    assert (edit - source).abs().mean().item() > 0.01, "the target prompt changed nothing"
    (expected,) = images_of(server, entry, decoded_input)

    # The controls act: with both windows at 0 (a plain CFG edit) the same prompts give another latent.
    plain = json.loads(json.dumps(prompt))
    plain[control]["inputs"].update(self_attention=0.0, cross_attention=0.0)
    entry = run(server, object_info, plain)
    assert (saved_latent(server, entry, "920") - edit).abs().max().item() > 1e-3, "attention control changed nothing"

    # The source prompt as target, the source CFG and skip 0, controls on: the input comes back.
    inversion = prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]
    prompt[control]["inputs"].update(positive=inversion["positive"], cfg=inversion["cfg"])
    prompt[custom]["inputs"]["skip"] = 0
    entry = run(server, object_info, prompt)
    (reconstruction,) = images_of(server, entry, edited)  # the decoded input is cached: not saved again
    assert reconstruction.shape == expected.shape == (SIZE, SIZE, 3)
    assert np.abs(reconstruction - expected).max() <= EXACT
    assert (saved_latent(server, entry, "920") - source).abs().max().item() <= LATENT_TOLERANCE


def test_attention_control_example_refuses_an_inserted_word_before_sampling(server, object_info):
    """Through /prompt: the pair's tokens reach the guider, which names the inserted word; the server goes on."""
    prompt = example_prompt("attention_control_edit", object_info, seed=3010, steps=CONTROLLED_STEPS)
    pair, control = one(prompt, "EditFriendlyPromptPair"), one(prompt, "EditFriendlyAttentionControl")
    prompt[pair]["inputs"]["target_prompt"] = "a close-up photo of a big tabby tiger"
    entry = server.run(prompt, timeout=180)
    error = execution_error(entry)
    assert error is not None and error["exception_type"].endswith("EditFriendlyInputError"), entry["status"]
    assert error["node_id"] == control  # the node checks as it makes the GUIDER, before SamplerCustomAdvanced runs
    assert 'inserts "big"' in error["exception_message"] and "cross_attention to 0" in error["exception_message"]
    prompt[control]["inputs"]["cross_attention"] = 0.0  # self-attention control takes any prompts
    run(server, object_info, prompt)


# -- i. implicit mask --------------------------------------------------------------------------------------

def test_implicit_mask_example_edits_only_where_the_prompts_disagree(server, object_info):
    prompt = example_prompt("implicit_mask_edit", object_info, seed=3009)
    sampler, finder = one(prompt, "EditFriendlySampler"), one(prompt, "EditFriendlyImplicitMask")
    assert prompt[sampler]["inputs"]["mask"] == [finder, 0]
    assert prompt[finder]["inputs"]["positive"] == prompt[sampler]["inputs"]["positive"]
    inversion = prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]
    assert prompt[finder]["inputs"]["source_positive"] == inversion["positive"]
    # The tiny checkpoint's 8x8 latent: a stricter mask than the example's for a 64x64 latent, or its smoothed rim covers it all.
    prompt[finder]["inputs"].update(threshold=0.8, grow=0)
    encode = one(prompt, "VAEEncode")
    add_probe(prompt, "920", "SaveLatent", samples=[sampler, 0], filename_prefix="power/implicit_mask_edit")
    add_probe(prompt, "921", "SaveLatent", samples=[encode, 0], filename_prefix="power/implicit_mask_input")
    add_probe(prompt, "930", "SaveImage", images=[one(prompt, "MaskToImage"), 0], filename_prefix="power/implicit_mask")
    entry = run(server, object_info, prompt)
    edit, source = saved_latent(server, entry, "920"), saved_latent(server, entry, "921")
    (mask,) = images_of(server, entry, "930")
    inside = torch.from_numpy(mask[..., 0] > 0.5)
    assert inside.shape == edit.shape[-2:] and 0 < inside.float().mean() < 1, "the mask is at the latent's size, neither empty nor full"
    difference = (edit - source).abs().amax(dim=(0, 1))
    assert difference[~inside].max().item() <= LATENT_TOLERANCE, "the latent changed outside the mask"
    assert difference[inside].mean().item() > 0.01, "nothing changed inside the mask"


# -- h. semantic guidance (edit concepts) ---------------------------------------------------------------

def test_semantic_guidance_example_guides_with_the_inversions_prompt_and_cfg(object_info):
    prompt = ui_to_api(load_example("semantic_guidance_edit"), object_info)
    inversion = prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]
    guider = prompt[one(prompt, "EditFriendlySemanticGuider")]["inputs"]
    assert [guider[name] for name in ("positive", "negative", "cfg")] == [inversion[name] for name in ("positive", "negative", "cfg")]
    # The chain, last first: remove "cat" takes the concepts of add "tiger".
    last = prompt[guider["concepts"][0]]["inputs"]
    first = prompt[last["concepts"][0]]["inputs"]
    assert "concepts" not in first
    assert [(prompt[c["conditioning"][0]]["inputs"]["text"], c["direction"], c["scale"]) for c in (first, last)] == [
        ("tiger", "add", 5.0), ("cat", "remove", 5.0)]
    advanced = prompt[one(prompt, "SamplerCustomAdvanced")]["inputs"]
    assert advanced["guider"] == [one(prompt, "EditFriendlySemanticGuider"), 0]
    assert advanced["sampler"] == [one(prompt, "EditFriendlySamplerCustom"), 0]


def test_semantic_guidance_example_edits_and_concepts_of_scale_0_give_the_input_back(server, object_info):
    prompt = example_prompt("semantic_guidance_edit", object_info, seed=3008, steps=CONTROLLED_STEPS)
    assert prompt[one(prompt, "EditFriendlySamplerCustom")]["inputs"]["skip"] > 0
    advanced, checkpoint, encode = one(prompt, "SamplerCustomAdvanced"), one(prompt, "CheckpointLoaderSimple"), one(prompt, "VAEEncode")
    shipped_save = one(prompt, "SaveImage")
    edited = probe_decoded(prompt, "900", [advanced, 0], [checkpoint, 2], "semantic_edit")
    decoded_input = probe_decoded(prompt, "910", [encode, 0], [checkpoint, 2], "semantic_decoded_input")
    add_probe(prompt, "920", "SaveLatent", samples=[advanced, 0], filename_prefix="power/semantic_edit")
    add_probe(prompt, "921", "SaveLatent", samples=[encode, 0], filename_prefix="power/semantic_input")
    entry = run(server, object_info, prompt)
    (stitched,) = images_of(server, entry, shipped_save)
    assert stitched.shape == (SIZE, 2 * SIZE, 3) and np.isfinite(stitched).all()
    edit, source = saved_latent(server, entry, "920"), saved_latent(server, entry, "921")
    change = (edit - source).abs().amax(dim=1)
    assert change.max().item() > 0.05, "the concepts changed nothing"
    (expected,) = images_of(server, entry, decoded_input)

    # Every concept at scale 0: the guider is CFG on the inversion's prompt and CFG, and the input comes back.
    for node_id in ids_of(prompt, "EditFriendlyEditConcept"):
        prompt[node_id]["inputs"]["scale"] = 0.0
    entry = run(server, object_info, prompt)
    (reconstruction,) = images_of(server, entry, edited)
    assert reconstruction.shape == expected.shape == (SIZE, SIZE, 3)
    assert np.abs(reconstruction - expected).max() <= EXACT
    assert (saved_latent(server, entry, "920") - source).abs().max().item() <= LATENT_TOLERANCE
