"""Edit-friendly DDPM inversion and regeneration as k-diffusion-style sampler functions.

Huberman-Spiegelglas, Kulikov, Michaeli, "An Edit Friendly DDPM Noise Space: Inversion and
Manipulations", CVPR 2024. Written in ComfyUI's sigma space, x = a(s) * x0 + b(s) * noise, so one
code path serves EPS, v-prediction and rectified-flow models. Both functions are meant to be wrapped
in `comfy.samplers.KSAMPLER` and driven by a guider; they import nothing from ComfyUI.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from tqdm.auto import trange

from .digest import guider_digest
from .noise_maps import SAMPLING_RULES, ModelFingerprint, NoiseMaps
from .validation import EditFriendlyInputError, check_maps_fit_model, check_noise_scales


@dataclasses.dataclass(frozen=True)
class PosteriorStep:
    """Coefficients of one DDPM posterior step s -> s' in sigma space (paper, Eq. 3)."""

    a: float
    """Signal scale a(s) of the current latent."""
    b: float
    """Noise scale b(s) of the current latent."""
    c_x0: float
    """a(s'): weight of the predicted clean latent in the posterior mean."""
    c_eps: float
    """sqrt(b(s')^2 - (eta * tau)^2): weight of the predicted noise in the posterior mean."""
    noise_scale: float
    """eta * tau, the posterior std the map is multiplied by; 1 on the last step (the residual)."""
    is_last: bool = False
    """The step into sigma 0, where the map is the residual to the clean latent."""
    history_weight: float = 0.0
    """Weight of the change in the clean-latent estimate since the previous step (second-order rules only)."""


def signal_and_noise_scales(model_sampling, sigmas: torch.Tensor) -> torch.Tensor:
    """(a(s), b(s)) for every sigma, read from the model's own noise_scaling, as float64 [len, 2]."""
    s = sigmas.detach().cpu().double()
    ones, zeros = torch.ones_like(s), torch.zeros_like(s)
    a = model_sampling.noise_scaling(s, zeros, ones)
    b = model_sampling.noise_scaling(s, ones, zeros)
    return torch.stack([a, b], dim=1).double()


def ddpm_steps(scales: torch.Tensor, eta: float) -> list[PosteriorStep]:
    """Posterior steps for a schedule given its (a, b) pairs; eta = 1 is DDPM (paper, Eqs. 3-4)."""
    steps = []
    pairs = scales.tolist()
    for (a, b), (a_next, b_next) in zip(pairs[:-1], pairs[1:]):
        if b_next == 0.0:
            steps.append(PosteriorStep(a, b, a_next, 0.0, 1.0, is_last=True))
            continue
        snr_ratio = (a * b_next) ** 2 / (a_next * b) ** 2
        tau = b_next * math.sqrt(max(0.0, 1.0 - snr_ratio))
        noise_scale = eta * tau
        c_eps = math.sqrt(max(0.0, b_next**2 - noise_scale**2))
        steps.append(PosteriorStep(a, b, a_next, c_eps, noise_scale))
    return steps


def dpmpp_2m_sde_steps(scales: torch.Tensor, eta: float) -> list[PosteriorStep]:
    """Steps of DPM-Solver++(2M) SDE (midpoint form, as ComfyUI's sample_dpmpp_2m_sde) in the a(s), b(s) form.

    With e = exp(-h) = (a b') / (a' b) (h: change in half-log-SNR log(a/b)) the first-order part is
    x' = (b'/b) e^eta x + a' (1 - e^(eta+1)) x0_hat + b' sqrt(1 - e^(2 eta)) z, which is the DDPM posterior
    step when eta = 1. The second-order part adds history_weight * (x0_hat_i - x0_hat_{i-1}) with
    history_weight = a' (1 - e^(eta+1)) h_i / (2 h_{i-1}); it is 0 on the first step and on the step into 0.
    """
    steps = []
    previous_h = None
    for (a, b), (a_next, b_next) in zip(scales.tolist()[:-1], scales.tolist()[1:]):
        if b_next == 0.0:
            steps.append(PosteriorStep(a, b, a_next, 0.0, 1.0, is_last=True))
            continue
        e = (a * b_next) / (a_next * b)
        h = -math.log(e) if e > 0.0 else math.inf
        c_eps = b_next * e**eta
        denoised_weight = a_next * (1.0 - e ** (eta + 1.0))
        noise_scale = b_next * math.sqrt(max(0.0, 1.0 - e ** (2.0 * eta)))
        history = 0.0
        if previous_h is not None and math.isfinite(previous_h):
            history = 0.5 * denoised_weight * h / previous_h
        steps.append(PosteriorStep(a, b, denoised_weight + c_eps * a / b, c_eps, noise_scale, history_weight=history))
        previous_h = h
    return steps


def rule_steps(rule: str, scales: torch.Tensor, eta: float) -> list[PosteriorStep]:
    """The steps of a sampling rule (noise_maps.SAMPLING_RULES) over a schedule given by its (a, b) pairs."""
    if rule == "ddpm":
        return ddpm_steps(scales, eta)
    if rule == "dpmpp_2m_sde":
        return dpmpp_2m_sde_steps(scales, eta)
    raise ValueError(f"Unknown step rule {rule!r}; known rules: {', '.join(SAMPLING_RULES)}")


def rule_keeps_history(rule: str) -> bool:
    """Whether replaying `rule` needs the source's clean-latent estimates (second-order rules)."""
    return rule == "dpmpp_2m_sde"


def history_term(step: PosteriorStep, denoised, previous, source_denoised, source_previous) -> torch.Tensor:
    """history_weight * (change of x0_hat now - change of x0_hat during the inversion).

    The inversion recorded first-order maps along the drawn latents; the second-order part of the
    rule enters as the difference between the current and the source's correction, so with the
    source prompt the difference is exactly zero (same inputs, same operations) and the replay
    stays bit for bit on the inversion's path, while an edit gets the full second-order step:
    mean1 + tau z1 + w (D - D_prev) - w (Ds - Ds_prev) = mean2 + tau z2 with z2 = z1 - w (Ds - Ds_prev) / tau.
    """
    return step.history_weight * ((denoised - previous) - (source_denoised - source_previous))


def posterior_mean(x: torch.Tensor, denoised: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
    """mu(x_t) of Eq. 3, with the noise estimate taken from the model's clean-latent estimate."""
    predicted_noise = (x - step.a * denoised) / step.b
    return step.c_x0 * denoised + step.c_eps * predicted_noise


def add_map(mean: torch.Tensor, noise_map: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
    """x_{t-1} = mu(x_t) + sigma_t z_t (Eq. 5); shared by inversion and regeneration so both round alike."""
    return mean + step.noise_scale * noise_map


def round_to_storage(x: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    """x rounded to the maps' storage precision, kept in x's dtype: inversion and replay round every latent alike."""
    return x if storage == x.dtype else x.to(storage).to(x.dtype)


ROUNDING_SLACK = 4.0
"""How many float roundings of the step's operands a replayed latent may be off the recorded one and still be taken as it."""


def settle_on_recorded(x: torch.Tensor, recorded: torch.Tensor, mean: torch.Tensor, storage: torch.dtype = torch.float32) -> torch.Tensor:
    """x, except where it is within rounding of the latent the inversion fed the model: there, that latent.

    A step-parallel inversion feeds the model the drawn latents (Eq. 6) inside a batch, and mean + tau z
    cannot land on every float32 value exactly (a third of the elements may miss, by about one rounding).
    Taking the recorded value where the replay is that close keeps a reconstruction on the inversion's
    path; the change is at most a few roundings of the step itself, far below any difference a prompt or a
    map edit makes.
    """
    # The storage precision's rounding (float32 unless the maps are lean), whatever the latent's dtype, so that a
    # half-precision latent cannot widen the reach.
    tolerance = ROUNDING_SLACK * torch.finfo(storage).eps * (mean.abs() + x.abs())
    return torch.where((x - recorded).abs() <= tolerance, recorded, x)


def draw_noisy_latents(x0: torch.Tensor, scales: torch.Tensor, seeds):
    """Yield x_i = a_i x0 + b_i eps_i with independent eps_i from seeded CPU generators (Eq. 6).

    `seeds` is one seed or a list of them: the batch is split into equal groups, one per seed, so a
    group's noise is the same as a run with that seed alone.
    """
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if x0.shape[0] % len(seeds):
        raise ValueError(f"a batch of {x0.shape[0]} cannot be split among {len(seeds)} seeds")
    group_shape = (x0.shape[0] // len(seeds), *x0.shape[1:])
    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
    for a, b in scales.tolist()[:-1]:
        eps = torch.cat([torch.randn(group_shape, generator=g, dtype=torch.float32) for g in generators])
        yield a * x0 + b * eps.to(x0.device, x0.dtype)


def _rounded_map(noise_map: torch.Tensor, storage: torch.dtype, sigma) -> torch.Tensor:
    rounded = round_to_storage(noise_map, storage)
    if not torch.isfinite(rounded).all():
        raise EditFriendlyInputError(
            f"A noise map at sigma {float(sigma):.4g} exceeds the range of {storage}: invert with precision float32."
        )
    return rounded


def _base_model(model):
    # `model` is ComfyUI's KSamplerX0Inpaint around a guider around the BaseModel.
    return model.inner_model.inner_model


def _guider(model):
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


def _timestep_gates(model, extra_args, batch: int) -> list | None:
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
    # The same comparisons ComfyUI makes (a float32 sigma against a Python float), so the grouping agrees with it.
    return tuple(
        (start is None or not bool(sigma > start), end is None or not bool(sigma < end)) for start, end in gates
    )


def plan_chunks(sigmas: torch.Tensor, steps: int, chunk: int, gates) -> list[tuple[int, int]]:
    """Consecutive step ranges [start, stop) of at most `chunk` steps, each inside one timestep-range regime."""
    if gates is None:
        chunk = 1
    chunk = max(1, int(chunk))
    ranges, start = [], 0
    signature = _gate_signature(gates, sigmas[0]) if gates else ()
    for i in range(1, steps + 1):
        current = _gate_signature(gates, sigmas[i]) if gates and i < steps else signature
        if i == steps or i - start >= chunk or current != signature:
            ranges.append((start, i))
            start, signature = i, current
    return ranges


@torch.no_grad()
def sample_edit_friendly_inversion(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, seed=0, sink=None, store_device="cpu",
    rule="ddpm", parallel_steps=1, storage=torch.float32,
):
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024, Eqs. 6-7): noise maps that lead to model.latent_image.

    The noisy latents x_i are drawn independently of each other, so the model calls do not depend on
    each other: `parallel_steps` of them go through the model in one batch (an int, or a callable
    (base_model, latent_shape, steps, device) -> int, called once the model is loaded). The first latent of each
    batch is re-derived from the previous map, the others are the drawn ones; `noisy_latents` records
    the latents the model actually saw, and a batched run also records its batches and its guider's
    digest, so that a replay under the same prompts and CFG can run the same batches. With 1 every step
    runs alone and the sampler retraces the inversion bit for bit. `rule` picks the step
    (noise_maps.SAMPLING_RULES); the maps are always the first-order ones, and second-order rules also
    record the clean-latent estimates (`denoised`). With a `storage` precision below float32 every latent fed to the
    model is rounded to it, each map absorbs the rounding of the one before, and `residual` keeps the last map exact.
    """
    extra_args = {} if extra_args is None else extra_args
    model_sampling = _base_model(model).model_sampling
    x0 = model.latent_image.to(x.dtype)
    sigmas_cpu = sigmas.detach().float().cpu()
    scales = check_noise_scales(signal_and_noise_scales(model_sampling, sigmas_cpu), sigmas_cpu)
    steps = rule_steps(rule, scales, eta)
    keep_history = rule_keeps_history(rule)
    batch = x.shape[0]
    s_in = x.new_ones([batch])
    gates = _timestep_gates(model, extra_args, batch)
    if gates is None:
        parallel_steps = 1
    elif callable(parallel_steps):
        parallel_steps = parallel_steps(_base_model(model), tuple(x.shape), len(steps), x.device)
    chunks = plan_chunks(sigmas_cpu, len(steps), parallel_steps, gates)

    noisy_targets = (round_to_storage(target, storage) for target in draw_noisy_latents(x0, scales, seed))
    x = next(noisy_targets)
    # Filled step by step rather than stacked at the end, which would hold every record twice.
    noisy_latents, maps = (torch.empty((len(steps), *x.shape), dtype=storage, device=store_device) for _ in range(2))
    residual = None
    denoised_record = torch.empty_like(maps) if keep_history else None
    progress = trange(len(steps), disable=disable)
    for start, stop in chunks:
        inputs = [x] + [next(noisy_targets) for _ in range(start + 1, stop)]
        step_sigmas = torch.cat([sigmas[i] * s_in for i in range(start, stop)])
        outputs = model(torch.cat(inputs), step_sigmas, **extra_args).split(batch)
        for offset, (x_i, denoised) in enumerate(zip(inputs, outputs)):
            i = start + offset
            noisy_latents[i] = x_i
            if keep_history:
                denoised_record[i] = denoised
            if callback is not None:
                callback({"x": x_i, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
            mean = posterior_mean(x_i, denoised, steps[i])
            if i + 1 < stop:
                target = inputs[offset + 1]
            else:
                target = x0 if steps[i].is_last else next(noisy_targets)
            noise_map = (target - mean) / steps[i].noise_scale
            maps[i] = noise_map
            if storage != noise_map.dtype:
                if steps[i].is_last:
                    residual = noise_map.to(store_device, copy=True)
                else:
                    noise_map = _rounded_map(noise_map, storage, sigmas[i])
            # Re-derive x from the map instead of taking the target, so that regeneration, which only
            # has the map, rounds exactly as the inversion did (used as the next model input when a batch ends).
            x = add_map(mean, noise_map, steps[i])
            if not steps[i].is_last:
                x = round_to_storage(x, storage)
            progress.update(1)
    progress.close()

    if sink is not None:
        batched = any(stop - start > 1 for start, stop in chunks)
        sink.append(
            {
                "sigmas": sigmas_cpu,
                "scales": scales,
                "noisy_latents": noisy_latents,
                "maps": maps,
                "denoised": denoised_record,
                "residual": residual,
                "batches": tuple(chunks) if batched else None,
                "conditioning_digest": guider_digest(_guider(model)) if batched else None,
            }
        )
    return x


def replay_offset(noise_maps: NoiseMaps, sigmas: torch.Tensor) -> int:
    """The skip that `sigmas` corresponds to in `noise_maps`; raises ValueError when they do not match."""
    sigmas = sigmas.detach().float().cpu()
    skip = noise_maps.steps + 1 - sigmas.shape[0]
    if skip < 0 or skip >= noise_maps.steps or not torch.allclose(
        sigmas, noise_maps.sigmas[skip:], rtol=1e-5, atol=1e-7
    ):
        raise ValueError(
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


def _check_replay_fits(model, noise_maps: NoiseMaps, x: torch.Tensor, seed) -> None:
    inner = _base_model(model)
    check_maps_fit_model(noise_maps, ModelFingerprint.of(inner.model_sampling, inner.latent_format))
    if tuple(x.shape) != noise_maps.latent_shape:
        hint = (
            f" They hold {noise_maps.variations} variations of each latent: give the sampler the Edit-Friendly Sampler "
            "(Custom Sampling) node's LATENT output, which has them all."
            if noise_maps.variations > 1 else ""
        )
        raise EditFriendlyInputError(
            f"The latent given to the sampler has shape {tuple(x.shape)} but the noise maps are for {noise_maps.latent_shape}.{hint}"
        )
    # The replay starts from the maps' own latent, so any other latent (another sampler's output, another image)
    # would be ignored without a word.
    given = getattr(model, "latent_image", None)
    if given is not None:
        source = inner.process_latent_in(noise_maps.source_latent.to(given.device, torch.float32))
        if (given.float() - source).abs().max() > SOURCE_LATENT_TOLERANCE * source.abs().max():
            raise EditFriendlyInputError(
                "The latent given to the sampler is not the one these noise maps were made from. The edit-friendly sampler "
                "replays the inversion from its own start, so it cannot continue another sampler's output or edit another "
                "image (a Noise Map Transform's shift moves the maps' latent too): connect the Edit-Friendly Sampler "
                "(Custom Sampling) node's LATENT output to latent_image."
            )
    if seed is not None and int(seed) != noise_maps.seed and any(
        cond.get(key) not in (None, 0, 0.0)
        for cond_list in (getattr(_guider(model), "conds", None) or {}).values()
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


def check_rule(noise_maps: NoiseMaps, rule: str | None) -> None:
    """Refuse to replay maps with a step rule other than the one they were made with, or without its data."""
    if rule is not None and rule != noise_maps.rule:
        raise EditFriendlyInputError(
            f"These noise maps were made with the {noise_maps.rule!r} step rule and cannot be replayed with {rule!r}: "
            f"the maps only lead back to the image under the rule they were inverted with. Invert again with rule {rule!r}."
        )
    if noise_maps.rule not in SAMPLING_RULES:
        raise EditFriendlyInputError(f"The noise maps use an unknown step rule {noise_maps.rule!r}.")
    if rule_keeps_history(noise_maps.rule) and noise_maps.source_denoised is None:
        raise EditFriendlyInputError(
            f"The {noise_maps.rule!r} noise maps lack the source's clean-latent estimates they need; invert again."
        )


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
        guider = _guider(self.model)
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
            if self.batch_fits is not None and not self.batch_fits(_base_model(self.model), shape, x.device, self.entries_per_call()):
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
    the inversion's own batches while the path allows (RecordedBatches). A LATENT's noise mask (Set Latent
    Noise Mask, through SamplerCustomAdvanced) acts as `mask`, with ComfyUI's denoise_mask_function (such as
    Differential Diffusion) applied to it at every step. `batch_fits(base_model, batch_shape, device, entries)`,
    when given, says whether a recorded batch would still run as one call; where it would not, the replay goes
    one step at a time.
    """
    if noise_maps is None:
        raise ValueError("sample_edit_friendly needs noise_maps")
    extra_args = {} if extra_args is None else extra_args
    check_rule(noise_maps, rule)
    _check_replay_fits(model, noise_maps, x, extra_args.get("seed"))
    skip = replay_offset(noise_maps, sigmas)
    steps = rule_steps(noise_maps.rule, noise_maps.scales, noise_maps.eta)[skip:]
    keep_history = rule_keeps_history(noise_maps.rule)
    # ComfyUI's inpainting would feed the model another latent outside the mask, off the maps' path; blending
    # with the source's own trajectory below gives what it asks for and keeps the replay exact.
    latent_mask = extra_args.get("denoise_mask")
    if latent_mask is not None:
        extra_args = {**extra_args, "denoise_mask": None}
        mask_function = (extra_args.get("model_options") or {}).get("denoise_mask_function")
    # float32 whatever the given latent's precision: a half-precision latent must not round the replay. Lean maps
    # round each latent to their storage precision, as their inversion did.
    device, dtype, storage = x.device, torch.float32, noise_maps.maps.dtype
    # The stored sigmas, not the given ones: they may differ by rounding, and exactness needs the same model inputs.
    sigmas = noise_maps.sigmas[skip:].to(device)
    s_in = torch.ones([x.shape[0]], device=device)
    if mask is not None or latent_mask is not None:
        # Outside the mask the output follows the source's own trajectory, which ends at the source latent.
        mask = None if mask is None else mask.to(device, dtype)
        source_clean = _base_model(model).process_latent_in(noise_maps.source_latent.to(device, dtype))

    # A copy, so that nothing downstream can change the cached maps' start latent through it.
    x = recorded = noise_maps.start_latent(skip).to(device, dtype, copy=True)
    # The digest covers prompts and CFG, not model patches: one that would have kept the inversion step by step
    # (a sigma gate, a cache) must keep the replay so too.
    same_conditioning = (
        noise_maps.batches is not None
        and noise_maps.conditioning_digest is not None
        and guider_digest(_guider(model)) == noise_maps.conditioning_digest
        and _timestep_gates(model, extra_args, x.shape[0]) is not None
    )
    recorded_batches = RecordedBatches(model, noise_maps, extra_args, batch_fits) if same_conditioning else None
    previous = None
    for i in trange(len(steps), disable=disable):
        # `recorded` is the inversion's latent for this step, fetched by the previous step (or the start latent).
        denoised = recorded_batches.denoised(skip + i, x, recorded) if recorded_batches is not None else None
        if denoised is None:
            denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        mean = posterior_mean(x, denoised, steps[i])
        x = add_map(mean, noise_maps.noise_map(skip + i).to(x.device, x.dtype), steps[i])
        if keep_history:
            # Rounded as the source's estimates were stored, so that the source prompt's correction stays exactly 0.
            denoised = round_to_storage(denoised, storage)
            if previous is not None and steps[i].history_weight != 0.0:
                source = noise_maps.source_denoised[skip + i - 1 : skip + i + 1].to(x.device, x.dtype)
                x = x + history_term(steps[i], denoised, previous, source[1], source[0])
            previous = denoised
        if not steps[i].is_last:
            recorded = noise_maps.noisy_latents[skip + i + 1].to(x.device, x.dtype)
            x = settle_on_recorded(round_to_storage(x, storage), recorded, mean, storage)
        step_mask = mask
        if latent_mask is not None:
            step_mask = latent_mask if mask_function is None else mask_function(
                sigmas[i] * s_in, latent_mask, extra_options={"model": _guider(model), "sigmas": sigmas}
            )
            step_mask = step_mask.to(dtype) if mask is None else step_mask.to(dtype) * mask
        if step_mask is not None:
            x = torch.lerp(source_clean if steps[i].is_last else recorded, x, step_mask)
    return x


__all__ = [
    "ModelFingerprint",
    "NoiseMaps",
    "PosteriorStep",
    "RecordedBatches",
    "add_map",
    "check_rule",
    "ddpm_steps",
    "dpmpp_2m_sde_steps",
    "plan_chunks",
    "posterior_mean",
    "replay_offset",
    "rule_steps",
    "sample_edit_friendly",
    "sample_edit_friendly_inversion",
    "settle_on_recorded",
    "signal_and_noise_scales",
]
