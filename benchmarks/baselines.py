"""The methods edit-friendly inversion is compared with, run through ComfyUI's own sampling code.

- DDIM inversion: the deterministic ODE run backwards from the image with the source prompt, then
  ComfyUI's `euler` sampler (DDIM for an EPS model in sigma space) forwards with the target prompt.
- SDEdit: noise the image to a strength and denoise with the target prompt, exactly what
  KSamplerAdvanced does (`comfy.sample.sample` with a start step and added noise).
- Plain generation: the target prompt from pure noise, as KSampler does.

Also the one error measure the benchmarks share (`reconstruction_error`).
"""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import torch
from edit_friendly_ddpm.nodes import pipeline


def sample_ddim_inversion(model, x, sigmas, extra_args=None, callback=None, disable=None, trajectory=None):
    """DDIM inversion (Song et al. 2021, Eq. 13 run backwards): Euler steps of the probability-flow ODE up the schedule."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    rising = sigmas.flip(0)
    path = [x]
    for i in range(len(rising) - 1):
        current, following = rising[i], rising[i + 1]
        at = current if current > 0 else following  # the noise prediction at sigma 0 is undefined: use the next level's
        denoised = model(x, at * s_in, **extra_args)
        x = x + (following - current) * (x - denoised) / at
        path.append(x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": following, "sigma_hat": following, "denoised": denoised})
    trajectory.extend(reversed(path))  # trajectory[k] is the latent at sigmas[k]
    return x


def ddim_invert(model, positive, negative, samples: torch.Tensor, steps: int, cfg: float, scheduler: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The schedule and the inverted latent at each of its sigmas (trajectory[-1] is the input)."""
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).float()
    trajectory = []
    sampler = comfy.samplers.KSAMPLER(sample_ddim_inversion, extra_options={"trajectory": trajectory})
    pipeline.run_guider(pipeline.cfg_guider(model, positive, negative, cfg), sampler, sigmas, samples, 0)
    return sigmas, trajectory


def ddim_edit(model, positive, negative, sigmas: torch.Tensor, trajectory: list[torch.Tensor], cfg: float, skip: int) -> torch.Tensor:
    """Deterministic sampling (ComfyUI's euler) from the inverted latent at step `skip` with the target prompt."""
    sampler = comfy.samplers.sampler_object("euler")
    return pipeline.run_guider(pipeline.cfg_guider(model, positive, negative, cfg), sampler, sigmas[skip:], trajectory[skip], 0)


def ksampler(model, positive, negative, samples: torch.Tensor, steps: int, cfg: float, scheduler: str, seed: int, start_step: int = 0, sampler: str = "ddpm"):
    """What the KSampler node runs (start_step 0) or KSamplerAdvanced with added noise from `start_step` to the end."""
    noise = comfy.sample.prepare_noise(samples, seed)
    advanced = {"start_step": start_step, "last_step": steps, "force_full_denoise": True} if start_step else {}
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, samples, disable_pbar=True, seed=seed, **advanced)


def sdedit(model, positive, negative, samples: torch.Tensor, steps: int, cfg: float, scheduler: str, strength: float, seed: int, sampler: str = "ddpm"):
    """KSamplerAdvanced with added noise, starting at (1 - strength) of the steps."""
    return ksampler(model, positive, negative, samples, steps, cfg, scheduler, seed, round((1 - strength) * steps), sampler)


def generate(model, positive, negative, shape, steps: int, cfg: float, scheduler: str, seed: int, sampler: str = "ddpm"):
    """KSampler from an empty latent."""
    return ksampler(model, positive, negative, torch.zeros(shape), steps, cfg, scheduler, seed, sampler=sampler)


def reconstruction_error(output: torch.Tensor, latent: torch.Tensor) -> float:
    """Largest absolute difference between a regenerated latent and the input latent, in float32."""
    return float((output.float() - latent.float()).abs().max())
