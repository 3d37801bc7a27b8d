"""Semantic guidance with implicit masks (LEDITS++, Brack et al., CVPR 2024; SEGA, Brack et al., NeurIPS 2023).

Each edit concept adds `sign * scale * M * (d_concept - d_uncond)` to the guider's estimate, where M (the implicit
mask) is 1 only where that difference is strongest: at or above its `threshold` quantile in each image, after a
small spatial smoothing. The edit stays local without a user mask, and it needs only the model's predictions, so it
works on every model family. Replayed over edit-friendly noise maps with the inversion's own prompt and CFG, the
concepts alone make the edit, as in LEDITS++.
"""

from __future__ import annotations

import dataclasses
import math

import comfy.samplers
import torch
import torch.nn.functional as F

from .validation import EditFriendlyInputError, fit_mask, mask_for_latent

DIRECTIONS = {"add": 1.0, "remove": -1.0}
"""Whether a concept pulls the image towards itself or pushes it away (LEDITS++'s reverse_editing_direction)."""
DEFAULT_SCALE = 5.0
DEFAULT_THRESHOLD = 0.9
"""LEDITS++ and SEGA both default to the 0.9 quantile: a concept acts on the strongest tenth of the image."""
SMOOTHING_SIGMA = 1.0
"""Std of the Gaussian, in latent pixels, that smooths the difference before the quantile, so that the mask is
a few connected regions rather than speckle (LEDITS++ smooths its attention maps with a 3x3 Gaussian of std 0.5 at a
quarter of the latent's resolution; here the noise difference is smoothed at full latent resolution)."""
SMOOTHING_RADIUS = 2
SIGMA_TOLERANCE = 1e-4
"""Relative slack when finding a model call's sigma in the schedule: the edit-friendly sampler calls the model at
the maps' stored sigmas, which may differ from the given ones by rounding."""


@dataclasses.dataclass(frozen=True, eq=False)
class EditConcept:
    """One edit concept: a prompt that guides the image inside its implicit mask during a window of steps.

    Steps count from the first step the sampler takes (after the edit-friendly sampler's skip): the concept acts at
    steps warmup, warmup + 1, ..., cooldown - 1. A cooldown at or past the last step never stops it.
    """

    conditioning: list
    scale: float = DEFAULT_SCALE
    direction: str = "add"
    warmup: int = 0
    cooldown: int = 1000
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self):
        if not isinstance(self.conditioning, list) or not self.conditioning:
            raise EditFriendlyInputError("An edit concept needs a CONDITIONING (the output of a text encode node).")
        if self.direction not in DIRECTIONS:
            raise EditFriendlyInputError(f"Unknown direction {self.direction!r}; choose one of {', '.join(DIRECTIONS)}.")
        if not math.isfinite(self.scale) or self.scale < 0:
            raise EditFriendlyInputError(f"An edit concept's scale must be 0 or more; got {self.scale}. Use direction remove to push away.")
        if self.warmup < 0:
            raise EditFriendlyInputError(f"An edit concept's warmup must be 0 or more; got {self.warmup}.")
        if self.cooldown <= self.warmup:
            raise EditFriendlyInputError(
                f"An edit concept's cooldown ({self.cooldown}) must be above its warmup ({self.warmup}): it acts from step warmup "
                "up to the step before cooldown, counted from the first sampled step."
            )
        if not 0.0 <= self.threshold < 1.0:
            raise EditFriendlyInputError(
                f"An edit concept's threshold must be at least 0 and below 1; got {self.threshold}. 0.9 edits the strongest tenth "
                "of the image, 0 the whole image."
            )

    @property
    def sign(self) -> float:
        return DIRECTIONS[self.direction]

    def acts_at(self, step: int) -> bool:
        return self.scale != 0 and self.warmup <= step < self.cooldown


def check_concepts(concepts) -> tuple[EditConcept, ...]:
    """A non-empty list of EditConcept, as a tuple (a copy the caller cannot change afterwards)."""
    if not concepts:
        raise EditFriendlyInputError(
            "Semantic guidance needs at least one edit concept: connect an Edit Concept node to the concepts input."
        )
    if not isinstance(concepts, (list, tuple)) or not all(isinstance(concept, EditConcept) for concept in concepts):
        raise EditFriendlyInputError("concepts must come from Edit Concept nodes.")
    return tuple(concepts)


def _gaussian_kernel(device, dtype) -> torch.Tensor:
    offsets = torch.arange(-SMOOTHING_RADIUS, SMOOTHING_RADIUS + 1, device=device, dtype=dtype)
    kernel = torch.exp(-0.5 * (offsets / SMOOTHING_SIGMA) ** 2)
    return kernel / kernel.sum()


def smooth_frames(strength: torch.Tensor) -> torch.Tensor:
    """A small Gaussian blur over height and width of [B, 1, H, W] or [B, 1, T, H, W], each frame on its own."""
    shape = strength.shape
    frames = strength.movedim(1, -3).reshape(-1, 1, *shape[-2:]) if strength.ndim == 5 else strength
    kernel = _gaussian_kernel(strength.device, strength.dtype)
    padded = F.pad(frames, [SMOOTHING_RADIUS] * 4, mode="replicate")  # any size, and no darkening at the edges
    blurred = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    if strength.ndim == 5:
        return blurred.reshape(shape[0], shape[2], 1, *shape[-2:]).movedim(2, 1)
    return blurred


def implicit_mask(difference: torch.Tensor, threshold: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """LEDITS++'s implicit mask of one concept: 1 where the channel-summed, smoothed |difference| (times `weight`,
    a user mask) is at or above its `threshold` quantile over each batch item (all frames of a video), else 0.

    Shaped [B, 1, ...] to broadcast over channels. Where the strength is 0 the concept has nothing to add, so the
    mask is 0 there even when more than 1 - threshold of the image is 0 (a small user mask).
    """
    strength = difference.abs().float()
    if weight is not None:
        strength = strength * weight.float()  # before the quantile, as LEDITS++ applies its user mask
    strength = smooth_frames(strength.sum(dim=1, keepdim=True))
    level = torch.quantile(strength.flatten(1), threshold, dim=1).view(-1, *[1] * (strength.ndim - 1))
    return ((strength >= level) & (strength > 0)).to(difference.dtype)


def concept_guidance(uncond: torch.Tensor, predictions: list[torch.Tensor], concepts, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The sum of the concepts' terms `sign * scale * weight * M * (d_concept - d_uncond)`, in denoised space.

    SEGA and LEDITS++ add `scale * M * (eps_concept - eps_uncond)` to the noise prediction; ComfyUI works on the
    denoised estimate d, which every family gets from the model output by the same affine map at a given x and sigma
    (x = a * d + b * eps, a, b > 0). So d_concept - d_uncond = -(b / a) (eps_concept - eps_uncond): a positive
    per-step factor away from SEGA's difference, which leaves the quantile mask as it is, and the term added to d is
    exactly SEGA's term added to eps. `predictions` and `concepts` are the active ones, in the same order.
    """
    total = torch.zeros_like(uncond)
    for prediction, concept in zip(predictions, concepts):
        difference = prediction - uncond
        term = difference * implicit_mask(difference, concept.threshold, weight)
        if weight is not None:
            term = term * weight.to(term)
        total = total + (concept.sign * concept.scale) * term
    return total


def step_index(sigma: float, schedule: torch.Tensor) -> int:
    """The step of `schedule` (the sampler's sigmas, on the CPU) a model call at `sigma` belongs to: the last step
    starting at or above it, so that a second-order sampler's intermediate sigma counts as its own step's."""
    starts = schedule[:-1] if schedule.shape[0] > 1 else schedule
    return max(int((starts >= sigma * (1.0 - SIGMA_TOLERANCE)).sum()) - 1, 0)


def concept_key(index: int) -> str:
    return f"concept_{index}"


class SemanticGuider(comfy.samplers.CFGGuider):
    """CFG on (positive, negative, cfg) plus semantic guidance by edit concepts, each inside its implicit mask.

    The concepts' conditionings are registered beside positive and negative, so ComfyUI prepares them alike
    (model conds, areas, ControlNets, hooks) and calc_cond_batch runs all of them in one model call per step. A
    concept outside its window of steps, or of scale 0, is left out of the call. An optional `mask` (a MASK: 1 =
    edit) weights every concept's term: outside it the guidance changes nothing.
    """

    def __init__(self, model_patcher, positive, negative, cfg: float, concepts, mask: torch.Tensor | None = None):
        super().__init__(model_patcher)
        self.concepts = check_concepts(concepts)
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4)):
            raise EditFriendlyInputError(f"The mask must be a MASK; got {type(mask).__name__}.")
        self.mask = mask
        self.inner_set_conds({"positive": positive, "negative": negative} | {
            concept_key(i): concept.conditioning for i, concept in enumerate(self.concepts)
        })
        self.set_cfg(cfg)
        self.weight, self.schedule = None, None

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        # Checked here, before ComfyUI loads the model: only now is the latent's shape known.
        if latent_image.is_nested or latent_image.ndim not in (4, 5):
            raise EditFriendlyInputError(
                f"Semantic guidance works on image and video latents ([B, C, H, W] or [B, C, T, H, W]); got a latent of shape "
                f"{tuple(latent_image.shape)}."
            )
        shape = tuple(latent_image.shape)
        self.weight = None if self.mask is None else mask_for_latent(fit_mask(self.mask, shape), shape)
        self.schedule = sigmas.detach().float().cpu()
        return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)

    def active_concepts(self, timestep: torch.Tensor, model_options: dict) -> list[tuple[str, EditConcept]]:
        """The concepts that act at this model call (ComfyUI reads one sigma per call: the first sample's)."""
        schedule = (model_options.get("transformer_options") or {}).get("sample_sigmas")
        schedule = self.schedule if schedule is None else schedule.detach().float().cpu()
        step = step_index(float(timestep.flatten()[0]), schedule)
        return [(concept_key(i), concept) for i, concept in enumerate(self.concepts) if concept.acts_at(step)]

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        model_options = {} if model_options is None else model_options
        active = self.active_concepts(timestep, model_options)
        positive = self.conds.get("positive")
        cfg_one = math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False)
        negative = None if cfg_one and not active else self.conds.get("negative")  # CFGGuider's shortcut, when no concept needs it
        out = self._predictions(x, timestep, model_options, [positive, negative], [self.conds[key] for key, _ in active])
        pair = out[:2]
        for fn in model_options.get("sampler_pre_cfg_function", []):
            pair = fn({
                "conds": [positive, negative], "conds_out": pair, "cond_scale": self.cfg, "timestep": timestep,
                "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options,
            })[:2]
        # Post-CFG patches (RescaleCFG, ...) run after the concepts' terms, as LEDITS++ rescales after its edit guidance.
        without_post_cfg = {**model_options, "sampler_post_cfg_function": []}
        denoised = comfy.samplers.cfg_function(
            self.inner_model, pair[0], pair[1], self.cfg, x, timestep, model_options=without_post_cfg, cond=positive, uncond=negative
        )
        if active:
            weight = None if self.weight is None else self.weight.to(x.device)
            denoised = denoised + concept_guidance(out[1], out[2:], [concept for _, concept in active], weight)
        for fn in model_options.get("sampler_post_cfg_function", []):
            denoised = fn({
                "denoised": denoised, "cond": positive, "uncond": negative, "cond_scale": self.cfg, "model": self.inner_model,
                "uncond_denoised": pair[1], "cond_denoised": pair[0], "sigma": timestep, "model_options": model_options, "input": x,
            })
        return denoised

    def _predictions(self, x, timestep, model_options: dict, pair: list, concept_conds: list) -> list[torch.Tensor]:
        """The model's estimates for the CFG pair and the active concepts: one calc_cond_batch call, batched by ComfyUI."""
        if "sampler_calc_cond_batch_function" not in model_options:
            return comfy.samplers.calc_cond_batch(self.inner_model, [*pair, *concept_conds], x, timestep, model_options)
        # A patch of the CFG pair's predictions (SkipLayerGuidanceDiT's) is written for that pair: the concepts go beside it.
        args = {"conds": pair, "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options}
        out = list(model_options["sampler_calc_cond_batch_function"](args))
        if concept_conds:
            out += comfy.samplers.calc_cond_batch(self.inner_model, concept_conds, x, timestep, model_options)
        return out
