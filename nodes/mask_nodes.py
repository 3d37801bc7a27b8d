"""The node that finds an edit's region from the maps (implicit_mask): a thin adapter."""

from __future__ import annotations

from comfy_api.latest import io

from .implicit_mask import implicit_edit_mask
from .schema import CATEGORY, NOISE_MAPS_TOOLTIP, description
from .sockets import NoiseMapsSocket


class EditFriendlyImplicitMask(io.ComfyNode):
    """Finds where an edit from the source prompt to the target prompt should act: a MASK for the Edit-Friendly Sampler.

    At each step of a window, the model predicts with both prompts at the latent the maps recorded for that step (the
    input image's own path, DiffEdit's comparison with no noise drawn); the mask covers where the two predictions
    differ most. With it, the sampler changes only that region and gives the source back exactly outside it.
    Costs one model call of two prompts per step of the window.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyImplicitMask",
            display_name="Edit-Friendly Implicit Mask",
            category=CATEGORY,
            description=description(cls),
            inputs=[
                io.Model.Input("model", tooltip="The model the maps were made with."),
                NoiseMapsSocket.Input("noise_maps", tooltip=NOISE_MAPS_TOOLTIP),
                io.Conditioning.Input("source_positive", tooltip="The inversion's prompt: a description of the input image as it is."),
                io.Conditioning.Input("positive", tooltip="The target prompt of the edit (the one the sampler uses)."),
                io.Float.Input(
                    "threshold", default=0.5, min=0.01, max=1.0, step=0.01,
                    tooltip="Share of the strongest difference a pixel needs to be in the mask (DiffEdit: 0.5). Lower = larger mask.",
                ),
                io.Float.Input(
                    "start_percent", default=0.25, min=0.0, max=1.0, step=0.01,
                    tooltip="Where the window of compared steps starts, as a share of the maps' steps from the noisiest.",
                ),
                io.Float.Input(
                    "end_percent", default=0.75, min=0.0, max=1.0, step=0.01,
                    tooltip="Where the window ends. A wider window costs more model calls.",
                ),
                io.Int.Input("grow", default=1, min=0, max=64, tooltip="Grow the mask by this many latent pixels (8 image pixels each for most models)."),
            ],
            outputs=[io.Mask.Output(display_name="MASK", tooltip="1 where the edit acts, at the latent's resolution; give it to the sampler's mask.")],
        )

    @classmethod
    def execute(cls, model, noise_maps, source_positive, positive, threshold, start_percent, end_percent, grow) -> io.NodeOutput:
        return io.NodeOutput(implicit_edit_mask(model, noise_maps, source_positive, positive, threshold, start_percent, end_percent, grow))


NODES = [EditFriendlyImplicitMask]
