"""FlowEdit on tiny flow models of several families: exact with the source prompt, edits with another, masks,
one model call per step, the Custom Sampling route, refusals before any model call, inputs left as they were."""

from __future__ import annotations

import copy
import functools
import types

import comfy.samplers
import comfy_extras.nodes_custom_sampler as custom_sampler
import pytest
import tiny_image_families
import tiny_models
import tiny_video_families
import torch
import toy_model
import toy_shapes
from comfy_extras import nodes_flux
from edit_friendly_ddpm.nodes import flowedit
from edit_friendly_ddpm.nodes.flowedit_nodes import EditFriendlyFlowEdit, EditFriendlyFlowEditGuider, EditFriendlyFlowEditSampler
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError
from tiny_models import counting_model_calls

import nodes as comfy_core_nodes

EXACT = 1e-5
STEPS, SKIP = 6, 1


def _image(make):
    return lambda: (tiny := make(0), tiny_image_families.latent(tiny, height=8, width=8, seed=3))


FAMILIES = {
    # family: (tiny model and latent, the CFG it runs with: 1 for guidance-distilled models)
    "sd3": (_image(tiny_models.sd3_flow), 3.5),
    "flux": (_image(tiny_models.flux_flow), 1.0),
    "flux2": (_image(tiny_image_families.flux2), 1.0),
    "qwen_image": (_image(tiny_image_families.qwen_image), 2.5),
    "z_image": (_image(tiny_image_families.z_image), 1.0),
    "cosmos_predict2": (_image(tiny_image_families.cosmos_predict2), 4.0),
    "wan21": (lambda: (tiny := tiny_video_families.wan21_t2v(0), tiny_video_families.latent(tiny, frames=3, seed=3)), 5.0),
}


@functools.cache
def family(name):
    make, cfg = FAMILIES[name]
    tiny, latent = make()
    return tiny, latent, cfg


def run_node(tiny, latent, source, target, source_cfg, cfg, model=None, **options):
    options = {"steps": STEPS, "skip": SKIP, "n_min": 0, "n_avg": 1, "scheduler": "simple", "seed": 0} | options
    negative = tiny.conditioning(2)
    (output,) = EditFriendlyFlowEdit.execute(
        model or tiny.patcher, source, negative, target, negative, latent, options["steps"], options["skip"], options["n_min"],
        options["n_avg"], source_cfg, cfg, options["scheduler"], options["seed"], options.get("mask"),
    ).result
    return output["samples"]


def run_custom(tiny, latent, source, target, source_cfg, cfg, model=None, n_min=0, n_avg=1, seed=0, mask=None, sigmas=None):
    model = model or tiny.patcher
    negative = tiny.conditioning(2)
    (guider,) = EditFriendlyFlowEditGuider.execute(model, source, negative, target, negative, source_cfg, cfg).result
    (sampler,) = EditFriendlyFlowEditSampler.execute(n_min, n_avg, seed, mask).result
    if sigmas is None:
        (schedule,) = custom_sampler.BasicScheduler.execute(model, "simple", STEPS, 1.0).result
        _, sigmas = custom_sampler.SplitSigmas.execute(schedule, SKIP).result
    (noise,) = custom_sampler.DisableNoise.execute().result
    output, denoised = custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, latent).result
    return output["samples"], denoised["samples"]


def latent_round_trip(tiny, samples):
    """What the source becomes through ComfyUI's process_latent_in and _out alone (the bits outside a mask)."""
    latent_format = tiny.patcher.get_model_object("latent_format")
    return latent_format.process_out(latent_format.process_in(samples))


# ------------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_source_prompt_as_target_returns_the_input(name):
    tiny, latent, cfg = family(name)
    source = tiny.conditioning(1)
    output = run_node(tiny, latent, source, source, cfg, cfg)
    assert output.shape == latent["samples"].shape
    assert (output - latent["samples"]).abs().max().item() <= EXACT


@pytest.mark.parametrize("name", ["sd3", "wan21"])
def test_exact_also_with_several_draws_a_batch_and_a_mask(name):
    tiny, latent, cfg = family(name)
    samples = torch.cat([latent["samples"], latent["samples"].flip(-1)])
    source = tiny.conditioning(1)
    mask = torch.ones(samples.shape[-2:]) * torch.linspace(0, 1, samples.shape[-1])
    output = run_node(tiny, {"samples": samples}, source, source, cfg, cfg, n_avg=3, mask=mask, seed=5)
    assert (output - samples).abs().max().item() <= EXACT


# ------------------------------------------------------------------------------------------------ editing


@pytest.mark.parametrize("name", ["sd3", "flux", "flux2", "qwen_image", "z_image", "wan21"])
def test_another_prompt_edits_and_a_mask_keeps_the_outside(name):
    tiny, latent, cfg = family(name)
    samples = latent["samples"]
    source, target = tiny.conditioning(1), tiny.conditioning(7)
    edited = run_node(tiny, latent, source, target, cfg, cfg + 2.0)
    assert torch.isfinite(edited).all()
    assert (edited - samples).pow(2).mean().sqrt().item() > 1e-3 * samples.std().item()  # 100x what the identity is within

    mask = torch.zeros(samples.shape[-2:])
    mask[:, samples.shape[-1] // 2 :] = 1.0  # the right half
    masked = run_node(tiny, latent, source, target, cfg, cfg + 2.0, mask=mask)
    inside = mask.bool().expand(samples.shape)
    assert torch.equal(masked[~inside], latent_round_trip(tiny, samples)[~inside])
    assert (masked[inside] - samples[inside]).abs().max().item() > 0.01 * samples.std().item()


def test_a_video_mask_per_latent_frame_keeps_the_unmasked_frames():
    tiny, latent, cfg = family("wan21")
    samples = latent["samples"]
    mask = torch.zeros(samples.shape[2], *samples.shape[-2:])
    mask[1] = 1.0  # only the middle latent frame
    edited = run_node(tiny, latent, tiny.conditioning(1), tiny.conditioning(7), cfg, cfg + 2.0, mask=mask)
    kept = latent_round_trip(tiny, samples)
    assert torch.equal(edited[:, :, 0], kept[:, :, 0]) and torch.equal(edited[:, :, 2], kept[:, :, 2])
    assert (edited[:, :, 1] - samples[:, :, 1]).abs().max().item() > 0.05


def test_flux_with_the_papers_guidance_in_the_conditioning():
    # Flux is guidance-distilled: cfg 1 on both branches, FluxGuidance 1.5 on the source and 5.5 on the target.
    tiny, latent, _ = family("flux")
    (source,) = nodes_flux.FluxGuidance.execute(tiny.conditioning(1), 1.5).result
    (same_prompt,) = nodes_flux.FluxGuidance.execute(tiny.conditioning(1), 5.5).result
    patched, calls = counting_model_calls(tiny.patcher)
    edited = run_node(tiny, latent, source, same_prompt, 1.0, 1.0, model=patched)
    assert [shape[0] for shape, _ in calls] == [2] * (STEPS - SKIP)  # no negative pass at cfg 1
    assert (edited - latent["samples"]).abs().max().item() > 1e-3  # the guidance alone is an edit


# ------------------------------------------------------------------------------------------------ the algorithm


class TwoPromptGuider(comfy.samplers.CFGGuider):
    """Source and target, each through ComfyUI's own sampling_function on its half of the batch, one after the other."""

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        (source, target), sigma = x.chunk(2), timestep.chunk(2)[0]
        return torch.cat([
            comfy.samplers.sampling_function(self.inner_model, source, sigma, self.conds["source_negative"], self.conds["source_positive"], self.source_cfg, model_options, seed),
            comfy.samplers.sampling_function(self.inner_model, target, sigma, self.conds["negative"], self.conds["positive"], self.cfg, model_options, seed),
        ])


FLOW_TIME = {
    # family: sigma -> (flow time t, model latent / flow latent). CONST models sample in flow time; Cosmos' COSMOS_RFLOW
    # feeds its network x * (1 - t) with t = sigma / (1 + sigma) (model_sampling.COSMOS_RFLOW.calculate_input).
    "sd3": lambda sigma: (sigma, 1.0),
    "cosmos_predict2": lambda sigma: (sigma / (1 + sigma), 1 + sigma),
}


@torch.no_grad()
def paper_flowedit(model, x, sigmas, extra_args=None, callback=None, disable=None, n_min=0, seed=0, flow_time=None):
    """Algorithm 1 as published, in flow time: the two branches' velocities, one noise draw a step."""
    x_src = model.latent_image.float()
    generator = torch.Generator().manual_seed(seed)

    def velocities(z_src, z_tar, sigma):
        t, scale = flow_time(sigma)
        d_src, d_tar = model(torch.cat([z_src, z_tar]) * scale, sigma * torch.ones(2), **extra_args).chunk(2)
        return (z_src - d_src) / t, (z_tar - d_tar) / t

    z_edit, steps = x_src.clone(), len(sigmas) - 1
    for i in range(steps):
        (t, _), (t_next, _) = flow_time(sigmas[i]), flow_time(sigmas[i + 1])
        if i < steps - n_min:
            noise = torch.randn(x_src.shape, generator=generator)
            z_src = (1 - t) * x_src + t * noise
            z_tar = z_edit + z_src - x_src
            v_src, v_tar = velocities(z_src, z_tar, sigmas[i])
            z_edit = z_edit + (t_next - t) * (v_tar - v_src)
        else:
            if i == steps - n_min:
                z_tar = z_edit + (1 - t) * x_src + t * torch.randn(x_src.shape, generator=generator) - x_src
            z_tar = z_tar + (t_next - t) * velocities(z_tar, z_tar, sigmas[i])[1]
    return z_edit if n_min == 0 else z_tar


@pytest.mark.parametrize("name, n_min", [("sd3", 0), ("sd3", 2), ("cosmos_predict2", 0), ("cosmos_predict2", 2)])
def test_the_batched_guider_and_sampler_follow_the_papers_algorithm(name, n_min):
    tiny, latent, _ = family(name)
    source, target, negative = tiny.conditioning(1), tiny.conditioning(7), tiny.conditioning(2)
    ours = run_node(tiny, latent, source, target, 3.5, 13.5, n_min=n_min, seed=11)
    expected = paper_result(tiny.patcher, latent, source, target, negative, 3.5, 13.5, n_min, 11, FLOW_TIME[name])
    assert (ours - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    assert (ours - latent["samples"]).abs().max().item() > 0.1  # an edit, not the identity


def paper_result(model, latent, source, target, negative, source_cfg, cfg, n_min, seed, flow_time):
    """paper_flowedit through TwoPromptGuider: each branch in a model call of its own latents."""
    reference = TwoPromptGuider(model)
    reference.set_conds(target, negative)
    reference.inner_set_conds({"source_positive": source, "source_negative": negative})
    reference.set_cfg(cfg)
    reference.source_cfg = source_cfg
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", STEPS)[SKIP:]
    sampler = comfy.samplers.KSAMPLER(paper_flowedit, extra_options={"n_min": n_min, "seed": seed, "flow_time": flow_time})
    return reference.sample(torch.zeros_like(latent["samples"]), latent["samples"], sampler, sigmas, seed=0)


def test_a_controlnet_on_both_prompts_runs_on_each_branchs_own_latent():
    """ComfyUI runs a ControlNet on the latent it samples; the source branch, batched beside it, gets residuals of its
    own latent (as the paper's two model calls give it). On the flow toy: a real SD1.5-layout UNet and ControlNet."""
    patcher, clip = toy_model.load(toy_model.FLOW_WEIGHTS)
    source, target, negative = (toy_model.encode(clip, text) for text in ("a red square", "a blue square", ""))
    controlnet = tiny_models.sd15_controlnet(types.SimpleNamespace(patcher=patcher), seed=3)
    hint = torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(4))  # an IMAGE, 8x the latent's size
    source_cn, target_cn = comfy_core_nodes.ControlNetApplyAdvanced().apply_controlnet(source, target, controlnet, hint, 1.0, 0.0, 1.0)
    latent = toy_model.to_latent(toy_shapes.draw(1, seed=5).images)
    tiny = types.SimpleNamespace(patcher=patcher, conditioning=lambda seed: negative)
    ours = run_node(tiny, latent, source_cn, target_cn, 1.5, 5.5, seed=11)
    expected = paper_result(patcher, latent, source_cn, target_cn, negative, 1.5, 5.5, 0, 11, FLOW_TIME["sd3"])
    assert (ours - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    without = run_node(tiny, latent, source, target, 1.5, 5.5, seed=11)
    assert (ours - without).abs().max().item() > 1e-2  # the ControlNet takes part


# ------------------------------------------------------------------------------------------------ model calls


@pytest.mark.parametrize(
    "name, cfg, n_avg, n_min, batch_per_step",
    [
        ("sd3", 3.5, 1, 0, [4] * 5),  # source and target, each with its negative: 4 latents in one call
        ("flux", 1.0, 1, 0, [2] * 5),  # cfg 1 skips the negatives
        ("sd3", 3.5, 3, 0, [12] * 5),  # n_avg draws multiply the batch, not the calls
        ("sd3", 3.5, 2, 2, [8] * 3 + [2] * 2),  # the last n_min steps run the target alone
        ("wan21", 5.0, 1, 0, [4] * 5),
    ],
)
def test_one_model_call_per_step_holds_both_branches(name, cfg, n_avg, n_min, batch_per_step):
    tiny, latent, _ = family(name)
    patched, calls = counting_model_calls(tiny.patcher)
    run_node(tiny, latent, tiny.conditioning(1), tiny.conditioning(7), cfg, cfg, model=patched, n_avg=n_avg, n_min=n_min)
    assert [shape[0] for shape, _ in calls] == batch_per_step
    sigmas = comfy.samplers.calculate_sigmas(tiny.patcher.get_model_object("model_sampling"), "simple", STEPS)[SKIP:-1]
    model_sampling = tiny.patcher.get_model_object("model_sampling")
    assert [float(timesteps[0]) for _, timesteps in calls] == pytest.approx([float(model_sampling.timestep(s)) for s in sigmas], rel=1e-5)


# ------------------------------------------------------------------------------------------------ custom sampling


@pytest.mark.parametrize("name, n_min, n_avg", [("sd3", 0, 1), ("qwen_image", 1, 2), ("wan21", 0, 1)])
def test_sampler_custom_advanced_gives_the_nodes_result(name, n_min, n_avg):
    tiny, latent, cfg = family(name)
    source, target = tiny.conditioning(1), tiny.conditioning(7)
    mask = torch.zeros(latent["samples"].shape[-2:])
    mask[2:6, 2:6] = 1.0
    for options in ({}, {"mask": mask}):
        node = run_node(tiny, latent, source, target, cfg, cfg + 2.0, n_min=n_min, n_avg=n_avg, seed=3, **options)
        custom, denoised = run_custom(tiny, latent, source, target, cfg, cfg + 2.0, n_min=n_min, n_avg=n_avg, seed=3, **options)
        assert torch.equal(node, custom)
    if n_min == 0:  # the last step's preview is the edit (x_src + the clean-latent change)
        assert (denoised - custom).abs().max().item() <= EXACT


def test_a_noise_mask_on_the_latent_acts_as_the_mask_in_custom_sampling():
    tiny, latent, cfg = family("sd3")
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0  # image pixels; ComfyUI scales it to the latent
    source, target = tiny.conditioning(1), tiny.conditioning(7)
    noise_masked, _ = run_custom(tiny, {**latent, "noise_mask": mask}, source, target, cfg, cfg + 2.0)
    sampler_masked, _ = run_custom(tiny, latent, source, target, cfg, cfg + 2.0, mask=mask)
    assert torch.equal(noise_masked, sampler_masked)
    assert torch.equal(noise_masked[..., :4], latent_round_trip(tiny, latent["samples"])[..., :4])


def test_the_callback_reports_every_step():
    tiny, latent, cfg = family("sd3")
    guider = flowedit.flow_guider(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), tiny.conditioning(7), tiny.conditioning(2), cfg, cfg)
    sigmas = comfy.samplers.calculate_sigmas(tiny.patcher.get_model_object("model_sampling"), "simple", STEPS)[SKIP:]
    seen = []
    guider.sample(
        torch.zeros_like(latent["samples"]), latent["samples"], flowedit.flowedit_sampler(n_min=1), sigmas,
        callback=lambda i, denoised, x, total: seen.append((i, tuple(denoised.shape), tuple(x.shape), total)),
    )
    shape = tuple(latent["samples"].shape)
    assert seen == [(i, shape, shape, STEPS - SKIP) for i in range(STEPS - SKIP)]


# ------------------------------------------------------------------------------------------------ refusals


def refused(call, model_patcher):
    """Run `call(patched)` with a counting clone of `model_patcher`; return the error after checking no model call."""
    patched, calls = counting_model_calls(model_patcher)
    with pytest.raises(EditFriendlyInputError) as error:
        call(patched)
    assert calls == [], "the check must come before any model call"
    return str(error.value)


@pytest.mark.parametrize("make, words", [(tiny_models.sd15_eps, "(SD15) is an EPS"), (tiny_models.sd2_v_prediction, "(SD20) is a v-prediction")])
def test_a_model_that_is_not_a_flow_is_refused(make, words):
    tiny = make(0)
    latent = tiny_models.latent(tiny)
    message = refused(lambda model: run_node(tiny, latent, tiny.conditioning(1), tiny.conditioning(7), 3.5, 7.0, model=model), tiny.patcher)
    assert words in message and "Edit-Friendly DDPM Inversion" in message
    message = refused(lambda model: run_custom(tiny, latent, tiny.conditioning(1), tiny.conditioning(7), 3.5, 7.0, model=model), tiny.patcher)
    assert words in message


@pytest.mark.parametrize(
    "options, words",
    [
        ({"mask": torch.ones(8, 16)}, "aspect ratios differ"),
        ({"n_min": 5}, "n_min must be at least 0 and less than the steps FlowEdit runs (5"),
        ({"n_min": -1}, "n_min must be at least 0"),
        ({"n_avg": 0}, "n_avg must be between 1"),
        ({"skip": STEPS}, "skip must be at least 0 and less than steps"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"scheduler": "nonsense"}, "Unknown scheduler"),
    ],
)
def test_bad_node_input_is_refused_before_any_model_call(options, words):
    tiny, latent, cfg = family("sd3")
    message = refused(lambda model: run_node(tiny, latent, tiny.conditioning(1), tiny.conditioning(7), cfg, cfg, model=model, **options), tiny.patcher)
    assert words in message


def test_bad_latents_are_refused_before_any_model_call():
    tiny, latent, cfg = family("sd3")
    source, target = tiny.conditioning(1), tiny.conditioning(7)
    with_noise_mask = {**latent, "noise_mask": torch.ones(1, 64, 64)}
    assert "noise mask" in refused(lambda model: run_node(tiny, with_noise_mask, source, target, cfg, cfg, model=model), tiny.patcher)
    four_channels = {"samples": torch.randn(1, 4, 8, 8)}
    assert "4 channels" in refused(lambda model: run_node(tiny, four_channels, source, target, cfg, cfg, model=model), tiny.patcher)
    empty = {"samples": torch.zeros(1, 16, 8, 8)}
    assert "all zeros" in refused(lambda model: run_node(tiny, empty, source, target, cfg, cfg, model=model), tiny.patcher)
    assert "all zeros" in refused(lambda model: run_custom(tiny, empty, source, target, cfg, cfg, model=model), tiny.patcher)


def test_bad_custom_sampling_input_is_refused_before_any_model_call():
    tiny, latent, cfg = family("wan21")
    source, target, negative = tiny.conditioning(1), tiny.conditioning(7), tiny.conditioning(2)
    (schedule,) = custom_sampler.BasicScheduler.execute(tiny.patcher, "simple", STEPS, 1.0).result
    high, _ = custom_sampler.SplitSigmas.execute(schedule, SKIP).result

    def custom(**options):
        return lambda model: run_custom(tiny, latent, source, target, cfg, cfg, model=model, **options)

    assert "low_sigmas" in refused(custom(sigmas=high), tiny.patcher)
    assert "n_min must be at least 0 and less than the steps FlowEdit runs (5" in refused(custom(n_min=5), tiny.patcher)
    assert "The mask has 2 frames but the video latent has 3" in refused(custom(mask=torch.ones(2, 8, 8)), tiny.patcher)

    def with_guider(make_guider, sampler):
        def call(model):
            (noise,) = custom_sampler.DisableNoise.execute().result
            custom_sampler.SamplerCustomAdvanced.execute(noise, make_guider(model), sampler, schedule, latent)
        return call

    def cfg_guider(model):
        return custom_sampler.CFGGuider.execute(model, target, negative, cfg).result[0]

    def flowedit_guider(model):
        return EditFriendlyFlowEditGuider.execute(model, source, negative, target, negative, cfg, cfg).result[0]

    (flowedit_sampler,) = EditFriendlyFlowEditSampler.execute(0, 1, 0).result
    assert "needs the FlowEdit Guider" in refused(with_guider(cfg_guider, flowedit_sampler), tiny.patcher)
    (euler,) = custom_sampler.KSamplerSelect.execute("euler").result
    assert "only drives the FlowEdit Sampler" in refused(with_guider(flowedit_guider, euler), tiny.patcher)


# ------------------------------------------------------------------------------------------------ inputs


def test_inputs_are_left_as_they_were():
    tiny, latent, cfg = family("flux")
    source, target = tiny.conditioning(1), tiny.conditioning(7)
    mask = torch.rand(8, 8, generator=torch.Generator().manual_seed(0))
    latent = {**latent, "extra": "kept"}
    before = copy.deepcopy((latent, source, target, mask))
    options_before = copy.deepcopy(tiny.patcher.model_options)
    run_node(tiny, latent, source, target, cfg, cfg, mask=mask, n_avg=2)
    run_custom(tiny, latent, source, target, cfg, cfg, mask=mask, n_min=1)
    for given, kept in zip((latent, source, target, mask), before):
        assert_same(given, kept)
    assert_same(tiny.patcher.model_options, options_before)


def assert_same(given, kept):
    if isinstance(given, torch.Tensor):
        assert torch.equal(given, kept)
    elif isinstance(given, dict):
        assert given.keys() == kept.keys()
        for key in given:
            assert_same(given[key], kept[key])
    elif isinstance(given, (list, tuple)):
        assert len(given) == len(kept)
        for a, b in zip(given, kept):
            assert_same(a, b)
    else:
        assert given == kept
