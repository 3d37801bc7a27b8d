"""The quality benchmark's parts: the toy world and its classifier, the toy model, the baselines, the scoring.

Model tests use the shipped trained weights (benchmarks/toy-model.safetensors) or freshly seeded ones;
they check the plumbing (ComfyUI classes, CLIPTextEncode, save/load, the pack and the baselines on a
pixel-space model) and one coarse fact about the weights (they draw the named colour). Edit quality is
measured by benchmarks/quality.py, not by tests.
"""

from __future__ import annotations

import baselines
import comfy.model_sampling
import pytest
import quality
import torch
import toy_model
import toy_shapes
import train_toy
from edit_friendly_ddpm.nodes import flowedit, pipeline


@pytest.fixture(scope="module")
def scenes():
    return toy_shapes.draw(300, seed=11)


def test_classifier_reads_colour_shape_and_mask_of_drawn_pictures(scenes):
    reading = toy_shapes.classify(scenes.images)
    colour = sum(a == b for a, b in zip(reading.colours, scenes.colours)) / len(scenes.colours)
    shape = sum(a == b for a, b in zip(reading.shapes, scenes.shapes)) / len(scenes.shapes)
    assert colour >= 0.99
    assert shape >= 0.97
    assert toy_shapes.iou(reading.masks, scenes.masks > 0.5).mean() > 0.85
    centre_error = (reading.centres() - scenes.centres).norm(dim=1)
    assert centre_error.median() < 1.0


@pytest.mark.parametrize("shape", toy_shapes.SHAPES)
@pytest.mark.parametrize("colour", toy_shapes.COLOUR_NAMES)
def test_classifier_tells_every_colour_and_shape_apart(colour, shape):
    coverage = toy_shapes.shape_coverage(shape, 15.0, 17.0, 8.0)
    picture = torch.full((3, 32, 32), 0.55) * (1 - coverage) + torch.tensor(toy_shapes.COLOURS[colour])[:, None, None] * coverage
    reading = toy_shapes.classify(picture[None])
    assert (reading.colours[0], reading.shapes[0]) == (colour, shape)


def test_classifier_sees_nothing_on_a_background_alone():
    reading = toy_shapes.classify(torch.full((2, 3, 32, 32), 0.6))
    assert reading.colours == [None, None] and reading.shapes == [None, None]
    assert not reading.masks.any()


def test_drawing_is_seeded_and_keeps_held_out_pairs_out_of_training():
    first, again, other = toy_shapes.draw(40, 3), toy_shapes.draw(40, 3), toy_shapes.draw(40, 4)
    assert torch.equal(first.images, again.images) and first.captions == again.captions
    assert not torch.equal(first.images, other.images)
    assert toy_shapes.draw(10, 3).captions == first.captions[:10]  # a smaller draw is a prefix of a larger one
    drawn = {(c, s) for c, s in zip(first.colours + other.colours, first.shapes + other.shapes)}
    assert drawn.isdisjoint(toy_shapes.HELD_OUT_PAIRS)
    assert first.images.min() >= 0 and first.images.max() <= 1


def test_structure_scores(scenes):
    masks = toy_shapes.classify(scenes.images[:4]).masks
    assert torch.equal(toy_shapes.iou(masks, masks), torch.ones(4))
    assert toy_shapes.iou(masks, torch.zeros_like(masks)).max() == 0
    assert toy_shapes.background_error(scenes.images[:4], scenes.images[:4], masks, masks).max() == 0
    brighter = (scenes.images[:4] + 0.1).clamp(0, 1)
    assert toy_shapes.background_error(scenes.images[:4], brighter, masks, masks).min() > 0.05


def test_score_of_an_unchanged_picture(scenes):
    latent = toy_model.to_latent(scenes.images[:6])["samples"]
    reading = toy_shapes.classify(scenes.images[:6])
    kept = quality.score(latent, latent, reading, scenes.colours[:6], scenes.shapes[:6])
    assert kept == {"success": 1.0, "shape_kept": 1.0, "iou": 1.0, "background_error": 0.0}
    targets = quality.edit_targets(toy_shapes.draw(6, 11))
    assert quality.score(latent, latent, reading, targets, scenes.shapes[:6])["success"] == 0.0


def test_per_picture_scores_and_their_paired_difference(scenes):
    latent = toy_model.to_latent(scenes.images[:6])["samples"]
    reading = toy_shapes.classify(scenes.images[:6])
    targets = quality.edit_targets(toy_shapes.draw(6, 11))
    scores = quality.score(latent, latent, reading, targets, scenes.shapes[:6], per_picture=True)
    assert scores["per_picture"] == {"success": [False] * 6, "shape_kept": [True] * 6}
    assert quality.paired_difference([True] * 4, [True] * 4) == [0.0, 0.0, 0.0]
    mean, low, high = quality.paired_difference([True, False, True, True], [True, True, True, False])
    assert mean == 0.0 and low < -0.5 and high > 0.5 and low == -high
    mean, low, high = quality.paired_difference([False] * 8 + [True] * 2, [True] * 10)
    assert mean == pytest.approx(-0.8) and low < mean < high < 0


def test_edit_targets_change_the_colour_to_one_the_model_knows(scenes):
    targets = quality.edit_targets(scenes)
    pairs = set(toy_shapes.training_pairs())
    assert all(t != c and (t, s) in pairs for t, c, s in zip(targets, scenes.colours, scenes.shapes))
    assert len(set(targets)) == len(toy_shapes.COLOUR_NAMES)


@pytest.fixture(scope="module")
def untrained():
    model = toy_model.build_unet()
    toy_model.seed_unet(model.diffusion_model, 0)
    clip = toy_model.build_clip()
    toy_model.seed_clip(clip, 1)
    return model, clip


@pytest.fixture(scope="module")
def trained():
    """The shipped trained weights (benchmarks/toy-model.safetensors, made by benchmarks/train_toy.py)."""
    return toy_model.load()


@pytest.fixture(scope="module")
def trained_flow():
    """The shipped rectified-flow toy (benchmarks/toy-flow-model.safetensors, made by train_toy.py --kind flow)."""
    return toy_model.load(toy_model.FLOW_WEIGHTS)


def named_colour_rate(patcher, clip, scheduler: str) -> float:
    """Share of samples (two per training caption, 20 euler steps, CFG 5) whose colour the classifier reads as named."""
    prompts = quality.Prompts(clip)
    pairs = toy_shapes.training_pairs()
    captions = [toy_shapes.caption(c, s) for c, s in pairs for _ in range(2)]
    with torch.no_grad():
        samples = baselines.generate(patcher, prompts(captions), prompts([""] * len(captions)), (len(captions), 3, 32, 32), 20, 5.0, scheduler, 3, "euler")
    reading = toy_shapes.classify(toy_model.to_images(samples))
    wanted = [c for c, _ in pairs for _ in range(2)]
    return sum(a == b for a, b in zip(reading.colours, wanted)) / len(wanted)


def test_shipped_model_draws_the_named_colour(trained):
    assert named_colour_rate(*trained, "normal") >= 0.6


def test_toy_model_is_comfyui_sd15_style_with_a_real_tokenizer(untrained):
    model, clip = untrained
    assert isinstance(model.model_sampling, comfy.model_sampling.ModelSamplingDiscrete)
    assert isinstance(model.model_sampling, comfy.model_sampling.EPS)
    assert model.latent_format.latent_channels == 3
    red, blue = toy_model.encode(clip, "a red circle"), toy_model.encode(clip, "a blue circle")
    assert red[0][0].shape == (1, 77, toy_model.TEXT_WIDTH)
    assert not torch.allclose(red[0][0], blue[0][0])
    assert torch.equal(red[0][0], toy_model.encode(clip, "a red circle")[0][0])
    red_ids = [t for t, _ in clip.tokenize("a red circle")["l"][0]]
    blue_ids = [t for t, _ in clip.tokenize("a blue circle")["l"][0]]
    assert red_ids[0] == 49406 and red_ids[4] == 49407  # CLIP's <start> and <end>: one BPE token per word
    assert [i for i in range(77) if red_ids[i] != blue_ids[i]] == [2]


def test_toy_weights_round_trip(trained, tmp_path):
    patcher, clip = trained
    path = tmp_path / "toy.safetensors"
    toy_model.save(path, patcher.model, clip, {"seed": 0})
    loaded, loaded_clip = toy_model.load(path)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0, 0.5])
    context = toy_model.encode(loaded_clip, "a red circle")[0][0].repeat(2, 1, 1)
    assert torch.equal(context, toy_model.encode(clip, "a red circle")[0][0].repeat(2, 1, 1))
    with torch.no_grad():
        reference = patcher.model.apply_model(x, sigma, c_crossattn=context)
        again = loaded.model.apply_model(x, sigma, c_crossattn=context)
    assert torch.equal(reference, again)  # the shipped weights are float16 already: saving again loses nothing
    assert (reference - x).abs().mean() > 0.1  # and the trained model does predict noise
    with pytest.raises(FileNotFoundError, match="train_toy"):
        toy_model.load(tmp_path / "missing.safetensors")


def two_pictures(clip, seed: int):
    """A LATENT of two drawn pictures, their captions' CONDITIONING and the empty caption's."""
    scenes = toy_shapes.draw(2, seed)
    prompts = quality.Prompts(clip)
    return toy_model.to_latent(scenes.images), prompts(scenes.captions), prompts(["", ""])


def test_pack_inverts_the_pixel_space_model_exactly(trained):
    patcher, clip = trained
    latent, source, empty = two_pictures(clip, 5)
    with torch.no_grad():
        maps = pipeline.invert(patcher, source, empty, latent, 6, 2.0, "normal", 1.0, 0)
        again = pipeline.regenerate(patcher, source, empty, maps, 2.0, 0)
    assert (again - latent["samples"]).abs().max() < 1e-4


def test_ddim_inversion_path_and_its_convergence(trained):
    patcher, clip = trained
    latent, source, empty = two_pictures(clip, 6)
    samples = latent["samples"]
    errors = {}
    with torch.no_grad():
        for steps in (4, 40):
            sigmas, trajectory = baselines.ddim_invert(patcher, source, empty, samples, steps, 1.0, "normal")
            assert len(trajectory) == len(sigmas) == steps + 1
            assert torch.equal(trajectory[-1], samples)
            assert trajectory[0].std() > 3 * samples.std()  # the top of the path is mostly noise
            back = baselines.ddim_edit(patcher, source, empty, sigmas, trajectory, 1.0, 0)
            errors[steps] = float((back - samples).abs().mean())
    assert errors[40] < errors[4]  # the ODE inversion is approximate, and closer with finer steps


def test_sdedit_and_generation_follow_their_strength_and_seed(trained):
    patcher, clip = trained
    latent, positive, empty = two_pictures(clip, 7)
    samples = latent["samples"]
    with torch.no_grad():
        light = baselines.sdedit(patcher, positive, empty, samples, 10, 2.0, "normal", 0.2, 0)
        heavy = baselines.sdedit(patcher, positive, empty, samples, 10, 2.0, "normal", 0.9, 0)
        first = baselines.generate(patcher, positive, empty, samples.shape, 4, 2.0, "normal", 0)
        second = baselines.generate(patcher, positive, empty, samples.shape, 4, 2.0, "normal", 1)
    assert (light - samples).abs().mean() < (heavy - samples).abs().mean()
    assert not torch.allclose(first, second)


def test_training_runs_and_writes_weights_and_plot(tmp_path):
    torch.set_grad_enabled(True)
    model, clip, history, _ = train_toy.train(steps=4, batch=4, seed=1, peak_lr=1e-3, log_every=2)
    assert [step for step, _ in history] == [2, 4]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in history)
    toy_model.save(tmp_path / "toy.safetensors", model, clip, {"steps": 4})
    train_toy.plot_loss(history, tmp_path / "loss.png", "smoke")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    patcher, _ = toy_model.load(tmp_path / "toy.safetensors")
    assert patcher.model.latent_format.latent_channels == 3


def test_shipped_flow_model_is_comfyuis_flow_sampling_and_draws_the_named_colour(trained_flow):
    patcher, clip = trained_flow
    model_sampling = patcher.get_model_object("model_sampling")
    assert isinstance(model_sampling, comfy.model_sampling.ModelSamplingDiscreteFlow)
    assert isinstance(model_sampling, comfy.model_sampling.CONST)
    assert model_sampling.shift == toy_model.FLOW_SHIFT and float(model_sampling.sigma_max) == 1.0
    assert named_colour_rate(patcher, clip, "simple") >= 0.6


def test_pack_inverts_the_flow_toy_exactly_and_flowedit_keeps_it_under_the_source_prompt(trained_flow):
    patcher, clip = trained_flow
    latent, source, empty = two_pictures(clip, 5)
    with torch.no_grad():
        for rule in ("ddpm", "dpmpp_2m_sde"):
            maps = pipeline.invert(patcher, source, empty, latent, 6, 2.0, "simple", 1.0, 0, rule=rule)
            assert (pipeline.regenerate(patcher, source, empty, maps, 2.0, 0) - latent["samples"]).abs().max() < 1e-4
        kept = flowedit.flowedit(patcher, source, empty, source, empty, latent, 6, 0, 0, 1, 2.0, 2.0, "simple", 0)
        moved = flowedit.flowedit(patcher, source, empty, quality.Prompts(clip)(["a blue circle"] * 2), empty, latent, 6, 0, 0, 1, 2.0, 5.0, "simple", 0)
    assert (kept - latent["samples"]).abs().max() < 1e-4
    assert (moved - latent["samples"]).abs().mean() > 0.01


def test_flow_training_runs_and_its_file_says_flow(tmp_path):
    torch.set_grad_enabled(True)
    model, clip, history, _ = train_toy.train(steps=2, batch=4, seed=1, peak_lr=1e-3, log_every=1, kind="flow")
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(loss)) for _, loss in history)
    toy_model.save(tmp_path / "flow.safetensors", model, clip, {"steps": 2, "kind": "flow"})
    patcher, _ = toy_model.load(tmp_path / "flow.safetensors")
    assert isinstance(patcher.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    eps, _ = toy_model.load()  # the first toy's file predates the key: it stays an EPS model
    assert isinstance(eps.get_model_object("model_sampling"), comfy.model_sampling.EPS)
