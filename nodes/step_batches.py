"""Which inversion steps share a model call, and how a replay calls the model on those same step batches again.

A step batch is a run of consecutive steps whose model calls go through the model together (the inversion's
model calls are independent of each other: Eq. 6 draws every noisy latent from the clean one). This module reads
ComfyUI's conditioning and model options to decide where steps must run alone; the step math is in steps.py.
"""

from __future__ import annotations

import math

import torch

from .noise_maps import NoiseMaps


def inner_base_model(model):
    """The BaseModel inside the model a k-diffusion sampler function receives (KSamplerX0Inpaint around a guider)."""
    return model.inner_model.inner_model


def inner_guider(model):
    """The guider inside the model a sampler function receives, or None."""
    return getattr(model, "inner_model", None)


STEP_SENSITIVE_OPTIONS = (
    "sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function",
    "sampler_calc_cond_batch_function", "model_function_wrapper", "context_handler", "multigpu_clones",
)
"""model_options entries that may look at one sigma per call or keep state between calls (APG's momentum,
SkipLayerGuidanceDiTSimple's sigma[0]), or split a batch over devices that round apart (later ComfyUI versions'
multi-GPU clones); with any of them, or a transformer patch (Deep Shrink reads sigmas[0]), steps run alone."""
STEP_SENSITIVE_WRAPPERS = ("predict_noise", "calc_cond_batch", "apply_model", "diffusion_model")
"""ComfyUI wrapper types (patcher_extension.WrappersMP) that see every model call, such as EasyCache's cache."""
BATCH_SAFE_WRAPPER_KEYS = ("torch.compile",)
"""Wrapper keys known to compute the same per sample in any batch: ComfyUI's TorchCompileModel."""


def _has_step_sensitive_wrapper(transformer_options: dict) -> bool:
    wrappers = transformer_options.get("wrappers") or {}
    return any(
        functions and key not in BATCH_SAFE_WRAPPER_KEYS
        for kind in STEP_SENSITIVE_WRAPPERS
        for key, functions in (wrappers.get(kind) or {}).items()
    )


def _batch_of(value) -> int | None:
    return value.shape[0] if isinstance(value, torch.Tensor) and value.ndim > 0 else None


def _conditioning_follows_batch(cond: dict, batch: int) -> bool:
    """Whether ComfyUI gives every step of a step-major batch the conditioning a one-step call gets.

    ComfyUI cuts a cond mask or model input (a concat latent, an image embedding) to the call's batch and
    repeats it cyclically, so one whose batch size divides the latent's repeats per step alike; any other size
    lands on other samples in a batch of several steps.
    """
    values = [cond.get("mask")]
    for model_cond in (cond.get("model_conds") or {}).values():
        inner = getattr(model_cond, "cond", None)
        values.extend(inner if isinstance(inner, (list, tuple)) else [inner])
    return all(_batch_of(value) is None or batch % _batch_of(value) == 0 for value in values)


def timestep_gates(model, extra_args, batch: int) -> list | None:
    """What decides, per step, which conditioning and ControlNets ComfyUI applies; None when steps must not share a batch.

    ComfyUI decides timestep ranges (ConditioningSetTimestepRange, ControlNet start/end) from the first
    sample's sigma only (`get_area_and_mult`, `ControlBase.get_control`), so a batch of several steps
    must not straddle a range boundary. Hook keyframes, inpainting masks (denoise_mask), model patches and
    wrappers (STEP_SENSITIVE_OPTIONS, STEP_SENSITIVE_WRAPPERS, transformer patches) and conditioning of
    another batch size depend on the sigma, the call order or the batch in ways not read here: with any of
    them, every step runs alone.
    """
    if extra_args.get("denoise_mask") is not None:
        return None
    model_options = extra_args.get("model_options") or {}
    transformer_options = model_options.get("transformer_options") or {}
    if (
        any(model_options.get(name) for name in STEP_SENSITIVE_OPTIONS)
        or any(transformer_options.get(name) for name in ("patches", "patches_replace"))
        or _has_step_sensitive_wrapper(transformer_options)
    ):
        return None
    gates = []
    conds = getattr(getattr(model, "inner_model", None), "conds", None) or {}
    for cond_list in conds.values():
        for cond in cond_list or ():
            if not isinstance(cond, dict):
                continue
            if cond.get("hooks") is not None or not _conditioning_follows_batch(cond, batch):
                return None
            gates.append((cond.get("timestep_start"), cond.get("timestep_end")))
            control = cond.get("control")
            seen = 0
            while control is not None and seen < 64:
                timestep_range = getattr(control, "timestep_range", None)
                if timestep_range is not None:
                    gates.append((timestep_range[0], timestep_range[1]))
                control = getattr(control, "previous_controlnet", None)
                seen += 1
    return gates


def _gate_signature(gates, sigma: torch.Tensor) -> tuple:
    # The same comparisons ComfyUI makes (a float32 sigma against a Python float), so the step batches agree with it.
    return tuple(
        (start is None or not bool(sigma > start), end is None or not bool(sigma < end)) for start, end in gates
    )


def plan_step_batches(sigmas: torch.Tensor, steps: int, batch_size: int, gates) -> list[tuple[int, int]]:
    """Step batches [start, stop) of at most `batch_size` steps, each inside one timestep-range regime."""
    if gates is None:
        batch_size = 1
    batch_size = max(1, int(batch_size))
    ranges, start = [], 0
    signature = _gate_signature(gates, sigmas[0]) if gates else ()
    for i in range(1, steps + 1):
        current = _gate_signature(gates, sigmas[i]) if gates and i < steps else signature
        if i == steps or i - start >= batch_size or current != signature:
            ranges.append((start, i))
            start, signature = i, current
    return ranges


class RecordedBatches:
    """The step-parallel inversion's batched model calls, made again while a replay stays on the recorded latents.

    A batch of several steps rounds differently from a one-step call, so a replay of step-parallel maps
    that called the model one step at a time would drift by the model's rounding (1e-2 in float16). Called
    again on the same recorded latents and sigmas, the inversion's batch gives its estimates bit for bit.
    An estimate is only used for a step whose latent equals the recorded one exactly, so it is always the
    model evaluated at the current latent, under the current conditioning; once the replay leaves the
    recorded path (an edit) this stops and every further step is a one-step call.
    """

    def __init__(self, model, noise_maps: NoiseMaps, extra_args: dict, batch_fits=None):
        self.model, self.noise_maps, self.extra_args, self.batch_fits = model, noise_maps, extra_args, batch_fits
        self.batch_of = {step: (start, stop) for start, stop in noise_maps.batches for step in range(start, stop)}
        self.estimates = {}
        self.on_path = True

    def entries_per_call(self) -> int:
        """How many conditioning entries ComfyUI's calc_cond_batch puts in one call: all of them, or only the
        positive ones under its CFG 1 shortcut."""
        guider = inner_guider(self.model)
        conds = getattr(guider, "conds", None) or {}
        options = self.extra_args.get("model_options") or {}
        cfg_one = math.isclose(float(getattr(guider, "cfg", 0.0)), 1.0) and not options.get("disable_cfg1_optimization", False)
        return max(1, len(conds.get("positive") or ()) + (0 if cfg_one else len(conds.get("negative") or ())))

    def denoised(self, step: int, x: torch.Tensor, recorded: torch.Tensor) -> torch.Tensor | None:
        """The inversion batch's estimate for `step` at `x`, or None: x is off the recorded latent for the step
        (`recorded`, on x's device), or the step ran alone."""
        start, stop = self.batch_of[step]
        if not self.on_path or stop - start == 1:
            return None
        if not torch.equal(x, recorded):
            self.on_path, self.estimates = False, {}
            return None
        if step not in self.estimates:
            batch = x.shape[0]
            shape = ((stop - start) * batch, *x.shape[1:])
            if self.batch_fits is not None and not self.batch_fits(inner_base_model(self.model), shape, x.device, self.entries_per_call()):
                # ComfyUI would split this batch (or run out of memory), so it would not round as the inversion's did.
                self.on_path = False
                return None
            # The whole recorded batch, even for a replay that starts inside it: another batch shape would round otherwise.
            # A copy, so that nothing downstream can change the cached maps' latents through it.
            inputs = self.noise_maps.noisy_latents[start:stop].to(x.device, x.dtype, copy=True).flatten(0, 1)
            step_sigmas = self.noise_maps.sigmas[start:stop].to(x.device).repeat_interleave(batch)
            outputs = self.model(inputs, step_sigmas, **self.extra_args).split(batch)
            self.estimates = {start + offset: output for offset, output in enumerate(outputs)}
        return self.estimates.pop(step)


