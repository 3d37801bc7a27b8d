"""Implicit edit masks from edit-friendly maps: where the target prompt's prediction departs from the source's.

DiffEdit (Couairon et al., ICLR 2023) finds the region an edit should touch by comparing the two prompts' noise
predictions on noised copies of the image. Edit-friendly maps hold the noisy latents of the image's own path
(`NoiseMaps.noisy_latents`, eq. 3 of the edit-friendly paper), so the comparison runs on those, with no noise drawn:
at each step of a window the model predicts with both prompts at the recorded latent (one model call of two
prompts); the channel-summed |difference|, smoothed and scaled to a maximum of 1 per step and picture (so that
every step and model family weighs alike), is averaged over the window and scaled to a maximum of 1 per picture, as
DiffEdit scales its map. The mask is 1 where that is at or above `threshold` (DiffEdit: 0.5), grown by `grow` latent
pixels. Given to the Edit-Friendly Sampler, it keeps the edit inside and the source outside, exactly.
"""

from __future__ import annotations

import comfy.samplers
import torch
import torch.nn.functional as F

from .noise_maps import NoiseMaps
from .pipeline import model_fingerprint, run_guider
from .semantic_guidance import smooth_frames
from .validation import EditFriendlyInputError, check_in_range, check_maps_fit_model


def to_unit_peak(strength: torch.Tensor) -> torch.Tensor:
    """`strength` divided by its maximum over each batch item (all frames of a video); all zero stays zero."""
    peak = strength.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    return strength / peak.view(-1, *[1] * (strength.ndim - 1))


class PromptDifferenceGuider(comfy.samplers.CFGGuider):
    """Predicts with the target and the source prompt in one call and adds their normalised difference to `strength`."""

    def __init__(self, model_patcher, source_positive, positive):
        super().__init__(model_patcher)
        self.inner_set_conds({"positive": positive, "source_positive": source_positive})
        self.strength = None

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        model_options = {} if model_options is None else model_options
        target, source = comfy.samplers.calc_cond_batch(
            self.inner_model, [self.conds["positive"], self.conds["source_positive"]], x, timestep, model_options
        )
        difference = to_unit_peak(smooth_frames((target - source).abs().float().sum(dim=1, keepdim=True)))
        self.strength = difference if self.strength is None else self.strength + difference
        return target


@torch.no_grad()
def sample_recorded_latents(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_maps=None, first=0):
    """Calls the model at the maps' recorded latents x_t of steps first, first + 1, ... (eq. 3's noisy latents); returns x."""
    extra_args = {} if extra_args is None else extra_args
    for i in range(sigmas.shape[0] - 1):
        recorded = noise_maps.noisy_latents[first + i].to(x)
        denoised = model(recorded, sigmas[i] * recorded.new_ones([recorded.shape[0]]), **extra_args)
        if callback is not None:
            callback({"x": recorded, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
    return x


def check_window(noise_maps: NoiseMaps, start_percent: float, end_percent: float) -> tuple[int, int]:
    """The steps [first, last) of the maps that start_percent and end_percent select; at least one."""
    check_in_range("start_percent", start_percent, 0.0, 1.0)
    check_in_range("end_percent", end_percent, 0.0, 1.0)
    if start_percent >= end_percent:
        raise EditFriendlyInputError(f"start_percent ({start_percent}) must be below end_percent ({end_percent}).")
    steps = noise_maps.steps
    first = min(int(start_percent * steps), steps - 1)
    return first, max(first + 1, round(end_percent * steps))


def prompt_difference(model, noise_maps: NoiseMaps, source_positive, positive, first: int, last: int) -> torch.Tensor:
    """The mean normalised difference map over steps [first, last), peak 1: [B, 1, H, W] or [B, 1, T, H, W]."""
    guider = PromptDifferenceGuider(model, source_positive, positive)
    sampler = comfy.samplers.KSAMPLER(sample_recorded_latents, extra_options={"noise_maps": noise_maps, "first": first})
    run_guider(guider, sampler, noise_maps.sigmas[first : last + 1], noise_maps.source_latent, noise_maps.seed)
    return to_unit_peak(guider.strength).cpu()


def region_mask(strength: torch.Tensor, threshold: float, grow: int) -> torch.Tensor:
    """A MASK of where `strength` is at or above `threshold`, grown by `grow` pixels: [B, H, W] for images; for a
    video [T, H, W], one per latent frame, the union over the batch."""
    mask = (strength >= threshold).float()
    if grow > 0:
        frames = mask.movedim(1, 2).flatten(0, 1) if mask.ndim == 5 else mask  # each frame on its own
        frames = F.max_pool2d(frames, 2 * grow + 1, stride=1, padding=grow)
        mask = frames.unflatten(0, (mask.shape[0], mask.shape[2])).movedim(2, 1) if mask.ndim == 5 else frames
    return mask[:, 0].amax(dim=0) if mask.ndim == 5 else mask[:, 0]


def implicit_edit_mask(
    model, noise_maps: NoiseMaps, source_positive, positive, threshold: float, start_percent: float, end_percent: float, grow: int
) -> torch.Tensor:
    """The region an edit from `source_positive` to `positive` touches, as a MASK at the latent's resolution."""
    check_maps_fit_model(noise_maps, model_fingerprint(model))
    check_in_range("threshold", threshold, 0.0, 1.0)
    if threshold <= 0:
        raise EditFriendlyInputError("threshold must be above 0: at 0 the mask covers the whole picture.")
    if grow < 0:
        raise EditFriendlyInputError(f"grow must be 0 or more; got {grow}.")
    for name, conditioning in (("source_positive", source_positive), ("positive", positive)):
        if not isinstance(conditioning, list) or not conditioning:
            raise EditFriendlyInputError(f"{name} must be a CONDITIONING (the output of a text encode node).")
    first, last = check_window(noise_maps, start_percent, end_percent)
    return region_mask(prompt_difference(model, noise_maps, source_positive, positive, first, last), threshold, grow)
