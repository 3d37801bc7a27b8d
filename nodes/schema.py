"""What every node of the pack shares in its V3 schema: the category root and the common inputs."""

from __future__ import annotations

import inspect

from comfy_api.latest import io

CATEGORY = "edit_friendly_ddpm"
MAX_STEPS = 1000
SEED_MAX = 0xFFFFFFFFFFFFFFFF
NOISE_MAPS_TOOLTIP = "Edit-friendly noise maps of one image, made by Edit-Friendly DDPM Inversion."


def description(cls) -> str:
    return inspect.cleandoc(cls.__doc__ or "")


SKIP_INPUT = io.Int.Input(
    "skip", default=36, min=0, max=MAX_STEPS - 1,
    tooltip="T_skip: noisiest steps left out (paper: 36 of 100, range 0-40). Larger keeps more of the input; must be below the steps.",
)
MASK_INPUT = io.Mask.Input(
    "mask", optional=True,
    tooltip="Edit only inside the mask (1 = edit); outside, the output is the source. Soft masks blend. Resized if the aspect ratio matches. For a video: one mask, one per latent frame, or one per video frame.",
)
