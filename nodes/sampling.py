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

from .noise_maps import ModelFingerprint, NoiseMaps
from .validation import EditFriendlyInputError, check_maps_fit_model


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


def signal_and_noise_scales(model_sampling, sigmas: torch.Tensor) -> torch.Tensor:
    """(a(s), b(s)) for every sigma, read from the model's own noise_scaling, as float64 [len, 2]."""
    s = sigmas.detach().double().cpu()
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


def posterior_mean(x: torch.Tensor, denoised: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
    """mu(x_t) of Eq. 3, with the noise estimate taken from the model's clean-latent estimate."""
    predicted_noise = (x - step.a * denoised) / step.b
    return step.c_x0 * denoised + step.c_eps * predicted_noise


def add_map(mean: torch.Tensor, noise_map: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
    """x_{t-1} = mu(x_t) + sigma_t z_t (Eq. 5); shared by inversion and regeneration so both round alike."""
    return mean + step.noise_scale * noise_map


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


def _inner_model_sampling(model):
    # `model` is ComfyUI's KSamplerX0Inpaint around a guider around the BaseModel.
    return model.inner_model.inner_model.model_sampling


@torch.no_grad()
def sample_edit_friendly_inversion(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, seed=0, sink=None, store_device="cpu"
):
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024, Eqs. 6-7): noise maps that lead to model.latent_image."""
    extra_args = {} if extra_args is None else extra_args
    model_sampling = _inner_model_sampling(model)
    x0 = model.latent_image.to(x.dtype)
    sigmas_cpu = sigmas.detach().float().cpu()
    scales = signal_and_noise_scales(model_sampling, sigmas_cpu)
    steps = ddpm_steps(scales, eta)
    s_in = x.new_ones([x.shape[0]])

    noisy_targets = draw_noisy_latents(x0, scales, seed)
    x = next(noisy_targets)
    noisy_latents, maps = [], []
    for i in trange(len(steps), disable=disable):
        noisy_latents.append(x.to(store_device))
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        mean = posterior_mean(x, denoised, steps[i])
        target = x0 if steps[i].is_last else next(noisy_targets)
        noise_map = (target - mean) / steps[i].noise_scale
        maps.append(noise_map.to(store_device))
        # Re-derive x from the map instead of taking the target, so that regeneration, which only
        # has the map, rounds exactly as the inversion did.
        x = add_map(mean, noise_map, steps[i])

    if sink is not None:
        sink.append(
            {
                "sigmas": sigmas_cpu,
                "scales": scales,
                "noisy_latents": torch.stack(noisy_latents),
                "maps": torch.stack(maps),
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


def _check_replay_fits(model, noise_maps: NoiseMaps, x: torch.Tensor) -> None:
    inner = model.inner_model.inner_model
    check_maps_fit_model(noise_maps, ModelFingerprint.of(inner.model_sampling, inner.latent_format))
    if tuple(x.shape) != noise_maps.latent_shape:
        raise EditFriendlyInputError(
            f"The latent given to the sampler has shape {tuple(x.shape)} but the noise maps are for {noise_maps.latent_shape}."
        )


@torch.no_grad()
def sample_edit_friendly(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_maps=None, mask=None):
    """Edit-friendly DDPM sampling (Huberman-Spiegelglas et al. 2024, Eq. 5 with the extracted z_t), from x_skip."""
    if noise_maps is None:
        raise ValueError("sample_edit_friendly needs noise_maps")
    extra_args = {} if extra_args is None else extra_args
    _check_replay_fits(model, noise_maps, x)
    skip = replay_offset(noise_maps, sigmas)
    steps = ddpm_steps(noise_maps.scales[skip:], noise_maps.eta)
    # The stored sigmas, not the given ones: they may differ by rounding, and exactness needs the same model inputs.
    sigmas = noise_maps.sigmas[skip:].to(x.device)
    s_in = x.new_ones([x.shape[0]])
    if mask is not None:
        # Outside the mask the output follows the source's own trajectory, which ends at the source latent.
        mask = mask.to(x.device, x.dtype)
        source_clean = model.inner_model.inner_model.process_latent_in(noise_maps.source_latent.to(x.device, x.dtype))

    x = noise_maps.start_latent(skip).to(x.device, x.dtype)
    for i in trange(len(steps), disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        mean = posterior_mean(x, denoised, steps[i])
        x = add_map(mean, noise_maps.maps[skip + i].to(x.device, x.dtype), steps[i])
        if mask is not None:
            source = source_clean if steps[i].is_last else noise_maps.noisy_latents[skip + i + 1].to(x.device, x.dtype)
            x = torch.lerp(source, x, mask)
    return x


__all__ = [
    "ModelFingerprint",
    "NoiseMaps",
    "PosteriorStep",
    "add_map",
    "ddpm_steps",
    "posterior_mean",
    "replay_offset",
    "sample_edit_friendly",
    "sample_edit_friendly_inversion",
    "signal_and_noise_scales",
]
