"""Nodes for FlowEdit (inversion-free editing of flow models): one node, and a guider and sampler for Custom Sampling."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .flowedit import MAX_N_AVG, flow_guider, flowedit, flowedit_sampler
from .schema import CATEGORY, MAX_STEPS, SEED_MAX, description

FLOWEDIT_CATEGORY = f"{CATEGORY}/flowedit"


SOURCE_POSITIVE = io.Conditioning.Input("source_positive", tooltip="Source prompt: a description of the input image or video as it is.")
SOURCE_NEGATIVE = io.Conditioning.Input("source_negative", tooltip="Negative prompt used with the source CFG (not used when source_cfg is 1).")
TARGET_POSITIVE = io.Conditioning.Input("positive", tooltip="Target prompt: the image or video as you want it; usually the source prompt with the change written in.")
TARGET_NEGATIVE = io.Conditioning.Input("negative", tooltip="Negative prompt used with the target CFG (not used when cfg is 1).")
SOURCE_CFG = io.Float.Input(
    "source_cfg", default=1.5, min=0.0, max=100.0, step=0.1, round=0.01,
    tooltip="CFG of the source branch. The paper: 3.5 for SD3. Guidance-distilled models (Flux, Flux 2, Z-Image Turbo) take 1 here, with the guidance in the conditioning (FluxGuidance 1.5 on the source).",
)
TARGET_CFG = io.Float.Input(
    "cfg", default=5.5, min=0.0, max=100.0, step=0.1, round=0.01,
    tooltip="CFG of the target branch; higher edits more. The paper: 13.5 for SD3. Guidance-distilled models take 1 here, with FluxGuidance 5.5 on the target.",
)
N_MIN = io.Int.Input(
    "n_min", default=0, min=0, max=MAX_STEPS - 1,
    tooltip="The last n_min steps sample the target plainly instead of editing, adding fine detail (the paper: 0). With 0 and the source prompt and CFG as target, the output is the input.",
)
N_AVG = io.Int.Input(
    "n_avg", default=1, min=1, max=MAX_N_AVG,
    tooltip="Noise draws averaged per step (the paper: 1). Each draw adds a source and a target latent to the step's one model call: n_avg times the batch.",
)
SEED = io.Int.Input(
    "seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
    tooltip="Draws the noise of each step. Different seeds give slightly different edits.",
)
FLOWEDIT_MASK = io.Mask.Input(
    "mask", optional=True,
    tooltip="Edit only inside the mask (1 = edit); outside, the output is the source exactly. Soft masks blend. Resized if the aspect ratio matches. For a video: one mask, one per latent frame, or one per video frame.",
)


class EditFriendlyFlowEdit(io.ComfyNode):
    """Edits an image or video with a rectified-flow model (SD3, Flux, Qwen-Image, Z-Image, Wan...) by FlowEdit (Kulikov et al., ICCV 2025).

    No inversion: each step moves the input by the difference between what the model predicts under the target and
    the source prompt, both in one model call. With the source prompt and CFG as target the input comes back exactly.
    Costs steps - skip model calls.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyFlowEdit",
            display_name="FlowEdit",
            category=FLOWEDIT_CATEGORY,
            description=description(cls),
            inputs=[
                io.Model.Input("model", tooltip="A rectified-flow model (SD3, Flux, Flux 2, Qwen-Image, Z-Image, Wan, HunyuanVideo, LTXV...). SD1.5, SD2 and SDXL: use Edit-Friendly DDPM Inversion."),
                SOURCE_POSITIVE,
                SOURCE_NEGATIVE,
                TARGET_POSITIVE,
                TARGET_NEGATIVE,
                io.Latent.Input("latent_image", tooltip="The image or video to edit, encoded with this model's VAE (VAE Encode)."),
                io.Int.Input("steps", default=28, min=1, max=MAX_STEPS, tooltip="Steps of the whole schedule (the paper: 28 for Flux, 50 for SD3)."),
                io.Int.Input(
                    "skip", default=4, min=0, max=MAX_STEPS - 1,
                    tooltip="Noisiest steps left out: steps - n_max in the paper (Flux: 4 of 28, SD3: 17 of 50). Larger keeps more of the input; must be below steps.",
                ),
                N_MIN,
                N_AVG,
                SOURCE_CFG,
                TARGET_CFG,
                io.Combo.Input(
                    "scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple",
                    tooltip="Sigma schedule; simple follows the model's own shifted flow schedule, as the paper's pipelines do. It must end at sigma 0.",
                ),
                SEED,
                FLOWEDIT_MASK,
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The edited latent, in the same space as the input latent.")],
        )

    @classmethod
    def execute(
        cls, model, source_positive, source_negative, positive, negative, latent_image, steps, skip, n_min, n_avg, source_cfg, cfg,
        scheduler, seed, mask=None,
    ) -> io.NodeOutput:
        samples = flowedit(
            model, source_positive, source_negative, positive, negative, latent_image, steps, skip, n_min, n_avg, source_cfg, cfg,
            scheduler, seed, mask,
        )
        return io.NodeOutput({"samples": samples})


class EditFriendlyFlowEditGuider(io.ComfyNode):
    """A GUIDER holding the source and target prompts and CFGs of a FlowEdit, for SamplerCustomAdvanced with the FlowEdit Sampler.

    Each step puts the source and the target branch through the model in one call.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyFlowEditGuider",
            display_name="FlowEdit Guider",
            category=FLOWEDIT_CATEGORY,
            description=description(cls),
            inputs=[
                io.Model.Input("model", tooltip="A rectified-flow model (SD3, Flux, Flux 2, Qwen-Image, Z-Image, Wan...)."),
                SOURCE_POSITIVE,
                SOURCE_NEGATIVE,
                TARGET_POSITIVE,
                TARGET_NEGATIVE,
                SOURCE_CFG,
                TARGET_CFG,
            ],
            outputs=[io.Guider.Output(display_name="GUIDER", tooltip="Drives the FlowEdit Sampler only; connect it to SamplerCustomAdvanced's guider.")],
        )

    @classmethod
    def execute(cls, model, source_positive, source_negative, positive, negative, source_cfg, cfg) -> io.NodeOutput:
        return io.NodeOutput(flow_guider(model, source_positive, source_negative, positive, negative, source_cfg, cfg))


class EditFriendlyFlowEditSampler(io.ComfyNode):
    """A SAMPLER that runs FlowEdit, for SamplerCustomAdvanced with the FlowEdit Guider.

    The sigmas set the edit's strength: cut the schedule with SplitSigmas (step = skip) and connect low_sigmas.
    Connect the latent to edit to latent_image; the noise input is not used (the sampler draws its own), so
    DisableNoise is the natural choice. A noise mask on the latent limits the edit like the mask input.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyFlowEditSampler",
            display_name="FlowEdit Sampler",
            category=FLOWEDIT_CATEGORY,
            description=description(cls),
            inputs=[N_MIN, N_AVG, SEED, FLOWEDIT_MASK],
            outputs=[io.Sampler.Output(display_name="SAMPLER", tooltip="Runs FlowEdit over the sigmas given; needs the FlowEdit Guider.")],
        )

    @classmethod
    def execute(cls, n_min, n_avg, seed, mask=None) -> io.NodeOutput:
        return io.NodeOutput(flowedit_sampler(n_min, n_avg, seed, mask))


NODES = [EditFriendlyFlowEdit, EditFriendlyFlowEditGuider, EditFriendlyFlowEditSampler]
