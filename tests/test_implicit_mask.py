"""Edit-Friendly Implicit Mask: where the two prompts' predictions differ along the maps' recorded path.

On the trained toy model (a real SD1.5-layout UNet and CLIP behind ComfyUI's classes) the mask of a colour edit
covers the shape and the masked edit keeps everything else exactly; on tiny models of image and video families it
runs one model call of two prompts per step of its window, and refuses bad input before any call. Edit quality is
measured by benchmarks/editing_methods.py, not here.
"""

from __future__ import annotations

import pytest
import quality
import tiny_image_families
import tiny_models
import tiny_video_families
import toy_model
import toy_shapes
import torch
from edit_friendly_ddpm.nodes import implicit_mask, pipeline
from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlySampler
from edit_friendly_ddpm.nodes.mask_nodes import EditFriendlyImplicitMask
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError
from tiny_models import counting_model_calls

STEPS = 8


def mask_node(model, maps, source, target, threshold=0.5, start_percent=0.25, end_percent=0.75, grow=1):
    (mask,) = EditFriendlyImplicitMask.execute(model, maps, source, target, threshold, start_percent, end_percent, grow).result
    return mask


@pytest.fixture(scope="module")
def toy():
    patcher, clip = toy_model.load()
    scenes = toy_shapes.draw(4, seed=21)
    latent = toy_model.to_latent(scenes.images)
    prompts = quality.Prompts(clip)
    source = prompts(scenes.captions)
    targets = [next(c for c in ("blue", "yellow") if c != colour) for colour in scenes.colours]
    target = prompts([toy_shapes.caption(c, s) for c, s in zip(targets, scenes.shapes)])
    empty = prompts([""] * 4)
    maps = pipeline.invert(patcher, source, empty, latent, 20, 2.0, "normal", 1.0, 0)
    return patcher, scenes, source, target, empty, maps


def test_the_mask_of_a_colour_edit_covers_the_shape_and_little_else(toy):
    patcher, scenes, source, target, _, maps = toy
    mask = mask_node(patcher, maps, source, target)
    shape = scenes.masks > 0.5
    assert mask.shape == shape.shape and set(mask.unique().tolist()) <= {0.0, 1.0}
    covered = (mask.bool() & shape).flatten(1).sum(1) / shape.flatten(1).sum(1)
    outside = (mask.bool() & ~shape).flatten(1).sum(1) / (~shape).flatten(1).sum(1)
    assert covered.min() >= 0.8, covered  # most of each shape
    assert outside.max() <= 0.25, outside  # a rim around it, not the picture


def test_the_masked_edit_changes_the_inside_and_gives_the_source_back_outside(toy):
    patcher, scenes, source, target, empty, maps = toy
    mask = mask_node(patcher, maps, source, target)
    (edited,) = EditFriendlySampler.execute(patcher, target, empty, maps, 5.0, 0, mask).result
    samples, original = edited["samples"], maps.source_latent
    outside = (mask == 0).unsqueeze(1).expand_as(samples)
    assert torch.equal(samples[outside], original[outside])
    inside = ~outside
    assert (samples[inside] - original[inside]).abs().mean() > 0.1, "the edit did nothing inside the mask"


def test_the_same_prompt_finds_nothing_to_edit(toy):
    patcher, _, source, _, _, maps = toy
    assert mask_node(patcher, maps, source, source, threshold=0.01).sum() == 0


def test_the_mask_is_the_region_at_or_above_the_threshold_grown_per_frame():
    strength = torch.zeros(2, 1, 6, 6)
    strength[0, 0, 2, 3], strength[1, 0, 0, 0], strength[1, 0, 5, 5] = 1.0, 0.6, 0.4
    mask = implicit_mask.region_mask(strength, 0.5, 1)
    assert mask.shape == (2, 6, 6)
    assert mask[0].sum() == 9 and mask[0, 1:4, 2:5].all()  # one pixel, grown into a 3x3 block
    assert mask[1].sum() == 4 and mask[1, :2, :2].all()  # 0.4 is below the threshold; the growth stops at the edge
    video = torch.zeros(1, 1, 3, 6, 6)
    video[0, 0, 1, 3, 3] = 1.0
    frames = implicit_mask.region_mask(video, 0.5, 1)
    assert frames.shape == (3, 6, 6) and frames[1].sum() == 9 and frames[0].sum() == frames[2].sum() == 0


FAMILIES = {
    "sd15": (tiny_models.sd15_eps, lambda tiny: tiny_models.latent(tiny, height=8, width=8, seed=3)),
    "flux": (tiny_models.flux_flow, lambda tiny: tiny_models.latent(tiny, height=8, width=8, seed=3)),
    "qwen_image": (tiny_image_families.qwen_image, lambda tiny: tiny_image_families.latent(tiny, height=8, width=8, seed=3)),
    "wan21": (tiny_video_families.wan21_t2v, lambda tiny: tiny_video_families.latent(tiny, frames=3, height=8, width=8, seed=3)),
}


@pytest.mark.parametrize("name", FAMILIES)
def test_one_model_call_of_both_prompts_per_step_of_the_window(name):
    make, latent_of = FAMILIES[name]
    tiny = make(seed=0)
    latent = latent_of(tiny)
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), latent, STEPS, 3.5, "simple", 1.0, seed=0)
    counted, calls = counting_model_calls(tiny.patcher)
    mask = mask_node(counted, maps, tiny.conditioning(1), tiny.conditioning(7), threshold=0.99, start_percent=0.25, end_percent=0.75, grow=0)
    assert [shape[0] for shape, _ in calls] == [2 * latent["samples"].shape[0]] * 4  # steps 2-5 of 8, target and source
    *frames, height, width = latent["samples"].shape[2:]
    assert mask.shape == (frames[0] if frames else 1, height, width)
    assert 0 < mask.mean() < 1  # the peak scaled to 1 is in it at any threshold; the random tiny model differs everywhere
    # At the recorded latents: the first call sees step 2's.
    assert torch.allclose(calls[0][1].float(), tiny.patcher.model.model_sampling.timestep(maps.sigmas[2]).float().expand(2), rtol=1e-4)


@pytest.mark.parametrize("change, words", [
    ({"threshold": 0.0}, "threshold must be above 0"),
    ({"start_percent": 0.8, "end_percent": 0.5}, "must be below end_percent"),
    ({"end_percent": 1.5}, "end_percent must be between"),
    ({"grow": -1}, "grow must be 0 or more"),
])
def test_bad_settings_are_refused_before_any_model_call(change, words):
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, height=8, width=8, seed=3)
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), latent, 4, 3.5, "simple", 1.0, seed=0)
    counted, calls = counting_model_calls(tiny.patcher)
    settings = {"threshold": 0.5, "start_percent": 0.25, "end_percent": 0.75, "grow": 1} | change
    with pytest.raises(EditFriendlyInputError, match=words):
        mask_node(counted, maps, tiny.conditioning(1), tiny.conditioning(7), **settings)
    with pytest.raises(EditFriendlyInputError, match="made with another model family"):
        mask_node(tiny_models.sd3_flow(seed=0).patcher, maps, tiny.conditioning(1), tiny.conditioning(7))
    assert calls == []
