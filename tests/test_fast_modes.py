"""Step-parallel inversion (parallel_steps) and the exact DPM-Solver++(2M) SDE rule (issue 6).

Tiny seeded models of every family, 8x12 latents and few steps, on the CPU.
"""

import dataclasses
import json

import comfy.model_management
import comfy.patcher_extension
import comfy.samplers
import comfy_extras.nodes_custom_sampler as custom_sampler
import pytest
import tiny_models
import torch
from comfy_hooks import recorded_progress
from edit_friendly_ddpm.nodes import comfy_nodes, digest, pipeline, sampling, serialization, step_batches, steps, transforms
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError
from tiny_models import batch_dependent_rounding, counting_model_calls

TOLERANCE = 1e-4
FAMILIES = list(tiny_models.FAMILIES)
RULES = ["ddpm", "dpmpp_2m_sde"]
SCHEDULERS = {"eps": "karras", "v_prediction": "ddim_uniform", "sdxl": "beta", "flow_sd3": "simple", "flow_flux": "normal"}


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return tiny_models.FAMILIES[request.param](seed=0)


def max_error(a, b):
    return (a - b).abs().max().item()


def setup(tiny):
    latent = tiny_models.latent(tiny, batch=2, height=8, width=12, seed=1)
    return latent, tiny.conditioning(10), tiny.conditioning(11)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_one_step_at_a_time_reconstructs_exactly(tiny, rule, cfg):
    latent, positive, negative = setup(tiny)
    scheduler = SCHEDULERS[tiny.family]
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, cfg, scheduler, 1.0, 3, rule=rule)
    assert maps.rule == rule and maps.latent_shape == (2, tiny.latent_channels, 8, 12)
    assert (maps.source_denoised is not None) == (rule == "dpmpp_2m_sde")
    for skip in (0, 4, maps.steps - 1):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, cfg, skip)
        assert max_error(regenerated, latent["samples"]) <= TOLERANCE, f"{scheduler} skip {skip}"


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_step_parallel_inversion_reconstructs(tiny, rule, cfg):
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 12, cfg, "karras", 1.0, 3, rule=rule, parallel_steps=4)
    assert maps.batches == ((0, 4), (4, 8), (8, 12)) and maps.conditioning_digest is not None
    for skip in (0, 3, 5, maps.steps - 1):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, cfg, skip)
        # Through the inversion's own batches the replay is as exact as one step at a time.
        assert max_error(regenerated, latent["samples"]) <= 1e-6, f"skip {skip}"
        unbatched = pipeline.regenerate(tiny.patcher, positive, negative, maps.replace(batches=None), cfg, skip)
        assert max_error(unbatched, latent["samples"]) <= TOLERANCE, f"skip {skip}, one step at a time"


@pytest.mark.parametrize("rule", RULES)
def test_batched_replay_undoes_rounding_that_depends_on_the_batch_size(tiny, rule):
    latent, positive, negative = setup(tiny)
    wobbly = batch_dependent_rounding(tiny.patcher)  # float16-sized, as on a GPU: this CPU rounds alike in any batch
    maps = pipeline.invert(wobbly, positive, negative, latent, 10, 3.5, "karras", 1.0, 3, rule=rule, parallel_steps=4)
    for skip in (0, 5):
        regenerated = pipeline.regenerate(wobbly, positive, negative, maps, 3.5, skip)
        assert max_error(regenerated, latent["samples"]) <= 1e-6, f"skip {skip}"
    one_step = pipeline.regenerate(wobbly, positive, negative, maps.replace(batches=None), 3.5, 0)
    assert max_error(one_step, latent["samples"]) > 1e-4  # what the batched replay removes


def test_same_prompt_replay_makes_the_inversions_batches_and_an_edit_one_step_calls():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 5, parallel_steps=4)
    patched, calls = counting_model_calls(tiny.patcher)
    pipeline.regenerate(patched, tiny.conditioning(10), tiny.conditioning(11), maps, 3.5, 2)  # equal prompts, encoded anew
    # The batches (0, 4), (4, 8), (8, 10) of batch 2 x (cond, uncond); the first one whole, though the replay starts at 2.
    assert [shape[0] for shape, _ in calls] == [16, 16, 8]
    calls.clear()
    pipeline.regenerate(patched, tiny.conditioning(12), negative, maps, 3.5, 2)
    assert [shape[0] for shape, _ in calls] == [4] * (maps.steps - 2)
    calls.clear()
    pipeline.regenerate(patched, positive, negative, maps, 5.0, 2)  # another CFG is another replay
    assert [shape[0] for shape, _ in calls] == [4] * (maps.steps - 2)


@pytest.mark.parametrize("rule", RULES)
def test_batched_replay_with_variations_and_a_mask_reconstructs(rule):
    tiny = tiny_models.sdxl_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 9, 3.5, "karras", 1.0, 3, variations=2, rule=rule, parallel_steps=4)
    assert maps.batches == ((0, 4), (4, 8), (8, 9))
    mask = torch.zeros(8, 12)
    mask[2:6, 3:9] = 1.0
    for region in (None, mask):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 1, mask=region)
        assert max_error(regenerated, latent["samples"].repeat(2, 1, 1, 1)) <= 1e-6


def test_batched_replay_leaves_the_batches_when_the_path_leaves_the_recorded_latents():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 5, parallel_steps=4)
    with torch.no_grad():  # same prompts, a changed model (this test's own copy): the first step leaves the path
        tiny.patcher.model.diffusion_model.out[2].weight.mul_(1.01)
    patched, calls = counting_model_calls(tiny.patcher)
    batched = pipeline.regenerate(patched, positive, negative, maps, 3.5, 0)
    assert [shape[0] for shape, _ in calls] == [16] + [4] * (maps.steps - 1)
    one_step = pipeline.regenerate(tiny.patcher, positive, negative, maps.replace(batches=None), 3.5, 0)
    assert max_error(batched, latent["samples"]) > 1e-3
    assert max_error(batched, one_step) <= 1e-4  # the first estimate rounds as a batch of 4 steps, the rest alike


def test_changed_maps_and_loaded_files_keep_or_drop_the_batches(tmp_path):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "karras", 1.0, 0, parallel_steps=3)
    shifted = transforms.shift_noise_maps(maps, 2, 0)
    assert shifted.batches is None and shifted.conditioning_digest is None
    path = str(tmp_path / "maps.safetensors")
    serialization.save(maps, path)
    loaded = serialization.load(path)
    assert loaded.batches == maps.batches == ((0, 3), (3, 6)) and loaded.conditioning_digest == maps.conditioning_digest
    assert max_error(pipeline.regenerate(tiny.patcher, positive, negative, loaded, 3.5, 1), latent["samples"]) <= 1e-6
    assert pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "karras", 1.0, 0).batches is None
    with pytest.raises(ValueError, match="consecutive ranges"):
        maps.replace(batches=((0, 3), (4, 6)))


def test_conditioning_digest_tells_prompts_and_cfg_apart():
    tiny = tiny_models.sd15_eps(seed=0)

    def digest_of(positive, negative, cfg):
        return digest.guider_digest(pipeline.cfg_guider(tiny.patcher, positive, negative, cfg))

    reference = digest_of(tiny.conditioning(1), tiny.conditioning(2), 3.5)
    assert reference is not None and reference == digest_of(tiny.conditioning(1), tiny.conditioning(2), 3.5)  # ComfyUI's uuids aside
    assert digest_of(tiny.conditioning(1), tiny.conditioning(2), 4) == digest_of(tiny.conditioning(1), tiny.conditioning(2), 4.0)
    assert reference != digest_of(tiny.conditioning(2), tiny.conditioning(1), 3.5)
    assert reference != digest_of(tiny.conditioning(1), tiny.conditioning(2), 4.0)
    strength = tiny.conditioning(1)
    strength[0][1] = dict(strength[0][1], strength=0.9)
    assert reference != digest_of(strength, tiny.conditioning(2), 3.5)
    with_object = tiny.conditioning(1)
    with_object[0][1] = dict(with_object[0][1], control=object())
    assert digest_of(with_object, tiny.conditioning(2), 3.5) is None
    (node_guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), 3.5).result
    assert digest.guider_digest(node_guider) == reference  # the CFGGuider node's guider is the same kind
    (dual,) = custom_sampler.DualCFGGuider.execute(tiny.patcher, tiny.conditioning(1), tiny.conditioning(1), tiny.conditioning(2), 3.5, 1.0, "regular").result
    assert digest.guider_digest(dual) not in (None, reference)
    assert digest.guider_digest(None) is None


def test_custom_sampling_replays_step_parallel_maps_through_their_batches():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 5, rule="dpmpp_2m_sde", parallel_steps=4)
    patched, calls = counting_model_calls(tiny.patcher)

    def custom(positive, cfg):
        (guider,) = custom_sampler.CFGGuider.execute(patched, positive, negative, cfg).result
        sampler, sigmas, start = comfy_nodes.EditFriendlySamplerCustom.execute(maps, 0).result
        (noise,) = custom_sampler.DisableNoise.execute().result
        return custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, start).result[0]["samples"]

    assert max_error(custom(tiny.conditioning(10), 3.5), latent["samples"]) <= 1e-6  # equal prompts, encoded anew
    assert [shape[0] for shape, _ in calls] == [16, 16, 8]
    calls.clear()
    assert max_error(custom(tiny.conditioning(12), 3.5), latent["samples"]) > 1e-3
    assert [shape[0] for shape, _ in calls] == [4] * maps.steps


def test_a_latent_noise_mask_replays_step_parallel_maps_exactly():
    # Set Latent Noise Mask on the Custom Sampling node's LATENT: a batch of 2 replayed through batches of 4 steps.
    import nodes as comfy_builtin_nodes  # ComfyUI's own nodes.py

    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 5, parallel_steps=4)
    mask = torch.zeros(1, 8, 12)
    mask[:, :, :6] = 1.0
    sampler, sigmas, start = comfy_nodes.EditFriendlySamplerCustom.execute(maps, 0).result
    (masked,) = comfy_builtin_nodes.SetLatentNoiseMask().set_mask(start, mask)
    (noise,) = custom_sampler.DisableNoise.execute().result

    def custom(positive, cfg):
        (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, cfg).result
        return custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, masked).result[0]["samples"]

    assert max_error(custom(positive, 3.5), latent["samples"]) <= 1e-6
    edited = custom(tiny.conditioning(12), 7.0)
    assert max_error(edited, pipeline.regenerate(tiny.patcher, tiny.conditioning(12), negative, maps, 7.0, 0, mask)) <= 1e-5
    assert max_error(edited[..., 6:], latent["samples"][..., 6:]) <= 1e-5
    assert (edited[..., :6] - latent["samples"][..., :6]).abs().mean() > 0.05


def gated(sigma):
    return 1.1 if sigma[0] > 2 else 1.0


def gated_cond_batch(args):  # as SkipLayerGuidanceDiTSimple decides, from the first sample's sigma
    outputs = comfy.samplers.calc_cond_batch(args["model"], args["conds"], args["input"], args["sigma"], args["model_options"])
    return [None if out is None else out * gated(args["sigma"]) for out in outputs]


def gated_unet_wrapper(apply_model, args):
    return apply_model(args["input"], args["timestep"], **args["c"]) * gated(args["timestep"] / 250)


def gated_diffusion_model_wrapper(executor, x, timesteps, *args, **kwargs):  # EasyCache's kind of wrapper
    return executor(x, timesteps, *args, **kwargs) * gated(timesteps / 250)


@pytest.mark.parametrize(
    "patch", ["apg", "sigma_gated", "input_block_patch", "calc_cond_batch", "unet_wrapper", "diffusion_model_wrapper", "multigpu"]
)
def test_model_patches_that_look_at_one_sigma_or_keep_state_run_the_inversion_step_by_step(patch):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    model = tiny.patcher.clone()
    if patch == "apg":  # ComfyUI's APG node with momentum: its running average is kept from one call to the next
        from comfy_extras.nodes_apg import APG

        (model,) = APG.execute(tiny.patcher, 1.0, 15.0, 0.5).result
    elif patch == "sigma_gated":  # decides from the first sample's sigma, as SkipLayerGuidance does
        model.set_model_sampler_post_cfg_function(lambda args: args["denoised"] * gated(args["sigma"]))
    elif patch == "input_block_patch":  # as Deep Shrink sets, which reads transformer_options["sigmas"][0]
        model.set_model_input_block_patch(lambda h, options: h * gated(options["sigmas"]))
    elif patch == "calc_cond_batch":
        model.set_model_sampler_calc_cond_batch_function(gated_cond_batch)
    elif patch == "unet_wrapper":
        model.set_model_unet_function_wrapper(gated_unet_wrapper)
    elif patch == "multigpu":  # later ComfyUI versions spread a batch over these devices' clones (0.3.75 ignores the key)
        model.model_options["multigpu_clones"] = {"cuda:1": "a clone of the model on another GPU"}
    else:
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "gate", gated_diffusion_model_wrapper)
    one_step = pipeline.invert(model, positive, negative, latent, 10, 3.5, "karras", 1.0, 5)
    parallel = pipeline.invert(model, positive, negative, latent, 10, 3.5, "karras", 1.0, 5, parallel_steps=4)
    assert parallel.batches is None
    assert torch.equal(parallel.maps, one_step.maps)


def test_a_replay_under_a_step_sensitive_patch_runs_step_by_step():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 3.5, "karras", 1.0, 5, parallel_steps=4)
    patched, calls = counting_model_calls(tiny.patcher)
    patched.set_model_sampler_post_cfg_function(lambda args: args["denoised"] * gated(args["sigma"]))  # added after the inversion
    replayed = pipeline.regenerate(patched, positive, negative, maps, 3.5, 0)
    assert [shape[0] for shape, _ in calls] == [4] * maps.steps
    one_step = pipeline.regenerate(patched, positive, negative, dataclasses.replace(maps, batches=None), 3.5, 0)
    assert torch.equal(replayed, one_step)


def test_torch_compile_wrapper_still_shares_batches():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    model = tiny.patcher.clone()
    # TorchCompileModel's key (compiling itself is too slow for a test): the same per sample in any batch.
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "torch.compile", lambda executor, *a, **k: executor(*a, **k))
    maps = pipeline.invert(model, positive, negative, latent, 8, 3.5, "karras", 1.0, 5, parallel_steps=4)
    assert maps.batches == ((0, 4), (4, 8))


@pytest.mark.parametrize("mask_batch, variations", [(1, 1), (2, 1), (3, 1), (4, 1), (2, 2), (4, 2)])
def test_a_conditioning_mask_of_another_batch_size_runs_the_inversion_step_by_step(mask_batch, variations):
    from nodes import ConditioningSetMask

    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)  # a batch of 2 latents
    masks = torch.rand((mask_batch, 64, 96), generator=torch.Generator().manual_seed(4))
    (masked,) = ConditioningSetMask().append(positive, masks, "default", 1.0)
    one_step = pipeline.invert(tiny.patcher, masked, negative, latent, 8, 3.5, "karras", 1.0, 5, variations)
    parallel = pipeline.invert(tiny.patcher, masked, negative, latent, 8, 3.5, "karras", 1.0, 5, variations, parallel_steps=4)
    # Masks whose count divides the batch (2 latents x variations) repeat per step alike; others do not.
    assert (parallel.batches is None) == bool((2 * variations) % mask_batch)
    assert max_error(parallel.maps, one_step.maps) <= 1e-4
    regenerated = pipeline.regenerate(tiny.patcher, masked, negative, parallel, 3.5, 0)
    assert max_error(regenerated, latent["samples"].repeat(variations, 1, 1, 1)) <= 1e-6


def test_settling_takes_the_recorded_latent_only_within_rounding():
    mean, recorded = torch.full((3,), 1.0), torch.full((3,), 0.5)
    ulp = torch.finfo(torch.float32).eps
    x = recorded + torch.tensor([2.0, 12.0, 1e4]) * ulp  # the tolerance is 4 ulp * (|mean| + |x|), about 6 ulp
    settled = steps.settle_on_recorded(x, recorded, mean)
    assert settled[0] == recorded[0]  # two ulp off: rounding, taken as recorded
    assert torch.equal(settled[1:], x[1:])  # twelve ulp off, and a real difference of 1.2e-3: kept
    half = torch.tensor([0.5, 0.5039], dtype=torch.bfloat16)  # one bfloat16 step apart: still float32's reach
    assert torch.equal(steps.settle_on_recorded(half[1:], half[:1], mean[:1].bfloat16()), half[1:])


def test_settling_does_not_hide_a_wrong_map():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 5, parallel_steps=4)
    assert max_error(pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 0), latent["samples"]) <= 1e-6
    nudged = maps.maps.clone()
    nudged[6, 0, 0, 3, 4] += 1e-3
    wrong = pipeline.regenerate(tiny.patcher, positive, negative, maps.replace(maps=nudged), 3.5, 0)
    assert max_error(wrong, latent["samples"]) > 1e-5


@pytest.mark.parametrize("rule", RULES)
def test_settling_leaves_edits_alone(monkeypatch, rule):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    target = tiny.conditioning(12)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 12, 3.5, "karras", 1.0, 5, rule=rule, parallel_steps=4)
    edited = pipeline.regenerate(tiny.patcher, target, negative, maps, 3.5, 2)
    monkeypatch.setattr(sampling, "settle_on_recorded", lambda x, *_: x)
    unsettled = pipeline.regenerate(tiny.patcher, target, negative, maps, 3.5, 2)
    assert max_error(edited, latent["samples"]) > 1e-2
    assert max_error(edited, unsettled) <= 1e-6


def test_results_do_not_depend_on_the_chunk_size():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    runs = {
        chunk: pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 5, rule="dpmpp_2m_sde", parallel_steps=chunk)
        for chunk in (1, 3, 0)
    }
    assert runs[0].batches is not None, "automatic batching must batch the tiny latents (or this test checks nothing)"
    for chunk in (3, 0):
        assert max_error(runs[chunk].noisy_latents, runs[1].noisy_latents) <= 1e-5
        assert max_error(runs[chunk].maps, runs[1].maps) <= 1e-4
        assert max_error(runs[chunk].source_denoised, runs[1].source_denoised) <= 1e-5


def test_the_first_latent_is_the_drawn_one_and_every_batch_starts_from_the_previous_map():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 7, 2.0, "karras", 1.0, 5, parallel_steps=3)
    x0 = tiny.patcher.model.process_latent_in(latent["samples"])
    scales = maps.scales
    drawn = list(steps.draw_noisy_latents(x0, scales, 5))
    for i in range(maps.steps):
        if i % 3:  # inside a batch: the drawn latent, as the model saw it
            assert torch.equal(maps.noisy_latents[i], drawn[i])
    assert torch.equal(maps.noisy_latents[0], drawn[0])


def test_a_controlnet_over_part_of_the_steps_splits_the_batches_at_its_range():
    import nodes as comfy_builtin_nodes  # ComfyUI's own nodes.py

    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    hint = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(4))  # an IMAGE, 8x the latent size
    controlled = comfy_builtin_nodes.ControlNetApplyAdvanced().apply_controlnet(
        positive, negative, tiny_models.sd15_controlnet(tiny, seed=3), hint, 1.0, 0.3, 0.7
    )
    plain = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 5)
    one_step = pipeline.invert(tiny.patcher, *controlled, latent, 10, 3.5, "karras", 1.0, 5)
    parallel = pipeline.invert(tiny.patcher, *controlled, latent, 10, 3.5, "karras", 1.0, 5, parallel_steps=10)
    assert max_error(one_step.maps, plain.maps) > 1e-3  # the ControlNet takes part
    assert len(parallel.batches) == 3, parallel.batches  # before, inside and after its range
    assert max_error(parallel.maps, one_step.maps) <= 1e-4
    regenerated = pipeline.regenerate(tiny.patcher, *controlled, parallel, 3.5, 0)
    assert max_error(regenerated, latent["samples"]) <= TOLERANCE


def test_a_hook_in_the_conditioning_runs_the_inversion_step_by_step():
    import comfy.hooks

    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    # A real weight hook (as the hook nodes make from a checkpoint): another model's weights for the output layer.
    weights = {key: value * 1.5 for key, value in tiny.patcher.model.state_dict().items() if key.startswith("diffusion_model.out.")}
    hooks = comfy.hooks.create_hook_model_as_lora(weights, None, 1.0, 0.0)
    (hooked,) = comfy.hooks.set_conds_props([positive], 1.0, "default", hooks=hooks)
    plain = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 3.5, "karras", 1.0, 5)
    one_step = pipeline.invert(tiny.patcher, hooked, negative, latent, 8, 3.5, "karras", 1.0, 5)
    parallel = pipeline.invert(tiny.patcher, hooked, negative, latent, 8, 3.5, "karras", 1.0, 5, parallel_steps=4)
    assert max_error(one_step.maps, plain.maps) > 1e-3  # the hook takes part
    assert parallel.batches is None and torch.equal(parallel.maps, one_step.maps)
    regenerated = pipeline.regenerate(tiny.patcher, hooked, negative, parallel, 3.5, 0)
    assert max_error(regenerated, latent["samples"]) <= TOLERANCE


def test_step_batches_respect_size_and_timestep_ranges():
    sigmas = torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.0])
    assert step_batches.plan_step_batches(sigmas, 6, 4, []) == [(0, 4), (4, 6)]
    assert step_batches.plan_step_batches(sigmas, 6, 4, None) == [(i, i + 1) for i in range(6)]
    # A conditioning active for sigma <= 5 (timestep_start 5) splits the batches between sigma 6 and 4.
    assert step_batches.plan_step_batches(sigmas, 6, 6, [(5.0, None)]) == [(0, 3), (3, 6)]
    assert step_batches.plan_step_batches(sigmas, 6, 6, [(None, 3.0)]) == [(0, 4), (4, 6)]


def test_timestep_range_conditioning_is_honoured_per_step():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    late = tiny.conditioning(12)
    late[0][1] = dict(late[0][1], start_percent=0.5, end_percent=1.0)
    positive = positive + late
    sequential = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 1)
    parallel = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 1, parallel_steps=10)
    assert max_error(parallel.maps, sequential.maps) <= 1e-4
    regenerated = pipeline.regenerate(tiny.patcher, positive, negative, parallel, 3.5, 0)
    assert max_error(regenerated, latent["samples"]) <= TOLERANCE


def test_automatic_chunk_size_follows_free_memory(monkeypatch):
    base = tiny_models.sd15_eps(seed=0).patcher.model
    shape = (2, 4, 8, 12)
    per_step = base.memory_required([4, 4, 8, 12]) * 1.5 / 0.8
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 3.5 * per_step)
    assert pipeline.auto_parallel_steps(base, shape, 50) == 3
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 0.5 * per_step)
    assert pipeline.auto_parallel_steps(base, shape, 50) == 1
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 1e6 * per_step)
    assert pipeline.auto_parallel_steps(base, shape, 3) == 3
    assert pipeline.auto_parallel_steps(base, shape, 50) == pipeline.CPU_PARALLEL_STEPS


def test_free_memory_is_asked_where_comfyui_batching_asks_it(monkeypatch):
    # Later ComfyUI versions size calc_cond_batch's batches by the loaded model's patcher (ModelPatcher.get_free_memory,
    # absent in 0.3.75); the replay's test must ask the same, or it splits batches ComfyUI would run whole.
    tiny = tiny_models.sd15_eps(seed=0)
    base = tiny.patcher.model
    per_step = base.memory_required([4, 4, 8, 12]) * 1.5 / 0.8
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 0.5 * per_step)
    assert pipeline.auto_parallel_steps(base, (2, 4, 8, 12), 50) == 1
    assert not pipeline.batch_fits(base, (8, 4, 8, 12), "cpu")
    asked = []

    def patcher_free(self, device):
        asked.append(device)
        return 1e6 * per_step

    monkeypatch.setattr(type(tiny.patcher), "get_free_memory", patcher_free, raising=False)
    monkeypatch.setattr(base, "current_patcher", tiny.patcher)
    assert pipeline.auto_parallel_steps(base, (2, 4, 8, 12), 50) == pipeline.CPU_PARALLEL_STEPS
    assert pipeline.batch_fits(base, (8, 4, 8, 12), "cpu")
    assert len(asked) == 2 and asked[1] == "cpu"


def fake_free_memory(monkeypatch, free):
    """ComfyUI reports `free` bytes on every device (its attention also asks for torch's share: the same here)."""
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda dev=None, torch_free_too=False: (free, free) if torch_free_too else free)


def test_an_explicit_chunk_size_is_capped_by_free_memory(monkeypatch, caplog):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    free = tiny.patcher.model.memory_required([8, 4, 8, 12]) * 1.5 / 0.8  # room for 2 steps of a batch of 2, halves together
    fake_free_memory(monkeypatch, free)
    monkeypatch.setattr(pipeline, "check_memory_for_maps", lambda *a, **k: None)  # the maps' own check would see the same figure
    with caplog.at_level("WARNING"):
        maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 3.5, "karras", 1.0, 5, parallel_steps=8)
    assert maps.batches == ((0, 2), (2, 4), (4, 6), (6, 8))
    assert "parallel_steps 8 does not fit" in caplog.text
    caplog.clear()
    gated_model = tiny.patcher.clone()
    gated_model.set_model_sampler_post_cfg_function(lambda args: args["denoised"] * gated(args["sigma"]))
    with caplog.at_level("WARNING"):  # step by step because of the patch: memory is not to blame
        assert pipeline.invert(gated_model, positive, negative, latent, 8, 3.5, "karras", 1.0, 5, parallel_steps=8).batches is None
    assert "does not fit" not in caplog.text


def test_a_replay_runs_step_by_step_where_a_recorded_batch_no_longer_fits(monkeypatch):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 3.5, "karras", 1.0, 5, parallel_steps=4)
    patched, calls = counting_model_calls(tiny.patcher)
    assert max_error(pipeline.regenerate(patched, positive, negative, maps, 3.5, 0), latent["samples"]) <= 1e-6
    assert [shape[0] for shape, _ in calls] == [16, 16]
    calls.clear()
    # Room for one step's halves together, not for four steps': ComfyUI would split the batch the inversion ran.
    fake_free_memory(monkeypatch, tiny.patcher.model.memory_required([4, 4, 8, 12]) * 1.5 * 1.01)
    assert max_error(pipeline.regenerate(patched, positive, negative, maps, 3.5, 0), latent["samples"]) <= TOLERANCE
    assert [shape[0] for shape, _ in calls] == [4] * maps.steps


def test_a_cfg_1_replay_asks_memory_for_the_positive_half_only(monkeypatch):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 1.0, "karras", 1.0, 5, parallel_steps=4)
    patched, calls = counting_model_calls(tiny.patcher)
    # Room for a 4-step batch of the positive prompt alone, as ComfyUI's CFG 1 shortcut runs it, not for both halves.
    fake_free_memory(monkeypatch, tiny.patcher.model.memory_required([8, 4, 8, 12]) * 1.5 * 1.01)
    assert max_error(pipeline.regenerate(patched, positive, negative, maps, 1.0, 0), latent["samples"]) <= 1e-6
    assert [shape[0] for shape, _ in calls] == [8, 8]


def test_automatic_chunk_size_on_a_gpu_stops_where_batching_stopped_gaining(monkeypatch):
    # No GPU here: ComfyUI is told the device is not a CPU and has plenty of free memory; the sizes are the
    # full-size ones, while the memory estimate comes from the tiny model's own memory_required.
    base = tiny_models.sd15_eps(seed=0).patcher.model
    monkeypatch.setattr(comfy.model_management, "is_device_cpu", lambda device: False)
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 1e15)
    assert pipeline.auto_parallel_steps(base, (1, 4, 64, 64), 100) == pipeline.MAX_PARALLEL_STEPS == 64  # SD1.5 512x512
    assert pipeline.auto_parallel_steps(base, (1, 4, 128, 128), 100) == 16  # SDXL 1024x1024
    assert pipeline.auto_parallel_steps(base, (2, 4, 128, 128), 100) == 8
    assert pipeline.auto_parallel_steps(base, (1, 4, 512, 512), 100) == 1
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: base.memory_required([8, 4, 128, 128]) * 1.5 / 0.8)
    assert pipeline.auto_parallel_steps(base, (1, 4, 128, 128), 100) == 4  # memory binds first


def test_automatic_chunk_size_stays_sequential_for_large_latents_on_cpu(monkeypatch):
    base = tiny_models.sd15_eps(seed=0).patcher.model
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 1e15)
    assert pipeline.auto_parallel_steps(base, (1, 4, 64, 64), 50) == 1  # full-size SD1.5: batching measured slower
    assert pipeline.auto_parallel_steps(base, (2, 4, 32, 32), 50) == 1
    assert pipeline.auto_parallel_steps(base, (1, 4, 16, 16), 50) == pipeline.CPU_PARALLEL_STEPS
    assert pipeline.auto_parallel_steps(base, (1, 4, 32, 32), 50) == 2


def test_progress_is_reported_for_every_step_of_a_batch():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    with recorded_progress() as reports:
        (maps,) = comfy_nodes.EditFriendlyDDPMInversion.execute(
            tiny.patcher, positive, negative, latent, 10, 3.5, "karras", 1.0, 0, 1, "dpmpp_2m_sde", 4
        ).result
    assert [(value, total) for value, total, _ in reports] == [(i, maps.steps) for i in range(1, maps.steps + 1)]


def test_interrupt_stops_after_the_current_batch():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    with recorded_progress(interrupt_at=2) as reports, pytest.raises(comfy.model_management.InterruptProcessingException):
        pipeline.invert(tiny.patcher, positive, negative, latent, 30, 3.5, "karras", 1.0, 0, parallel_steps=4)
    assert max(value for value, _, _ in reports) <= 2


def test_maps_replayed_with_another_rule_are_refused():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "karras", 1.0, 0, rule="dpmpp_2m_sde")
    guider = pipeline.cfg_guider(tiny.patcher, positive, negative, 3.5)
    with pytest.raises(EditFriendlyInputError, match="dpmpp_2m_sde.*cannot be replayed with 'ddpm'"):
        guider.sample(torch.zeros_like(maps.source_latent), maps.source_latent, pipeline.edit_friendly_sampler(maps, rule="ddpm"), maps.sigmas)
    with pytest.raises(ValueError, match="needs source_denoised"):
        maps.replace(source_denoised=None)
    with pytest.raises(ValueError, match="keeps no source_denoised"):
        maps.replace(rule="ddpm")
    with pytest.raises(EditFriendlyInputError, match="Unknown step rule"):
        pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "karras", 1.0, 0, rule="euler")


@pytest.mark.parametrize("rule", RULES)
def test_serialization_round_trip_keeps_the_rule(tmp_path, rule):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "karras", 1.0, 0, rule=rule)
    path = str(tmp_path / "maps.safetensors")
    serialization.save(maps, path)
    loaded = serialization.load(path)
    assert loaded.rule == rule
    if rule == "ddpm":
        assert loaded.source_denoised is None
    else:
        assert torch.equal(loaded.source_denoised, maps.source_denoised)
    regenerated = pipeline.regenerate(tiny.patcher, positive, negative, loaded, 3.5, 2)
    assert max_error(regenerated, latent["samples"]) <= TOLERANCE


def test_a_dpmpp_file_without_its_estimates_is_refused(tmp_path):
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "karras", 1.0, 0)
    data = serialization.to_bytes(maps)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header["__metadata__"]["rule"] = "dpmpp_2m_sde"
    encoded = json.dumps(header).encode()
    path = tmp_path / "forged.safetensors"
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + size :])
    with pytest.raises(serialization.NoiseMapsFileError, match="source_denoised"):
        serialization.load(str(path))


def test_dpmpp_maps_at_eta_1_are_the_ddpm_maps():
    """Both first-order steps are the DDPM posterior step at eta 1: the rules differ only in an edit's second-order term."""
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    ddpm, dpmpp = (pipeline.invert(tiny.patcher, positive, negative, latent, 12, 3.5, "karras", 1.0, 3, rule=rule) for rule in RULES)
    assert max_error(ddpm.maps, dpmpp.maps) <= 1e-5 and max_error(ddpm.noisy_latents, dpmpp.noisy_latents) <= 1e-5


def test_dpmpp_edits_differ_from_ddpm_edits():
    tiny = tiny_models.sd15_eps(seed=0)
    latent, positive, negative = setup(tiny)
    ddpm = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 3.5, "karras", 1.0, 0)
    dpmpp = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 3.5, "karras", 1.0, 0, rule="dpmpp_2m_sde")
    # eta = 1: the first-order part of DPM-Solver++(2M) SDE is the DDPM step, so the maps are the same ...
    assert max_error(ddpm.maps, dpmpp.maps) <= 1e-5
    target = tiny.conditioning(99)
    # ... and an edit differs only through the second-order term.
    a = pipeline.regenerate(tiny.patcher, target, negative, ddpm, 7.0, 2)
    b = pipeline.regenerate(tiny.patcher, target, negative, dpmpp, 7.0, 2)
    assert max_error(a, b) > 1e-3


REFERENCE_CASES = [("dpmpp_2m_sde", family, eta) for family in FAMILIES for eta in (1.0, 0.6)]
REFERENCE_CASES += [("ddpm", family, eta) for family in ("eps", "v_prediction") for eta in (1.0, 0.6)]


@pytest.mark.parametrize("rule, family, eta", REFERENCE_CASES)
def test_replaying_fresh_noise_is_comfyuis_own_sampler(rule, family, eta):
    """Reconstruction cannot check the step itself (a map absorbs any error in it), so: replayed with fresh noise
    as maps and no source history, the step rule must be ComfyUI's own sampler fed the same noise: DPM-Solver++(2M)
    SDE (midpoint), and for ddpm on a = 1 models the ancestral Euler step, which is the DDPM posterior step there."""
    import comfy.k_diffusion.sampling as k_sampling

    tiny = tiny_models.FAMILIES[family](seed=0)
    latent, positive, negative = setup(tiny)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 3.0, "karras", eta, 0, rule=rule)
    skip = 2  # below the largest sigma, where ComfyUI starts a flow model at a shifted sigma
    noise = torch.randn(maps.maps.shape, generator=torch.Generator().manual_seed(7))
    noise[-1] = 0.0  # the last map is the residual; ComfyUI's last step is the clean estimate itself
    history = torch.zeros_like(maps.maps) if rule == "dpmpp_2m_sde" else None
    fresh = maps.replace(maps=noise, source_denoised=history)
    ours = pipeline.regenerate(tiny.patcher, positive, negative, fresh, 3.0, skip)

    feed = iter(noise[skip:-1])
    reference = {"dpmpp_2m_sde": k_sampling.sample_dpmpp_2m_sde, "ddpm": k_sampling.sample_euler_ancestral}[rule]
    sampler = comfy.samplers.KSAMPLER(reference, extra_options={"eta": eta, "noise_sampler": lambda *sigmas: next(feed)})
    # A latent that process_latent_in turns into 0, and noise b(s) x = the start latent: ComfyUI starts where we do.
    empty = tiny.patcher.model.process_latent_out(torch.zeros_like(latent["samples"]))
    start_noise = fresh.start_latent(skip) / float(fresh.scales[skip, 1])
    guider = pipeline.cfg_guider(tiny.patcher, positive, negative, 3.0)
    theirs = guider.sample(start_noise, empty, sampler, fresh.sigmas[skip:].clone(), seed=0)
    assert max_error(ours, latent["samples"]) > 0.1  # fresh noise: far from the source
    assert max_error(ours, theirs) <= 1e-5 * theirs.abs().max().item()  # float32 rounding of values up to about 100
