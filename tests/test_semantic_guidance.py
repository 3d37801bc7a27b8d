"""Semantic guidance with implicit masks (LEDITS++) on edit-friendly noise maps, through ComfyUI's own guider machinery.

Images (SD1.5, SDXL, SD3, Flux, Qwen-Image) and video (Wan 2.1) are inverted with tiny real models, then replayed by
the Edit-Friendly Sampler (Custom Sampling) under the Semantic Guidance guider, as SamplerCustomAdvanced does. The
guidance term of one step is checked against the predictions of ComfyUI's own CFGGuider for each prompt alone.
"""

import copy

import comfy.samplers
import comfy_extras.nodes_custom_sampler as custom_sampler
import pytest
import tiny_image_families
import tiny_models
import tiny_video_families
import torch
from edit_friendly_ddpm.nodes import pipeline
from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlySamplerCustom
from edit_friendly_ddpm.nodes.semantic_guidance import (
    EditConcept,
    concept_guidance,
    implicit_mask,
    smooth_frames,
    step_index,
)
from edit_friendly_ddpm.nodes.semantic_nodes import EditFriendlyEditConcept, EditFriendlySemanticGuider
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError
from tiny_models import counting_model_calls

TOLERANCE = 1e-5
STEPS, SKIP, CFG = 6, 1, 3.5  # ddim_uniform gives 7 steps for 6 here: count the maps' own (sampled_steps)
FAMILIES = {
    "sd15": tiny_models.sd15_eps,
    "sdxl": tiny_models.sdxl_eps,
    "sd3": tiny_models.sd3_flow,
    "flux": tiny_models.flux_flow,
    "qwen_image": tiny_image_families.qwen_image,
    "wan21": tiny_video_families.wan21_t2v,
}


def family_latent(name, tiny):
    if name == "wan21":
        return tiny_video_families.latent(tiny, frames=3, height=8, width=8, seed=3)
    if name == "qwen_image":
        return tiny_image_families.latent(tiny, height=8, width=8, seed=3)
    return tiny_models.latent(tiny, height=8, width=8, seed=3)


def invert(name):
    tiny = FAMILIES[name](seed=0)
    latent = family_latent(name, tiny)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, source, negative, latent, STEPS, CFG, "ddim_uniform", 1.0, seed=0)
    return tiny, latent["samples"], source, negative, maps


@pytest.fixture(scope="module", params=list(FAMILIES))
def inverted(request):
    return invert(request.param)


@pytest.fixture(scope="module")
def sd15():
    return invert("sd15")


@pytest.fixture(scope="module")
def wan():
    return invert("wan21")


def sampled_steps(maps, skip=SKIP):
    return maps.steps - skip


def edit_concept(conditioning, scale=5.0, direction="add", warmup=0, cooldown=1000, threshold=0.9, concepts=None):
    """An Edit Concept node's output."""
    return EditFriendlyEditConcept.execute(conditioning, scale, direction, warmup, cooldown, threshold, concepts).result[0]


def semantic_guider(model, positive, negative, cfg, concepts, mask=None):
    return EditFriendlySemanticGuider.execute(model, positive, negative, cfg, concepts, mask).result[0]


def cfg_guider(model, positive, negative, cfg):
    return custom_sampler.CFGGuider.execute(model, positive, negative, cfg).result[0]


def run_custom(guider, maps, skip=SKIP):
    """Edit-Friendly Sampler (Custom Sampling) -> SamplerCustomAdvanced with DisableNoise, as in a workflow."""
    sampler, sigmas, latent = EditFriendlySamplerCustom.execute(maps, skip).result
    (noise,) = custom_sampler.DisableNoise.execute().result
    return custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result[0]["samples"]


class _Stop(Exception):
    pass


def denoised_per_step(guider, maps, skip=SKIP, until=None):
    """The guider's estimate at every step of an edit-friendly replay (stopping after step `until`, if given)."""
    sampler, sigmas, latent = EditFriendlySamplerCustom.execute(maps, skip).result
    seen = []

    def callback(i, denoised, x, total):
        seen.append(denoised.clone())
        if until is not None and i >= until:
            raise _Stop

    try:
        guider.sample(torch.zeros_like(latent["samples"]), latent["samples"], sampler, sigmas, callback=callback, disable_pbar=True, seed=0)
    except _Stop:
        pass
    return seen


def first_step(guider, maps):
    return denoised_per_step(guider, maps, until=0)[0]


def prediction_alone(tiny, conditioning, maps):
    """One prompt's own estimate at the first step: ComfyUI's CFGGuider at CFG 1 runs the positive prompt only."""
    return first_step(cfg_guider(tiny.patcher, conditioning, conditioning, 1.0), maps)


# --------------------------------------------------------------------------------------------- the mask and term


def test_implicit_mask_keeps_the_threshold_quantile_of_each_image():
    difference = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    difference[1] *= 10  # another scale per image: the quantile is per image
    for threshold, share in ((0.75, 0.25), (0.9, 0.1), (0.5, 0.5)):
        mask = implicit_mask(difference, threshold)
        assert mask.shape == (2, 1, 16, 16)
        kept = mask.flatten(1).sum(1)
        assert torch.all((kept >= share * 256) & (kept <= share * 256 + 1)), (threshold, kept)
    assert implicit_mask(difference, 0.0).all(), "threshold 0 keeps the whole image"


def test_implicit_mask_takes_the_strongest_region_and_smooths_it():
    difference = torch.zeros(1, 4, 16, 16)
    difference[0, 2, 8, 8] = -3.0  # one strong pixel in one channel, of either sign
    difference[0, 0, 2, 2] = 0.5  # a weaker one elsewhere
    mask = implicit_mask(difference, 0.97)[0, 0]  # the strongest 8 of 256 pixels
    assert mask[8, 8] == 1 and mask[7, 8] == mask[9, 8] == mask[8, 7] == mask[8, 9] == 1, "smoothing spreads the pixel"
    assert mask[2, 2] == 0 and mask.sum() <= 9
    blurred = smooth_frames(torch.zeros(1, 1, 16, 16).index_put_((torch.tensor([0]), torch.tensor([0]), torch.tensor([8]), torch.tensor([8])), torch.tensor(1.0)))
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-6) and (blurred > 0).sum() == 25


def test_implicit_mask_of_a_video_smooths_each_frame_and_ranks_the_whole_clip():
    difference = torch.zeros(1, 16, 3, 8, 8)
    difference[0, :, 1, 4, 4] = 1.0  # only in the middle frame
    mask = implicit_mask(difference, 0.9)
    assert mask.shape == (1, 1, 3, 8, 8)
    assert mask[0, 0, 1].sum() > 1 and mask[0, 0, 0].sum() == 0 and mask[0, 0, 2].sum() == 0, "no spread across frames"


def test_concept_term_is_masked_scaled_and_remove_flips_its_sign():
    generator = torch.Generator().manual_seed(1)
    uncond, prediction = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 8, 8, generator=generator)
    conditioning = tiny_models.sd15_eps().conditioning(1)
    add = concept_guidance(uncond, [prediction], [EditConcept(conditioning, 2.0, "add")])
    remove = concept_guidance(uncond, [prediction], [EditConcept(conditioning, 2.0, "remove")])
    mask = implicit_mask(prediction - uncond, 0.9)
    assert torch.equal(remove, -add)
    assert torch.allclose(add, 2.0 * mask * (prediction - uncond))
    assert (add == 0).flatten(1).all(0).sum() >= 0.85 * 64, "zero outside the strongest tenth"


def test_step_index_follows_the_sampler_schedule():
    schedule = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    assert [step_index(s, schedule) for s in (10.0, 5.0, 2.0, 1.0)] == [0, 1, 2, 3]
    assert step_index(3.0, schedule) == 1, "a second-order sampler's intermediate sigma belongs to its step"
    assert step_index(1.0 + 1e-6, schedule) == 3, "the maps' stored sigmas may differ by rounding"
    assert step_index(12.0, schedule) == 0
    concept = EditConcept(tiny_models.sd15_eps().conditioning(1), warmup=1, cooldown=3)
    assert [concept.acts_at(i) for i in range(5)] == [False, True, True, False, False]
    assert not EditConcept(concept.conditioning, scale=0.0).acts_at(0)


# ----------------------------------------------------------------------------------------- on the model families


def test_concepts_that_never_act_reproduce_the_source(inverted):
    tiny, source_latent, source, negative, maps = inverted
    idle = edit_concept(tiny.conditioning(7), scale=0.0)
    late = edit_concept(tiny.conditioning(8), warmup=sampled_steps(maps), concepts=idle)  # starts after the last sampled step
    output = run_custom(semantic_guider(tiny.patcher, source, negative, CFG, late), maps)
    assert output.shape == source_latent.shape
    assert (output - source_latent).abs().max().item() <= TOLERANCE


def test_an_active_concept_acts_inside_its_implicit_mask(inverted):
    """The first step's change is scale * M * (d_concept - d_uncond), M taken from the prompts' own predictions."""
    tiny, source_latent, source, negative, maps = inverted
    target = tiny.conditioning(7)
    plain = first_step(cfg_guider(tiny.patcher, source, negative, CFG), maps)
    guided = first_step(semantic_guider(tiny.patcher, source, negative, CFG, edit_concept(target, scale=4.0)), maps)
    difference = prediction_alone(tiny, target, maps) - prediction_alone(tiny, negative, maps)
    mask = implicit_mask(difference, 0.9)
    change = guided - plain
    scale = difference.abs().max().item()
    assert 0.05 <= mask.mean().item() <= 0.2
    assert (change * (1 - mask)).abs().max().item() <= 1e-4 * scale, "nothing outside the implicit mask"
    assert (change - 4.0 * mask * difference).abs().max().item() <= 1e-4 * scale
    assert (change * mask).abs().mean().item() > 0.01 * scale

    edited = run_custom(semantic_guider(tiny.patcher, source, negative, CFG, edit_concept(target, scale=4.0)), maps)
    assert torch.isfinite(edited).all()
    assert (edited - source_latent).abs().max().item() > 1e-2, "the concept edits the image"


def test_remove_pushes_the_other_way(sd15):
    tiny, _, source, negative, maps = sd15
    plain = first_step(cfg_guider(tiny.patcher, source, negative, CFG), maps)
    changes = [
        first_step(semantic_guider(tiny.patcher, source, negative, CFG, edit_concept(tiny.conditioning(7), direction=direction)), maps) - plain
        for direction in ("add", "remove")
    ]
    assert changes[0].abs().max() > 1e-2
    assert torch.allclose(changes[0], -changes[1], atol=1e-5)


def test_one_model_call_per_step_whatever_the_number_of_concepts(inverted):
    tiny, _, source, negative, maps = inverted
    batch = maps.latent_shape[0]
    concepts = None
    for count in (1, 2, 3):
        concepts = edit_concept(tiny.conditioning(6 + count), concepts=concepts)
        patched, calls = counting_model_calls(tiny.patcher)
        run_custom(semantic_guider(patched, source, negative, CFG, concepts), maps)
        assert len(calls) == sampled_steps(maps), "one call per step"
        assert {shape[0] for shape, _ in calls} == {(2 + count) * batch}, "the batch grows instead"


@pytest.mark.parametrize("warmup, cooldown", [(1, 3), (0, 2), (3, 1000)])
def test_warmup_and_cooldown_bound_the_concept(sd15, warmup, cooldown):
    tiny, _, source, negative, maps = sd15
    patched, calls = counting_model_calls(tiny.patcher)
    concept = edit_concept(tiny.conditioning(7), warmup=warmup, cooldown=cooldown)
    guided = denoised_per_step(semantic_guider(patched, source, negative, CFG, concept), maps)
    # The concept's prediction, which its term needs, is made exactly at the steps of its window.
    assert [shape[0] for shape, _ in calls] == [3 if warmup <= i < cooldown else 2 for i in range(sampled_steps(maps))]
    plain = denoised_per_step(cfg_guider(tiny.patcher, source, negative, CFG), maps)
    for i in range(warmup):
        assert torch.equal(guided[i], plain[i]), f"step {i} is before the warm-up"
    assert (guided[warmup] - plain[warmup]).abs().max() > 1e-3


def test_an_explicit_mask_confines_the_guidance(sd15):
    tiny, _, source, negative, maps = sd15
    height, width = maps.latent_shape[-2:]
    mask = torch.zeros(1, 8 * height, 8 * width)
    mask[:, :, : 4 * width] = 1.0  # the left half, at image size
    plain = first_step(cfg_guider(tiny.patcher, source, negative, CFG), maps)
    concept = edit_concept(tiny.conditioning(7), threshold=0.5)
    change = first_step(semantic_guider(tiny.patcher, source, negative, CFG, concept, mask), maps) - plain
    assert change[..., width // 2 :].abs().max().item() <= 1e-5, "no change outside the mask"
    assert change[..., : width // 2].abs().max().item() > 1e-2
    # A mask smaller than the implicit mask's share: as in LEDITS++, the whole masked region then acts.
    small = torch.zeros(1, height, width)
    small[:, 2:4, 2:4] = 1.0
    change = first_step(semantic_guider(tiny.patcher, source, negative, CFG, edit_concept(tiny.conditioning(7)), small), maps) - plain
    acting = change.abs().sum(1)[0] > 0
    assert torch.equal(acting, small[0].bool())


def test_an_explicit_mask_on_a_video_selects_frames(wan):
    tiny, _, source, negative, maps = wan
    frames, height, width = maps.latent_shape[-3:]
    mask = torch.zeros(frames, height, width)
    mask[1] = 1.0  # one mask per latent frame: only the middle one
    plain = first_step(cfg_guider(tiny.patcher, source, negative, CFG), maps)
    change = first_step(semantic_guider(tiny.patcher, source, negative, CFG, edit_concept(tiny.conditioning(7)), mask), maps) - plain
    assert change[:, :, [0, 2]].abs().max().item() <= 1e-5
    assert change[:, :, 1].abs().max().item() > 1e-3


# --------------------------------------------------------------------------------------------- refusals, inputs


def assert_refused_before_any_model_call(tiny, maps, words, concepts_of=None, mask=None, source=None, negative=None):
    patched, calls = counting_model_calls(tiny.patcher)
    with pytest.raises(EditFriendlyInputError, match=words):
        concepts = concepts_of() if concepts_of is not None else edit_concept(tiny.conditioning(7))
        run_custom(semantic_guider(patched, source, negative, CFG, concepts, mask), maps)
    assert calls == [], "refused before the first model call"


@pytest.mark.parametrize("concepts", [None, []])
def test_an_empty_concept_list_is_refused(sd15, concepts):
    tiny, _, source, negative, maps = sd15
    assert_refused_before_any_model_call(tiny, maps, "at least one edit concept", lambda: concepts, source=source, negative=negative)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"warmup": 3, "cooldown": 3}, "must be above its warmup"),
        ({"warmup": 4, "cooldown": 2}, "must be above its warmup"),
        ({"threshold": 1.0}, "below 1"),
        ({"threshold": -0.1}, "at least 0"),
        ({"direction": "sideways"}, "Unknown direction"),
        ({"scale": float("nan")}, "scale"),
    ],
)
def test_bad_concepts_are_refused(sd15, options, words):
    tiny, _, source, negative, maps = sd15
    assert_refused_before_any_model_call(
        tiny, maps, words, lambda: edit_concept(tiny.conditioning(7), **options), source=source, negative=negative
    )


def test_other_bad_input_is_refused(sd15):
    tiny, _, source, negative, maps = sd15
    with pytest.raises(EditFriendlyInputError, match="CONDITIONING"):
        edit_concept(None)
    with pytest.raises(EditFriendlyInputError, match="Edit Concept nodes"):
        edit_concept(tiny.conditioning(7), concepts=["not a concept"])
    height, width = maps.latent_shape[-2:]
    for mask, words in ((torch.ones(1, 8 * height, 4 * width), "aspect ratios differ"), (torch.ones(3, height, width), "batch of 3")):
        assert_refused_before_any_model_call(tiny, maps, words, mask=mask, source=source, negative=negative)


def test_the_concept_list_and_the_model_are_left_unchanged(sd15):
    tiny, _, source, negative, maps = sd15
    first = edit_concept(tiny.conditioning(7))
    first_copy = list(first)
    second = edit_concept(tiny.conditioning(8), direction="remove", concepts=first)
    assert first == first_copy and len(first) == 1, "chaining returns a new list"
    assert second[0] is first[0] and len(second) == 2
    conditioning = [tensor.clone() for tensor, _ in first[0].conditioning]
    options = copy.deepcopy(tiny.patcher.model_options)
    patches, state = dict(tiny.patcher.patches), {k: v.clone() for k, v in tiny.patcher.model.state_dict().items()}
    maps_before = maps.maps.clone()
    run_custom(semantic_guider(tiny.patcher, source, negative, CFG, second), maps)
    assert len(second) == 2 and second[0] is first[0]
    assert all(torch.equal(a, b) for a, b in zip(conditioning, (tensor for tensor, _ in first[0].conditioning)))
    assert tiny.patcher.model_options == options and tiny.patcher.patches == patches
    assert all(torch.equal(state[k], v) for k, v in tiny.patcher.model.state_dict().items())
    assert torch.equal(maps.maps, maps_before)


def test_post_cfg_patches_see_the_concepts(sd15):
    """A post-CFG function (RescaleCFG and the like) gets the estimate with the concepts' terms in it."""
    tiny, _, source, negative, maps = sd15
    seen = []
    patched = tiny.patcher.clone()
    patched.set_model_sampler_post_cfg_function(lambda args: seen.append(args["denoised"].clone()) or args["denoised"])
    concept = edit_concept(tiny.conditioning(7))
    guided = first_step(semantic_guider(patched, source, negative, CFG, concept), maps)
    assert torch.equal(seen[0], guided)
    assert not torch.equal(seen[0], first_step(cfg_guider(tiny.patcher, source, negative, CFG), maps))


def test_a_calc_cond_batch_patch_gets_the_cfg_pair_and_the_concepts_still_act(sd15):
    """A model's sampler_calc_cond_batch_function (SkipLayerGuidanceDiT's) is written for [cond, uncond]: it gets that
    pair, and the concepts' predictions are made beside it."""
    tiny, _, source, negative, maps = sd15
    seen = []

    def calc_cond_batch_function(args):
        seen.append(len(args["conds"]))
        return comfy.samplers.calc_cond_batch(args["model"], args["conds"], args["input"], args["sigma"], args["model_options"])

    patched = tiny.patcher.clone()
    patched.set_model_sampler_calc_cond_batch_function(calc_cond_batch_function)
    concept = edit_concept(tiny.conditioning(7))
    with_patch = first_step(semantic_guider(patched, source, negative, CFG, concept), maps)
    assert seen == [2]
    assert torch.allclose(with_patch, first_step(semantic_guider(tiny.patcher, source, negative, CFG, concept), maps), atol=1e-5)


def test_schema_of_the_nodes():
    concept_schema = EditFriendlyEditConcept.define_schema()
    guider_schema = EditFriendlySemanticGuider.define_schema()
    assert [i.id for i in concept_schema.inputs] == ["conditioning", "scale", "direction", "warmup", "cooldown", "threshold", "concepts"]
    assert [i.id for i in guider_schema.inputs] == ["model", "positive", "negative", "cfg", "concepts", "mask"]
    assert concept_schema.outputs[0].io_type == guider_schema.inputs[4].io_type == "EF_EDIT_CONCEPTS"
    assert guider_schema.outputs[0].io_type == "GUIDER"
    for schema in (concept_schema, guider_schema):
        assert schema.description and all(item.tooltip for item in [*schema.inputs, *schema.outputs])
