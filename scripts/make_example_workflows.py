#!/usr/bin/env python
"""Writes the pack's example workflows (ComfyUI's UI format, as the frontend saves them) into
example_workflows/. ComfyUI serves that folder as templates under Workflow > Browse Templates.

The workflows are generated so that their links, slots and node order stay consistent; edit this
file and run it again (`python scripts/make_example_workflows.py`) rather than editing the JSON.
"""

from __future__ import annotations

import json
import pathlib
import sys
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
# The SD1.5 checkpoint of the frontend's default graph, declared as ComfyUI's bundled templates declare it
# (node properties "models": name, url, directory; name and url as in the bundled default.json template).
# The frontend shows this to a user who lacks the file and offers the download; the pack downloads nothing.
CHECKPOINT = "v1-5-pruned-emaonly-fp16.safetensors"
CHECKPOINT_URL = "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors?download=true"
CHECKPOINT_MODELS = [{"name": CHECKPOINT, "url": CHECKPOINT_URL, "directory": "checkpoints"}]
IMAGE = "chelsea-cat.png"
# Said in the note of every example that loads IMAGE: the frontend's template browser opens the workflow,
# but the picture is only in this pack's folder, not in ComfyUI's input folder.
IMAGE_LINE = f"**Before queueing**: copy `example_workflows/{IMAGE}` from this pack into `ComfyUI/input/` (or pick your own image)."
SOURCE_PROMPT = "a close-up photo of a tabby cat"
NEGATIVE_PROMPT = ""
STEPS, SOURCE_CFG, TARGET_CFG, SKIP = 100, 3.5, 15.0, 36

# Socket layout (inputs, outputs) of the nodes the examples use, as ComfyUI 0.3.75 declares them.
SOCKETS = {
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "VAEEncode": ([("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "EditFriendlyDDPMInversion": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")],
        [("noise_maps", "EF_NOISE_MAPS")],
    ),
    "EditFriendlySampler": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("noise_maps", "EF_NOISE_MAPS")],
        [("LATENT", "LATENT")],
    ),
    "EditFriendlyNoiseMapTransform": ([("noise_maps", "EF_NOISE_MAPS"), ("mask", "MASK", True)], [("noise_maps", "EF_NOISE_MAPS")]),
    "ImageStitch": ([("image1", "IMAGE"), ("image2", "IMAGE", True)], [("IMAGE", "IMAGE")]),
    "ImageBlend": ([("image1", "IMAGE"), ("image2", "IMAGE")], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "SolidMask": ([], [("MASK", "MASK")]),
    "MaskComposite": ([("destination", "MASK"), ("source", "MASK")], [("MASK", "MASK")]),
    "MarkdownNote": ([], []),
    "EditFriendlySaveNoiseMaps": ([("noise_maps", "EF_NOISE_MAPS")], []),
    "EditFriendlyLoadNoiseMaps": ([], [("noise_maps", "EF_NOISE_MAPS")]),
    "EditFriendlySamplerCustom": (
        [("noise_maps", "EF_NOISE_MAPS"), ("mask", "MASK", True)],
        [("SAMPLER", "SAMPLER"), ("SIGMAS", "SIGMAS"), ("LATENT", "LATENT")],
    ),
    "EditFriendlyNoiseMapPreview": ([("noise_maps", "EF_NOISE_MAPS")], [("maps", "IMAGE"), ("statistics", "IMAGE")]),
    "CFGGuider": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")], [("GUIDER", "GUIDER")]),
    "DisableNoise": ([], [("NOISE", "NOISE")]),
    "SamplerCustomAdvanced": (
        [("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
        [("output", "LATENT"), ("denoised_output", "LATENT")],
    ),
    "PreviewImage": ([("images", "IMAGE")], []),
    "UNETLoader": ([], [("MODEL", "MODEL")]),
    "CLIPLoader": ([], [("CLIP", "CLIP")]),
    "VAELoader": ([], [("VAE", "VAE")]),
    "ModelSamplingSD3": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "ModelSamplingAuraFlow": ([("model", "MODEL")], [("MODEL", "MODEL")]),
    "LoadVideo": ([], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "ImageFromBatch": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    "ImageScale": ([("image", "IMAGE")], [("IMAGE", "IMAGE")]),
    # fps is a widget that also takes a link (the frontend lists such an input with its widget's name).
    "CreateVideo": ([("images", "IMAGE"), ("audio", "AUDIO", True), ("fps", "FLOAT", False, "widget")], [("VIDEO", "VIDEO")]),
    "SaveVideo": ([("video", "VIDEO")], []),
    "EditFriendlyImplicitMask": (
        [("model", "MODEL"), ("noise_maps", "EF_NOISE_MAPS"), ("source_positive", "CONDITIONING"), ("positive", "CONDITIONING")],
        [("MASK", "MASK")],
    ),
    "MaskToImage": ([("mask", "MASK")], [("IMAGE", "IMAGE")]),
    "EditFriendlyPromptPair": ([("clip", "CLIP")], [("source", "CONDITIONING"), ("target", "CONDITIONING")]),
    "EditFriendlyAttentionControl": (
        [("model", "MODEL"), ("noise_maps", "EF_NOISE_MAPS"), ("source_positive", "CONDITIONING"), ("positive", "CONDITIONING"),
         ("negative", "CONDITIONING")],
        [("GUIDER", "GUIDER")],
    ),
    "EditFriendlyEditConcept": ([("conditioning", "CONDITIONING"), ("concepts", "EF_EDIT_CONCEPTS", True)], [("concepts", "EF_EDIT_CONCEPTS")]),
    "EditFriendlySemanticGuider": (
        [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("concepts", "EF_EDIT_CONCEPTS"), ("mask", "MASK", True)],
        [("GUIDER", "GUIDER")],
    ),
    "EditFriendlyFlowEdit": (
        [("model", "MODEL"), ("source_positive", "CONDITIONING"), ("source_negative", "CONDITIONING"), ("positive", "CONDITIONING"),
         ("negative", "CONDITIONING"), ("latent_image", "LATENT"), ("mask", "MASK", True)],
        [("LATENT", "LATENT")],
    ),
}
# The sampler as the frontend shows it with its optional mask socket (the first examples predate it).
SAMPLER_WITH_MASK = (SOCKETS["EditFriendlySampler"][0] + [("mask", "MASK", True)], SOCKETS["EditFriendlySampler"][1])
COLUMN, ROW = 380, 60
# The layout: `col` and `row` say where a node goes (columns COLUMN pixels apart, rows ROW pixels), but a node is
# never placed over another as the frontend draws them: in a column, a node starts no higher than ROW_GAP below the one
# above it (title bar included), and a column starts COLUMN_GAP right of any wider node to its left that it would meet.
TITLE_HEIGHT = 30  # LiteGraph.NODE_TITLE_HEIGHT: the title bar is drawn above a node's pos
COLUMN_GAP, ROW_GAP = 40, 30
# The smallest size (width, height below the title bar) each node kind is drawn at, as read back from the frontends
# the browser tests run (1.32.9 and 1.58.1 on the canvas, 1.58.1 with Vue nodes, whose nodes are the tallest; the
# largest of the three, rounded up to 10 px): a node stored smaller is drawn this large, and would cover what the
# layout put below it. tests/test_browser_layout.py checks the result in each of those frontends.
MIN_SIZES = {
    "CheckpointLoaderSimple": (320, 130),
    "VAEEncode": (230, 60),
    "VAEDecode": (230, 60),
    "EditFriendlyDDPMInversion": (320, 370),  # every optional widget is shown, whatever the workflow stores
    "EditFriendlySampler": (320, 200),
    "EditFriendlyLoadNoiseMaps": (320, 110),
    "EditFriendlySaveNoiseMaps": (320, 100),
    "EditFriendlySamplerCustom": (320, 130),
    "EditFriendlyNoiseMapPreview": (320, 170),
    "EditFriendlyNoiseMapTransform": (320, 340),
    "ImageStitch": (320, 170),
    "SolidMask": (260, 120),
    "UNETLoader": (320, 120),
    "CLIPLoader": (320, 120),
    "VAELoader": (320, 90),
    "ModelSamplingSD3": (260, 70),
    "ModelSamplingAuraFlow": (260, 70),
    "ImageScale": (260, 150),
    "DisableNoise": (220, 40),
    "GetVideoComponents": (260, 80),
    "ImageFromBatch": (260, 90),
    "CreateVideo": (260, 80),
    "SamplerCustomAdvanced": (230, 120),
    "EditFriendlyAttentionControl": (240, 230),
    "EditFriendlyPromptPair": (300, 200),
    "EditFriendlyImplicitMask": (320, 230),
    "EditFriendlyEditConcept": (230, 220),
    "EditFriendlySemanticGuider": (240, 170),
    "EditFriendlyFlowEdit": (230, 410),
}
# A title the frontend widens the node for: about this many pixels per character plus the title bar's dot and margins
# (more than the frontends' font needs: the widest title here, 51 characters, is drawn 393 px wide).
TITLE_CHARACTER, TITLE_MARGIN = 7, 50


def fitted_size(kind: str, size, title: str | None) -> list[int]:
    """`size`, enlarged to what the frontend draws at least for `kind` and `title`."""
    width, height = MIN_SIZES.get(kind, (0, 0))
    if title and kind != "MarkdownNote":
        width = max(width, int(-(-(len(title) * TITLE_CHARACTER + TITLE_MARGIN) // 10) * 10))
    return [max(size[0], width), max(size[1], height)]


class Workflow:
    def __init__(self, name: str):
        self.name = name
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self.grid: dict[int, tuple[int, int]] = {}  # node id -> (col, row), placed by layout()

    def node(self, kind, widgets=(), col=0, row=0, title=None, size=(320, 120), sockets=None, **inputs) -> int:
        node_id = len(self.nodes) + 1
        socket_inputs, socket_outputs = sockets or SOCKETS[kind]
        node = {
            "id": node_id,
            "type": kind,
            "pos": [col * COLUMN, row * ROW],
            "size": fitted_size(kind, size, title),
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": name, "type": kind_, "links": [], "slot_index": i} for i, (name, kind_) in enumerate(socket_outputs)],
            "properties": {"Node name for S&R": kind} if kind != "MarkdownNote" else {},
            "widgets_values": list(widgets),
        }
        if title:
            node["title"] = title
        if kind.startswith("EditFriendly"):
            node["properties"]["cnr_id"] = "edit-friendly-ddpm"
        elif kind != "MarkdownNote":
            node["properties"]["cnr_id"] = "comfy-core"
        if kind == "CheckpointLoaderSimple" and list(widgets) == [CHECKPOINT]:
            node["properties"]["models"] = [dict(model) for model in CHECKPOINT_MODELS]
        if widgets and widgets[0] in MODEL_FILES:
            node["properties"]["models"] = [dict(MODEL_FILES[widgets[0]])]
        self.nodes.append(node)
        self.grid[node_id] = (col, row)
        for socket in socket_inputs:
            name, kind_ = socket[:2]
            if len(socket) > 3 and name not in inputs:
                continue  # a widget shown as a widget: no input socket unless something is linked to it
            entry = {"name": name, "type": kind_, "link": None}
            if len(socket) > 3:
                entry["widget"] = {"name": name}
            elif len(socket) > 2:
                entry["shape"] = 7  # how the frontend marks an optional input
            node["inputs"].append(entry)
            if name in inputs:
                origin, slot = inputs.pop(name)
                self.connect(origin, slot, node_id, name)
        if inputs:
            raise KeyError(f"{kind} has no inputs {sorted(inputs)}")
        return node_id

    def connect(self, origin: int, slot: int, target: int, name: str) -> None:
        link_id = len(self.links) + 1
        source, sink = self.nodes[origin - 1], self.nodes[target - 1]
        index = next(i for i, s in enumerate(sink["inputs"]) if s["name"] == name)
        kind = source["outputs"][slot]["type"]
        if kind != sink["inputs"][index]["type"]:
            raise TypeError(f"{source['type']}[{slot}] is {kind}, {sink['type']}.{name} takes {sink['inputs'][index]['type']}")
        sink["inputs"][index]["link"] = link_id
        source["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, origin, slot, target, index, kind])

    def note(self, text, col, row, title="Note", size=(420, 220)) -> int:
        if any(node["type"] == "LoadImage" and node["widgets_values"][0] == IMAGE for node in self.nodes):
            text, size = f"{text.rstrip()}\n\n{IMAGE_LINE}", (size[0], size[1] + 40)
        node_id = self.node("MarkdownNote", [text], col=col, row=row, title=title, size=size)
        self.nodes[node_id - 1]["color"], self.nodes[node_id - 1]["bgcolor"] = "#432", "#653"
        return node_id

    def layout(self) -> None:
        """Places every node at its column and row, moved down or right where the nodes before would cover it."""
        columns: dict[int, list[dict]] = {}
        for node in self.nodes:
            columns.setdefault(self.grid[node["id"]][0], []).append(node)
        for col, stack in columns.items():
            stack.sort(key=lambda node: (self.grid[node["id"]][1], node["id"]))
            bottom = None  # where the node above ends
            for node in stack:
                y = self.grid[node["id"]][1] * ROW
                if bottom is not None:
                    y = max(y, bottom + ROW_GAP + TITLE_HEIGHT)
                node["pos"] = [0, y]
                bottom = y + node["size"][1]

        def beside(a, b):  # whether a and b, title bars and ROW_GAP included, share a horizontal band
            return a["pos"][1] - TITLE_HEIGHT < b["pos"][1] + b["size"][1] + ROW_GAP and b["pos"][1] - TITLE_HEIGHT < a["pos"][1] + a["size"][1] + ROW_GAP

        # Columns COLUMN apart, or further where a wider node of a column to the left reaches a node of this one.
        placed: list[dict] = []
        x = 0
        for col in range(max(columns) + 1):
            stack = columns.get(col, [])
            if col:
                x += COLUMN
            for node in stack:
                x = max([x] + [other["pos"][0] + other["size"][0] + COLUMN_GAP for other in placed if beside(node, other)])
            for node in stack:
                node["pos"][0] = x
            placed += stack

    def to_json(self) -> dict:
        self.layout()
        # The execution order the frontend stores: a topological order of the graph.
        depth = {}

        def level(node_id):
            if node_id not in depth:
                parents = [link[1] for link in self.links if link[3] == node_id]
                depth[node_id] = 1 + max((level(p) for p in parents), default=-1)
            return depth[node_id]

        for order, node_id in enumerate(sorted((n["id"] for n in self.nodes), key=lambda i: (level(i), i))):
            self.nodes[node_id - 1]["order"] = order
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"edit-friendly-ddpm/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}},
            "version": 0.4,
        }


def _common(wf: Workflow, source_prompt=SOURCE_PROMPT, variations=None, inversion_widgets=None, target_prompt=None):
    """Checkpoint, image, encode, source prompt, negative prompt and inversion (paper defaults unless `inversion_widgets`).

    With `target_prompt`, the source prompt is the first output of an Edit-Friendly Prompt Pair and the target its second.
    """
    ckpt = wf.node("CheckpointLoaderSimple", [CHECKPOINT], col=0, row=0, size=(320, 100))
    image = wf.node("LoadImage", [IMAGE, "image"], col=0, row=3, size=(320, 360))
    latent = wf.node("VAEEncode", col=1, row=9, pixels=(image, 0), vae=(ckpt, 2), size=(220, 50))
    if target_prompt is None:
        source = wf.node("CLIPTextEncode", [source_prompt], col=1, row=0, title="Source prompt (describes the input image)", clip=(ckpt, 1))
    else:
        source = wf.node("EditFriendlyPromptPair", [source_prompt, target_prompt], col=1, row=0, size=(320, 260),
                         title="Source and target prompts (one word swapped)", clip=(ckpt, 1))
    negative = wf.node("CLIPTextEncode", [NEGATIVE_PROMPT], col=1, row=4, title="Negative prompt", clip=(ckpt, 1))
    widgets = inversion_widgets or [STEPS, SOURCE_CFG, "ddim_uniform", 1.0, 0, "fixed"] + ([variations] if variations else [])
    inversion = wf.node(
        "EditFriendlyDDPMInversion", widgets, col=2, row=0, size=(320, 250 + 20 * (len(widgets) - 6)),
        model=(ckpt, 0), positive=(source, 0), negative=(negative, 0), latent_image=(latent, 0),
    )
    return ckpt, image, negative, inversion, source, latent


def _save_beside_input(wf: Workflow, samples, vae, image, name: str, col: int, decode_row: int = 4):
    """Decodes `samples` at column `col`, then stitches the input and the edit side by side and saves them as
    edit_friendly/`name` in the next two columns."""
    decode = wf.node("VAEDecode", col=col, row=decode_row, samples=samples, vae=vae, size=(220, 50))
    stitch = wf.node("ImageStitch", ["right", True, 0, "white"], col=col + 1, row=0, title="Input | edit", size=(320, 150), image1=image, image2=(decode, 0))
    wf.node("SaveImage", [f"edit_friendly/{name}"], col=col + 2, row=0, size=(400, 420), images=(stitch, 0))


PARAMETERS_NOTE = f"""## Edit-friendly DDPM inversion (paper defaults for Stable Diffusion 1.5)

* **Inversion**: `steps` {STEPS}, `cfg` {SOURCE_CFG} (source CFG), `scheduler` ddim_uniform, `eta` 1.
  The source prompt describes the input image.
* **Sampler**: target `cfg` {TARGET_CFG:g} (useful range 7-18), `skip` {SKIP} of {STEPS} (useful range 0-40).
  Larger skip keeps more of the input's layout and colours; smaller follows the target prompt more freely.
* The same prompt and CFG with skip 0 give the input back exactly.
* Any image works (512x512 suits SD1.5) with an SD1.5 checkpoint.
"""


def text_editing() -> Workflow:
    wf = Workflow("text_guided_editing")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=2, row=5, title="Target prompt (the image as you want it)", clip=(ckpt, 1))
    sampler = wf.node("EditFriendlySampler", [TARGET_CFG, SKIP], col=3, row=0, size=(320, 150),
                      model=(ckpt, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0))
    _save_beside_input(wf, (sampler, 0), (ckpt, 2), (image, 0), "text_edit", col=3)
    wf.note(PARAMETERS_NOTE, col=3, row=6, title="Parameters", size=(460, 300))
    return wf


def reconstruction() -> Workflow:
    wf = Workflow("exact_reconstruction")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    sampler = wf.node("EditFriendlySampler", [SOURCE_CFG, 0], col=3, row=0, size=(320, 150), title="Edit-Friendly Sampler (same prompt and CFG, skip 0)",
                      model=(ckpt, 0), positive=(source, 0), negative=(negative, 0), noise_maps=(inversion, 0))
    recon = wf.node("VAEDecode", col=3, row=4, title="Decode reconstruction", samples=(sampler, 0), vae=(ckpt, 2), size=(220, 50))
    original = wf.node("VAEDecode", col=3, row=6, title="Decode input latent", samples=(latent, 0), vae=(ckpt, 2), size=(220, 50))
    difference = wf.node("ImageBlend", [1.0, "difference"], col=4, row=6, title="Difference (black = exact)", image1=(recon, 0), image2=(original, 0))
    wf.node("SaveImage", ["edit_friendly/reconstruction"], col=4, row=0, size=(320, 300), images=(recon, 0))
    wf.node("SaveImage", ["edit_friendly/decoded_input"], col=5, row=0, size=(320, 300), images=(original, 0))
    wf.node("SaveImage", ["edit_friendly/difference"], col=5, row=6, size=(320, 300), images=(difference, 0))
    wf.note(
        "## Exact reconstruction\n\nThe sampler replays the noise maps with the **same prompt and CFG** as the inversion and "
        "`skip` 0, so the latent comes back to float precision: the decoded reconstruction equals the decoded input "
        "and the difference image is black. Any seed, step count or scheduler that ends at sigma 0 does this.",
        col=2, row=7, title="What this shows", size=(360, 200),
    )
    return wf


def multiple_edits() -> Workflow:
    wf = Workflow("multiple_edits_one_inversion")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    edits = [
        ("a close-up photo of a tiger", TARGET_CFG, SKIP),
        ("a close-up photo of a red fox", TARGET_CFG, SKIP),
        ("a watercolor painting of a tabby cat", TARGET_CFG, 30),
        ("a close-up photo of a tiger", TARGET_CFG, 20),
    ]
    previous = image
    for index, (prompt, cfg, skip) in enumerate(edits):
        row = index * 6
        target = wf.node("CLIPTextEncode", [prompt], col=3, row=row, title=f"Target prompt {index + 1}", clip=(ckpt, 1))
        sampler = wf.node("EditFriendlySampler", [cfg, skip], col=4, row=row, size=(320, 150), title=f"Edit {index + 1}: skip {skip}",
                          model=(ckpt, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0))
        decode = wf.node("VAEDecode", col=5, row=row, samples=(sampler, 0), vae=(ckpt, 2), size=(220, 50))
        previous = wf.node("ImageStitch", ["right", True, 0, "white"], col=6, row=row, size=(320, 150), image1=(previous, 0), image2=(decode, 0))
    wf.node("SaveImage", ["edit_friendly/multiple_edits"], col=7, row=0, size=(600, 300), images=(previous, 0))
    wf.note(
        "## One inversion, many edits\n\nAll samplers share one **Edit-Friendly DDPM Inversion**, and ComfyUI runs it "
        "once; each edit then costs `steps - skip` model calls. Change a target prompt, CFG or skip and queue again: "
        "the inversion is cached and only the changed edit runs.\n\n" + PARAMETERS_NOTE,
        col=2, row=7, title="What this shows", size=(360, 420),
    )
    return wf


def noise_map_manipulations() -> Workflow:
    wf = Workflow("noise_map_shift_and_colour")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    shift = wf.node("EditFriendlyNoiseMapTransform", [8, 0, "noise", 0, "#ff0000", 0.0, 0.0, 1.0], col=3, row=0, size=(320, 280),
                    title="Shift right by 8 latent pixels (64 image pixels)", noise_maps=(inversion, 0))
    zeros = wf.node("SolidMask", [0.0, 512, 512], col=2, row=10, size=(260, 110))
    square = wf.node("SolidMask", [1.0, 256, 256], col=2, row=13, size=(260, 110))
    mask = wf.node("MaskComposite", [128, 128, "add"], col=3, row=10, title="Recolour the centre square", size=(260, 150), destination=(zeros, 0), source=(square, 0))
    colour = wf.node("EditFriendlyNoiseMapTransform", [0, 0, "noise", 0, "#3060ff", 1.0, 0.0, 0.6], col=3, row=5, size=(320, 280),
                     title="Move the masked region towards blue", noise_maps=(inversion, 0), mask=(mask, 0))
    previous = image
    for index, (maps, title) in enumerate(((shift, "Regenerate shifted"), (colour, "Regenerate recoloured"))):
        row = index * 6
        sampler = wf.node("EditFriendlySampler", [SOURCE_CFG, 0], col=4, row=row, size=(320, 150), title=title,
                          model=(ckpt, 0), positive=(source, 0), negative=(negative, 0), noise_maps=(maps, 0))
        decode = wf.node("VAEDecode", col=5, row=row, samples=(sampler, 0), vae=(ckpt, 2), size=(220, 50))
        previous = wf.node("ImageStitch", ["right", True, 0, "white"], col=6, row=row, size=(320, 150), image1=(previous, 0), image2=(decode, 0))
    wf.node("SaveImage", ["edit_friendly/noise_map_edits"], col=7, row=0, size=(600, 300), images=(previous, 0))
    wf.note(
        "## Editing the noise maps\n\n* **Shift**: shifting every map (and the start latent) by `dx`, `dy` latent pixels "
        "shifts the regenerated image; `fill` decides what appears in the uncovered band.\n"
        "* **Colour**: adding a colour offset to the maps inside the mask, over `start_percent`..`end_percent` of the "
        "steps, recolours that region while keeping its texture. `color_strength` 1 moves it about all the way.\n\n"
        "Both regenerate with the source prompt and CFG and skip 0, so only the transform changes the image.",
        col=2, row=5, title="What this shows", size=(360, 300),
    )
    return wf


MAPS_FILE = "noise_maps/ef_00001_.safetensors"  # where Save Noise Maps' default prefix puts the first file


def save_noise_maps() -> Workflow:
    wf = Workflow("save_noise_maps")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    wf.node("EditFriendlySaveNoiseMaps", ["noise_maps/ef"], col=3, row=0, size=(320, 90), noise_maps=(inversion, 0))
    wf.note(
        "## Save an inversion for later\n\nThe inversion is the expensive part (one full sampling pass). **Save Noise Maps** "
        "writes its maps to `ComfyUI/output/noise_maps/ef_00001_.safetensors` (numbered; an existing file is never "
        "overwritten).\n\nTo edit from them later, move or copy the file into `ComfyUI/input/noise_maps/` and open the "
        "*edit from saved noise maps* example. The file holds the source latent, the schedule, the seed and the source "
        "CFG; it does not hold the model, so edit with the same base model.",
        col=3, row=3, title="What this shows", size=(380, 300),
    )
    return wf


def load_noise_maps() -> Workflow:
    wf = Workflow("edit_from_saved_noise_maps")
    ckpt = wf.node("CheckpointLoaderSimple", [CHECKPOINT], col=0, row=0, size=(320, 100))
    maps = wf.node("EditFriendlyLoadNoiseMaps", [MAPS_FILE], col=0, row=3, size=(320, 90))
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=1, row=0, title="Target prompt (the image as you want it)", clip=(ckpt, 1))
    negative = wf.node("CLIPTextEncode", [NEGATIVE_PROMPT], col=1, row=4, title="Negative prompt", clip=(ckpt, 1))
    sampler = wf.node("EditFriendlySampler", [TARGET_CFG, SKIP], col=2, row=0, size=(320, 150),
                      model=(ckpt, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(maps, 0))
    decode = wf.node("VAEDecode", col=2, row=4, samples=(sampler, 0), vae=(ckpt, 2), size=(220, 50))
    wf.node("SaveImage", ["edit_friendly/from_saved_maps"], col=3, row=0, size=(320, 300), images=(decode, 0))
    wf.note(
        "## Edit from saved noise maps\n\nNo image and no inversion here: **Load Noise Maps** reads maps saved by the "
        "*save noise maps* example. Put the file into `ComfyUI/input/` or `ComfyUI/input/noise_maps/` and press **R** "
        "(refresh) so that the file list shows it. Every file is checked before use.\n\n"
        "* Pick the checkpoint the maps were made with; maps of another model family are refused.\n"
        f"* The source prompt with the source CFG ({SOURCE_CFG}) gives the original image back; another prompt edits "
        f"it (target `cfg` {TARGET_CFG:g}, `skip` {SKIP} of {STEPS}, as in text-guided editing).",
        col=0, row=6, title="What this shows", size=(420, 300),
    )
    return wf


def custom_sampling() -> Workflow:
    wf = Workflow("sampler_custom_advanced")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=2, row=5, title="Target prompt (the image as you want it)", clip=(ckpt, 1))
    custom = wf.node("EditFriendlySamplerCustom", [SKIP], col=3, row=0, size=(320, 120), noise_maps=(inversion, 0))
    guider = wf.node("CFGGuider", [TARGET_CFG], col=3, row=3, size=(320, 120), title="CFGGuider (target prompt, target CFG)",
                     model=(ckpt, 0), positive=(target, 0), negative=(negative, 0))
    noise = wf.node("DisableNoise", col=3, row=6, size=(220, 30), title="DisableNoise (the maps are the noise)")
    sampled = wf.node("SamplerCustomAdvanced", col=4, row=0, size=(300, 140),
                      noise=(noise, 0), guider=(guider, 0), sampler=(custom, 0), sigmas=(custom, 1), latent_image=(custom, 2))
    _save_beside_input(wf, (sampled, 0), (ckpt, 2), (image, 0), "custom_sampling", col=4)
    wf.note(
        "## Edit through SamplerCustomAdvanced\n\n**Edit-Friendly Sampler (Custom Sampling)** turns the noise maps into a "
        "`SAMPLER`, the `SIGMAS` left after `skip`, and the `LATENT` to start from; **SamplerCustomAdvanced** runs them "
        "with any guider. Here `CFGGuider` gives the same edit as the Edit-Friendly Sampler; swap in `DualCFGGuider`, "
        "`PerpNegGuider` or `BasicGuider` (Flux) as you like. The noise input is not used (the maps are the noise), "
        "hence `DisableNoise`.\n\n"
        f"Guiding with the source prompt and the source CFG ({SOURCE_CFG}) gives the input back exactly.",
        col=4, row=6, title="What this shows", size=(400, 300),
    )
    return wf


def masked_edit() -> Workflow:
    wf = Workflow("masked_edit")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=2, row=5, title="Target prompt (the image as you want it)", clip=(ckpt, 1))
    zeros = wf.node("SolidMask", [0.0, 512, 512], col=2, row=10, size=(260, 110))
    square = wf.node("SolidMask", [1.0, 256, 256], col=2, row=13, size=(260, 110))
    mask = wf.node("MaskComposite", [128, 128, "add"], col=3, row=10, title="Edit only the centre square", size=(260, 150), destination=(zeros, 0), source=(square, 0))
    sampler = wf.node("EditFriendlySampler", [TARGET_CFG, SKIP], col=3, row=0, size=(320, 170), sockets=SAMPLER_WITH_MASK,
                      model=(ckpt, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0), mask=(mask, 0))
    _save_beside_input(wf, (sampler, 0), (ckpt, 2), (image, 0), "masked_edit", col=3)
    wf.note(
        "## Edit inside a mask only\n\nThe sampler's optional `mask` (1 = edit) confines the edit: outside it the latent "
        "stays the source latent, inside it follows the target prompt; a soft mask blends. The mask is resized to the "
        "latent when its aspect ratio matches the image's.\n\nHere the mask is the centre square. To paint your own, "
        "right-click **Load Image** > *Open in MaskEditor* and connect its `MASK` output to the sampler's `mask` instead "
        "(Load Image's mask is 1 where you painted).",
        col=3, row=5, title="What this shows", size=(380, 300),
    )
    return wf


# DiffEdit's comparison on the maps' own path: the mask covers where the two prompts' predictions differ (threshold
# 0.5 of the strongest difference, steps 25-75%, grown by one latent pixel); the sampler edits inside it only.
IMPLICIT_MASK_SETTINGS = [0.5, 0.25, 0.75, 1]
IMPLICIT_MASK_TARGET = "a close-up photo of a tiger"


def implicit_mask_edit() -> Workflow:
    wf = Workflow("implicit_mask_edit")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    target = wf.node("CLIPTextEncode", [IMPLICIT_MASK_TARGET], col=2, row=6, title="Target prompt (the image as you want it)", clip=(ckpt, 1))
    mask = wf.node("EditFriendlyImplicitMask", IMPLICIT_MASK_SETTINGS, col=3, row=0, size=(320, 230),
                   model=(ckpt, 0), noise_maps=(inversion, 0), source_positive=(source, 0), positive=(target, 0))
    sampler = wf.node("EditFriendlySampler", [TARGET_CFG, SKIP], col=4, row=0, size=(320, 170), sockets=SAMPLER_WITH_MASK,
                      model=(ckpt, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0), mask=(mask, 0))
    shown = wf.node("MaskToImage", col=3, row=6, size=(220, 30), title="The mask, as a picture", mask=(mask, 0))
    wf.node("PreviewImage", col=3, row=8, size=(260, 260), images=(shown, 0))
    _save_beside_input(wf, (sampler, 0), (ckpt, 2), (image, 0), "implicit_mask_edit", col=4)
    wf.note(
        "## Edit where the prompts disagree, keep the rest exactly\n\n**Edit-Friendly Implicit Mask** compares the "
        "source and target prompts' predictions at the latents the maps recorded along the image's own path, and masks "
        "where they differ most (DiffEdit's idea, with no noise drawn). Given to the sampler's `mask`, it confines the "
        "edit: inside, the cat follows the target prompt; outside, the output is the source latent exactly, so the "
        "background is untouched without painting a mask.\n\n"
        f"* `threshold` {IMPLICIT_MASK_SETTINGS[0]}: share of the strongest difference a pixel needs; lower = larger mask.\n"
        f"* `start_percent` {IMPLICIT_MASK_SETTINGS[1]}, `end_percent` {IMPLICIT_MASK_SETTINGS[2]}: the steps compared "
        "(one model call of both prompts each: half an inversion at these values).\n"
        f"* `grow` {IMPLICIT_MASK_SETTINGS[3]}: latent pixels added around the mask.\n\n"
        "The mask is at the latent's resolution (1/8 of the image's side); the preview shows it small.",
        col=4, row=6, title="What this shows", size=(420, 420),
    )
    return wf


VARIATIONS = 4


def variations() -> Workflow:
    wf = Workflow("batched_variations")
    ckpt, image, negative, inversion, source, latent = _common(wf, variations=VARIATIONS)
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=2, row=6, title="Target prompt (the image as you want it)", clip=(ckpt, 1))
    sampler = wf.node("EditFriendlySampler", [TARGET_CFG, SKIP], col=3, row=0, size=(320, 150),
                      model=(ckpt, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0))
    decode = wf.node("VAEDecode", col=3, row=4, samples=(sampler, 0), vae=(ckpt, 2), size=(220, 50))
    wf.node("SaveImage", ["edit_friendly/variations"], col=4, row=0, size=(600, 420), images=(decode, 0))
    wf.note(
        f"## {VARIATIONS} different edits from one run\n\nWith `variations` {VARIATIONS} the inversion makes maps for the "
        f"seeds `seed` .. `seed + {VARIATIONS - 1}` in one batched pass, and one sampler turns them into {VARIATIONS} "
        "edits of the same image under the same prompt, as a batch of images. The paper's point: different seeds give "
        "different, equally faithful edits, so pick the one you like.\n\nEach variation alone still gives the input "
        "back with the source prompt and CFG.",
        col=3, row=6, title="What this shows", size=(380, 280),
    )
    return wf


def noise_map_preview() -> Workflow:
    wf = Workflow("noise_map_preview")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    preview = wf.node("EditFriendlyNoiseMapPreview", [8, 0], col=3, row=0, size=(320, 100), noise_maps=(inversion, 0))
    wf.node("PreviewImage", col=4, row=0, size=(520, 360), title="Noise maps (chosen steps)", images=(preview, 0))
    wf.node("PreviewImage", col=4, row=7, size=(520, 360), title="Per-step statistics", images=(preview, 1))
    wf.note(
        "## Looking at the noise maps\n\n**Noise Map Preview** shows `count` steps' maps, spread from the noisiest to the "
        "last, through the model's preview colours, and a plot of each step's standard deviation and its correlation "
        "with the next step.\n\nUnlike the white noise of ordinary sampling, edit-friendly maps carry the image: their "
        "std departs from 1 and neighbouring steps correlate, which is why they keep the structure when the prompt "
        "changes. `batch_index` picks the image of a batch or a variation.",
        col=3, row=3, title="What this shows", size=(380, 300),
    )
    return wf


FAST_STEPS, FAST_SKIP, FAST_TARGET_CFG = 25, 7, 12.0


def fast_edit() -> Workflow:
    wf = Workflow("fast_edit")
    # Optional inputs after the seed: variations, rule, parallel_steps (0 = as many as memory allows).
    widgets = [FAST_STEPS, SOURCE_CFG, "ddim_uniform", 1.0, 0, "fixed", 1, "dpmpp_2m_sde", 0]
    ckpt, image, negative, inversion, source, _ = _common(wf, inversion_widgets=widgets)
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=2, row=6, title="Target prompt (the image as you want it)", clip=(ckpt, 1))
    edit = wf.node("EditFriendlySampler", [FAST_TARGET_CFG, FAST_SKIP], col=3, row=0, size=(320, 150), title="Edit",
                   model=(ckpt, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0))
    round_trip = wf.node("EditFriendlySampler", [SOURCE_CFG, 0], col=3, row=4, size=(320, 150), title="Round trip (same prompt and CFG, skip 0)",
                         model=(ckpt, 0), positive=(source, 0), negative=(negative, 0), noise_maps=(inversion, 0))
    decoded_edit = wf.node("VAEDecode", col=4, row=0, title="Decode edit", samples=(edit, 0), vae=(ckpt, 2), size=(220, 50))
    decoded_round_trip = wf.node("VAEDecode", col=4, row=4, title="Decode round trip", samples=(round_trip, 0), vae=(ckpt, 2), size=(220, 50))
    both = wf.node("ImageStitch", ["right", True, 0, "white"], col=5, row=0, title="Input | round trip", size=(320, 150),
                   image1=(image, 0), image2=(decoded_round_trip, 0))
    stitch = wf.node("ImageStitch", ["right", True, 0, "white"], col=5, row=4, title="Input | round trip | edit", size=(320, 150),
                     image1=(both, 0), image2=(decoded_edit, 0))
    wf.node("SaveImage", ["edit_friendly/fast_edit"], col=6, row=0, size=(600, 300), images=(stitch, 0))
    wf.note(
        f"## Fast edit: {FAST_STEPS} steps of DPM-Solver++(2M) SDE, step-parallel inversion\n\n"
        f"`rule` dpmpp_2m_sde makes maps for a second-order sampler, so {FAST_STEPS} steps replace the paper's {STEPS}; "
        "`parallel_steps` 0 puts as many inversion steps through the model in one batch as free memory allows (on a "
        "GPU; on a CPU only small latents are batched).\n\n"
        "The round trip (source prompt and CFG, skip 0) still gives the input back exactly: the sampler recognises the "
        "inversion's prompts and CFG and replays its batches.\n\n"
        f"Starting values for the edit: `skip` {FAST_SKIP} of {FAST_STEPS} and target `cfg` {FAST_TARGET_CFG:g}, a smaller "
        f"skip share and a lower CFG than the {STEPS}-step ddpm examples (skip {SKIP}, cfg {TARGET_CFG:g}), because the "
        "second-order term pushes an edit further. These come from a toy model's measurements (README, Benchmarks), not "
        "from Stable Diffusion images: raise skip to keep more of the input, lower it if the edit does not take. For "
        "the paper's quality use rule ddpm with 100 steps.",
        col=2, row=9, title="What this shows", size=(400, 420),
    )
    return wf


# Prompt-to-Prompt on edit-friendly maps with the paper's settings for it: skip 12 of 100, target CFG 9, the target's
# self-attention taken from the source for the first 20% of the replayed steps and its cross-attention for 60%. The
# target swaps one word of SOURCE_PROMPT for one of the same token count (9 tokens each in ComfyUI's SD1 tokenizer).
P2P_TARGET_PROMPT = "a close-up photo of a tabby tiger"
P2P_SKIP, P2P_TARGET_CFG, P2P_SELF_ATTENTION, P2P_CROSS_ATTENTION = 12, 9.0, 0.2, 0.6


def attention_control_edit() -> Workflow:
    wf = Workflow("attention_control_edit")
    ckpt, image, negative, inversion, prompts, latent = _common(wf, target_prompt=P2P_TARGET_PROMPT)
    custom = wf.node("EditFriendlySamplerCustom", [P2P_SKIP], col=3, row=0, size=(320, 120), noise_maps=(inversion, 0))
    guider = wf.node("EditFriendlyAttentionControl", [P2P_TARGET_CFG, P2P_SELF_ATTENTION, P2P_CROSS_ATTENTION], col=3, row=4, size=(320, 230),
                     model=(ckpt, 0), noise_maps=(inversion, 0), source_positive=(prompts, 0), positive=(prompts, 1), negative=(negative, 0))
    noise = wf.node("DisableNoise", col=3, row=10, size=(220, 30), title="DisableNoise (the maps are the noise)")
    sampled = wf.node("SamplerCustomAdvanced", col=4, row=0, size=(300, 140),
                      noise=(noise, 0), guider=(guider, 0), sampler=(custom, 0), sigmas=(custom, 1), latent_image=(custom, 2))
    _save_beside_input(wf, (sampled, 0), (ckpt, 2), (image, 0), "attention_control", col=4)
    wf.note(
        "## Prompt-to-Prompt attention control on edit-friendly maps\n\n"
        "The paper pairs its inversion with Prompt-to-Prompt (P2P). **Edit-Friendly Attention Control** is a `GUIDER`: "
        "beside the target, a source branch replays the maps under the source prompt in the same model call, and the "
        "target's conditional pass attends with the source's attention, which carries the real image's layout:\n\n"
        f"* `self_attention` {P2P_SELF_ATTENTION:g}: the source's self-attention for the first {P2P_SELF_ATTENTION:.0%} of the "
        "replayed steps.\n"
        f"* `cross_attention` {P2P_CROSS_ATTENTION:g}: the source's cross-attention maps for the first {P2P_CROSS_ATTENTION:.0%} "
        "(where each word acts). They map the prompts token for token, so the target swaps words one for one: "
        "*tabby cat* becomes *tabby tiger*, one token each. **Edit-Friendly Prompt Pair** encodes both prompts and keeps "
        "their tokens, so that a target that adds, removes or lengthens a word is refused before sampling, naming the "
        "words (set `cross_attention` to 0 to reword freely).\n"
        f"* The paper's settings for P2P: inversion `steps` {STEPS}, source `cfg` {SOURCE_CFG}; `skip` {P2P_SKIP}, target `cfg` "
        f"{P2P_TARGET_CFG:g}. A smaller skip than the plain edit's {SKIP}: the attention keeps the structure instead.\n\n"
        "While a control is on, a step costs about 1.5x a plain edit's batch (one more branch in the same model call). "
        "With the source prompt as target, the source CFG and skip 0, the input comes back.",
        col=4, row=6, title="What this shows", size=(420, 420),
    )
    return wf


# LEDITS++ (semantic guidance with implicit masks) on the maps: the guider keeps the inversion's own prompt and CFG,
# which give the input back, and the concepts alone make the edit. Skip 15 of 100: LEDITS++'s default skip (0.15).
SEMANTIC_SKIP, SEMANTIC_SCALE, SEMANTIC_THRESHOLD = 15, 5.0, 0.9


def semantic_guidance_edit() -> Workflow:
    wf = Workflow("semantic_guidance_edit")
    ckpt, image, negative, inversion, source, latent = _common(wf)
    custom = wf.node("EditFriendlySamplerCustom", [SEMANTIC_SKIP], col=3, row=0, size=(320, 120), noise_maps=(inversion, 0))
    noise = wf.node("DisableNoise", col=3, row=3, size=(220, 30), title="DisableNoise (the maps are the noise)")
    add_text = wf.node("CLIPTextEncode", ["tiger"], col=2, row=7, title="Concept to add", clip=(ckpt, 1))
    remove_text = wf.node("CLIPTextEncode", ["cat"], col=2, row=11, title="Concept to remove", clip=(ckpt, 1))
    added = wf.node("EditFriendlyEditConcept", [SEMANTIC_SCALE, "add", 0, 1000, SEMANTIC_THRESHOLD], col=3, row=6, size=(320, 200),
                    title="Edit Concept: add tiger", conditioning=(add_text, 0))
    removed = wf.node("EditFriendlyEditConcept", [SEMANTIC_SCALE, "remove", 0, 1000, SEMANTIC_THRESHOLD], col=3, row=11, size=(320, 200),
                      title="Edit Concept: remove cat", conditioning=(remove_text, 0), concepts=(added, 0))
    guider = wf.node("EditFriendlySemanticGuider", [SOURCE_CFG], col=4, row=0, size=(320, 150),
                     title="Semantic Guidance (source prompt, source CFG)",
                     model=(ckpt, 0), positive=(source, 0), negative=(negative, 0), concepts=(removed, 0))
    sampled = wf.node("SamplerCustomAdvanced", col=5, row=0, size=(300, 140),
                      noise=(noise, 0), guider=(guider, 0), sampler=(custom, 0), sigmas=(custom, 1), latent_image=(custom, 2))
    _save_beside_input(wf, (sampled, 0), (ckpt, 2), (image, 0), "semantic_guidance", col=5)
    wf.note(
        "## Semantic guidance with edit concepts (LEDITS++)\n\n"
        "No target prompt: **Edit-Friendly Semantic Guidance** guides with the inversion's own source prompt, negative "
        f"and CFG ({SOURCE_CFG}), which alone give the input back, and each **Edit Concept** adds its guidance only where "
        "it is strongest (an implicit mask found at every step from the model's predictions), so the edit stays local "
        "without a user mask.\n\n"
        f"* *tiger*, `add`, `scale` {SEMANTIC_SCALE:g}: pulls the image towards a tiger.\n"
        f"* *cat*, `remove`, `scale` {SEMANTIC_SCALE:g}: pushes it away from what is there now. Chain more concepts through "
        "`concepts`; all of them share one model call per step.\n"
        f"* `threshold` {SEMANTIC_THRESHOLD:g}: a concept acts on the strongest tenth of the image; lower it to edit a larger area.\n"
        f"* `skip` {SEMANTIC_SKIP} of {STEPS} (LEDITS++'s default): the implicit masks keep the rest of the image, so less is "
        "skipped than in a plain edit.\n\n"
        "Too weak? Raise `scale` (3-15). A concept of `scale` 0 does nothing: with all at 0 the input comes back.",
        col=4, row=4, title="What this shows", size=(420, 420),
    )
    return wf


# Other model families. Each model file is declared as ComfyUI's own template for that model declares it (name, url,
# directory, copied from the comfyui_workflow_templates package: text_to_video_wan for Wan 2.1 1.3B, image_qwen_image
# for Qwen-Image), so that the frontend names a missing file and offers its download.
WAN_TEMPLATE, QWEN_IMAGE_TEMPLATE = "text_to_video_wan", "image_qwen_image"
WAN_REPO = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
QWEN_REPO = "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files"
WAN_MODEL, WAN_TEXT_ENCODER, WAN_VAE = "wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"
QWEN_MODEL, QWEN_TEXT_ENCODER, QWEN_VAE = "qwen_image_fp8_e4m3fn.safetensors", "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image_vae.safetensors"
MODEL_FILES = {
    WAN_MODEL: {"name": WAN_MODEL, "url": f"{WAN_REPO}/diffusion_models/{WAN_MODEL}?download=true", "directory": "diffusion_models"},
    WAN_TEXT_ENCODER: {"name": WAN_TEXT_ENCODER, "url": f"{WAN_REPO}/text_encoders/{WAN_TEXT_ENCODER}?download=true", "directory": "text_encoders"},
    WAN_VAE: {"name": WAN_VAE, "url": f"{WAN_REPO}/vae/{WAN_VAE}?download=true", "directory": "vae"},
    QWEN_MODEL: {"name": QWEN_MODEL, "url": f"{QWEN_REPO}/diffusion_models/{QWEN_MODEL}", "directory": "diffusion_models"},
    QWEN_TEXT_ENCODER: {"name": QWEN_TEXT_ENCODER, "url": f"{QWEN_REPO}/text_encoders/{QWEN_TEXT_ENCODER}", "directory": "text_encoders"},
    QWEN_VAE: {"name": QWEN_VAE, "url": f"{QWEN_REPO}/vae/{QWEN_VAE}", "directory": "vae"},
}
# The negative prompt of ComfyUI's Wan templates (the one Wan's authors use).
WAN_NEGATIVE = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，"
    "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
VIDEO = "input_video.mp4"  # a placeholder: the pack ships no video; the note says to pick one
# Wan 2.1 1.3B: 480p, shift 8 and the simple scheduler as in ComfyUI's template; 33 frames (4k + 1, as its VAE
# compresses time by 4 after the first frame). The CFGs and skip are starting values (see the note).
WAN_WIDTH, WAN_HEIGHT, WAN_FRAMES, WAN_SHIFT = 832, 480, 33, 8.0
WAN_STEPS, WAN_SOURCE_CFG, WAN_TARGET_CFG, WAN_SKIP = 30, 5.0, 6.0, 12
QWEN_SIZE, QWEN_SHIFT = 1024, 3.1
QWEN_STEPS, QWEN_SOURCE_CFG, QWEN_TARGET_CFG, QWEN_SKIP = 30, 2.5, 4.0, 12


def _loaders(wf: Workflow, model: str, text_encoder: str, clip_type: str, vae: str):
    unet = wf.node("UNETLoader", [model, "default"], col=0, row=0, size=(320, 100))
    clip = wf.node("CLIPLoader", [text_encoder, clip_type, "default"], col=0, row=3, size=(320, 110))
    vae_node = wf.node("VAELoader", [vae], col=0, row=6, size=(320, 70))
    return unet, clip, vae_node


def video_edit_wan() -> Workflow:
    wf = Workflow("video_edit_wan")
    unet, clip, vae = _loaders(wf, WAN_MODEL, WAN_TEXT_ENCODER, "wan", WAN_VAE)
    model = wf.node("ModelSamplingSD3", [WAN_SHIFT], col=1, row=0, size=(260, 60), model=(unet, 0))
    video = wf.node("LoadVideo", [VIDEO, "image"], col=0, row=8, size=(320, 400), title="Load Video (pick yours)")
    parts = wf.node("GetVideoComponents", col=1, row=9, size=(260, 70), video=(video, 0))
    frames = wf.node("ImageFromBatch", [0, WAN_FRAMES], col=1, row=12, size=(260, 80), title=f"First {WAN_FRAMES} frames", image=(parts, 0))
    scaled = wf.node("ImageScale", ["lanczos", WAN_WIDTH, WAN_HEIGHT, "center"], col=1, row=15, size=(260, 130),
                     title=f"Resize to {WAN_WIDTH}x{WAN_HEIGHT}", image=(frames, 0))
    latent = wf.node("VAEEncode", col=2, row=12, pixels=(scaled, 0), vae=(vae, 0), size=(220, 50))
    source = wf.node("CLIPTextEncode", ["a tabby cat looking around"], col=1, row=2, title="Source prompt (describes the input video)", clip=(clip, 0))
    negative = wf.node("CLIPTextEncode", [WAN_NEGATIVE], col=1, row=5, title="Negative prompt", clip=(clip, 0))
    inversion = wf.node(
        "EditFriendlyDDPMInversion", [WAN_STEPS, WAN_SOURCE_CFG, "simple", 1.0, 0, "fixed"], col=2, row=0, size=(320, 250),
        model=(model, 0), positive=(source, 0), negative=(negative, 0), latent_image=(latent, 0),
    )
    target = wf.node("CLIPTextEncode", ["a tiger looking around"], col=2, row=6, title="Target prompt (the video as you want it)", clip=(clip, 0))
    sampler = wf.node("EditFriendlySampler", [WAN_TARGET_CFG, WAN_SKIP], col=3, row=0, size=(320, 150),
                      model=(model, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0))
    decode = wf.node("VAEDecode", col=3, row=4, samples=(sampler, 0), vae=(vae, 0), size=(220, 50))
    created = wf.node("CreateVideo", [16], col=3, row=6, size=(260, 80), title="Create Video (the input's frame rate)",
                      images=(decode, 0), fps=(parts, 2))
    wf.node("SaveVideo", ["video/edit_friendly/wan_edit", "auto", "auto"], col=4, row=0, size=(420, 420), video=(created, 0))
    wf.note(
        "## Text-guided video edit with Wan 2.1 (1.3B, text-to-video)\n\n"
        f"**Load Video**: upload your clip (the pack ships none). The first {WAN_FRAMES} frames (a multiple of 4 plus 1, "
        f"as the Wan VAE wants) are resized to {WAN_WIDTH}x{WAN_HEIGHT} and encoded; the edit is saved at the input's "
        "frame rate.\n\n"
        f"* **Model**: `ModelSamplingSD3` shift {WAN_SHIFT:g} and the `simple` scheduler, as ComfyUI's Wan 2.1 template.\n"
        f"* **Inversion**: `steps` {WAN_STEPS}, source `cfg` {WAN_SOURCE_CFG:g}, source prompt describing the video.\n"
        f"* **Sampler**: target `cfg` {WAN_TARGET_CFG:g}, `skip` {WAN_SKIP} of {WAN_STEPS}. These are starting values, not "
        "tuned on Wan's output: with shift 8 most steps are at high noise, so raise `skip` to keep more of the input's "
        "motion and layout, lower it if the edit does not take.\n"
        "* The source prompt with the source CFG and skip 0 gives the input latent back exactly.\n"
        "* The maps of a video are kept in float16 (`precision` auto); longer or larger clips need much memory: the "
        "inversion keeps one map per step.",
        col=3, row=9, title="What this shows", size=(460, 420),
    )
    return wf


def photo_edit_qwen_image() -> Workflow:
    wf = Workflow("photo_edit_qwen_image")
    unet, clip, vae = _loaders(wf, QWEN_MODEL, QWEN_TEXT_ENCODER, "qwen_image", QWEN_VAE)
    model = wf.node("ModelSamplingAuraFlow", [QWEN_SHIFT], col=1, row=0, size=(260, 60), model=(unet, 0))
    image = wf.node("LoadImage", [IMAGE, "image"], col=0, row=8, size=(320, 360))
    scaled = wf.node("ImageScale", ["lanczos", QWEN_SIZE, QWEN_SIZE, "center"], col=1, row=10, size=(260, 130),
                     title=f"Resize to {QWEN_SIZE}x{QWEN_SIZE}", image=(image, 0))
    latent = wf.node("VAEEncode", col=1, row=14, pixels=(scaled, 0), vae=(vae, 0), size=(220, 50))
    source = wf.node("CLIPTextEncode", [SOURCE_PROMPT], col=1, row=2, title="Source prompt (describes the input image)", clip=(clip, 0))
    negative = wf.node("CLIPTextEncode", [NEGATIVE_PROMPT], col=1, row=6, title="Negative prompt", clip=(clip, 0))
    inversion = wf.node(
        "EditFriendlyDDPMInversion", [QWEN_STEPS, QWEN_SOURCE_CFG, "simple", 1.0, 0, "fixed"], col=2, row=0, size=(320, 250),
        model=(model, 0), positive=(source, 0), negative=(negative, 0), latent_image=(latent, 0),
    )
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=2, row=6, title="Target prompt (the image as you want it)", clip=(clip, 0))
    sampler = wf.node("EditFriendlySampler", [QWEN_TARGET_CFG, QWEN_SKIP], col=3, row=0, size=(320, 150),
                      model=(model, 0), positive=(target, 0), negative=(negative, 0), noise_maps=(inversion, 0))
    _save_beside_input(wf, (sampler, 0), (vae, 0), (scaled, 0), "qwen_image_edit", col=3)
    wf.note(
        "## Text-guided photo edit with Qwen-Image\n\n"
        f"* **Model**: `ModelSamplingAuraFlow` shift {QWEN_SHIFT:g} and the `simple` scheduler, as ComfyUI's Qwen-Image "
        "template. The Qwen-Image VAE is the Wan 2.1 VAE: the image becomes a one-frame latent [B, 16, 1, H, W].\n"
        f"* **Inversion**: `steps` {QWEN_STEPS}, source `cfg` {QWEN_SOURCE_CFG:g} (the template's CFG), source prompt "
        "describing the image.\n"
        f"* **Sampler**: target `cfg` {QWEN_TARGET_CFG:g}, `skip` {QWEN_SKIP} of {QWEN_STEPS}. Starting values, not tuned "
        "on Qwen-Image's output: raise `skip` to keep more of the input, lower it if the edit does not take.\n"
        "* The source prompt with the source CFG and skip 0 gives the input back exactly.",
        col=3, row=6, title="What this shows", size=(460, 300),
    )
    return wf


# FlowEdit's settings for Flux in the paper (28 steps, n_max 24: skip 4; guidance 1.5 on the source, 5.5 on the target,
# the node's defaults), as starting values for Qwen-Image, which takes them as real CFG.
FLOWEDIT_STEPS, FLOWEDIT_SKIP, FLOWEDIT_SOURCE_CFG, FLOWEDIT_TARGET_CFG = 28, 4, 1.5, 5.5


def flowedit_qwen_image() -> Workflow:
    wf = Workflow("flowedit_qwen_image")
    unet, clip, vae = _loaders(wf, QWEN_MODEL, QWEN_TEXT_ENCODER, "qwen_image", QWEN_VAE)
    model = wf.node("ModelSamplingAuraFlow", [QWEN_SHIFT], col=1, row=0, size=(260, 60), model=(unet, 0))
    image = wf.node("LoadImage", [IMAGE, "image"], col=0, row=8, size=(320, 360))
    scaled = wf.node("ImageScale", ["lanczos", QWEN_SIZE, QWEN_SIZE, "center"], col=1, row=10, size=(260, 130),
                     title=f"Resize to {QWEN_SIZE}x{QWEN_SIZE}", image=(image, 0))
    latent = wf.node("VAEEncode", col=1, row=14, pixels=(scaled, 0), vae=(vae, 0), size=(220, 50))
    source = wf.node("CLIPTextEncode", [SOURCE_PROMPT], col=1, row=2, title="Source prompt (describes the input image)", clip=(clip, 0))
    negative = wf.node("CLIPTextEncode", [NEGATIVE_PROMPT], col=1, row=6, title="Negative prompt", clip=(clip, 0))
    target = wf.node("CLIPTextEncode", ["a close-up photo of a tiger"], col=2, row=2, title="Target prompt (the image as you want it)", clip=(clip, 0))
    edit = wf.node(
        "EditFriendlyFlowEdit",
        [FLOWEDIT_STEPS, FLOWEDIT_SKIP, 0, 1, FLOWEDIT_SOURCE_CFG, FLOWEDIT_TARGET_CFG, "simple", 0, "fixed"],
        col=3, row=0, size=(320, 420),
        model=(model, 0), source_positive=(source, 0), source_negative=(negative, 0), positive=(target, 0), negative=(negative, 0),
        latent_image=(latent, 0),
    )
    _save_beside_input(wf, (edit, 0), (vae, 0), (scaled, 0), "qwen_image_flowedit", col=4, decode_row=0)
    wf.note(
        "## FlowEdit with Qwen-Image: editing without inversion\n\n"
        "**FlowEdit** (Kulikov et al., ICCV 2025) needs no inversion and no noise maps: at each step it moves the input by "
        "the difference between what the model predicts under the target and under the source prompt, both in one model "
        "call. It works on rectified-flow models only (SD3, Flux, Qwen-Image, Z-Image, Wan...); for SD1.5, SD2 and SDXL "
        "use Edit-Friendly DDPM Inversion.\n\n"
        f"* **Model**: as in the Qwen-Image photo edit: `ModelSamplingAuraFlow` shift {QWEN_SHIFT:g}, scheduler `simple`.\n"
        f"* **FlowEdit**: `steps` {FLOWEDIT_STEPS}, `skip` {FLOWEDIT_SKIP} (the paper's Flux setting), `source_cfg` "
        f"{FLOWEDIT_SOURCE_CFG:g}, `cfg` {FLOWEDIT_TARGET_CFG:g}. Starting values, not tuned on Qwen-Image's output: too "
        "little change, lower `skip` or raise `cfg`; drifting too far, raise `skip`.\n"
        "* The target prompt is the source prompt with the change written in.\n"
        f"* It costs {FLOWEDIT_STEPS - FLOWEDIT_SKIP} model calls (`steps - skip`), source and target batched in each.\n"
        "* The source prompt as target, with `cfg` equal to `source_cfg` and `n_min` 0, gives the input back exactly.",
        col=4, row=3, title="What this shows", size=(460, 380),
    )
    return wf


WORKFLOWS = {
    "text_guided_editing": text_editing,
    "exact_reconstruction": reconstruction,
    "multiple_edits_one_inversion": multiple_edits,
    "noise_map_shift_and_colour": noise_map_manipulations,
    "save_noise_maps": save_noise_maps,
    "edit_from_saved_noise_maps": load_noise_maps,
    "sampler_custom_advanced": custom_sampling,
    "masked_edit": masked_edit,
    "batched_variations": variations,
    "noise_map_preview": noise_map_preview,
    "fast_edit": fast_edit,
    "video_edit_wan": video_edit_wan,
    "photo_edit_qwen_image": photo_edit_qwen_image,
    "implicit_mask_edit": implicit_mask_edit,
    "attention_control_edit": attention_control_edit,
    "semantic_guidance_edit": semantic_guidance_edit,
    "flowedit_qwen_image": flowedit_qwen_image,
}
# Examples with end-to-end tests of their own (tests/test_server_power.py) rather than the generic run:
# they need a file moved between runs, other nodes' skips scaled, or checks of their own.
FEATURE_WORKFLOWS = (
    "save_noise_maps", "edit_from_saved_noise_maps", "sampler_custom_advanced", "masked_edit", "batched_variations", "noise_map_preview", "fast_edit",
    "implicit_mask_edit", "attention_control_edit", "semantic_guidance_edit",
)


# Examples of other model families (UNETLoader, CLIPLoader and VAELoader instead of the SD1.5 checkpoint), run end
# to end with tiny stand-ins in tests/test_server_video.py.
FAMILY_WORKFLOWS = ("video_edit_wan", "photo_edit_qwen_image", "flowedit_qwen_image")


def build_all() -> dict[str, dict]:
    return {name: make().to_json() for name, make in WORKFLOWS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, workflow in build_all().items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(workflow, indent=2) + "\n")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
