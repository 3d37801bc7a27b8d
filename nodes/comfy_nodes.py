"""The pack's ComfyUI nodes (V3 schema): thin adapters over pipeline and transforms."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import ComfyExtension, io, ui
from typing_extensions import override

from . import files, inspection, pipeline
from .attention_nodes import NODES as ATTENTION_NODES
from .flowedit_nodes import NODES as FLOWEDIT_NODES
from .mask_nodes import NODES as MASK_NODES
from .schema import CATEGORY, MASK_INPUT, MAX_STEPS, NOISE_MAPS_TOOLTIP, SEED_MAX, SKIP_INPUT, description
from .semantic_nodes import NODES as SEMANTIC_NODES
from .transforms import FILL_MODES, colour_noise_maps, parse_hex_colour, shift_noise_maps
from .sockets import NoiseMapsSocket
from .validation import EditFriendlyInputError, check_maps, check_shift, check_skip, fit_mask

class EditFriendlyDDPMInversion(io.ComfyNode):
    """Extracts edit-friendly DDPM noise maps from an image latent (Huberman-Spiegelglas et al., CVPR 2024).

    Replayed by the Edit-Friendly Sampler with the same prompt and CFG, the maps give the image back
    exactly; with another prompt they keep its structure. One inversion serves any number of edits.
    Costs one sampling pass.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyDDPMInversion",
            display_name="Edit-Friendly DDPM Inversion",
            category=CATEGORY,
            description=description(cls),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to invert with; edit with the same base model."),
                io.Conditioning.Input("positive", tooltip="Source prompt: a description of the input image as it is."),
                io.Conditioning.Input("negative", tooltip="Negative prompt used with the source CFG."),
                io.Latent.Input("latent_image", tooltip="The image or video to edit, encoded with this model's VAE (VAE Encode)."),
                io.Int.Input(
                    "steps", default=100, min=1, max=MAX_STEPS,
                    tooltip="Sampling steps of the schedule. The paper uses 100; fewer is faster but edits are coarser.",
                ),
                io.Float.Input(
                    "cfg", default=3.5, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="Source CFG scale (paper: 3.5). Use the same value in the sampler to reconstruct the image.",
                ),
                io.Combo.Input(
                    "scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="ddim_uniform",
                    tooltip="Sigma schedule; ddim_uniform is the paper's timestep grid. It must end at sigma 0.",
                ),
                io.Float.Input(
                    "eta", default=1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="Share of the posterior noise kept at each step; 1 = DDPM as in the paper. Must be above 0.",
                ),
                io.Int.Input(
                    "seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                    tooltip="Draws the independent noisy latents. Every seed reconstructs exactly; different seeds give different edits.",
                ),
                io.Int.Input(
                    "variations", default=1, min=1, max=pipeline.MAX_VARIATIONS, optional=True,
                    tooltip="Maps for this many seeds (seed, seed+1, ...) in one batched run; the sampler then returns that many different edits. 1 = one set.",
                ),
                io.Combo.Input(
                    "rule", options=list(pipeline.SAMPLING_RULES), default="ddpm", optional=True,
                    tooltip="Sampler the maps are made for and replayed with: ddpm (the paper) or dpmpp_2m_sde (DPM-Solver++(2M) SDE, second order: fewer steps). Both reconstruct exactly.",
                ),
                io.Int.Input(
                    "parallel_steps", default=1, min=0, max=pipeline.MAX_PARALLEL_STEPS, optional=True,
                    tooltip="Steps put through the model in one batch (the inversion's model calls are independent). 1 = one at a time, bit-exact; 0 = as many as free memory allows (on a CPU, only small latents are batched: larger ones gain nothing there); a larger value than fits is lowered, with a warning in the log. Above 1 a replay with the same prompts and CFG (this pack's sampler, or a CFGGuider) runs these batches again and reconstructs exactly; other guiders are exact only up to the model's rounding (about 1e-2 in float16 on a GPU).",
                ),
                io.Combo.Input(
                    "precision", options=list(pipeline.PRECISIONS), default="auto", optional=True,
                    tooltip="How the maps are kept in memory: float16 halves it (videos) and still reconstructs exactly, since the inversion and the sampler round alike. auto = float16 for a video of several frames, float32 otherwise.",
                ),
            ],
            outputs=[NoiseMapsSocket.Output(display_name="noise_maps", tooltip=NOISE_MAPS_TOOLTIP)],
        )

    @classmethod
    def execute(
        cls, model, positive, negative, latent_image, steps, cfg, scheduler, eta, seed, variations=1, rule="ddpm", parallel_steps=1,
        precision="auto",
    ) -> io.NodeOutput:
        return io.NodeOutput(
            pipeline.invert(
                model, positive, negative, latent_image, steps, cfg, scheduler, eta, seed, variations, rule, parallel_steps, precision
            )
        )


class EditFriendlySampler(io.ComfyNode):
    """Regenerates an image from edit-friendly noise maps under a target prompt.

    The same prompt and CFG as the inversion give the input back exactly; a new prompt edits the
    image while keeping its structure. Larger skip keeps it closer to the source. Costs one partial
    sampling pass (steps - skip model calls).
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlySampler",
            display_name="Edit-Friendly Sampler",
            category=CATEGORY,
            description=description(cls),
            inputs=[
                io.Model.Input("model", tooltip="The model the maps were made with (LoRA or ControlNet on top are fine)."),
                io.Conditioning.Input("positive", tooltip="Target prompt: the image as you want it."),
                io.Conditioning.Input("negative", tooltip="Negative prompt used with the target CFG."),
                NoiseMapsSocket.Input("noise_maps", tooltip=NOISE_MAPS_TOOLTIP),
                io.Float.Input(
                    "cfg", default=15.0, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="Target CFG scale (paper: 15, useful range 7-18). The source CFG reconstructs the input.",
                ),
                SKIP_INPUT,
                MASK_INPUT,
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The edited latent, in the same space as the input latent.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, noise_maps, cfg, skip, mask=None) -> io.NodeOutput:
        return io.NodeOutput({"samples": pipeline.regenerate(model, positive, negative, noise_maps, cfg, skip, mask)})


class EditFriendlySamplerCustom(io.ComfyNode):
    """Turns noise maps into a SAMPLER and the SIGMAS it expects, for SamplerCustomAdvanced.

    Lets any guider drive an edit (CFGGuider, DualCFGGuider, PerpNeg, BasicGuider for Flux, ...).
    Connect LATENT to SamplerCustomAdvanced's latent_image; its noise input is not used (the maps
    are the noise), so DisableNoise is the natural choice.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlySamplerCustom",
            display_name="Edit-Friendly Sampler (Custom Sampling)",
            category=CATEGORY,
            description=description(cls),
            inputs=[NoiseMapsSocket.Input("noise_maps", tooltip=NOISE_MAPS_TOOLTIP), SKIP_INPUT, MASK_INPUT],
            outputs=[
                io.Sampler.Output(display_name="SAMPLER", tooltip="Replays the noise maps; refuses sigmas that are not theirs."),
                io.Sigmas.Output(display_name="SIGMAS", tooltip="The maps' schedule after skip: give these to SamplerCustomAdvanced."),
                io.Latent.Output(display_name="LATENT", tooltip="The source latent, shaped as the maps expect, for the latent_image input."),
            ],
        )

    @classmethod
    def execute(cls, noise_maps, skip, mask=None) -> io.NodeOutput:
        check_maps(noise_maps)
        skip = check_skip(skip, noise_maps)
        sampler = pipeline.edit_friendly_sampler(noise_maps, mask)
        # A copy: a node downstream that changed the latent in place would otherwise change the cached maps.
        return io.NodeOutput(sampler, noise_maps.sigmas[skip:].clone(), {"samples": noise_maps.source_latent.clone()})


class EditFriendlyNoiseMapTransform(io.ComfyNode):
    """Edits an image or video by transforming its noise maps: shift it in space or time, or move a region towards a colour.

    Shifting all maps and the start latent by (dx, dy) latent pixels shifts the regenerated image (by dt latent
    frames, a video in time);
    adding a colour offset to the maps inside a mask recolours that region while keeping its texture.
    Returns new maps; the input maps are left as they are.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyNoiseMapTransform",
            display_name="Noise Map Transform",
            category=CATEGORY,
            description=description(cls),
            inputs=[
                NoiseMapsSocket.Input("noise_maps", tooltip=NOISE_MAPS_TOOLTIP),
                io.Int.Input("dx", default=0, min=-4096, max=4096, tooltip="Horizontal shift in latent pixels (8 image pixels for most models); positive moves right. 0 = no shift."),
                io.Int.Input("dy", default=0, min=-4096, max=4096, tooltip="Vertical shift in latent pixels; positive moves down. 0 = no shift."),
                io.Combo.Input("fill", options=list(FILL_MODES), default="noise", tooltip="What fills the band a shift uncovers: fresh seeded noise (new content), a reflection of the edge, or the opposite edge (wrap-around)."),
                io.Int.Input("fill_seed", default=0, min=0, max=SEED_MAX, tooltip="Seed of the fresh noise for the noise fill."),
                io.String.Input("color", default="#ff0000", tooltip="Target colour as #RRGGBB; turned into a latent direction with the model's preview colours."),
                io.Float.Input("color_strength", default=0.0, min=0.0, max=10.0, step=0.05, tooltip="How far to move the masked region towards the colour; 0 = no colour change, 1 = about all the way."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, tooltip="First step, as a share of the schedule, whose map gets the colour offset (0 = the noisiest). The start latents carry the offsets of earlier steps, so the colour holds at any sampler skip."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, tooltip="Step, as a share of the schedule, where the colour offset stops (1 = the end)."),
                io.Mask.Input("mask", optional=True, tooltip="Where the colour applies (1 = recolour); resized to the latent if its aspect ratio matches. Whole image if not connected. For a video: one mask for all frames, one per latent frame, or one per video frame."),
                # Last, so that the widget values of workflows saved before it existed keep their places.
                io.Int.Input("dt", default=0, min=-1024, max=1024, optional=True, tooltip="Video only: shift in time by whole latent frames (4 video frames for Wan); positive moves later. The uncovered frames are filled as the fill says. 0 = no shift."),
            ],
            outputs=[NoiseMapsSocket.Output(display_name="noise_maps", tooltip="The transformed noise maps (new object).")],
        )

    @classmethod
    def execute(
        cls, noise_maps, dx, dy, fill, fill_seed, color, color_strength, start_percent, end_percent, mask=None, dt=0
    ) -> io.NodeOutput:
        try:
            colour = parse_hex_colour(color)
        except ValueError as error:
            raise EditFriendlyInputError(str(error)) from None
        if start_percent > end_percent:
            raise EditFriendlyInputError(f"start_percent ({start_percent}) must not be above end_percent ({end_percent}).")
        check_shift(dx, dy, noise_maps, fill, dt)
        if mask is not None:
            mask = fit_mask(mask, noise_maps.latent_shape)
        try:
            result = colour_noise_maps(noise_maps, colour, color_strength, mask, start_percent, end_percent)
        except ValueError as error:
            raise EditFriendlyInputError(str(error)) from None
        result = shift_noise_maps(result, dx, dy, fill, fill_seed, dt)
        return io.NodeOutput(result)


class EditFriendlySaveNoiseMaps(io.ComfyNode):
    """Saves noise maps to ComfyUI's output folder as a safetensors file, so an inversion can be reused later.

    Files are numbered and never overwrite an existing file. Move or copy a file into the input
    folder to load it with Load Noise Maps. Like ComfyUI's own save nodes, the file keeps the prompt and
    workflow in its metadata unless ComfyUI runs with --disable-metadata.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlySaveNoiseMaps",
            display_name="Save Noise Maps",
            category=f"{CATEGORY}/io",
            description=description(cls),
            is_output_node=True,
            inputs=[
                NoiseMapsSocket.Input("noise_maps", tooltip=NOISE_MAPS_TOOLTIP),
                io.String.Input("filename_prefix", default="noise_maps/ef", tooltip="Name (and subfolder) under the output folder; a counter is appended."),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    @classmethod
    def execute(cls, noise_maps, filename_prefix) -> io.NodeOutput:
        check_maps(noise_maps)
        hidden = cls.hidden  # None when called outside ComfyUI's executor
        metadata = files.workflow_metadata(getattr(hidden, "prompt", None), getattr(hidden, "extra_pnginfo", None))
        path = files.save_to_output(noise_maps, filename_prefix, metadata)
        return io.NodeOutput(ui={"text": [path]})


class EditFriendlyLoadNoiseMaps(io.ComfyNode):
    """Loads noise maps saved by Save Noise Maps from ComfyUI's input folder.

    Every file is checked before use: corrupt, truncated, oversized or newer-format files are refused
    with the reason, and maps made for another model family are refused by the sampler.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyLoadNoiseMaps",
            display_name="Load Noise Maps",
            category=f"{CATEGORY}/io",
            description=description(cls),
            inputs=[io.Combo.Input("file", options=files.input_files(), tooltip="A .safetensors noise-maps file in the input folder (or its noise_maps/ subfolder).")],
            outputs=[NoiseMapsSocket.Output(display_name="noise_maps", tooltip=NOISE_MAPS_TOOLTIP)],
        )

    @classmethod
    def execute(cls, file) -> io.NodeOutput:
        return io.NodeOutput(files.load_from_input(file))

    @classmethod
    def fingerprint_inputs(cls, file):
        return files.content_fingerprint(file)

    @classmethod
    def validate_inputs(cls, file):
        return files.input_file_problem(file) or True


class EditFriendlyNoiseMapPreview(io.ComfyNode):
    """Shows what the noise maps look like: chosen steps as pictures, and per-step statistics as a plot.

    Both pictures are shown on the node and given as IMAGE outputs.

    Edit-friendly maps are not white noise: their std departs from 1 and neighbouring steps
    correlate, because they carry the image's structure (the paper's analysis). Each tile is one
    step's map through the model's preview colours, captioned with its std and its correlation with
    the next step.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyNoiseMapPreview",
            display_name="Noise Map Preview",
            category=CATEGORY,
            description=description(cls),
            is_output_node=True,
            inputs=[
                NoiseMapsSocket.Input("noise_maps", tooltip=NOISE_MAPS_TOOLTIP),
                io.Int.Input("count", default=8, min=1, max=64, tooltip="How many steps to show, spread evenly from the noisiest to the residual."),
                io.Int.Input("batch_index", default=0, min=0, max=4095, tooltip="Which image of the batch (or variation) to show."),
                io.Int.Input("frame", default=0, min=0, max=4095, optional=True, tooltip="Video maps: which latent frame to show (0 = the first). Ignored for images."),
            ],
            outputs=[
                io.Image.Output(display_name="maps", tooltip="One tile per chosen step, captioned with sigma, std and lag-1 correlation."),
                io.Image.Output(display_name="statistics", tooltip="Plot of per-step std and lag-1 correlation of the maps."),
            ],
        )

    @classmethod
    def execute(cls, noise_maps, count, batch_index, frame=0) -> io.NodeOutput:
        check_maps(noise_maps)
        if not 0 <= batch_index < noise_maps.batch_size:
            raise EditFriendlyInputError(f"batch_index {batch_index} is outside the maps' batch of {noise_maps.batch_size}.")
        if noise_maps.frames is not None and not 0 <= frame < noise_maps.frames:
            raise EditFriendlyInputError(f"frame {frame} is outside these video maps' {noise_maps.frames} latent frames.")
        grid = inspection.render_map_grid(noise_maps, count, batch_index, frame)
        plot = inspection.render_statistics_plot(noise_maps, batch_index)
        shown = ui.PreviewImage(grid, cls=cls).values + ui.PreviewImage(plot, cls=cls).values
        return io.NodeOutput(grid, plot, ui=ui.SavedImages(shown))


NODES = [
    EditFriendlyDDPMInversion,
    EditFriendlySampler,
    EditFriendlyNoiseMapTransform,
    EditFriendlySamplerCustom,
    EditFriendlySaveNoiseMaps,
    EditFriendlyLoadNoiseMaps,
    EditFriendlyNoiseMapPreview,
    *MASK_NODES,
    *ATTENTION_NODES,
    *SEMANTIC_NODES,
    *FLOWEDIT_NODES,
]


class EditFriendlyExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> EditFriendlyExtension:
    return EditFriendlyExtension()
