"""Runs the edit-friendly sampler functions through ComfyUI's own guider and sampler machinery.

Going through `CFGGuider.sample` with a `KSAMPLER` means LoRA, ControlNet, hooks, area and timestep
conditioning, model patches, memory management, progress, previews and interrupt all behave as they
do for ComfyUI's built-in samplers. Every input is checked before the first model call.
"""

from __future__ import annotations

import functools
import logging
import math

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from .noise_maps import SAMPLING_RULES, STORAGE_DTYPES, ModelFingerprint, NoiseMaps  # noqa: F401 (SAMPLING_RULES: the node's options)
from .sampling import sample_edit_friendly, sample_edit_friendly_inversion
from .steps import STEP_RULES
from .validation import (
    EditFriendlyInputError,
    check_choice,
    check_eta,
    check_in_range,
    check_latent,
    check_maps_fit_model,
    check_no_noise_mask,
    check_rule,
    check_sigmas,
    check_skip,
    fit_mask,
    mask_for_latent,
)

MAX_VARIATIONS = 64
MAX_PARALLEL_STEPS = 64
"""Most inversion steps put through the model in one batch (also the cap of the automatic choice)."""
CPU_PARALLEL_STEPS = 4
"""Cap of the automatic choice on a CPU: the tiny 16x16 model ran 1.60x faster with 4 steps per batch but 0.93x
with 8 (benchmarks/speed.py --sizes tiny --parts parallel --repeats 9); later runs gave 1.13-1.30x with 4 and
1.18-1.34x with 8, so 8 showed no gain over 4 either."""
GPU_PARALLEL_PIXELS = 2**18
"""Most latent pixels (batch x height x width, all steps together) in one automatic batch on a GPU: 64 steps of
SD1.5 at 512x512, 16 of SDXL at 1024x1024. On an H200 (float16) SDXL gained nothing past 16 steps per batch (two
runs: 1.57x and 1.66x at 16, 1.57x and 1.68x at 64), while ComfyUI's memory estimate for the batch grows fourfold."""
CPU_PARALLEL_PIXELS = 2048
"""Most latent pixels (batch x height x width, all steps together) in one automatic CPU batch. Past that the
CPU is already busy with one step, and batching was measured slower (full-size SD1.5: 0.96x), so the
automatic choice stays sequential."""


PRECISIONS = ("auto", *STORAGE_DTYPES)
"""How the maps are kept: auto is float16 for latents of several frames (video), float32 otherwise."""
SINGLE_FRAME_MODELS = ("QwenImage", "CosmosT2IPredict2", "HunyuanImage21Refiner")
"""Image models (supported_models classes) whose latent format has the video layout [B, C, T, H, W]: one frame."""

logger = logging.getLogger(__name__)


def model_fingerprint(model) -> ModelFingerprint:
    """The fingerprint of a ComfyUI MODEL (a ModelPatcher)."""
    return ModelFingerprint.of(model.get_model_object("model_sampling"), model.get_model_object("latent_format"))


def progress_callback(model, steps: int):
    """ComfyUI's progress bar and latent previews, plus an interrupt check at every step."""
    show_progress = latent_preview.prepare_callback(model, steps)

    def callback(step, denoised, x, total_steps):
        comfy.model_management.throw_exception_if_processing_interrupted()
        show_progress(step, denoised, x, total_steps)

    return callback


def cfg_guider(model, positive, negative, cfg: float) -> comfy.samplers.CFGGuider:
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


def edit_friendly_sampler(noise_maps: NoiseMaps, mask: torch.Tensor | None = None, rule: str | None = None) -> comfy.samplers.KSAMPLER:
    """A SAMPLER that replays `noise_maps` (inside `mask`, if given); give it a tail of `noise_maps.sigmas`.

    `rule`, when given, is checked against the rule the maps were made with (a mismatch is refused).
    """
    if mask is not None:
        mask = mask_for_latent(fit_mask(mask, noise_maps.latent_shape), noise_maps.latent_shape)
    options = {"noise_maps": noise_maps, "mask": mask, "batch_fits": batch_fits}
    if rule is not None:
        options["rule"] = rule
    return comfy.samplers.KSAMPLER(sample_edit_friendly, extra_options=options)


def auto_parallel_steps(base_model, latent_shape: tuple, steps: int, device=None, requested: int = 0) -> int:
    """How many inversion steps go through the model in one batch: `requested`, or with 0 an automatic choice,
    as far as the free memory of `device` (default: ComfyUI's torch device) allows.

    Uses the model's own estimate (`memory_required`, as ComfyUI's calc_cond_batch does) for the
    conditional and unconditional halves together, with the same 1.5 margin, on 80% of the free memory.
    ComfyUI loads the model with room for one step's batch only and cannot split a batch of steps, so an
    explicit value is capped too rather than run out of memory mid-inversion. The automatic choice also
    stops where batching was measured to gain no more (GPU_PARALLEL_PIXELS; on a CPU, CPU_PARALLEL_STEPS
    and CPU_PARALLEL_PIXELS).
    """
    device = comfy.model_management.get_torch_device() if device is None else device
    free = free_memory(base_model, device)
    batch, *rest = latent_shape
    pixels_per_step = math.prod([batch, *rest[1:]])  # frames too, for video
    if requested:
        cap = requested
    elif comfy.model_management.is_device_cpu(device):
        cap = min(CPU_PARALLEL_STEPS, CPU_PARALLEL_PIXELS // pixels_per_step)
    else:
        cap = min(MAX_PARALLEL_STEPS, GPU_PARALLEL_PIXELS // pixels_per_step)
    step_batch = 1
    for candidate in range(2, min(cap, steps) + 1):
        if base_model.memory_required([2 * candidate * batch, *rest]) * 1.5 > 0.8 * free:
            break
        step_batch = candidate
    if requested and step_batch < min(requested, steps):
        logger.warning("parallel_steps %d does not fit in the free memory; the inversion batches %d steps.", requested, step_batch)
    return step_batch


def batch_fits(base_model, batch_shape: tuple, device, entries: int = 2) -> bool:
    """ComfyUI's test in calc_cond_batch for putting `entries` conditioning entries (cond and uncond: 2) of a batch in one call.

    A replay of step-parallel maps only rounds as the inversion did if its batches run as the inversion's did.
    Like ComfyUI's it uses the model's memory estimate; unlike it, without the conditioning's shapes, which only
    models with reference latents (Flux Kontext) add to the estimate.
    """
    batch, *rest = batch_shape
    return base_model.memory_required([entries * batch, *rest]) * 1.5 < free_memory(base_model, device)


def free_memory(base_model, device) -> float:
    """The free memory ComfyUI's calc_cond_batch sizes its batches by: later ComfyUI versions ask the patcher of
    the loaded model (with dynamic VRAM it counts what it can free), ComfyUI 0.3.75 asks the device."""
    patcher = getattr(base_model, "current_patcher", None)
    if callable(getattr(patcher, "get_free_memory", None)):
        return patcher.get_free_memory(device)
    return comfy.model_management.get_free_memory(device)


def maps_bytes(samples: torch.Tensor, steps: int, rule: str, storage: torch.dtype) -> int:
    """What the maps of `samples` (the float32 latent batch) hold: noisy latents and maps, the clean-latent estimates of
    second-order rules, in `storage`, and the float32 source latent and (lean maps) residual."""
    records = 3 if STEP_RULES[rule].keeps_history else 2
    float32_latents = 1 if storage == torch.float32 else 2
    return samples.numel() * (records * steps * storage.itemsize + float32_latents * 4)


def check_memory_for_maps(samples: torch.Tensor, steps: int, rule: str, store, storage: torch.dtype = torch.float32) -> None:
    """Refuse, before any model call, maps that would not fit in the free memory of the device that keeps them."""
    needed = maps_bytes(samples, steps, rule, storage)
    free = comfy.model_management.get_free_memory(store)
    if needed > free:
        raise EditFriendlyInputError(
            f"The noise maps would need {_size(needed)} ({steps} steps x {samples.shape[0]} latents of "
            f"{tuple(samples.shape[1:])}), but only {_size(free)} is free; use fewer steps or variations, a smaller image or "
            f"fewer frames{' (or precision float16)' if storage == torch.float32 else ''}."
        )


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def run_guider(guider, sampler, sigmas: torch.Tensor, latent: torch.Tensor, seed: int) -> torch.Tensor:
    """One pass of `sampler` over `sigmas` with ComfyUI's progress, previews and interrupt."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    steps = sigmas.shape[-1] - 1
    samples = guider.sample(
        torch.zeros_like(latent),
        latent,
        sampler,
        sigmas,
        callback=progress_callback(guider.model_patcher, steps),
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=seed,
    )
    return samples.to(comfy.model_management.intermediate_device())


def model_latent(model, latent: dict) -> torch.Tensor:
    """The LATENT's samples as ComfyUI's KSampler adjusts them for `model` (fix_empty_latent_channels: an empty latent
    gets the model's channels, a 4-D latent of a model with video latents one frame), checked against the model."""
    samples = latent.get("samples")
    if isinstance(samples, torch.Tensor) and not samples.is_nested and samples.ndim in (4, 5):
        samples = comfy.sample.fix_empty_latent_channels(model, samples)
    latent_format = model.get_model_object("latent_format")
    config = type(getattr(model.model, "model_config", None)).__name__
    return check_latent(
        samples, latent_format.latent_channels, getattr(latent_format, "latent_dimensions", 2),
        model_name=f"This model ({config})", single_frame=config in SINGLE_FRAME_MODELS,
    )


def storage_dtype(precision: str, samples: torch.Tensor) -> torch.dtype:
    """The dtype the maps are kept in for `precision` (PRECISIONS)."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        precision = "float16" if samples.ndim == 5 and samples.shape[2] > 1 else "float32"
    return STORAGE_DTYPES[precision]


def invert(
    model, positive, negative, latent: dict, steps: int, cfg: float, scheduler: str, eta: float, seed: int, variations: int = 1,
    rule: str = "ddpm", parallel_steps: int = 1, precision: str = "auto",
) -> NoiseMaps:
    """Edit-friendly DDPM inversion of `latent` under the source prompt and CFG: one sampling pass.

    With `variations` > 1 the batch is inverted with seeds seed, seed + 1, ... in the same model calls,
    giving maps for that many different edits of each image. `rule` is the step rule the maps are made
    for (SAMPLING_RULES). `parallel_steps` steps share one model batch: 1 = one step at a time (the
    sampler then retraces the inversion bit for bit), 0 = as many as the free memory allows. `precision` is how the
    maps are kept (PRECISIONS): float16 halves their memory and still reconstructs exactly.
    """
    check_rule(rule)
    check_in_range("parallel_steps", parallel_steps, 0, MAX_PARALLEL_STEPS, "0 (automatic)")
    latent_format = model.get_model_object("latent_format")
    samples = model_latent(model, check_no_noise_mask(latent))
    eta = check_eta(eta)
    check_in_range("variations", variations, 1, MAX_VARIATIONS)
    # float32 whatever the given latent's precision (as KSampler's noise makes it): half would round the maps.
    samples = samples.float().repeat(variations, *[1] * (samples.ndim - 1))
    storage = storage_dtype(precision, samples)
    seeds = [(seed + k) % 2**64 for k in range(variations)]
    check_choice("scheduler", scheduler, comfy.samplers.SCHEDULER_NAMES)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    sigmas = check_sigmas(sigmas.float().cpu(), scheduler)
    store = comfy.model_management.intermediate_device()
    check_memory_for_maps(samples, sigmas.shape[0] - 1, rule, store, storage)

    sink = []
    sampler = comfy.samplers.KSAMPLER(
        sample_edit_friendly_inversion,
        extra_options={
            "eta": eta, "seed": seeds, "sink": sink, "store_device": store, "rule": rule, "storage": storage,
            "parallel_steps": 1 if parallel_steps == 1 else functools.partial(auto_parallel_steps, requested=parallel_steps),
        },
    )
    run_guider(cfg_guider(model, positive, negative, cfg), sampler, sigmas, samples, seed)
    (record,) = sink
    return NoiseMaps(
        sigmas=record.sigmas,
        scales=record.scales,
        noisy_latents=record.noisy_latents,
        maps=record.maps,
        source_latent=samples.to(store),
        eta=eta,
        rule=rule,
        source_denoised=record.denoised,
        seed=int(seed),
        source_cfg=float(cfg),
        fingerprint=model_fingerprint(model),
        variations=variations,
        latent_rgb_factors=_as_tuple(getattr(latent_format, "latent_rgb_factors", None)),
        latent_rgb_bias=_as_tuple(getattr(latent_format, "latent_rgb_factors_bias", None)),
        batches=record.batches,  # None unless some steps shared a model call
        conditioning_digest=record.conditioning_digest,
        residual=record.residual,
    )


def regenerate(model, positive, negative, noise_maps: NoiseMaps, cfg: float, skip: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Replay `noise_maps` from step `skip` under the target prompt and CFG: one partial sampling pass.

    With a `mask` the edit applies inside it only; outside, the output is the source latent.
    """
    check_maps_fit_model(noise_maps, model_fingerprint(model))
    model_latent(model, {"samples": noise_maps.source_latent})  # the layout and frames this model takes
    skip = check_skip(skip, noise_maps)
    sampler = edit_friendly_sampler(noise_maps, mask)
    guider = cfg_guider(model, positive, negative, cfg)
    return run_guider(guider, sampler, noise_maps.sigmas[skip:], noise_maps.source_latent, noise_maps.seed)


def _as_tuple(rows):
    if rows is None:
        return None
    return tuple(tuple(float(v) for v in row) if isinstance(row, (list, tuple)) else float(row) for row in rows)
