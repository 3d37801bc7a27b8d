"""Noise-map manipulations: shifted maps give a shifted image, coloured maps recolour the masked region."""

import pytest
import tiny_models
import torch
from edit_friendly_ddpm.nodes import pipeline
from edit_friendly_ddpm.nodes.sampling import rule_steps
from edit_friendly_ddpm.nodes.transforms import FILL_MODES, colour_direction, colour_noise_maps, preview_rgb, shift_noise_maps, shift_tensor


def test_shift_tensor_moves_content_right_and_down():
    grid = torch.arange(20.0).view(1, 4, 5)
    for fill in FILL_MODES:
        shifted = shift_tensor(grid, 2, 1, fill, torch.full_like(grid, -1.0))
        assert torch.equal(shifted[0, 1:, 2:], grid[0, :-1, :-2]), fill
    assert torch.equal(shift_tensor(grid, 2, 1, "noise", torch.full_like(grid, -1.0))[0, 0], torch.full((5,), -1.0))
    assert torch.equal(shift_tensor(grid, -1, 0, "wrap")[0, :, -1], grid[0, :, 0])
    # reflect mirrors the content beside the band (without repeating the edge column): new columns 1, 0 = old 1, 2
    assert torch.equal(shift_tensor(grid, 2, 0, "reflect")[0, :, :2], grid[0, :, [2, 1]])


@pytest.fixture(scope="module")
def inverted_24():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, height=24, width=24, seed=3)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 20, 3.5, "ddim_uniform", 1.0, seed=0)
    return tiny, latent, positive, negative, maps


@pytest.mark.parametrize("fill", FILL_MODES)
def test_shifted_maps_regenerate_the_shifted_image(fill, inverted_24):
    tiny, latent, positive, negative, maps = inverted_24
    dx, dy = 3, -2
    shifted = shift_noise_maps(maps, dx, dy, fill, seed=1)
    assert shifted is not maps and shifted.maps.data_ptr() != maps.maps.data_ptr()
    output = pipeline.regenerate(tiny.patcher, positive, negative, shifted, 3.5, 5)
    expected = torch.roll(latent["samples"], (dy, dx), (-2, -1))
    interior = (..., slice(6, -6), slice(6, -6))  # away from the borders and the uncovered band
    error = (output - expected)[interior].abs().mean().item()
    unshifted_difference = (latent["samples"] - expected)[interior].abs().mean().item()
    assert error < 0.25 * unshifted_difference, (error, unshifted_difference)


def masked_mean_colours(latent_format, latent, factors, bias, mask):
    rgb = preview_rgb(latent_format.process_in(latent), factors, bias)[0]
    inside = (rgb * mask).sum(dim=(-2, -1)) / mask.sum()
    outside = (rgb * (1 - mask)).sum(dim=(-2, -1)) / (1 - mask).sum()
    return inside, outside


@pytest.mark.parametrize("family", list(tiny_models.FAMILIES))
def test_colour_moves_the_masked_region_towards_the_colour(family):
    tiny = tiny_models.FAMILIES[family](seed=0)
    latent = tiny_models.latent(tiny, height=16, width=16, seed=3)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 20, 3.5, "ddim_uniform", 1.0, seed=0)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0
    blue = (0.0, 0.0, 1.0)
    coloured = colour_noise_maps(maps, blue, 1.0, mask)
    output = pipeline.regenerate(tiny.patcher, positive, negative, coloured, 3.5, 0)

    latent_format = tiny.patcher.get_model_object("latent_format")
    factors = torch.tensor(maps.latent_rgb_factors)
    bias = None if maps.latent_rgb_bias is None else torch.tensor(maps.latent_rgb_bias)
    inside_before, outside_before = masked_mean_colours(latent_format, latent["samples"], factors, bias, mask[0])
    inside_after, outside_after = masked_mean_colours(latent_format, output, factors, bias, mask[0])
    target = torch.tensor(blue) * 2 - 1
    inside_change = (inside_after - inside_before).norm().item()
    outside_change = (outside_after - outside_before).norm().item()
    assert (inside_after - target).norm() < 0.95 * (inside_before - target).norm()
    assert outside_change < 0.5 * inside_change, (inside_change, outside_change)
    if family == "eps":  # a denoiser that carries offsets through: strength 1 goes most of the way
        assert (inside_after - target).norm() < 0.25 * (inside_before - target).norm()
        assert outside_change < 0.1 * inside_change
    # From skip 8 of 20 the maps of steps 0-7 are not replayed; the start latent carries their offsets.
    skipped = pipeline.regenerate(tiny.patcher, positive, negative, coloured, 3.5, 8)
    inside_skipped, _ = masked_mean_colours(latent_format, skipped, factors, bias, mask[0])
    assert (inside_skipped - target).norm() <= 1.05 * (inside_after - target).norm() + 0.05 * (inside_before - target).norm()
    if family == "eps":
        assert (inside_skipped - target).norm() < 0.25 * (inside_before - target).norm()


def test_colour_only_touches_the_chosen_steps_and_never_the_input():
    tiny = tiny_models.sd15_eps(seed=0)
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), tiny_models.latent(tiny), 10, 3.5, "ddim_uniform", 1.0, 0)
    original = maps.maps.clone()
    coloured = colour_noise_maps(maps, (1.0, 0.0, 0.0), 2.0, None, start_percent=0.3, end_percent=0.6)
    changed = [i for i in range(maps.steps) if not torch.equal(coloured.maps[i], original[i])]
    assert changed == [3, 4, 5]
    assert torch.equal(maps.maps, original)


@pytest.mark.parametrize("fill", ["wrap", "noise"])
def test_shifted_dpmpp_2m_sde_maps_regenerate_the_shifted_image(fill):
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, height=24, width=24, seed=3)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 20, 3.5, "ddim_uniform", 1.0, 0, rule="dpmpp_2m_sde")
    dx, dy = -2, 3
    shifted = shift_noise_maps(maps, dx, dy, fill, seed=1)
    assert torch.equal(shifted.source_denoised[:, :, :, 6:-6, 6:-6], torch.roll(maps.source_denoised, (dy, dx), (-2, -1))[:, :, :, 6:-6, 6:-6])
    output = pipeline.regenerate(tiny.patcher, positive, negative, shifted, 3.5, 5)
    expected = torch.roll(latent["samples"], (dy, dx), (-2, -1))
    interior = (..., slice(6, -6), slice(6, -6))
    error = (output - expected)[interior].abs().mean().item()
    assert error < 0.25 * (latent["samples"] - expected)[interior].abs().mean().item()


@pytest.mark.parametrize("rule", ["ddpm", "dpmpp_2m_sde"])
def test_colour_offset_adds_up_to_the_strength_under_each_rules_own_scales(rule):
    # The replay multiplies map i by the rule's noise scale, so the offsets it adds sum to strength * direction.
    tiny = tiny_models.sd15_eps(seed=0)
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), tiny_models.latent(tiny), 10, 3.5, "ddim_uniform", 0.5, 0, rule=rule)
    coloured = colour_noise_maps(maps, (0.0, 0.0, 1.0), 1.0)
    scales = [step.noise_scale for step in rule_steps(rule, maps.scales, maps.eta)]
    added = sum(scale * (coloured.maps[i] - maps.maps[i]) for i, scale in enumerate(scales[:-1]))
    bias = None if maps.latent_rgb_bias is None else torch.tensor(maps.latent_rgb_bias)
    direction = colour_direction(maps.noisy_latents[-1], (0.0, 0.0, 1.0), torch.tensor(maps.latent_rgb_factors), bias, torch.ones(1, 1, 8, 8))
    assert torch.allclose(added, direction.expand_as(added), atol=1e-5)


def test_colour_over_a_range_without_steps_is_refused():
    tiny = tiny_models.sd15_eps(seed=0)
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), tiny_models.latent(tiny), 10, 3.5, "ddim_uniform", 1.0, 0)
    with pytest.raises(ValueError, match="holds no step"):
        colour_noise_maps(maps, (1.0, 0.0, 0.0), 1.0, None, start_percent=0.5, end_percent=0.5)
    assert colour_noise_maps(maps, (1.0, 0.0, 0.0), 0.0, None, start_percent=0.5, end_percent=0.5) is maps
