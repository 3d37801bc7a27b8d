"""Nodes for attention control (Prompt-to-Prompt on edit-friendly maps)."""

from __future__ import annotations

from comfy_api.latest import io

from .attention_control import AttentionControlGuider
from .schema import CATEGORY, NOISE_MAPS_TOOLTIP, description
from .sockets import NoiseMapsSocket


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
                io.Conditioning.Input("positive", tooltip="Target prompt: the image as you want it. For cross-attention control, change words one for one."),
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
                    tooltip="Share of the replayed steps, from the first, in which the target takes the source's cross-attention maps (needs the same token count). 0 = off; both 0 = plain edit.",
                ),
            ],
            outputs=[io.Guider.Output(display_name="GUIDER", tooltip="Give it to SamplerCustomAdvanced with the SAMPLER and SIGMAS of Edit-Friendly Sampler (Custom Sampling).")],
        )

    @classmethod
    def execute(cls, model, noise_maps, source_positive, positive, negative, cfg, self_attention, cross_attention) -> io.NodeOutput:
        return io.NodeOutput(
            AttentionControlGuider(model, noise_maps, source_positive, positive, negative, cfg, self_attention, cross_attention)
        )


NODES = [EditFriendlyAttentionControl]
