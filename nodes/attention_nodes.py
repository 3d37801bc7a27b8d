"""Nodes for attention control (Prompt-to-Prompt on edit-friendly maps) and the prompt pair it checks."""

from __future__ import annotations

from comfy_api.latest import io

from . import prompt_pair
from .attention_control import AttentionControlGuider
from .schema import CATEGORY, NOISE_MAPS_TOOLTIP, description
from .sockets import NoiseMapsSocket
from .validation import EditFriendlyInputError


class EditFriendlyAttentionControl(io.ComfyNode):
    """A GUIDER that edits with Prompt-to-Prompt attention control on edit-friendly noise maps.

    A source branch replays the maps under the source prompt (the inversion's) beside the target, in the same model
    call: during the first part of the steps the target's conditional pass attends with the source's attention
    (the real image's layout), in self-attention and in cross-attention where the prompts line up token for token.
    Use it with Edit-Friendly Sampler (Custom Sampling) and SamplerCustomAdvanced (DisableNoise). Costs about 1.5x a
    plain edit's model batch while a control is on.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyAttentionControl",
            display_name="Edit-Friendly Attention Control",
            category=CATEGORY,
            description=description(cls),
            inputs=[
                io.Model.Input("model", tooltip="The model the maps were made with (SD1.x, SD2, SDXL, SD3, Flux, Qwen-Image, Wan 2.1/2.2, ...)."),
                NoiseMapsSocket.Input("noise_maps", tooltip=NOISE_MAPS_TOOLTIP),
                io.Conditioning.Input("source_positive", tooltip="The inversion's prompt: a description of the input image as it is."),
                io.Conditioning.Input("positive", tooltip="Target prompt: the image as you want it. For cross-attention control, both prompts from Edit-Friendly Prompt Pair, words swapped one for one."),
                io.Conditioning.Input("negative", tooltip="Negative prompt used with the target CFG (its pass is not controlled)."),
                io.Float.Input(
                    "cfg", default=9.0, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="Target CFG scale (paper's Prompt-to-Prompt runs: 9). The source CFG with the source prompt reconstructs the input.",
                ),
                io.Float.Input(
                    "self_attention", default=0.2, min=0.0, max=1.0, step=0.01,
                    tooltip="Share of the replayed steps, from the first, in which the target takes the source's self-attention (layout). 0 = off.",
                ),
                io.Float.Input(
                    "cross_attention", default=0.6, min=0.0, max=1.0, step=0.01,
                    tooltip="Share of the replayed steps, from the first, in which the target takes the source's cross-attention maps (needs both prompts from Edit-Friendly Prompt Pair, words swapped one for one). 0 = off; both 0 = plain edit.",
                ),
            ],
            outputs=[io.Guider.Output(display_name="GUIDER", tooltip="Give it to SamplerCustomAdvanced with the SAMPLER and SIGMAS of Edit-Friendly Sampler (Custom Sampling).")],
        )

    @classmethod
    def execute(cls, model, noise_maps, source_positive, positive, negative, cfg, self_attention, cross_attention) -> io.NodeOutput:
        return io.NodeOutput(
            AttentionControlGuider(model, noise_maps, source_positive, positive, negative, cfg, self_attention, cross_attention)
        )


class EditFriendlyPromptPair(io.ComfyNode):
    """Encodes the source prompt (the image as it is) and the target prompt (as you want it) with one CLIP.

    Each CONDITIONING is what CLIP Text Encode gives, plus the prompt's tokens, with which Edit-Friendly Attention
    Control checks, before sampling, that the target swaps words one for one (cross-attention control needs it; CLIP
    and T5 pad prompts to a fixed length, so the conditioning alone cannot show an inserted word). Works for every
    text encoder ComfyUI loads as a CLIP.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyPromptPair",
            display_name="Edit-Friendly Prompt Pair",
            category=CATEGORY,
            description=description(cls),
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the model you edit with."),
                io.String.Input("source_prompt", multiline=True, dynamic_prompts=True, tooltip="The image as it is (give it to the inversion too)."),
                io.String.Input(
                    "target_prompt", multiline=True, dynamic_prompts=True,
                    tooltip="The image as you want it. For cross-attention control, swap words for words of the same token length.",
                ),
            ],
            outputs=[
                io.Conditioning.Output("source", display_name="source", tooltip="The source prompt's CONDITIONING, carrying its tokens."),
                io.Conditioning.Output("target", display_name="target", tooltip="The target prompt's CONDITIONING, carrying its tokens."),
            ],
        )

    @classmethod
    def execute(cls, clip, source_prompt, target_prompt) -> io.NodeOutput:
        if clip is None:
            raise EditFriendlyInputError("The clip input is empty: the checkpoint holds no text encoder. Load one with a CLIP loader node.")
        return io.NodeOutput(prompt_pair.encode(clip, source_prompt), prompt_pair.encode(clip, target_prompt))


NODES = [EditFriendlyAttentionControl, EditFriendlyPromptPair]
