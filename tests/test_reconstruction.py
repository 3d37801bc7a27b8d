"""Inversion followed by regeneration with the same prompt and CFG gives the input latent back.

Runs the real ComfyUI CFGGuider, KSAMPLER and model classes on tiny seeded models of every family.
"""

import comfy.samplers
import comfy_extras.nodes_custom_sampler as custom_sampler
import pytest
import tiny_models
import torch
from edit_friendly_ddpm.nodes import pipeline
from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlySamplerCustom
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError

TOLERANCE = 1e-5  # float32 rounding of the last step's operands: up to 3.7e-6 where it starts at sigma 5 (linear_quadratic)
FAMILIES = list(tiny_models.FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return tiny_models.FAMILIES[request.param](seed=0)


def max_error(a, b):
    return (a - b).abs().max().item()


def test_tiny_models_are_fully_seeded(tiny):
    """Every tensor a checkpoint would supply is set from the seed, so a test cannot pass on leftover memory."""
    again = tiny_models.FAMILIES[tiny.family](seed=0).patcher.model.state_dict()
    for name, tensor in tiny.patcher.model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
            assert torch.equal(tensor, again[name]), name


@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_exact_reconstruction_batch_non_square(tiny, cfg):
    latent = tiny_models.latent(tiny, batch=2, height=8, width=12, seed=1)
    positive, negative = tiny.conditioning(10), tiny.conditioning(11)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 16, cfg, "ddim_uniform", 1.0, seed=3)
    assert maps.latent_shape == (2, tiny.latent_channels, 8, 12)
    for skip in (0, 5, maps.steps - 1):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, cfg, skip)
        assert regenerated.shape == latent["samples"].shape
        assert max_error(regenerated, latent["samples"]) <= TOLERANCE, f"skip {skip}"


@pytest.mark.parametrize("rule,parallel_steps", [("ddpm", 1), ("dpmpp_2m_sde", 1), ("ddpm", 4), ("dpmpp_2m_sde", 4)])
@pytest.mark.parametrize("scheduler", comfy.samplers.SCHEDULER_NAMES)
def test_every_scheduler_ending_at_zero_reconstructs(tiny, scheduler, rule, parallel_steps):
    latent = tiny_models.latent(tiny, batch=1, height=8, width=8, seed=2)
    positive, negative = tiny.conditioning(20), tiny.conditioning(21)
    sigmas = comfy.samplers.calculate_sigmas(tiny.patcher.get_model_object("model_sampling"), scheduler, 10)
    usable = float(sigmas[-1]) == 0.0 and bool((sigmas[1:] < sigmas[:-1]).all())
    if not usable:
        with pytest.raises(EditFriendlyInputError, match=scheduler):
            pipeline.invert(tiny.patcher, positive, negative, latent, 10, 2.0, scheduler, 1.0, seed=0)
        return
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 2.0, scheduler, 1.0, seed=0, rule=rule, parallel_steps=parallel_steps)
    for skip in (0, 4):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, 2.0, skip)
        assert max_error(regenerated, latent["samples"]) <= TOLERANCE, f"{scheduler} skip {skip}"


def test_paper_defaults_reconstruct_at_100_steps():
    tiny = tiny_models.sd15_eps(seed=5)
    latent = tiny_models.latent(tiny, batch=1, height=8, width=8, seed=5)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 100, 3.5, "ddim_uniform", 1.0, seed=0)
    assert maps.steps == 100 and float(maps.sigmas[-1]) == 0.0
    regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 36)
    assert max_error(regenerated, latent["samples"]) <= TOLERANCE


def test_different_seeds_give_different_maps_that_both_reconstruct():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, seed=4)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    first = pipeline.invert(tiny.patcher, positive, negative, latent, 12, 3.5, "ddim_uniform", 1.0, seed=0)
    second = pipeline.invert(tiny.patcher, positive, negative, latent, 12, 3.5, "ddim_uniform", 1.0, seed=1)
    assert max_error(first.maps, second.maps) > 0.1
    for maps in (first, second):
        assert max_error(pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 2), latent["samples"]) <= TOLERANCE


def test_eta_below_one_still_reconstructs():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, seed=6)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 12, 3.5, "karras", 0.4, seed=0)
    assert max_error(pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 0), latent["samples"]) <= TOLERANCE


def test_maps_live_on_the_intermediate_device():
    tiny = tiny_models.sd15_eps(seed=0)
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), tiny_models.latent(tiny), 6, 3.5, "ddim_uniform", 1.0, 0)
    device = torch.device(comfy.model_management.intermediate_device())
    assert {maps.maps.device, maps.noisy_latents.device, maps.source_latent.device} == {device}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_latent_reconstructs_to_float32_precision(dtype):
    # KSampler's float32 noise makes its samplers run in float32 whatever the latent's precision; so must the inversion.
    tiny = tiny_models.sd15_eps(seed=0)
    samples = tiny_models.latent(tiny, height=8, width=12, seed=1)["samples"].to(dtype)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, positive, negative, {"samples": samples}, 10, 3.5, "ddim_uniform", 1.0, 0)
    assert maps.maps.dtype == maps.source_latent.dtype == torch.float32
    regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 0)
    assert (regenerated - samples.float()).abs().max().item() <= 1e-5
    # A half-precision LATENT given to SamplerCustomAdvanced does not round the replay either.
    sampler, sigmas, _ = EditFriendlySamplerCustom.execute(maps, 0).result
    (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, 3.5).result
    (noise,) = custom_sampler.DisableNoise.execute().result
    (output, _) = custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, {"samples": samples}).result
    assert (output["samples"] - samples.float()).abs().max().item() <= 1e-5
