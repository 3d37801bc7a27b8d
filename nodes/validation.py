"""Checks of user input, run before any model call, with messages a ComfyUI user can act on.

Pure torch. Each check raises EditFriendlyInputError (a ValueError) or returns a cleaned value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .noise_maps import ModelFingerprint, NoiseMaps
from .steps import STEP_RULES


class EditFriendlyInputError(ValueError):
    """Bad input to an edit-friendly node; the message says what to change."""


LATENT_LAYOUTS = {2: "image latents [batch, channels, height, width]", 3: "video latents [batch, channels, frames, height, width]"}
"""What a model's latent_format.latent_dimensions says its latents look like."""


def check_latent(samples, channels: int, dimensions: int = 2, model_name: str = "This model", single_frame: bool = False) -> torch.Tensor:
    """A LATENT's samples must be a finite, non-empty batch of the model's layout (LATENT_LAYOUTS) and channel count.

    `single_frame`: an image model with a video layout (Qwen-Image, Cosmos Predict2 text-to-image) takes one frame.
    """
    if not isinstance(samples, torch.Tensor) or getattr(samples, "is_nested", False):
        raise EditFriendlyInputError("The latent must be a plain latent batch (not a nested or audio latent).")
    if dimensions not in LATENT_LAYOUTS:
        raise EditFriendlyInputError(f"{model_name} does not work on image or video latents, so it cannot be inverted.")
    if samples.ndim != dimensions + 2:
        given = LATENT_LAYOUTS.get(samples.ndim - 2, f"{samples.ndim}-dimensional latents")
        raise EditFriendlyInputError(
            f"{model_name} works on {LATENT_LAYOUTS[dimensions]}, but this latent has shape {tuple(samples.shape)} "
            f"({given}). Encode the image or video with this model's VAE."
        )
    if single_frame and samples.shape[2] != 1:
        raise EditFriendlyInputError(
            f"{model_name} is an image model: its latents hold one frame, but this one has {samples.shape[2]} "
            f"(shape {tuple(samples.shape)}). Edit a video with a video model (Wan, HunyuanVideo, LTXV...), or pick one frame."
        )
    if samples.numel() == 0:
        raise EditFriendlyInputError(f"The latent is empty (shape {tuple(samples.shape)}).")
    if samples.shape[1] != channels:
        raise EditFriendlyInputError(
            f"The latent has {samples.shape[1]} channels but the model works on {channels}: "
            "encode the image with this model's VAE."
        )
    if not torch.isfinite(samples).all():
        raise EditFriendlyInputError("The latent contains NaN or infinite values.")
    if not samples.any():
        raise EditFriendlyInputError(
            "The latent is all zeros (an Empty Latent Image?). Inversion needs a real image: use VAE Encode."
        )
    return samples


def check_in_range(name: str, value: int, low: int, high: int, low_meaning: str | None = None) -> int:
    if not low <= value <= high:
        raise EditFriendlyInputError(f"{name} must be between {low_meaning or low} and {high}; got {value}.")
    return value


def check_choice(name: str, value: str, choices) -> str:
    if value not in choices:
        raise EditFriendlyInputError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}.")
    return value


def check_no_noise_mask(latent: dict) -> dict:
    """The inversion always covers the whole latent: a noise mask on it would be dropped without a word."""
    if latent.get("noise_mask") is not None:
        raise EditFriendlyInputError(
            "The latent carries a noise mask (Set Latent Noise Mask, VAE Encode for Inpainting, InpaintModelConditioning), "
            "but the inversion always covers the whole image. To confine the edit, connect the mask to the Edit-Friendly "
            "Sampler's mask input (or set the noise mask on the latent that goes to SamplerCustomAdvanced)."
        )
    return latent


def check_eta(eta: float) -> float:
    if not (0.0 < eta <= 1.0):
        raise EditFriendlyInputError(
            f"eta must be in (0, 1]; got {eta}. eta = 1 is DDPM as in the paper; eta = 0 would be DDIM, "
            "which has no noise to invert into."
        )
    return float(eta)


def check_sigmas(sigmas: torch.Tensor, scheduler: str) -> torch.Tensor:
    """The schedule must have at least one step, decrease strictly and end at exactly 0."""
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise EditFriendlyInputError(f"The {scheduler} scheduler gave no steps for this model.")
    if float(sigmas[-1]) != 0.0:
        raise EditFriendlyInputError(
            f"The {scheduler} scheduler does not end at sigma 0 for this model, so the image could not be "
            "reconstructed exactly. Choose another scheduler (ddim_uniform, simple, normal, ...)."
        )
    if not torch.isfinite(sigmas).all():
        raise EditFriendlyInputError(f"The {scheduler} scheduler gave non-finite sigmas at this step count; use more steps or another scheduler.")
    if not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise EditFriendlyInputError(
            f"The {scheduler} scheduler repeats a sigma at this step count; use fewer steps or another scheduler."
        )
    return sigmas


def check_noise_scales(scales: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The model must noise as x = a(s) x0 + b(s) noise with b > 0 above sigma 0, b(0) = 0 and a(0) > 0.

    (a is 0 at the top of a rectified-flow schedule, which is pure noise.)
    """
    a, b = scales[:, 0], scales[:, 1]
    has_noise = torch.ones_like(b, dtype=torch.bool)
    has_noise[-1] = False
    bad = ~torch.isfinite(scales).all(dim=1) | (a < 0) | ((b > 0) != has_noise)
    bad[-1] |= bool(a[-1] <= 0)
    if bad.any():
        where = int(bad.nonzero()[0])
        raise EditFriendlyInputError(
            f"This model does not noise its latents as x = a * latent + b * noise (at sigma {float(sigmas[where]):.4g} its "
            f"noise scaling gives a = {float(a[where]):.4g}, b = {float(b[where]):.4g}). A model that starts from the input "
            "image instead of noise has no DDPM noise space to invert into; use a text-to-image model."
        )
    return scales


def check_skip(skip: int, noise_maps: NoiseMaps) -> int:
    check_maps(noise_maps)
    if not (0 <= skip < noise_maps.steps):
        raise EditFriendlyInputError(
            f"skip must be at least 0 and less than the number of steps the noise maps have ({noise_maps.steps}); "
            f"got {skip}."
        )
    return int(skip)


def check_maps(noise_maps) -> NoiseMaps:
    if not isinstance(noise_maps, NoiseMaps):
        raise EditFriendlyInputError(
            f"noise_maps must come from an Edit-Friendly DDPM Inversion node; got {type(noise_maps).__name__}."
        )
    return noise_maps


def check_maps_fit_model(noise_maps: NoiseMaps, fingerprint: ModelFingerprint) -> NoiseMaps:
    """Maps only replay on a model with the same prediction type, schedule and latent space."""
    check_maps(noise_maps)
    difference = noise_maps.fingerprint.mismatch(fingerprint)
    if difference is not None:
        hint = (
            " A ModelSampling node (Discrete, SD3, Flux, AuraFlow...) with another type or shift on one side only gives "
            "another schedule: use the same one for the inversion and the edit."
            if "schedule" in difference or "timestep" in difference else ""
        )
        raise EditFriendlyInputError(
            "These noise maps were made with another model family or schedule and cannot be replayed on this "
            f"model ({difference}). Invert the image with the same model you sample with.{hint}"
        )
    return noise_maps


def check_shift(dx: int, dy: int, noise_maps: NoiseMaps, fill: str, dt: int = 0) -> None:
    height, width = noise_maps.latent_shape[-2:]
    frames = noise_maps.frames
    if dt and frames is None:
        raise EditFriendlyInputError("A shift in time (dt) needs video noise maps; these are of an image.")
    if dt and (abs(dt) >= frames or fill == "reflect" and 2 * abs(dt) >= frames):
        limit = frames - 1 if fill != "reflect" else (frames - 1) // 2
        raise EditFriendlyInputError(
            f"A shift of {dt} latent frames leaves nothing of this {frames}-frame video with the {fill} fill (at most "
            f"{limit}). A latent frame is 4 video frames for Wan and HunyuanVideo, 8 for LTXV, 6 for Mochi."
        )
    if abs(dx) >= width or abs(dy) >= height:
        raise EditFriendlyInputError(
            f"A shift of ({dx}, {dy}) latent pixels is as large as the latent itself ({width}x{height}); "
            "nothing of the image would be left. Latent pixels are 8 image pixels for most models."
        )
    if fill == "reflect" and (2 * abs(dx) >= width or 2 * abs(dy) >= height):
        raise EditFriendlyInputError(
            f"Reflection can fill a band of at most half the latent ({width // 2 - 1}x{height // 2 - 1} here); "
            f"got a shift of ({dx}, {dy}). Use the noise or wrap fill for larger shifts."
        )


def fit_mask(mask: torch.Tensor, latent_shape: tuple) -> torch.Tensor:
    """A MASK resized to the latent grid: [B or 1, H, W] for an image latent, [T or 1, H, W] for a video latent (a
    MASK's batch is read as frames, as a mask loaded from a video is); refused when its aspect ratio differs."""
    batch, _, *frames, height, width = latent_shape
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    elif mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 3 or mask.numel() == 0:
        raise EditFriendlyInputError(f"The mask must be [height, width] or [batch, height, width]; got {tuple(mask.shape)}.")
    if frames:
        mask = _mask_frames(mask, frames[0])
    elif mask.shape[0] not in (1, batch):
        raise EditFriendlyInputError(f"The mask has a batch of {mask.shape[0]} but the latent has {batch}.")
    mask_h, mask_w = mask.shape[-2:]
    # The same aspect ratio, allowing one latent pixel for the rounding of image sizes to the latent grid.
    if abs(mask_w * height / mask_h - width) > 1.0:
        raise EditFriendlyInputError(
            f"The mask is {mask_w}x{mask_h} but the latent is {width}x{height} (an image of about "
            f"{width * 8}x{height * 8}); their aspect ratios differ, so it cannot be resized to fit."
        )
    if not torch.isfinite(mask).all():
        raise EditFriendlyInputError("The mask contains NaN or infinite values.")
    if (mask_h, mask_w) != (height, width):
        mask = F.interpolate(mask.unsqueeze(1).float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return mask.clamp(0.0, 1.0)


def _mask_frames(mask: torch.Tensor, frames: int) -> torch.Tensor:
    """One mask per latent frame from 1 mask, one per latent frame, or one per video frame.

    Video VAEs (Wan, HunyuanVideo, LTXV, Mochi) encode the first video frame alone and each later group of k frames
    into one latent frame, so a video of (T - 1) * k + 1 frames has T latent frames; a latent frame takes the union
    (the largest value) of its group's masks.
    """
    count = mask.shape[0]
    if count in (1, frames):
        return mask
    if frames > 1 and (count - 1) % (frames - 1) == 0:
        group = (count - 1) // (frames - 1)
        return torch.cat([mask[:1], mask[1:].unflatten(0, (frames - 1, group)).amax(dim=1)])
    raise EditFriendlyInputError(
        f"The mask has {count} frames but the video latent has {frames}: give one mask for every frame, one per latent "
        f"frame ({frames}), or one per video frame ((frames - 1) * k + 1, such as {4 * (frames - 1) + 1} for Wan's k = 4)."
    )


def mask_for_latent(mask: torch.Tensor, latent_shape: tuple) -> torch.Tensor:
    """A mask from fit_mask, shaped to broadcast over the latent: [B or 1, 1, H, W] or [1, 1, T or 1, H, W]."""
    return mask.unsqueeze(1) if len(latent_shape) == 4 else mask[None, None]


def check_rule(rule: str) -> str:
    return check_choice("step rule", rule, STEP_RULES)


def check_replay_rule(noise_maps: NoiseMaps, rule: str | None) -> None:
    """Refuse to replay maps with a step rule other than the one they were made with, or without its data."""
    if rule is not None and rule != noise_maps.rule:
        raise EditFriendlyInputError(
            f"These noise maps were made with the {noise_maps.rule!r} step rule and cannot be replayed with {rule!r}: "
            f"the maps only lead back to the image under the rule they were inverted with. Invert again with rule {rule!r}."
        )
    if noise_maps.rule not in STEP_RULES:
        raise EditFriendlyInputError(f"The noise maps use an unknown step rule {noise_maps.rule!r}.")
    if STEP_RULES[noise_maps.rule].keeps_history and noise_maps.source_denoised is None:
        raise EditFriendlyInputError(
            f"The {noise_maps.rule!r} noise maps lack the source's clean-latent estimates they need; invert again."
        )


def check_replay_sigmas(noise_maps: NoiseMaps, sigmas: torch.Tensor) -> int:
    """The skip that `sigmas` corresponds to in `noise_maps`; refused when they are not a tail of its schedule."""
    sigmas = sigmas.detach().float().cpu()
    skip = noise_maps.steps + 1 - sigmas.shape[0]
    if skip < 0 or skip >= noise_maps.steps or not torch.allclose(
        sigmas, noise_maps.sigmas[skip:], rtol=1e-5, atol=1e-7
    ):
        raise EditFriendlyInputError(
            f"The sigmas given to the edit-friendly sampler ({sigmas.shape[0]} values, from "
            f"{float(sigmas[0]):.4g} to {float(sigmas[-1]):.4g}) are not a tail of the schedule the noise maps "
            f"were made with ({noise_maps.steps + 1} values from {float(noise_maps.sigmas[0]):.4g} to 0). "
            "Use the sigmas the noise maps provide."
        )
    return skip


SOURCE_LATENT_TOLERANCE = 1e-2
"""How far (relative to its largest value) the sampler's latent may be from the maps' source: a bfloat16 copy is within it."""
SEED_DEPENDENT_CONDITIONING = ("unclip_conditioning", "noise_augmentation")
"""Conditioning keys whose model input ComfyUI draws from the sampler's seed (unCLIP, the x4 upscaler's augmentation)."""


def check_replay_latent(noise_maps: NoiseMaps, shape: tuple, given: torch.Tensor | None, source: torch.Tensor) -> None:
    """The sampler's latent must have the maps' shape and be their source (`given` and `source` both in the model's
    space): the replay starts from the maps' own latent, so any other latent (another sampler's output, another
    image) would be ignored without a word."""
    if tuple(shape) != noise_maps.latent_shape:
        hint = (
            f" They hold {noise_maps.variations} variations of each latent: give the sampler the Edit-Friendly Sampler "
            "(Custom Sampling) node's LATENT output, which has them all."
            if noise_maps.variations > 1 else ""
        )
        raise EditFriendlyInputError(
            f"The latent given to the sampler has shape {tuple(shape)} but the noise maps are for {noise_maps.latent_shape}.{hint}"
        )
    if given is not None and (given.float() - source).abs().max() > SOURCE_LATENT_TOLERANCE * source.abs().max():
        raise EditFriendlyInputError(
            "The latent given to the sampler is not the one these noise maps were made from. The edit-friendly sampler "
            "replays the inversion from its own start, so it cannot continue another sampler's output or edit another "
            "image (a Noise Map Transform's shift moves the maps' latent too): connect the Edit-Friendly Sampler "
            "(Custom Sampling) node's LATENT output to latent_image."
        )


def check_replay_seed(noise_maps: NoiseMaps, seed, conds: dict) -> None:
    """Conditioning that draws noise from the sampler's seed needs the inversion's seed, or the source would not come back."""
    if seed is not None and int(seed) != noise_maps.seed and any(
        cond.get(key) not in (None, 0, 0.0)
        for cond_list in conds.values()
        for cond in cond_list or ()
        if isinstance(cond, dict)
        for key in SEED_DEPENDENT_CONDITIONING
    ):
        raise EditFriendlyInputError(
            f"This conditioning (unCLIP or noise augmentation) draws noise from the sampler's seed, here {seed}, but the "
            f"inversion used seed {noise_maps.seed}, so the source would not come back. Give SamplerCustomAdvanced a "
            f"RandomNoise node with seed {noise_maps.seed}, or set SamplerCustom's noise_seed to it (the edit-friendly "
            "sampler does not use the noise itself)."
        )


def check_storable(noise_map: torch.Tensor, sigma, storage: torch.dtype) -> torch.Tensor:
    """A map rounded to its storage precision must stay finite."""
    if not torch.isfinite(noise_map.abs().amax()):  # NaN and inf both reach the maximum; cheaper than isfinite().all()
        raise EditFriendlyInputError(
            f"A noise map at sigma {float(sigma):.4g} exceeds the range of {storage}: invert with precision float32."
        )
    return noise_map
