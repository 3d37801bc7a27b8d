"""Attention control (Prompt-to-Prompt) on edit-friendly maps, on tiny SD1.5, SD2, SDXL, SD3, Flux, Flux 2, Chroma,
Qwen-Image and Wan 2.1/2.2 models: the source prompt gives the input back exactly; another prompt's conditional pass
attends with the source's queries and keys inside the windows only; every refusal comes before the first model call."""

import collections
import copy

import comfy.model_management
import comfy.sampler_helpers
import comfy.samplers
import comfy_extras.nodes_custom_sampler as custom_sampler
import pytest
import tiny_image_families
import tiny_models
import tiny_video_families
import torch
from edit_friendly_ddpm.nodes import attention_control, pipeline, prompt_pair
from edit_friendly_ddpm.nodes.attention_control import PLAN_KEY, CallPlan, Layout, dit_attention_override
from edit_friendly_ddpm.nodes.attention_nodes import EditFriendlyAttentionControl
from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlySamplerCustom
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError
from tiny_models import counting_model_calls

TOLERANCE = 1e-5
STEPS = 10
FAMILIES = {
    "sd15": (tiny_models.sd15_eps, "unet"),
    "sd2": (tiny_models.sd2_v_prediction, "unet"),
    "sdxl": (tiny_models.sdxl_eps, "unet"),
    "sd3": (tiny_models.sd3_flow, "joint"),
    "flux": (tiny_models.flux_flow, "joint"),
    "flux2": (tiny_image_families.flux2, "joint"),
    "chroma": (tiny_image_families.chroma, "joint"),
    "qwen_image": (tiny_image_families.qwen_image, "joint"),
    "wan21": (tiny_video_families.wan21_t2v, "separate"),
    "wan22_5b": (tiny_video_families.wan22_5b, "separate"),
}


def latent_for(tiny, batch=1, seed=3, **sizes):
    if tiny.patcher.get_model_object("latent_format").latent_dimensions == 3 and tiny.family.startswith("wan"):
        return tiny_video_families.latent(tiny, batch=batch, frames=sizes.get("frames", 2), height=sizes.get("height", 8), width=sizes.get("width", 8), seed=seed)
    return tiny_image_families.latent(tiny, batch=batch, height=sizes.get("height", 8), width=sizes.get("width", 8), seed=seed)


def invert(tiny, latent, source, negative, steps=STEPS):
    return pipeline.invert(tiny.patcher, source, negative, latent, steps, 3.5, "simple", 1.0, seed=0)


def as_prompt_pair(source, target):
    """The pair as Edit-Friendly Prompt Pair gives it for a one-word swap (its tokens beside each conditioning): the
    tiny models have no tokenizer. tests/test_prompt_pair.py covers the node and the check on real tokenizers."""
    def with_words(conditioning, tokens):
        return [[tensor, {**options, prompt_pair.WORDS_KEY: {"text": "a photo", "tokens": {"t5xxl": tokens}}}] for tensor, options in conditioning]

    slots = tuple(range(77))
    swapped = slots if source is target else (slots[0], 1000, *slots[2:])
    return with_words(source, slots), with_words(target, swapped)


def attention_guider(model, maps, source, target, negative, cfg, self_attention, cross_attention, words=True):
    """The node's GUIDER; with `words`, the prompts first go through as_prompt_pair."""
    if words and prompt_pair.WORDS_KEY not in source[0][1]:
        source, target = as_prompt_pair(source, target)
    (guider,) = EditFriendlyAttentionControl.execute(model, maps, source, target, negative, cfg, self_attention, cross_attention).result
    return guider


def run(guider, maps, skip=0, sigmas=None, sampler=None):
    own_sampler, own_sigmas, start = EditFriendlySamplerCustom.execute(maps, skip).result
    (noise,) = custom_sampler.DisableNoise.execute().result
    sampler, sigmas = sampler or own_sampler, own_sigmas if sigmas is None else sigmas
    return custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, start).result[0]["samples"]


def distance(a, b):
    return (a - b).pow(2).mean().sqrt().item()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, hooks = FAMILIES[request.param]
    return request.param, build(seed=0), hooks


# ------------------------------------------------------------------------------------------- (1) exact reconstruction


@pytest.mark.parametrize("windows", [(1.0, 1.0), (0.2, 0.6)])
def test_source_prompt_on_both_branches_gives_the_input_back(family, windows):
    name, tiny, _ = family
    latent = latent_for(tiny)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = invert(tiny, latent, source, negative)
    guider = attention_guider(tiny.patcher, maps, source, source, negative, 3.5, *windows)
    for skip in (0, 4):
        output = run(guider, maps, skip)
        assert output.shape == latent["samples"].shape
        assert (output - latent["samples"]).abs().max().item() <= TOLERANCE, f"{name} skip {skip}"
        replayed = STEPS - skip
        assert sorted(guider.applied) == list(range(int(windows[1] * replayed)))  # each run counts afresh
        assert all(count["cross"] for count in guider.applied.values())


# ------------------------------------------------------------------------- (2, 6) controls applied, in their windows


def attention_probe(records):
    """An optimized_attention_override that records, for each attention call that carries a plan, whether the target
    rows' queries and keys are the source rows' (whole, and on the text and image tokens of a joint sequence)."""

    def probe(func, *args, **kwargs):
        plan = kwargs["transformer_options"].get(PLAN_KEY)
        if plan is not None:
            q, k = args[0], args[1]
            dim = 2 if kwargs.get("skip_reshape") else 1
            text = plan.text_tokens or 0

            def same(t, part=slice(None)):
                index = [slice(None)] * dim + [part]
                return torch.equal(t[plan.target][tuple(index)], t[plan.source][tuple(index)])

            records.append({
                "self_on": plan.self_on, "cross_on": plan.cross_on, "queries": q.shape[dim], "keys": k.shape[dim],
                "q": same(q), "k": same(k), "q_image": same(q, slice(text, None)), "k_image": same(k, slice(text, None)),
                "k_text": same(k, slice(0, text)),
            })
        return func(*args, **kwargs)

    return probe


def test_controls_act_in_their_windows_on_every_attention_and_change_the_edit(family):
    name, tiny, hooks = family
    latent = latent_for(tiny, batch=2, seed=5)  # a batch of 2: the target's latent j takes the source's latent j
    source, negative, target = tiny.conditioning(1), tiny.conditioning(2), tiny.conditioning(7)
    maps = invert(tiny, latent, source, negative)
    counted, calls = counting_model_calls(tiny.patcher)
    records = []
    probed = counted.clone()
    probed.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = attention_probe(records)

    guider = attention_guider(probed, maps, source, target, negative, 7.0, 0.3, 0.6)
    controlled = run(guider, maps)

    # Self-attention on the first 3 of 10 replayed steps, cross-attention on the first 6, nothing after.
    assert sorted(guider.applied) == list(range(6))
    assert all(guider.applied[step]["self"] > 0 for step in range(3)) and all(guider.applied[step]["self"] == 0 for step in range(3, 6))
    assert all(guider.applied[step]["cross"] > 0 for step in range(6))
    # One call per step: target cond + uncond + source (3 x 2 latents) while a control is on, then 2 x 2.
    assert [shape[0] for shape, _ in calls] == [6] * 6 + [4] * 4

    both = [r for r in records if r["self_on"] and r["cross_on"]]
    cross_only = [r for r in records if r["cross_on"] and not r["self_on"]]
    assert both and cross_only and not [r for r in records if r["self_on"] and not r["cross_on"]]
    if hooks == "joint":
        # Image queries and all keys are the source's while both are on; then only the text keys.
        assert all(r["q_image"] and r["k"] for r in both)
        assert all(r["k_text"] for r in cross_only) and not all(r["k_image"] for r in cross_only)
    else:
        assert all(r["q"] and r["k"] for r in both)
        crossing = [r for r in cross_only if r["queries"] != r["keys"]]
        selfing = [r for r in cross_only if r["queries"] == r["keys"]]
        assert crossing and all(r["q"] and r["k"] for r in crossing)
        assert selfing and not all(r["q"] and r["k"] for r in selfing)  # the target's own once its window is over

    plain = run(attention_guider(tiny.patcher, maps, source, target, negative, 7.0, 0.0, 0.0), maps)
    scale = latent["samples"].std().item()
    assert distance(controlled, plain) > 1e-3 * scale, name
    # Random tiny weights carry no image layout, so "closer to the source" is only reported (see the report).
    print(f"\n{name}: distance to the source, controlled / plain = {distance(controlled, latent['samples']) / distance(plain, latent['samples']):.3f}")


def test_both_controls_off_is_a_plain_cfg_edit_exactly():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = latent_for(tiny)
    source, negative, target = tiny.conditioning(1), tiny.conditioning(2), tiny.conditioning(7)
    maps = invert(tiny, latent, source, negative)
    (cfg_guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, target, negative, 7.0).result
    guider = attention_guider(tiny.patcher, maps, source, target, negative, 7.0, 0.0, 0.0)
    assert torch.equal(run(guider, maps, 2), run(cfg_guider, maps, 2))
    assert guider.applied == {}


def test_cfg_1_batches_only_the_target_and_source_conditional_passes():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = latent_for(tiny)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = pipeline.invert(tiny.patcher, source, negative, latent, 6, 1.0, "simple", 1.0, seed=0)
    counted, calls = counting_model_calls(tiny.patcher)
    output = run(attention_guider(counted, maps, source, source, negative, 1.0, 0.5, 0.5), maps)
    assert (output - latent["samples"]).abs().max().item() <= TOLERANCE
    assert [shape[0] for shape, _ in calls] == [2] * 3 + [1] * 3


# ------------------------------------------------------------------------------------------- (3) the swap on tensors


def plan_for(layout, self_on=True, cross_on=True, batch=2, text_tokens=3, image_tokens=5):
    # Chunks in the order ComfyUI's calc_cond_batch may give them: source, negative, target.
    return CallPlan(slice(2 * batch, 3 * batch), slice(0, batch), 3 * batch, self_on, cross_on, layout, text_tokens, image_tokens, collections.Counter())


def test_unet_patches_give_the_target_rows_the_source_queries_and_keys_only():
    plan = plan_for(attention_control.UNET)
    n = torch.randn(6, 5, 4)
    n_in = n.clone()
    q, context, value = attention_control.unet_self_attention_patch(n, n, n, {PLAN_KEY: plan})
    assert torch.equal(n, n_in) and value is n  # the input is not changed; values stay the target's
    assert torch.equal(q[4:], n[0:2]) and torch.equal(q[:4], n[:4]) and context is q
    text = torch.randn(6, 3, 4)
    q, keys, values = attention_control.unet_cross_attention_patch(n, text, text, {PLAN_KEY: plan})
    assert torch.equal(keys[4:], text[0:2]) and torch.equal(keys[:4], text[:4]) and values is text
    assert torch.equal(q[4:], n[0:2]) and plan.applied == {"self": 1, "cross": 1}
    off = plan_for(attention_control.UNET, self_on=False, cross_on=False)
    assert attention_control.unet_self_attention_patch(n, n, n, {PLAN_KEY: off}) == (n, n, n)
    assert attention_control.unet_cross_attention_patch(n, text, text, {}) == (n, text, text)


@pytest.mark.parametrize("skip_reshape", [False, True])
def test_joint_override_swaps_image_queries_and_keys_and_text_keys_in_their_windows(skip_reshape):
    seen = {}

    def attention(q, k, v, heads, **kwargs):
        seen.update(q=q, k=k, v=v)
        return v

    override = dit_attention_override()
    dim = 2 if skip_reshape else 1
    shape = (6, 2, 8, 4) if skip_reshape else (6, 8, 8)  # 3 text + 5 image tokens
    q, k, v = (torch.randn(shape) for _ in range(3))
    text, image = [slice(None)] * (dim - 1) + [slice(0, 3)], [slice(None)] * (dim - 1) + [slice(3, 8)]
    for self_on, cross_on in ((True, True), (False, True), (True, False)):
        plan = plan_for(Layout("joint"), self_on, cross_on)
        kwargs = {"transformer_options": {PLAN_KEY: plan}, "skip_reshape": skip_reshape}
        override(attention, q, k, v, 2, **kwargs)
        assert seen["v"] is v
        for name, tensor, swapped_parts in (("q", q, [image] if self_on else []), ("k", k, ([image] if self_on else []) + ([text] if cross_on else []))):
            result = seen[name]
            assert torch.equal(result[:4], tensor[:4]), "the source and negative chunks are untouched"
            for part in (text, image):
                expected = tensor[(slice(0, 2), *part)] if part in swapped_parts else tensor[(slice(4, 6), *part)]
                assert torch.equal(result[(slice(4, 6), *part)], expected), (name, self_on, cross_on)
    override(attention, q, k, v, 2, transformer_options={})
    assert seen["q"] is q and seen["k"] is k


def test_separate_override_tells_self_from_cross_attention_by_the_keys():
    seen = {}
    override = dit_attention_override(previous=lambda func, *args, **kwargs: seen.update(q=args[0], k=args[1]))
    image, text = torch.randn(6, 5, 4), torch.randn(6, 3, 4)
    plan = plan_for(Layout("separate"), self_on=False, cross_on=True)
    override(None, image, image, image, 1, transformer_options={PLAN_KEY: plan})
    assert seen["q"] is image and seen["k"] is image  # self-attention while only cross is on: left alone
    override(None, image, text, text, 1, transformer_options={PLAN_KEY: plan})
    assert torch.equal(seen["q"][4:], image[:2]) and torch.equal(seen["k"][4:], text[:2]) and torch.equal(seen["k"][:4], text[:4])
    with pytest.raises(RuntimeError, match="self- from its cross-attention"):
        override(None, text, text, text, 1, transformer_options={PLAN_KEY: plan})


def test_comfyui_loads_the_model_with_room_for_three_passes(monkeypatch):
    def executor(model, noise_shape, conds, model_options=None):
        return noise_shape

    assert attention_control.reserve_source_branch(executor, None, [2, 4, 8, 8], {}) == [3, 4, 8, 8]
    assert attention_control.reserve_source_branch(executor, None, [1, 16, 1, 8, 8], {})[0] == 2  # 1.5 rounded up
    estimated = []
    estimate_memory = comfy.sampler_helpers.estimate_memory
    monkeypatch.setattr(comfy.sampler_helpers, "estimate_memory", lambda model, shape, conds: estimated.append(list(shape)) or estimate_memory(model, shape, conds))
    tiny = tiny_models.sd15_eps(seed=0)
    latent = latent_for(tiny, batch=2)
    maps = invert(tiny, latent, tiny.conditioning(1), tiny.conditioning(2), steps=2)
    estimated.clear()
    run(attention_guider(tiny.patcher, maps, tiny.conditioning(1), tiny.conditioning(7), tiny.conditioning(2), 7.0, 0.2, 0.6), maps)
    assert estimated == [[3, 4, 8, 8]]  # ComfyUI doubles it: room for 6 latents, the call's 3 x 2


def test_a_controlnet_on_both_prompts_runs_on_the_source_branchs_own_latent(monkeypatch):
    """ComfyUI runs a cond's ControlNet on the latent it samples (the target's); the source branch, fed the recorded
    latents, must get residuals of those, or its attention is not the real image's."""
    import comfy.controlnet
    import nodes as comfy_core_nodes

    tiny = tiny_models.sd15_eps(seed=0)
    latent = latent_for(tiny)
    source, target, negative = tiny.conditioning(1), tiny.conditioning(7), tiny.conditioning(2)
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))  # an IMAGE, 8x the latent's size
    source, target = comfy_core_nodes.ControlNetApplyAdvanced().apply_controlnet(
        source, target, tiny_models.sd15_controlnet(tiny, seed=3), hint, 1.0, 0.0, 1.0)
    maps = invert(tiny, latent, source, negative)
    seen = []
    get_control = comfy.controlnet.ControlNet.get_control

    def recording(self, x_noisy, *args, **kwargs):  # observes the latents the ControlNet runs on, changes nothing
        seen.append(x_noisy.clone())
        return get_control(self, x_noisy, *args, **kwargs)

    monkeypatch.setattr(comfy.controlnet.ControlNet, "get_control", recording)
    edited = run(attention_guider(tiny.patcher, maps, source, target, negative, 7.0, 1.0, 1.0), maps)
    assert distance(edited, latent["samples"]) > 1e-2
    # The source branch runs at every step after the first (where both branches still share their latent).
    for step in range(1, maps.steps):
        recorded = maps.noisy_latents[step]
        assert any(torch.equal(rows, recorded) for x in seen for rows in x.split(recorded.shape[0])), f"step {step}"
    monkeypatch.undo()
    # With the source prompt on both branches, still the input back.
    back = run(attention_guider(tiny.patcher, maps, source, source, negative, 3.5, 1.0, 1.0), maps)
    assert distance(back, latent["samples"]) <= 1e-5


# ------------------------------------------------------------------------------------ (4) refusals before any call


@pytest.fixture(scope="module")
def sd15():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = latent_for(tiny)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    return tiny, latent, source, negative, invert(tiny, latent, source, negative, steps=6)


def with_tokens(conditioning, tokens):
    tensor, options = conditioning[0]
    return [[torch.cat([tensor, tensor], dim=1)[:, :tokens], dict(options)]]


def refused(model, maps, source, target, negative, self_attention=0.2, cross_attention=0.6, **run_options):
    counted, calls = counting_model_calls(model)
    with pytest.raises(EditFriendlyInputError) as error:
        guider = attention_guider(counted, maps, source, target, negative, 7.0, self_attention, cross_attention)
        run(guider, maps, **run_options)
    assert calls == [], "the refusal must come before any model call"
    return str(error.value)


def test_cross_attention_refuses_prompts_of_another_token_count(sd15):
    tiny, _, source, negative, maps = sd15
    message = refused(tiny.patcher, maps, source, with_tokens(tiny.conditioning(7), 7), negative)
    assert "6 tokens" in message and "7" in message and "one for one" in message and "cross_attention to 0" in message


def test_self_attention_alone_refuses_prompts_that_cannot_share_a_model_call(sd15):
    tiny, _, source, negative, maps = sd15
    assert "cannot share one model call" in refused(tiny.patcher, maps, source, with_tokens(tiny.conditioning(7), 7), negative, 0.5, 0.0)


def test_a_dit_refuses_another_token_count_for_any_control():
    tiny = tiny_models.flux_flow(seed=0)
    latent = latent_for(tiny)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = invert(tiny, latent, source, negative, steps=4)
    message = refused(tiny.patcher, maps, source, with_tokens(tiny.conditioning(7), 8), negative, 0.5, 0.0)
    assert "Flux runs the two prompts in one model call only at the same length" in message


def test_a_family_without_hooks_is_refused_but_may_edit_plainly():
    tiny = tiny_image_families.auraflow(seed=0)
    latent = latent_for(tiny)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = invert(tiny, latent, source, negative, steps=3)
    message = refused(tiny.patcher, maps, source, tiny.conditioning(7), negative)
    assert "AuraFlow" in message and "SD15" in message and "QwenImage" in message and "WAN21_T2V" in message
    assert run(attention_guider(tiny.patcher, maps, source, tiny.conditioning(7), negative, 7.0, 0.0, 0.0), maps).shape == latent["samples"].shape


def test_maps_of_another_model_are_refused(sd15):
    maps = sd15[4]
    sdxl = tiny_models.sdxl_eps(seed=0)
    assert "another model family" in refused(sdxl.patcher, maps, sdxl.conditioning(1), sdxl.conditioning(7), sdxl.conditioning(2))


def test_wan_refuses_a_latent_with_as_many_tokens_as_the_prompt():
    tiny = tiny_video_families.wan21_t2v(seed=0)
    latent = latent_for(tiny, frames=1, height=4, width=6)  # 1 x 2 x 3 patches = 6 tokens, as the prompt
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = invert(tiny, latent, source, negative, steps=3)
    assert "cannot tell WAN21_T2V's self- from its cross-attention" in refused(tiny.patcher, maps, source, tiny.conditioning(7), negative)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"self_attention": 1.5}, "self_attention must be between 0.0 and 1.0"),
        ({"cross_attention": -0.1}, "cross_attention must be between 0.0 and 1.0"),
        ({"target": "two entries"}, "positive holds 2 conditioning entries"),
        ({"target": "area"}, "area, mask or hook conditioning on positive"),
        ({"target": "controlnet"}, "must be on the source prompt too"),
    ],
)
def test_bad_settings_are_refused(sd15, change, words):
    tiny, _, source, negative, maps = sd15
    target = tiny.conditioning(7)
    if change.get("target") == "two entries":
        target = target + tiny.conditioning(8)
    elif change.get("target") == "area":
        target = [[target[0][0], {**target[0][1], "area": (8, 8, 0, 0)}]]
    elif change.get("target") == "controlnet":
        target = [[target[0][0], {**target[0][1], "control": object()}]]
    fractions = {"self_attention": change.get("self_attention", 0.2), "cross_attention": change.get("cross_attention", 0.6)}
    assert words in refused(tiny.patcher, maps, source, target, negative, **fractions)


def test_sigmas_that_are_not_the_maps_are_refused(sd15):
    tiny, _, source, negative, maps = sd15
    (sampler,) = custom_sampler.KSamplerSelect.execute("euler").result
    sigmas = comfy.samplers.calculate_sigmas(tiny.patcher.get_model_object("model_sampling"), "karras", 6)
    assert "of another schedule" in refused(tiny.patcher, maps, source, tiny.conditioning(7), negative, sigmas=sigmas, sampler=sampler)


def test_a_batch_that_does_not_fit_is_refused(sd15, monkeypatch):
    tiny, _, source, negative, maps = sd15
    monkeypatch.setattr(attention_control, "batch_fits", lambda *args, **kwargs: False)
    assert "does not fit in the free memory" in refused(tiny.patcher, maps, source, tiny.conditioning(7), negative)


def test_branches_that_comfyui_splits_are_refused_not_left_uncontrolled(sd15, monkeypatch):
    tiny, _, source, negative, maps = sd15
    monkeypatch.setattr(attention_control, "batch_fits", lambda *args, **kwargs: True)
    monkeypatch.setattr(comfy.samplers.model_management, "get_free_memory", lambda *args, **kwargs: 0)
    assert "separate model calls" in refused(tiny.patcher, maps, source, tiny.conditioning(7), negative)


# ------------------------------------------------------------------------------------ (5) the user's model unchanged


@pytest.mark.parametrize("build", [tiny_models.sd15_eps, tiny_models.flux_flow])
def test_the_users_model_is_left_as_it_was(build):
    tiny = build(seed=0)
    model = tiny.patcher.clone()
    user_override, wrapped = attention_probe([]), []

    def user_wrapper(apply_model, args):  # a model_function_wrapper of another node, chained behind the control's
        wrapped.append(list(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = user_override
    model.set_model_unet_function_wrapper(user_wrapper)
    before, wrappers = copy.deepcopy(model.model_options), copy.deepcopy(model.wrappers)
    latent = latent_for(tiny)
    source, negative = tiny.conditioning(1), tiny.conditioning(2)
    maps = invert(tiny, latent, source, negative, steps=4)
    guider = attention_guider(model, maps, source, tiny.conditioning(7), negative, 7.0, 0.5, 0.5)
    run(guider, maps)
    assert sorted(wrapped[0]) == [0, 1, 2] and sorted(wrapped[-1]) == [0, 1]  # with and without the source branch
    assert model.model_options == before and model.wrappers == wrappers
    assert model.model_options["transformer_options"]["optimized_attention_override"] is user_override
    assert "patches" not in model.model_options["transformer_options"]
    assert guider.model_patcher is not model
