"""End-to-end runs of the Wan 2.1 video edit, the Qwen-Image photo edit and the Qwen-Image FlowEdit examples on
the real ComfyUI server.

Each shipped example is converted from its UI-format JSON through /object_info and run through /prompt with
tiny seeded stand-ins of its models (scripts/make_tiny_checkpoints.py): a Wan 2.1 DiT and a Qwen-Image MMDiT that
UNETLoader detects from their weights, and a Wan 2.1 VAE that VAELoader sizes from its weights (Qwen-Image's VAE
is the same model). Their text encoders, UMT5-XXL and Qwen2.5-VL 7B, have fixed full-size configs in ComfyUI and
cannot be made tiny, so the tests replace them (see each test). Probe nodes are added to the API prompt: a copy
of the sampler with the source prompt, the source CFG and skip 0, and SaveLatent nodes, so that the round trip
and the edit are checked on the latents (for FlowEdit, which has no inversion, a copy of the FlowEdit node with the
source prompt and CFG as target).
"""

from __future__ import annotations

import make_example_workflows as examples
import make_tiny_checkpoints as tiny
import numpy as np
import pytest
import torch
from PIL import Image
from test_server_power import saved_latent
from test_server import EXAMPLE_IMAGE, EXAMPLES, assert_success, bundled_template, load_example, read_png, server  # noqa: F401 (fixture)
from workflow_api import ui_to_api, validate, with_overrides

STEPS = 6
ROUND_TRIP_TOLERANCE = 1e-4  # latents; without exact replay the round trip is off by about the latent's scale
VIDEO_FILE = "ef-test-video.mp4"
VIDEO_FRAMES, VIDEO_FPS = 9, 12
FRAMES = 5  # 4 k + 1 frames: two latent frames (the Wan VAE keeps the first frame, then one latent frame per 4)
WIDTH, HEIGHT = 64, 48  # an 8 x 6 latent
SIZE = 64  # the Qwen-Image test image: an 8 x 8 latent


@pytest.fixture(scope="module")
def info(server):
    """/object_info once the test video is in the input folder (LoadVideo lists the files there)."""
    cat = Image.open(EXAMPLES / EXAMPLE_IMAGE).convert("RGB").resize((96, 72), Image.LANCZOS)
    write_video(server.input_dir / VIDEO_FILE, [cat.crop((2 * i, i, 2 * i + WIDTH, i + HEIGHT)) for i in range(VIDEO_FRAMES)])
    return server.get("/object_info")


def write_video(path, frames) -> None:
    """An H.264 clip of moving crops of the example photo (what a user would upload to Load Video)."""
    import av  # a ComfyUI requirement

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for picture in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def ids_of(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def one(prompt: dict, class_type: str) -> str:
    (node_id,) = ids_of(prompt, class_type)
    return node_id


def scaled_skip(skip, steps=STEPS, shipped_steps=30):
    return min(steps - 1, round(skip * steps / shipped_steps))


def add_round_trip_probes(prompt: dict, prefix: str) -> tuple[str, str, str]:
    """SaveLatent of the encoded input, of the edit, and of a copy of the sampler under the source prompt, the
    source CFG and skip 0 (the round trip); returns their node ids."""
    inversion = prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]
    sampler = one(prompt, "EditFriendlySampler")
    prompt["900"] = {"class_type": "EditFriendlySampler", "inputs": {
        "model": inversion["model"], "positive": inversion["positive"], "negative": inversion["negative"],
        "noise_maps": [one(prompt, "EditFriendlyDDPMInversion"), 0], "cfg": inversion["cfg"], "skip": 0}}
    probes = {"901": (inversion["latent_image"], "source"), "902": (["900", 0], "round_trip"), "903": ([sampler, 0], "edit")}
    for node_id, (samples, name) in probes.items():
        prompt[node_id] = {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": f"video_test/{prefix}_{name}"}}
    return tuple(probes)


def run(server, info, prompt: dict) -> dict:
    assert validate(prompt, info) == []
    entry = server.run(prompt, timeout=300)
    assert_success(server, entry)
    return entry


def check_round_trip_and_edit(server, entry, probes, shape) -> None:
    source, round_trip, edit = (saved_latent(server, entry, node_id) for node_id in probes)
    assert source.shape == round_trip.shape == edit.shape == shape, (source.shape, round_trip.shape, edit.shape)
    assert torch.isfinite(edit).all() and source.abs().max() > 0
    error = (round_trip - source).abs().max().item()
    assert error <= ROUND_TRIP_TOLERANCE * max(1.0, source.abs().max().item()), f"round trip off by {error}"
    assert (edit - source).abs().mean().item() > 1e-3, "the target prompt changed nothing"


# -- the shipped JSON --------------------------------------------------------------------------------

def test_family_examples_are_generated_and_served(server):
    templates = server.get("/workflow_templates")["edit-friendly-ddpm"]
    for name in examples.FAMILY_WORKFLOWS:
        assert name in templates and name in examples.WORKFLOWS, name
        notes = [node for node in load_example(name)["nodes"] if node["type"] == "MarkdownNote"]
        assert notes and all(len(note["widgets_values"][0]) > 200 for note in notes), name


@pytest.mark.parametrize("name, template, expected", [
    ("video_edit_wan", examples.WAN_TEMPLATE, {
        "UNETLoader": examples.WAN_MODEL, "CLIPLoader": examples.WAN_TEXT_ENCODER, "VAELoader": examples.WAN_VAE}),
    ("photo_edit_qwen_image", examples.QWEN_IMAGE_TEMPLATE, {
        "UNETLoader": examples.QWEN_MODEL, "CLIPLoader": examples.QWEN_TEXT_ENCODER, "VAELoader": examples.QWEN_VAE}),
    ("flowedit_qwen_image", examples.QWEN_IMAGE_TEMPLATE, {
        "UNETLoader": examples.QWEN_MODEL, "CLIPLoader": examples.QWEN_TEXT_ENCODER, "VAELoader": examples.QWEN_VAE}),
])
def test_family_examples_declare_models_as_comfyuis_templates_do(name, template, expected):
    # The real file names, each with the properties["models"] entry (name, url, directory) of ComfyUI's own template.
    declared = {}
    for node in bundled_template(template)["nodes"]:
        for model in node.get("properties", {}).get("models", []):
            declared[model["name"]] = model
    loaders = {node["type"]: node for node in load_example(name)["nodes"] if node["type"] in expected}
    assert {kind: node["widgets_values"][0] for kind, node in loaders.items()} == expected
    for kind, node in loaders.items():
        assert node["properties"]["models"] == [declared[expected[kind]]], kind


def test_family_examples_are_valid_but_for_the_missing_files(info):
    missing = {
        "video_edit_wan": {examples.WAN_MODEL, examples.WAN_TEXT_ENCODER, examples.WAN_VAE, examples.VIDEO},
        "photo_edit_qwen_image": {examples.QWEN_MODEL, examples.QWEN_TEXT_ENCODER, examples.QWEN_VAE},
        "flowedit_qwen_image": {examples.QWEN_MODEL, examples.QWEN_TEXT_ENCODER, examples.QWEN_VAE},
    }
    assert set(missing) == set(examples.FAMILY_WORKFLOWS)
    for name, files in missing.items():
        prompt = ui_to_api(load_example(name), info)
        problems = validate(prompt, info)
        assert len(problems) == len(files) and all(any(f"'{file}' not among" in p for p in problems) for file in files), problems

    wan = ui_to_api(load_example("video_edit_wan"), info)
    assert wan[one(wan, "CLIPLoader")]["inputs"]["type"] == "wan"
    assert wan[one(wan, "ModelSamplingSD3")]["inputs"]["shift"] == 8.0
    inversion = wan[one(wan, "EditFriendlyDDPMInversion")]["inputs"]
    assert inversion["model"] == [one(wan, "ModelSamplingSD3"), 0] and inversion["scheduler"] == "simple"
    assert 30 <= inversion["steps"] <= 50 and 4.0 <= inversion["cfg"] <= 6.0
    assert wan[one(wan, "ImageFromBatch")]["inputs"]["length"] % 4 == 1
    assert wan[one(wan, "CreateVideo")]["inputs"]["fps"] == [one(wan, "GetVideoComponents"), 2]
    assert wan[one(wan, "SaveVideo")]["inputs"]["video"] == [one(wan, "CreateVideo"), 0]

    qwen = ui_to_api(load_example("photo_edit_qwen_image"), info)
    assert qwen[one(qwen, "CLIPLoader")]["inputs"]["type"] == "qwen_image"
    assert qwen[one(qwen, "ModelSamplingAuraFlow")]["inputs"]["shift"] == pytest.approx(3.1)
    assert qwen[one(qwen, "LoadImage")]["inputs"]["image"] == EXAMPLE_IMAGE
    inversion = qwen[one(qwen, "EditFriendlyDDPMInversion")]["inputs"]
    assert inversion["model"] == [one(qwen, "ModelSamplingAuraFlow"), 0] and inversion["scheduler"] == "simple"
    for prompt in (wan, qwen):
        encode = one(prompt, "VAEEncode")
        assert prompt[encode]["inputs"]["vae"] == [one(prompt, "VAELoader"), 0]
        assert prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]["latent_image"] == [encode, 0]

    # FlowEdit: Qwen-Image loaded and shifted as in the photo edit, no inversion, the node's defaults (the paper's Flux
    # setting), one negative prompt for both branches.
    flow = ui_to_api(load_example("flowedit_qwen_image"), info)
    assert "EditFriendlyDDPMInversion" not in {node["class_type"] for node in flow.values()}

    def widgets(prompt, class_type):
        return {name: value for name, value in prompt[one(prompt, class_type)]["inputs"].items() if not isinstance(value, list)}

    for class_type in ("UNETLoader", "CLIPLoader", "VAELoader", "ModelSamplingAuraFlow", "LoadImage", "ImageScale"):
        assert widgets(flow, class_type) == widgets(qwen, class_type), class_type
    assert flow[one(flow, "ModelSamplingAuraFlow")]["inputs"]["model"] == [one(flow, "UNETLoader"), 0]
    edit = flow[one(flow, "EditFriendlyFlowEdit")]["inputs"]
    specs = info["EditFriendlyFlowEdit"]["input"]["required"].items()
    defaults = {name: spec[1]["default"] for name, spec in specs if len(spec) > 1 and "default" in spec[1]}
    assert {name: edit[name] for name in defaults} == defaults
    assert (edit["steps"], edit["skip"], edit["source_cfg"], edit["cfg"], edit["scheduler"]) == (28, 4, 1.5, 5.5, "simple")
    assert edit["model"] == [one(flow, "ModelSamplingAuraFlow"), 0] and edit["latent_image"] == [one(flow, "VAEEncode"), 0]
    assert edit["source_negative"] == edit["negative"] and edit["source_positive"] != edit["positive"]
    texts = {name: flow[edit[name][0]]["inputs"]["text"] for name in ("source_positive", "positive")}
    assert texts == {"source_positive": examples.SOURCE_PROMPT, "positive": "a close-up photo of a tiger"}
    assert flow[one(flow, "VAEDecode")]["inputs"]["samples"] == [one(flow, "EditFriendlyFlowEdit"), 0]


# -- end to end ---------------------------------------------------------------------------------------

def test_wan_video_example_edits_a_video_and_round_trips(server, info):
    prompt = ui_to_api(load_example("video_edit_wan"), info)
    prompt = with_overrides(prompt, {
        "UNETLoader": {"unet_name": tiny.WAN_DIFFUSION_MODEL},
        # UMT5-XXL has a fixed full-size config in ComfyUI. The tiny SD1.5 checkpoint's CLIP-L, loaded with type sd3,
        # is padded to 4096, UMT5-XXL's width, which is the text width ComfyUI gives every Wan model: the prompts
        # still reach the model's cross-attention, as real text.
        "CLIPLoader": {"clip_name": tiny.CLIP_L, "type": "sd3"},
        "VAELoader": {"vae_name": tiny.WAN_VAE},
        "LoadVideo": {"file": VIDEO_FILE},
        "ImageFromBatch": {"length": FRAMES},
        "ImageScale": {"width": WIDTH, "height": HEIGHT},
        "EditFriendlyDDPMInversion": {"steps": STEPS, "seed": 4001},
        "EditFriendlySampler": {"skip": scaled_skip},
    })
    assert prompt[one(prompt, "EditFriendlySampler")]["inputs"]["skip"] > 0
    probes = add_round_trip_probes(prompt, "wan")
    entry = run(server, info, prompt)

    check_round_trip_and_edit(server, entry, probes, (1, 16, 2, HEIGHT // 8, WIDTH // 8))
    # The edit is saved as a video (SaveVideo lists it among its "images", flagged animated) at the input's frame rate.
    saved = entry["outputs"][one(prompt, "SaveVideo")]
    (video,) = saved["images"]
    assert saved.get("animated") == [True], saved
    path = server.output_dir / video["subfolder"] / video["filename"]
    assert path.is_file() and path.suffix == ".mp4", path
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        rate = float(stream.average_rate)
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert rate == pytest.approx(VIDEO_FPS, rel=0.01)
    assert np.std(np.stack(frames).astype(np.float32)) > 1.0, "the saved video is blank"


def _qwen_conditioning(server, folder: str, seed: int) -> None:
    """Writes a conditioning as ComfyUI's SaveTrainingDataset stores one, for LoadTrainingDataset (a core node).

    Qwen-Image takes 3584-wide text, the width of Qwen2.5-VL 7B (fixed in ComfyUI, as is the model's width),
    and no text encoder in ComfyUI that can be made tiny gives that width (the CLIP-L padding trick of the Wan test
    reaches 4096). So the test stands in seeded embeddings for the encoded prompts, one per prompt.
    """
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.randn(1, 7, 3584, generator=generator)
    shard = {"latents": [{"samples": torch.zeros(1, 16, 1, 1, 1)}], "conditioning": [[[embedding, {"pooled_output": None}]]]}
    target = server.output_dir / folder
    target.mkdir(parents=True, exist_ok=True)
    torch.save(shard, target / "shard_0000.pkl")


def stand_in_qwen_conditionings(server, prompt: dict, roles: dict) -> None:
    """Replaces the CLIPTextEncode nodes `roles` (node id -> role) by seeded conditionings (_qwen_conditioning), one
    per role, and removes the text encoder's loader."""
    assert sorted(roles) == sorted(ids_of(prompt, "CLIPTextEncode"))
    seeds = {"source": 40, "negative": 41, "target": 42}  # the same stand-in for the same role in every test
    for node_id, role in roles.items():
        _qwen_conditioning(server, f"ef_qwen_{role}", seeds[role])
        prompt[node_id] = {"class_type": "LoadTrainingDataset", "inputs": {"folder_name": f"ef_qwen_{role}"}}
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in roles:
                node["inputs"][name] = [value[0], 1]  # LoadTrainingDataset's CONDITIONING output
    del prompt[one(prompt, "CLIPLoader")]


def test_qwen_image_example_edits_a_photo_and_round_trips(server, info):
    prompt = ui_to_api(load_example("photo_edit_qwen_image"), info)
    prompt = with_overrides(prompt, {
        "UNETLoader": {"unet_name": tiny.QWEN_DIFFUSION_MODEL},
        "VAELoader": {"vae_name": tiny.WAN_VAE},  # Qwen-Image's VAE is the Wan 2.1 VAE
        "ImageScale": {"width": SIZE, "height": SIZE},
        "EditFriendlyDDPMInversion": {"steps": STEPS, "seed": 4002},
        "EditFriendlySampler": {"skip": scaled_skip},
    })
    inversion = prompt[one(prompt, "EditFriendlyDDPMInversion")]["inputs"]
    sampler = prompt[one(prompt, "EditFriendlySampler")]["inputs"]
    assert sampler["skip"] > 0
    # The three CLIPTextEncode nodes (source, negative, target) become seeded conditionings of the right width.
    roles = {inversion["positive"][0]: "source", inversion["negative"][0]: "negative", sampler["positive"][0]: "target"}
    stand_in_qwen_conditionings(server, prompt, roles)
    probes = add_round_trip_probes(prompt, "qwen")
    entry = run(server, info, prompt)

    check_round_trip_and_edit(server, entry, probes, (1, 16, 1, SIZE // 8, SIZE // 8))
    (image,) = [path for path in server.output_images({"outputs": {one(prompt, "SaveImage"): entry["outputs"][one(prompt, "SaveImage")]}})]
    stitched = read_png(image)
    assert stitched.shape == (SIZE, 2 * SIZE, 3) and np.isfinite(stitched).all()
    assert np.abs(stitched[:, SIZE:] - stitched[:, :SIZE]).mean() > 0, "the saved edit is the input"


def test_qwen_image_flowedit_example_edits_a_photo_and_gives_the_input_back(server, info):
    prompt = ui_to_api(load_example("flowedit_qwen_image"), info)
    prompt = with_overrides(prompt, {
        "UNETLoader": {"unet_name": tiny.QWEN_DIFFUSION_MODEL},
        "VAELoader": {"vae_name": tiny.WAN_VAE},
        "ImageScale": {"width": SIZE, "height": SIZE},
        "EditFriendlyFlowEdit": {"steps": STEPS, "skip": lambda skip: scaled_skip(skip, shipped_steps=examples.FLOWEDIT_STEPS), "seed": 4003},
    })
    flowedit = one(prompt, "EditFriendlyFlowEdit")
    edit = prompt[flowedit]["inputs"]
    assert 0 < edit["skip"] < STEPS
    roles = {edit["source_positive"][0]: "source", edit["negative"][0]: "negative", edit["positive"][0]: "target"}
    stand_in_qwen_conditionings(server, prompt, roles)
    # A copy of the node with the source prompt and the source CFG as target: FlowEdit's update is then 0.
    prompt["900"] = {"class_type": "EditFriendlyFlowEdit", "inputs": {**edit, "positive": edit["source_positive"], "cfg": edit["source_cfg"]}}
    probes = {"901": (edit["latent_image"], "source"), "902": (["900", 0], "round_trip"), "903": ([flowedit, 0], "edit")}
    for node_id, (samples, name) in probes.items():
        prompt[node_id] = {"class_type": "SaveLatent", "inputs": {"samples": samples, "filename_prefix": f"video_test/flowedit_{name}"}}
    entry = run(server, info, prompt)

    source, round_trip, edited = (saved_latent(server, entry, node_id) for node_id in probes)
    assert source.shape == round_trip.shape == edited.shape == (1, 16, 1, SIZE // 8, SIZE // 8)
    assert torch.isfinite(edited).all() and source.abs().max() > 0
    assert (round_trip - source).abs().max().item() <= ROUND_TRIP_TOLERANCE * max(1.0, source.abs().max().item())
    assert (edited - source).abs().mean().item() > 1e-3, "the target prompt changed nothing"
    save = one(prompt, "SaveImage")
    (image,) = server.output_images({"outputs": {save: entry["outputs"][save]}})
    stitched = read_png(image)
    assert stitched.shape == (SIZE, 2 * SIZE, 3) and np.isfinite(stitched).all()
    assert np.abs(stitched[:, SIZE:] - stitched[:, :SIZE]).mean() > 0, "the saved edit is the input"
