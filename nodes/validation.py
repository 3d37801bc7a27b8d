"""Checks of user input, run before any model call, with messages a ComfyUI user can act on.

Pure torch. Each check raises EditFriendlyInputError (a ValueError) or returns a cleaned value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .noise_maps import ModelFingerprint, NoiseMaps


class EditFriendlyInputError(ValueError):
    """Bad input to an edit-friendly node; the message says what to change."""


def check_latent(samples, channels: int) -> torch.Tensor:
    """A LATENT's samples must be a finite, non-empty [B, C, H, W] batch with the model's channel count."""
    if not isinstance(samples, torch.Tensor) or getattr(samples, "is_nested", False):
        raise EditFriendlyInputError("The latent must be a plain image latent batch.")
    if samples.ndim != 4:
        raise EditFriendlyInputError(
            f"Only image latents [batch, channels, height, width] can be inverted; got shape {tuple(samples.shape)}."
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


def check_shift(dx: int, dy: int, noise_maps: NoiseMaps, fill: str) -> None:
    height, width = noise_maps.latent_shape[-2:]
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


def fit_mask(mask: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """A MASK resized to the latent grid, shape [B or 1, H, W]; refused when its aspect ratio differs."""
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    elif mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 3 or mask.numel() == 0:
        raise EditFriendlyInputError(f"The mask must be [height, width] or [batch, height, width]; got {tuple(mask.shape)}.")
    if mask.shape[0] not in (1, batch):
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
