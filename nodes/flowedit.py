"""FlowEdit (Kulikov, Kleiner, Huberman-Spiegelglas, Michaeli, ICCV 2025): inversion-free editing of flow models.

In flow time t a noisy latent is x_t = (1 - t) x0 + t noise. FlowEdit moves the edit Z, which starts at the source
latent x_src, by the difference of the target's and the source's velocities at two noisy latents that share their
noise: z_src = (1 - t) x_src + t n, z_tar = z_src + Z - x_src, Z += (t' - t) (v_tar(z_tar) - v_src(z_src)).
With v = (x - x0_hat) / t that difference is (Z - x_src - (x0_tar - x0_src)) / t: the update needs only the two
clean-latent estimates, and the source prompt as target gives V = 0, so the input comes back as it is.

ComfyUI's CONST models (SD3, Flux, Qwen-Image, Wan, ...) sample in flow time (t = sigma). Cosmos' COSMOS_RFLOW
samples the same flow in EDM coordinates, x = x0 + sigma noise = (1 + sigma) x_t with t = sigma / (1 + sigma); reading
a(s), b(s) from the model's own noise_scaling covers both (t = b / (a + b), model latent = (a + b) x_t).

FlowEditGuider puts both branches of a step through the model in one call (branches.calc_branches), each with its
own CFG; sample_flowedit runs Algorithm 1 and is meant to be wrapped in comfy.samplers.KSAMPLER; flowedit() checks
a node's inputs and runs both through ComfyUI's guider machinery (pipeline.run_guider).
"""

from __future__ import annotations

import math

import comfy.model_sampling
import comfy.samplers
import torch
from tqdm.auto import trange

from . import pipeline
from .branches import Branch, calc_branches
from .step_batches import inner_base_model, inner_guider
from .steps import signal_and_noise_scales
from .validation import EditFriendlyInputError, check_choice, check_in_range, check_latent, fit_mask, mask_for_latent

MAX_N_AVG = 16
"""Most noise draws averaged per step (n_avg); each one adds a source and a target latent to the step's model call."""
BRANCHES_OPTION = "edit_friendly_flowedit_branches"
"""model_options key by which sample_flowedit tells the guider which branches its latent batch holds, in order."""
SOURCE_AND_TARGET, TARGET_ONLY = ("source", "target"), ("target",)
BRANCH_CONDS = {"source": ("source_positive", "source_negative"), "target": ("positive", "negative")}
"""The guider's conds (ComfyUI keys) of each branch: positive, negative."""

FLOW_PREDICTIONS = (comfy.model_sampling.CONST, comfy.model_sampling.COSMOS_RFLOW)
OTHER_PREDICTIONS = (
    # Most derived first: EDM and V_PREDICTION subclass EPS, IMG_TO_IMG subclasses X0.
    (comfy.model_sampling.EDM, "an EDM model", True),
    (comfy.model_sampling.V_PREDICTION, "a v-prediction model", True),
    (comfy.model_sampling.IMG_TO_IMG, "an image-to-image (x0) model", False),
    (comfy.model_sampling.X0, "an x0-prediction model", False),
    (comfy.model_sampling.EPS, "an EPS (noise-prediction) model", True),
)
"""What a model that is not a flow is, and whether the pack's edit-friendly DDPM inversion edits it."""


def model_name(base_model) -> str:
    return type(getattr(base_model, "model_config", None)).__name__


def check_flow_model(model_sampling, name: str) -> None:
    """FlowEdit follows a flow's ODE: refuse, naming what it is, a model that is not a rectified-flow model."""
    if isinstance(model_sampling, FLOW_PREDICTIONS):
        return
    kind, ddpm_hint = next(((kind, hint) for cls, kind, hint in OTHER_PREDICTIONS if isinstance(model_sampling, cls)), ("not a flow model", False))
    hint = " Edit it with Edit-Friendly DDPM Inversion and the Edit-Friendly Sampler instead." if ddpm_hint else ""
    raise EditFriendlyInputError(
        f"FlowEdit needs a rectified-flow model (SD3, Flux, Flux 2, Qwen-Image, Z-Image, Wan, HunyuanVideo, LTXV...), "
        f"but this model ({name}) is {kind}.{hint}"
    )


def check_flowedit_sigmas(sigmas: torch.Tensor, where: str = "The sigmas given to the FlowEdit Sampler") -> torch.Tensor:
    """At least one step, finite, strictly decreasing, ending at exactly 0 (the edit is a clean latent)."""
    sigmas = sigmas.detach().float().cpu()
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise EditFriendlyInputError(f"{where} hold no step ({tuple(sigmas.shape)}); FlowEdit needs at least one.")
    if not torch.isfinite(sigmas).all() or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise EditFriendlyInputError(f"{where} must decrease step by step and be finite; use fewer steps or another scheduler.")
    if float(sigmas[-1]) != 0.0:
        raise EditFriendlyInputError(
            f"{where} end at {float(sigmas[-1]):.4g}, not 0, so the edit would stay noisy. With SplitSigmas, give "
            "SamplerCustomAdvanced its low_sigmas (the tail of the schedule); or choose a scheduler that ends at 0."
        )
    return sigmas


def check_flowedit_options(n_min: int, n_avg: int, steps: int | None = None) -> None:
    """n_avg in 1..MAX_N_AVG; with the number of steps run known, n_min below it (at least one FlowEdit step)."""
    check_in_range("n_avg", n_avg, 1, MAX_N_AVG)
    if n_min < 0:
        raise EditFriendlyInputError(f"n_min must be at least 0; got {n_min}.")
    if steps is not None and n_min >= steps:
        raise EditFriendlyInputError(
            f"n_min must be at least 0 and less than the steps FlowEdit runs ({steps}: steps minus skip, or the sigmas given); "
            f"got {n_min}. n_min = 0 is the paper's setting; the last n_min steps sample the target plainly."
        )


class FlowEditGuider(comfy.samplers.CFGGuider):
    """A guider holding a source (prompt, negative, CFG) and a target (prompt, negative, CFG) for the FlowEdit sampler.

    predict_noise takes a latent batch made of one equal part per branch that sample_flowedit names in model_options
    (source then target, or the target alone) and returns each part's CFG'd clean-latent estimate, in the same order.
    All conds of all branches go through calc_cond_batch together: one model call where memory allows.
    """

    def __init__(self, model_patcher):
        super().__init__(model_patcher)
        self.source_cfg = 1.0

    def set_branches(self, source_positive, source_negative, positive, negative) -> None:
        self.inner_set_conds(
            {"source_positive": source_positive, "source_negative": source_negative, "positive": positive, "negative": negative}
        )

    def set_cfgs(self, source_cfg: float, cfg: float) -> None:
        self.source_cfg, self.cfg = float(source_cfg), float(cfg)

    def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
        # Before ComfyUI loads anything: another sampler would hand predict_noise a latent of one branch only.
        if not (isinstance(sampler, comfy.samplers.KSAMPLER) and sampler.sampler_function is sample_flowedit):
            raise EditFriendlyInputError(
                f"The FlowEdit Guider only drives the FlowEdit Sampler, which runs its source and target together; got "
                f"{type(sampler).__name__}. To sample with one prompt, use CFGGuider."
            )
        check_flow_model(self.model_patcher.get_model_object("model_sampling"), model_name(self.model_patcher.model))
        return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)

    def _branch(self, role: str, model_options: dict) -> tuple:
        positive, negative = BRANCH_CONDS[role]
        cfg = self.source_cfg if role == "source" else self.cfg
        # As ComfyUI's sampling_function: CFG 1 skips the unconditional pass.
        skip_uncond = math.isclose(cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False)
        return self.conds.get(positive), None if skip_uncond else self.conds.get(negative), cfg

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        model_options = {} if model_options is None else model_options
        roles = model_options.get(BRANCHES_OPTION)
        if roles is None:
            raise EditFriendlyInputError("The FlowEdit Guider only works with the FlowEdit Sampler.")
        latents, timestep = x.chunk(len(roles)), timestep.chunk(len(roles))[0]
        guidance = [self._branch(role, model_options) for role in roles]
        calc = model_options.get("sampler_calc_cond_batch_function")
        if calc is None:
            branches = [Branch([cond, uncond], latent) for (cond, uncond, _), latent in zip(guidance, latents)]
            outputs = calc_branches(self.inner_model, branches, timestep, model_options)
        else:  # a replacement of calc_cond_batch sees one latent per call: one call per branch
            outputs = [
                calc({"conds": [cond, uncond], "input": latent, "sigma": timestep, "model": self.inner_model, "model_options": model_options})
                for (cond, uncond, _), latent in zip(guidance, latents)
            ]
        return torch.cat([
            self._guide(out, latent, timestep, cond, uncond, cfg, model_options)
            for out, latent, (cond, uncond, cfg) in zip(outputs, latents, guidance)
        ])

    def _guide(self, out, x, timestep, cond, uncond, cfg, model_options):
        """The rest of ComfyUI's sampling_function for one branch: pre-CFG functions, then cfg_function."""
        for fn in model_options.get("sampler_pre_cfg_function", []):
            args = {"conds": [cond, uncond], "conds_out": out, "cond_scale": cfg, "timestep": timestep, "input": x,
                    "sigma": timestep, "model": self.inner_model, "model_options": model_options}
            out = fn(args)
        return comfy.samplers.cfg_function(self.inner_model, out[0], out[1], cfg, x, timestep, model_options=model_options, cond=cond, uncond=uncond)


class FlowTime:
    """Flow time t and the model-space scale k = a + b of each sigma (x_model = k x_flow): k = 1, t = sigma for CONST."""

    def __init__(self, model_sampling, sigmas: torch.Tensor):
        a, b = signal_and_noise_scales(model_sampling, sigmas).unbind(1)
        # float32 values, as the latents they multiply: CONST's (1 - s) + s rounds to exactly 1.
        self.t, self.k = (b / (a + b)).float().tolist(), (a + b).float().tolist()


class EditRegion:
    """Where the edit applies: the sampler's mask times a LATENT's noise mask (SamplerCustomAdvanced), the latter
    through ComfyUI's denoise_mask_function (Differential Diffusion) at each step; everywhere when neither is given."""

    def __init__(self, mask, x_src: torch.Tensor, extra_args: dict, guider, sigmas: torch.Tensor):
        self.mask = None if mask is None else mask_for_latent(fit_mask(mask, tuple(x_src.shape)), tuple(x_src.shape)).to(x_src)
        self.noise_mask = extra_args.get("denoise_mask")
        self.mask_function = (extra_args.get("model_options") or {}).get("denoise_mask_function")
        self.guider, self.sigmas, self.s_in = guider, sigmas, x_src.new_ones([x_src.shape[0]])

    def weight(self, i: int) -> torch.Tensor | None:
        if self.noise_mask is None:
            return self.mask
        noise_mask = self.noise_mask
        if self.mask_function is not None:
            noise_mask = self.mask_function(self.sigmas[i] * self.s_in, noise_mask, extra_options={"model": self.guider, "sigmas": self.sigmas})
        noise_mask = noise_mask.to(self.s_in)
        return noise_mask if self.mask is None else noise_mask * self.mask


def _masked(update: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return update if weight is None else update * weight


def _denoise(model, latents: list[torch.Tensor], sigma, roles: tuple, extra_args: dict) -> tuple[torch.Tensor, ...]:
    """One call of the guider on the branches' latents, all at `sigma`; their clean-latent estimates, in order."""
    batch = torch.cat(latents)
    options = {**extra_args, "model_options": {**(extra_args.get("model_options") or {}), BRANCHES_OPTION: roles}}
    return model(batch, sigma * batch.new_ones([batch.shape[0]]), **options).chunk(len(roles))


def _check(model, sigmas: torch.Tensor, n_avg: int, n_min: int) -> torch.Tensor:
    """Every refusal of sample_flowedit, before its first model call; returns the source latent (float32)."""
    guider = inner_guider(model)
    if not isinstance(guider, FlowEditGuider):
        raise EditFriendlyInputError(
            f"The FlowEdit Sampler needs the FlowEdit Guider, which holds the source and target prompts; got {type(guider).__name__}."
        )
    base = inner_base_model(model)
    check_flow_model(base.model_sampling, model_name(base))
    steps = check_flowedit_sigmas(sigmas).shape[0] - 1
    check_flowedit_options(n_min, n_avg, steps)
    latent_format = base.latent_format
    return check_latent(
        model.latent_image.to(torch.float32), latent_format.latent_channels, getattr(latent_format, "latent_dimensions", 2),
        model_name=f"This model ({model_name(base)})",
    )


@torch.no_grad()
def sample_flowedit(model, x, sigmas, extra_args=None, callback=None, disable=None, n_avg=1, n_min=0, seed=0, mask=None):
    """FlowEdit (Kulikov et al., ICCV 2025, Algorithm 1): edits model.latent_image along the flow, without inversion.

    `x` (the noised start) is not used. The first steps - n_min steps move the edit by the averaged velocity
    difference of `n_avg` seeded noise draws, all in one model call with the source; the last `n_min` steps sample
    the target plainly (Euler in flow time) from the edit's noisy latent. Inside `mask` (and a LATENT's noise mask)
    only: outside, the output is the source latent.
    """
    extra_args = {} if extra_args is None else extra_args
    x_src = _check(model, sigmas, n_avg, n_min)
    model_sampling = inner_base_model(model).model_sampling
    region = EditRegion(mask, x_src, extra_args, inner_guider(model), sigmas)
    extra_args = {**extra_args, "denoise_mask": None}  # the region applies it; KSamplerX0Inpaint would mix batches
    flow = FlowTime(model_sampling, sigmas)
    generator = torch.Generator().manual_seed(int(seed) % 2**64)
    batch, steps, plain_from = x_src.shape[0], len(sigmas) - 1, len(sigmas) - 1 - n_min
    sources = x_src.repeat(n_avg, *[1] * (x_src.ndim - 1))
    edit = x_src.clone()
    for i in trange(steps, disable=disable):
        t, t_next, weight = flow.t[i], flow.t[i + 1], region.weight(i)
        if i < plain_from:
            noise = torch.randn(sources.shape, generator=generator).to(x_src)
            z_src = model_sampling.noise_scaling(sigmas[i], noise, sources)
            z_tar = z_src + flow.k[i] * (edit - x_src).repeat(n_avg, *[1] * (x_src.ndim - 1))
            d_src, d_tar = _denoise(model, [z_src, z_tar], sigmas[i], SOURCE_AND_TARGET, extra_args)
            change = (d_tar - d_src).unflatten(0, (n_avg, batch)).mean(0)
            edit = edit + _masked((t_next - t) / t * ((edit - x_src) - change), weight)
            shown, denoised = z_tar[:batch], x_src + _masked(change, weight)  # the edit if this were the last step
        else:
            if i == plain_from:  # the edit's noisy latent, as FlowEdit's z_tar, then one noise for the rest
                noise = torch.randn(x_src.shape, generator=generator).to(x_src)
                edit = model_sampling.noise_scaling(sigmas[i], noise, x_src) + flow.k[i] * (edit - x_src)
            shown = edit
            (denoised,) = _denoise(model, [edit], sigmas[i], TARGET_ONLY, extra_args)
            x_flow = edit / flow.k[i]
            edit = flow.k[i + 1] * (x_flow + (t_next - t) / t * (x_flow - denoised))
            if weight is not None:  # outside the mask, the source's own noisy latent (the source itself at sigma 0)
                edit = torch.lerp(model_sampling.noise_scaling(sigmas[i + 1], noise, x_src), edit, weight)
                denoised = torch.lerp(x_src, denoised, weight)
        if callback is not None:
            callback({"x": shown, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
    return edit


def flowedit_sampler(n_min: int = 0, n_avg: int = 1, seed: int = 0, mask: torch.Tensor | None = None) -> comfy.samplers.KSAMPLER:
    """The FlowEdit SAMPLER; drive it with a FlowEditGuider over the tail of a schedule (its first sigma sets n_max)."""
    check_flowedit_options(n_min, n_avg)
    return comfy.samplers.KSAMPLER(sample_flowedit, extra_options={"n_min": int(n_min), "n_avg": int(n_avg), "seed": int(seed), "mask": mask})


def flow_guider(model, source_positive, source_negative, positive, negative, source_cfg: float, cfg: float) -> FlowEditGuider:
    """A FlowEditGuider for a ComfyUI MODEL; a model that is not a flow is refused here, before anything runs."""
    check_flow_model(model.get_model_object("model_sampling"), model_name(model.model))
    guider = FlowEditGuider(model)
    guider.set_branches(source_positive, source_negative, positive, negative)
    guider.set_cfgs(source_cfg, cfg)
    return guider


def flowedit(
    model, source_positive, source_negative, positive, negative, latent: dict, steps: int, skip: int, n_min: int, n_avg: int,
    source_cfg: float, cfg: float, scheduler: str, seed: int, mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """FlowEdit of `latent` from the source to the target prompt over the last steps - skip steps of the schedule."""
    guider = flow_guider(model, source_positive, source_negative, positive, negative, source_cfg, cfg)
    if latent.get("noise_mask") is not None:
        raise EditFriendlyInputError(
            "The latent carries a noise mask (Set Latent Noise Mask, VAE Encode for Inpainting...), which the FlowEdit node "
            "does not read: connect the mask to its mask input instead."
        )
    samples = pipeline.model_latent(model, latent)
    if steps < 1:
        raise EditFriendlyInputError(f"steps must be at least 1; got {steps}.")
    if not 0 <= skip < steps:
        raise EditFriendlyInputError(f"skip must be at least 0 and less than steps ({steps}); got {skip}.")
    check_flowedit_options(n_min, n_avg, steps - skip)
    check_choice("scheduler", scheduler, comfy.samplers.SCHEDULER_NAMES)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    sigmas = check_flowedit_sigmas(sigmas, f"The {scheduler} scheduler's sigmas for this model")[skip:]
    if mask is not None:
        fit_mask(mask, tuple(samples.shape))
    return pipeline.run_guider(guider, flowedit_sampler(n_min, n_avg, seed, mask), sigmas, samples, seed)
