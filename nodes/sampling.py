"""Edit-friendly inversion and replay as k-diffusion-style sampler functions.

Huberman-Spiegelglas, Kulikov, Michaeli, "An Edit Friendly DDPM Noise Space: Inversion and
Manipulations", CVPR 2024. The loops below are denoise -> posterior mean -> add the map; the step math is
in steps.py and which steps share a model call in step_batches.py. Both functions are meant to be wrapped
in `comfy.samplers.KSAMPLER` and driven by a guider; they import nothing from ComfyUI.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import trange

from .digest import guider_digest
from .noise_maps import ModelFingerprint, NoiseMaps
from .step_batches import RecordedBatches, inner_base_model, inner_guider, plan_step_batches, timestep_gates
from .steps import (
    STEP_RULES,
    PosteriorStep,
    add_map,
    draw_noisy_latents,
    history_term,
    posterior_mean,
    round_to_storage,
    rule_steps,
    settle_on_recorded,
    signal_and_noise_scales,
)
from .validation import (
    check_maps_fit_model,
    check_noise_scales,
    check_replay_latent,
    check_replay_rule,
    check_replay_seed,
    check_replay_sigmas,
    check_storable,
)


@dataclasses.dataclass
class InversionRecord:
    """What one inversion run extracts, filled step by step (stacking at the end would hold every record twice)."""

    sigmas: torch.Tensor
    scales: torch.Tensor
    noisy_latents: torch.Tensor
    """The latents the model saw, in the storage precision."""
    maps: torch.Tensor
    """The maps, in the storage precision."""
    denoised: torch.Tensor | None
    """Second-order rules only: the model's clean-latent estimates."""
    residual: torch.Tensor | None = None
    """Lean maps only: the last map in float32."""
    batches: tuple[tuple[int, int], ...] | None = None
    """The step batches, when some steps shared a model call."""
    conditioning_digest: str | None = None

    @staticmethod
    def empty(sigmas, scales, shape, storage: torch.dtype, device, keeps_history: bool) -> InversionRecord:
        noisy_latents, maps = (torch.empty((len(sigmas) - 1, *shape), dtype=storage, device=device) for _ in range(2))
        return InversionRecord(sigmas, scales, noisy_latents, maps, torch.empty_like(maps) if keeps_history else None)

    def keep(self, i: int, x: torch.Tensor, noise_map: torch.Tensor, denoised: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
        """Store step i; returns the map as the replay adds it (rounded to the storage precision; the residual exact)."""
        self.noisy_latents[i], self.maps[i] = x, noise_map
        if self.denoised is not None:
            self.denoised[i] = denoised
        storage = self.maps.dtype
        if storage == noise_map.dtype:
            return noise_map
        if step.is_last:
            self.residual = noise_map.to(self.maps.device, copy=True)
            return noise_map
        return check_storable(round_to_storage(noise_map, storage), self.sigmas[i], storage)

    def close(self, step_batches: list[tuple[int, int]], guider) -> InversionRecord:
        """Record the step batches and the guider's digest, where some steps shared a model call."""
        if any(stop - start > 1 for start, stop in step_batches):
            self.batches, self.conditioning_digest = tuple(step_batches), guider_digest(guider)
        return self


def _report(callback, i: int, x: torch.Tensor, sigma, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _denoise_together(model, inputs: list[torch.Tensor], sigmas: torch.Tensor, extra_args: dict) -> tuple[torch.Tensor, ...]:
    """The model's estimates for a step batch, in one call: the latents of consecutive steps, each at its sigma."""
    s_in = inputs[0].new_ones([inputs[0].shape[0]])
    step_sigmas = torch.cat([sigma * s_in for sigma in sigmas])
    return model(torch.cat(inputs), step_sigmas, **extra_args).split(inputs[0].shape[0])


def _plan(model, x: torch.Tensor, extra_args: dict, sigmas: torch.Tensor, steps: int, parallel_steps) -> list[tuple[int, int]]:
    gates = timestep_gates(model, extra_args, x.shape[0])
    if gates is None:
        parallel_steps = 1
    elif callable(parallel_steps):
        parallel_steps = parallel_steps(inner_base_model(model), tuple(x.shape), steps, x.device)
    return plan_step_batches(sigmas, steps, parallel_steps, gates)


@torch.no_grad()
def sample_edit_friendly_inversion(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, seed=0, sink=None, store_device="cpu",
    rule="ddpm", parallel_steps=1, storage=torch.float32,
):
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024, Eqs. 6-7): noise maps that lead to model.latent_image.

    The noisy latents x_i are drawn independently of each other, so the model calls do not depend on
    each other: `parallel_steps` of them go through the model in one step batch (an int, or a callable
    (base_model, latent_shape, steps, device) -> int, called once the model is loaded). The first latent of each
    step batch is re-derived from the previous map, the others are the drawn ones; `noisy_latents` records
    the latents the model actually saw, and a batched run also records its step batches and its guider's
    digest, so that a replay under the same prompts and CFG can run the same batches. With 1 every step
    runs alone and the sampler retraces the inversion bit for bit. `rule` picks the step (steps.STEP_RULES);
    the maps are always the first-order ones, and second-order rules also record the clean-latent estimates.
    With a `storage` precision below float32 every latent fed to the model is rounded to it, each map absorbs
    the rounding of the one before, and the record's `residual` keeps the last map exact. The record goes to `sink`.
    """
    extra_args = {} if extra_args is None else extra_args
    x0 = model.latent_image.to(x.dtype)
    sigmas_cpu = sigmas.detach().float().cpu()
    scales = check_noise_scales(signal_and_noise_scales(inner_base_model(model).model_sampling, sigmas_cpu), sigmas_cpu)
    steps = rule_steps(rule, scales, eta)
    step_batches = _plan(model, x, extra_args, sigmas_cpu, len(steps), parallel_steps)
    record = InversionRecord.empty(sigmas_cpu, scales, x.shape, storage, store_device, STEP_RULES[rule].keeps_history)
    noisy_targets = (round_to_storage(target, storage) for target in draw_noisy_latents(x0, scales, seed))
    x = next(noisy_targets)
    progress = trange(len(steps), disable=disable)
    for start, stop in step_batches:
        inputs = [x] + [next(noisy_targets) for _ in range(start + 1, stop)]
        for offset, denoised in enumerate(_denoise_together(model, inputs, sigmas[start:stop], extra_args)):
            i = start + offset
            _report(callback, i, inputs[offset], sigmas[i], denoised)
            mean = posterior_mean(inputs[offset], denoised, steps[i])
            target = inputs[offset + 1] if i + 1 < stop else x0 if steps[i].is_last else next(noisy_targets)
            noise_map = record.keep(i, inputs[offset], (target - mean) / steps[i].noise_scale, denoised, steps[i])
            # Re-derive x from the map instead of taking the target, so that regeneration, which only
            # has the map, rounds exactly as the inversion did (the next model input when a step batch ends).
            x = add_map(mean, noise_map, steps[i])
            x = x if steps[i].is_last else round_to_storage(x, storage)
            progress.update(1)
    progress.close()
    if sink is not None:
        sink.append(record.close(step_batches, inner_guider(model)))
    return x


class SourceHistory:
    """The second-order part of a rule's step, replayed as its change against the source's (steps.history_term)."""

    def __init__(self, noise_maps: NoiseMaps, skip: int):
        self.source, self.skip, self.storage, self.previous = noise_maps.source_denoised, skip, noise_maps.maps.dtype, None

    def correct(self, x: torch.Tensor, i: int, denoised: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
        # Rounded as the source's estimates were stored, so that the source prompt's correction stays exactly 0.
        denoised = round_to_storage(denoised, self.storage)
        if self.previous is not None and step.history_weight != 0.0:
            source = self.source[self.skip + i - 1 : self.skip + i + 1].to(x)
            x = x + history_term(step, denoised, self.previous, source[1], source[0])
        self.previous = denoised
        return x


class MaskedReplay:
    """Keeps the replay outside a mask on the source's own trajectory, which ends at the source latent.

    ComfyUI's inpainting (a LATENT's noise mask) would feed the model another latent outside the mask, off the
    maps' path; blending with the recorded latents gives what it asks for and keeps the replay exact. ComfyUI's
    denoise_mask_function (such as Differential Diffusion) is applied to a noise mask at every step.
    """

    def __init__(self, model, noise_maps: NoiseMaps, mask, latent_mask, mask_function, sigmas: torch.Tensor, batch: int):
        self.model, self.latent_mask, self.mask_function, self.sigmas = model, latent_mask, mask_function, sigmas
        self.mask = None if mask is None else mask.to(sigmas.device, torch.float32)
        self.s_in = torch.ones([batch], device=sigmas.device)
        self.source_clean = inner_base_model(model).process_latent_in(noise_maps.source_latent.to(sigmas.device, torch.float32))

    def blend(self, x: torch.Tensor, i: int, recorded: torch.Tensor, is_last: bool) -> torch.Tensor:
        step_mask = self.mask
        if self.latent_mask is not None:
            step_mask = self.latent_mask if self.mask_function is None else self.mask_function(
                self.sigmas[i] * self.s_in, self.latent_mask, extra_options={"model": inner_guider(self.model), "sigmas": self.sigmas}
            )
            step_mask = step_mask.to(torch.float32) if self.mask is None else step_mask.to(torch.float32) * self.mask
        return torch.lerp(self.source_clean if is_last else recorded, x, step_mask)


def _check_replay(model, noise_maps: NoiseMaps, x: torch.Tensor, sigmas: torch.Tensor, rule, seed) -> int:
    """Every refusal of a replay, before its first model call; returns the skip `sigmas` start at."""
    if noise_maps is None:
        raise ValueError("sample_edit_friendly needs noise_maps")
    check_replay_rule(noise_maps, rule)
    inner = inner_base_model(model)
    check_maps_fit_model(noise_maps, ModelFingerprint.of(inner.model_sampling, inner.latent_format))
    given = getattr(model, "latent_image", None)
    source = None if given is None else inner.process_latent_in(noise_maps.source_latent.to(given.device, torch.float32))
    check_replay_latent(noise_maps, tuple(x.shape), given, source)
    check_replay_seed(noise_maps, seed, getattr(inner_guider(model), "conds", None) or {})
    return check_replay_sigmas(noise_maps, sigmas)


def _recorded_batches(model, noise_maps: NoiseMaps, extra_args: dict, batch_fits, batch: int) -> RecordedBatches | None:
    # The digest covers prompts and CFG, not model patches: one that would have kept the inversion step by step
    # (a sigma gate, a cache) must keep the replay so too.
    if (
        noise_maps.batches is None
        or noise_maps.conditioning_digest is None
        or guider_digest(inner_guider(model)) != noise_maps.conditioning_digest
        or timestep_gates(model, extra_args, batch) is None
    ):
        return None
    return RecordedBatches(model, noise_maps, extra_args, batch_fits)


@torch.no_grad()
def sample_edit_friendly(
    model, x, sigmas, extra_args=None, callback=None, disable=None, noise_maps=None, mask=None, rule=None, batch_fits=None
):
    """Edit-friendly sampling (Huberman-Spiegelglas et al. 2024, Eq. 5 with the extracted z_t), from x_skip.

    Replays the step rule the maps were made with; `rule`, when given, must be that rule. For a
    second-order rule the first replayed step is first order (there is no earlier estimate to use);
    the maps are first-order maps, so this restart is exact at any skip. A latent that comes within
    rounding of the one the inversion recorded takes the recorded value (settle_on_recorded). Under a
    guider with the inversion's prompts and CFG (same digest), step-parallel maps are replayed through
    the inversion's own step batches while the path allows (RecordedBatches). A LATENT's noise mask (Set Latent
    Noise Mask, through SamplerCustomAdvanced) acts as `mask` (MaskedReplay). `batch_fits(base_model, batch_shape,
    device, entries)`, when given, says whether a recorded step batch would still run as one call; where it would
    not, the replay goes one step at a time.
    """
    extra_args = {} if extra_args is None else extra_args
    skip = _check_replay(model, noise_maps, x, sigmas, rule, extra_args.get("seed"))
    steps = rule_steps(noise_maps.rule, noise_maps.scales, noise_maps.eta)[skip:]
    # The stored sigmas, not the given ones: they may differ by rounding, and exactness needs the same model inputs.
    sigmas, storage, batch = noise_maps.sigmas[skip:].to(x.device), noise_maps.maps.dtype, x.shape[0]
    latent_mask = extra_args.get("denoise_mask")
    masked = None
    if mask is not None or latent_mask is not None:
        extra_args = {**extra_args, "denoise_mask": None}
        mask_function = (extra_args.get("model_options") or {}).get("denoise_mask_function")
        masked = MaskedReplay(model, noise_maps, mask, latent_mask, mask_function, sigmas, batch)
    history = SourceHistory(noise_maps, skip) if STEP_RULES[noise_maps.rule].keeps_history else None
    recorded_batches = _recorded_batches(model, noise_maps, extra_args, batch_fits, batch)
    s_in = torch.ones([batch], device=x.device)
    # float32 whatever the given latent's precision; a copy, so nothing downstream can change the cached maps through it.
    x = recorded = noise_maps.start_latent(skip).to(x.device, torch.float32, copy=True)
    for i in trange(len(steps), disable=disable):
        # `recorded` is the inversion's latent for this step, fetched by the previous step (or the start latent).
        denoised = recorded_batches.denoised(skip + i, x, recorded) if recorded_batches is not None else None
        if denoised is None:
            denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, i, x, sigmas[i], denoised)
        mean = posterior_mean(x, denoised, steps[i])
        x = add_map(mean, noise_maps.noise_map(skip + i).to(x), steps[i])
        x = x if history is None else history.correct(x, i, denoised, steps[i])
        if not steps[i].is_last:
            recorded = noise_maps.noisy_latents[skip + i + 1].to(x)
            x = settle_on_recorded(round_to_storage(x, storage), recorded, mean, storage)
        x = x if masked is None else masked.blend(x, i, recorded, steps[i].is_last)
    return x
