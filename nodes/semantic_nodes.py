"""Nodes for semantic guidance with implicit masks (edit concepts): thin adapters over semantic_guidance."""

from __future__ import annotations

from comfy_api.latest import io

from .schema import CATEGORY, MAX_STEPS, description
from .semantic_guidance import DEFAULT_SCALE, DEFAULT_THRESHOLD, DIRECTIONS, EditConcept, SemanticGuider, check_concepts
from .sockets import EditConceptsSocket

SEMANTIC_CATEGORY = f"{CATEGORY}/semantic"
CONCEPTS_TOOLTIP = "Edit concepts from Edit Concept nodes (chain several Edit Concept nodes to apply several at once)."


class EditFriendlyEditConcept(io.ComfyNode):
    """One edit concept for semantic guidance: a prompt that adds something to the image or removes it, only where it matters.

    The concept acts where its guidance is strongest (an implicit mask found at every step from the model's
    predictions), so the edit stays local without a user mask (LEDITS++). Chain several to edit several things at once;
    they all share one model call per step.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlyEditConcept",
            display_name="Edit Concept",
            category=SEMANTIC_CATEGORY,
            description=description(cls),
            inputs=[
                io.Conditioning.Input("conditioning", tooltip="The concept, as a short prompt: what to add or to remove (\"glasses\", \"a red scarf\")."),
                io.Float.Input(
                    "scale", default=DEFAULT_SCALE, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="Strength of the concept's guidance (LEDITS++: 5; try 3-15). 0 = the concept does nothing.",
                ),
                io.Combo.Input(
                    "direction", options=list(DIRECTIONS), default="add",
                    tooltip="add pulls the image towards the concept; remove pushes it away (to take something out of the image).",
                ),
                io.Int.Input(
                    "warmup", default=0, min=0, max=MAX_STEPS - 1,
                    tooltip="First step at which the concept acts, counted from the first sampled step (after the sampler's skip). 0 = from the start.",
                ),
                io.Int.Input(
                    "cooldown", default=MAX_STEPS, min=1, max=MAX_STEPS,
                    tooltip="Step at which the concept stops (it acts up to the step before), counted like warmup; must be above warmup. "
                    f"{MAX_STEPS} = to the end.",
                ),
                io.Float.Input(
                    "threshold", default=DEFAULT_THRESHOLD, min=0.0, max=0.99, step=0.01,
                    tooltip="Share of the image the implicit mask leaves out: 0.9 acts on the strongest tenth of it (LEDITS++ and SEGA default); "
                    "lower edits a larger area, 0 the whole image.",
                ),
                EditConceptsSocket.Input("concepts", optional=True, tooltip=f"{CONCEPTS_TOOLTIP} This concept is added after them."),
            ],
            outputs=[EditConceptsSocket.Output(display_name="concepts", tooltip="The incoming concepts followed by this one (a new list).")],
        )

    @classmethod
    def execute(cls, conditioning, scale, direction, warmup, cooldown, threshold, concepts=None) -> io.NodeOutput:
        previous = list(check_concepts(concepts)) if concepts else []  # none connected: a new list
        concept = EditConcept(conditioning, float(scale), direction, int(warmup), int(cooldown), float(threshold))
        return io.NodeOutput([*previous, concept])


class EditFriendlySemanticGuider(io.ComfyNode):
    """A GUIDER that edits with edit concepts on top of CFG: semantic guidance with implicit masks (LEDITS++).

    Use it with Edit-Friendly Sampler (Custom Sampling) and SamplerCustomAdvanced (noise: DisableNoise). With the
    inversion's own prompt, negative and CFG the source comes back, so the concepts alone make the edit. Any other
    sampler and sigmas work too. All prompts share one model call per step: each active concept adds one entry
    to the batch.
    """

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="EditFriendlySemanticGuider",
            display_name="Edit-Friendly Semantic Guidance",
            category=SEMANTIC_CATEGORY,
            description=description(cls),
            inputs=[
                io.Model.Input("model", tooltip="The model the noise maps were made with."),
                io.Conditioning.Input("positive", tooltip="Normally the inversion's source prompt, so that only the concepts change the image."),
                io.Conditioning.Input("negative", tooltip="Normally the inversion's negative prompt; the concepts are measured against it."),
                io.Float.Input(
                    "cfg", default=3.5, min=0.0, max=100.0, step=0.1, round=0.01,
                    tooltip="CFG of positive against negative; normally the inversion's source CFG (paper: 3.5), which reconstructs the source.",
                ),
                EditConceptsSocket.Input("concepts", tooltip=CONCEPTS_TOOLTIP),
                io.Mask.Input(
                    "mask", optional=True,
                    tooltip="Confine the concepts to this region (1 = edit): outside it they add nothing, inside it the implicit masks still "
                    "choose where. Resized if the aspect ratio matches; for a video one mask, one per latent frame, or one per video frame.",
                ),
            ],
            outputs=[io.Guider.Output(display_name="GUIDER", tooltip="For SamplerCustomAdvanced's guider input.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, concepts, mask=None) -> io.NodeOutput:
        return io.NodeOutput(SemanticGuider(model, positive, negative, cfg, concepts, mask))


NODES = [EditFriendlyEditConcept, EditFriendlySemanticGuider]
