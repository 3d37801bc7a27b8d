"""Editing with the maps: a new prompt changes the image, skip controls how much, the maps are not white noise."""

import pytest
import tiny_models
import torch
from edit_friendly_ddpm.nodes import pipeline


@pytest.fixture(scope="module")
def inverted():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, height=16, width=16, seed=3)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, source, negative, latent, 30, 3.5, "ddim_uniform", 1.0, seed=0)
    return tiny, latent["samples"], source, negative, maps


def distance(a, b):
    return (a - b).pow(2).mean().sqrt().item()


def test_another_prompt_gives_a_different_latent(inverted):
    tiny, source_latent, source, negative, maps = inverted
    edited = pipeline.regenerate(tiny.patcher, tiny.conditioning(7), negative, maps, 7.0, 5)
    assert torch.isfinite(edited).all()
    assert distance(edited, source_latent) > 0.05 * source_latent.std().item()


def test_larger_skip_stays_closer_to_the_source(inverted):
    tiny, source_latent, source, negative, maps = inverted
    target = tiny.conditioning(7)
    distances = [distance(pipeline.regenerate(tiny.patcher, target, negative, maps, 7.0, skip), source_latent) for skip in (0, 10, 20, 27)]
    assert distances == sorted(distances, reverse=True), distances
    assert distances[-1] < 0.5 * distances[0]


def test_one_inversion_serves_many_edits_without_changing(inverted):
    tiny, source_latent, source, negative, maps = inverted
    before = maps.maps.clone(), maps.noisy_latents.clone()
    for prompt_seed, cfg, skip in ((7, 7.0, 3), (8, 15.0, 10), (9, 12.0, 0)):
        pipeline.regenerate(tiny.patcher, tiny.conditioning(prompt_seed), negative, maps, cfg, skip)
    assert torch.equal(maps.maps, before[0]) and torch.equal(maps.noisy_latents, before[1])
    again = pipeline.regenerate(tiny.patcher, source, negative, maps, 3.5, 0)
    assert (again - source_latent).abs().max().item() <= 1e-4


def map_statistics(maps: torch.Tensor):
    """Per-step std and lag-1 correlation between neighbouring steps' maps, as in the paper's analysis."""
    flat = maps.flatten(1)
    std = flat.std(dim=1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    a, b = centred[:-1], centred[1:]
    correlation = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    return std, correlation


def looks_edit_friendly(maps: torch.Tensor) -> bool:
    std, correlation = map_statistics(maps)
    return (std - 1).abs().median().item() > 0.25 and correlation.abs().median().item() > 0.2


def test_maps_are_not_fresh_gaussian_noise(inverted):
    maps = inverted[4].maps[:-1]  # the last map is the residual, not a noise map
    assert looks_edit_friendly(maps)
    # The same measure must reject white noise of the same shape, or it proves nothing.
    assert not looks_edit_friendly(torch.randn(maps.shape, generator=torch.Generator().manual_seed(0)))
