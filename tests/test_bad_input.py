"""Every bad input gets a clear error before any model call, and no input is ever modified."""

import copy
import dataclasses

import comfy.latent_formats
import comfy.model_management
import comfy.samplers
import comfy_extras.nodes_model_advanced as model_advanced
import pytest
import tiny_models
import torch
from edit_friendly_ddpm.nodes import pipeline, steps
from edit_friendly_ddpm.nodes.comfy_nodes import EditFriendlyNoiseMapTransform
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError, check_sigmas
from tiny_models import counting_model_calls


@pytest.fixture(scope="module")
def eps():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, batch=2, height=8, width=12, seed=1)
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), latent, 8, 3.5, "ddim_uniform", 1.0, 0)
    return tiny, latent, maps


def invert_with(tiny, samples, **overrides):
    patched, calls = counting_model_calls(tiny.patcher)
    options = {"steps": 8, "cfg": 3.5, "scheduler": "ddim_uniform", "eta": 1.0, "seed": 0} | overrides
    with pytest.raises(EditFriendlyInputError) as error:
        pipeline.invert(patched, tiny.conditioning(1), tiny.conditioning(2), {"samples": samples}, **options)
    assert calls == [], "the check must come before any model call"
    return str(error.value)


def test_counting_wrapper_sees_model_calls(eps):
    tiny, latent, _ = eps
    patched, calls = counting_model_calls(tiny.patcher)
    pipeline.invert(patched, tiny.conditioning(1), tiny.conditioning(2), latent, 4, 3.5, "ddim_uniform", 1.0, 0)
    assert len(calls) == 4


@pytest.mark.parametrize(
    "samples, words",
    [
        (torch.zeros(1, 4, 8, 8), "all zeros"),
        (torch.zeros(0, 4, 8, 8), "empty"),
        (torch.full((1, 4, 8, 8), float("nan")), "NaN"),
        (torch.tensor([[[[float("inf")]]]]).expand(1, 4, 8, 8).clone(), "infinite"),
        (torch.randn(1, 16, 8, 8), "16 channels"),
        (torch.randn(1, 4, 2, 8, 8), "works on image latents [batch, channels, height, width]"),
    ],
)
def test_bad_latents_are_refused(eps, samples, words):
    assert words in invert_with(eps[0], samples)

def test_a_latent_noise_mask_on_the_inversion_is_refused(eps):
    tiny, latent, _ = eps
    patched, calls = counting_model_calls(tiny.patcher)
    masked = {"samples": latent["samples"], "noise_mask": torch.ones(1, 64, 96)}
    with pytest.raises(EditFriendlyInputError, match="Sampler's mask input"):
        pipeline.invert(patched, tiny.conditioning(1), tiny.conditioning(2), masked, 8, 3.5, "ddim_uniform", 1.0, 0)
    assert calls == []



@pytest.mark.parametrize("eta", [0.0, -0.5, 1.5])
def test_eta_out_of_range_is_refused(eps, eta):
    assert "eta must be in (0, 1]" in invert_with(eps[0], eps[1]["samples"], eta=eta)


@pytest.mark.parametrize(
    "sigmas, words",
    [
        ([14.6, 3.0, 3.0, 0.0], "repeats a sigma"),
        ([14.6, 3.0, 0.03], "does not end at sigma 0"),
        ([0.0], "gave no steps"),
        ([float("inf"), 1.0, 0.0], "non-finite"),
        ([float("nan"), 0.0], "non-finite"),  # kl_optimal at 1 step; NaN also fails the "decreasing" test
    ],
)
def test_unusable_schedules_are_refused(sigmas, words):
    with pytest.raises(EditFriendlyInputError, match=words):
        check_sigmas(torch.tensor(sigmas), "test")


def test_a_schedule_with_nan_is_refused_by_the_inversion(eps):
    # kl_optimal at one step gives [nan, 0]: a real schedule the checks must catch before any model call.
    assert "non-finite" in invert_with(eps[0], eps[1]["samples"], steps=1, scheduler="kl_optimal")


@pytest.mark.parametrize("rule, needed", [("ddpm", "100 MiB"), ("dpmpp_2m_sde", "150 MiB")])
def test_maps_larger_than_the_free_memory_are_refused(eps, monkeypatch, rule, needed):
    asked = []

    def free_memory(device=None, *args, **kwargs):
        asked.append(device)
        return 4 * 2**20

    monkeypatch.setattr(comfy.model_management, "get_free_memory", free_memory)
    # 400 steps x (2 x 4 x 64 x 64 float32 = 128 KiB) x 2 records (noisy latents, maps; dpmpp also its estimates)
    words = invert_with(eps[0], torch.randn(2, 4, 64, 64), steps=400, scheduler="simple", rule=rule)
    assert f"need {needed}" in words and "only 4 MiB is free" in words and "fewer steps or variations" in words
    assert asked == [comfy.model_management.intermediate_device()]  # the device that keeps the maps


def test_the_largest_step_count_still_gives_a_valid_schedule(eps):
    # ddim_uniform cannot give more distinct sigmas than the 1000-entry table has: it gives 999 steps.
    model_sampling = eps[0].patcher.get_model_object("model_sampling")
    sigmas = check_sigmas(comfy.samplers.calculate_sigmas(model_sampling, "ddim_uniform", 1000), "ddim_uniform")
    assert sigmas.shape[0] == 1000


@pytest.mark.parametrize("skip", [8, 9, -1])
def test_skip_out_of_range_is_refused(eps, skip):
    tiny, _, maps = eps
    patched, calls = counting_model_calls(tiny.patcher)
    with pytest.raises(EditFriendlyInputError, match="skip must be at least 0 and less than .* \\(8\\)"):
        pipeline.regenerate(patched, tiny.conditioning(1), tiny.conditioning(2), maps, 3.5, skip)
    assert calls == []


@pytest.mark.parametrize(
    "other, words",
    [
        (tiny_models.sd3_flow, "latent format: maps have SD15, model has SD3"),
        (tiny_models.sd2_v_prediction, "prediction type: maps have EPS, model has V_PREDICTION"),
    ],
)
def test_maps_from_another_model_family_are_refused(eps, other, words):
    _, _, maps = eps
    target = other(seed=0)
    patched, calls = counting_model_calls(target.patcher)
    with pytest.raises(EditFriendlyInputError, match="another model family or schedule") as error:
        pipeline.regenerate(patched, target.conditioning(1), target.conditioning(2), maps, 3.5, 0)
    assert words in str(error.value)
    assert calls == []


def test_maps_from_another_schedule_are_refused(eps):
    tiny, _, maps = eps
    (zero_snr,) = model_advanced.ModelSamplingDiscrete().patch(tiny.patcher, "eps", True)
    with pytest.raises(EditFriendlyInputError, match="noise schedule"):
        pipeline.regenerate(zero_snr, tiny.conditioning(1), tiny.conditioning(2), maps, 3.5, 0)


def test_a_model_given_other_timesteps_for_the_same_sigmas_is_refused():
    sd3 = tiny_models.sd3_flow(seed=0)
    latent = tiny_models.latent(sd3, height=8, width=8, seed=1)
    positive, negative = sd3.conditioning(1), sd3.conditioning(2)
    shift = float(sd3.patcher.get_model_object("model_sampling").shift)
    maps = pipeline.invert(sd3.patcher, positive, negative, latent, 4, 3.5, "simple", 1.0, 0)
    # AuraFlow's node keeps SD3's sigma table at the same shift but gives the model sigma, not 1000 sigma.
    (aura,) = model_advanced.ModelSamplingAuraFlow().patch_aura(sd3.patcher, shift)
    with pytest.raises(EditFriendlyInputError, match="timestep mapping") as error:
        pipeline.regenerate(aura, positive, negative, maps, 3.5, 0)
    assert "ModelSampling node" in str(error.value)
    # Maps saved before the timestep digest existed match on the other fields, as they did then.
    older = dataclasses.replace(maps, fingerprint=dataclasses.replace(maps.fingerprint, timesteps=""))
    assert (pipeline.regenerate(sd3.patcher, positive, negative, older, 3.5, 0) - latent["samples"]).abs().max() <= 1e-5


def test_a_model_that_starts_from_the_image_instead_of_noise_is_refused(eps):
    # Stands in for the image-to-image prediction types of later ComfyUI versions (IMG_TO_IMG_FLOW), whose
    # noise scaling returns the input latent: b(s) = 0, so there is no noise to invert into (it ran without a word before).
    tiny, latent, _ = eps
    model_sampling = tiny.patcher.get_model_object("model_sampling")

    class FromTheImage(type(model_sampling)):
        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return latent_image

    from_image = copy.deepcopy(model_sampling)
    from_image.__class__ = FromTheImage
    patched = tiny.patcher.clone()
    patched.add_object_patch("model_sampling", from_image)
    words = invert_with(dataclasses.replace(tiny, patcher=patched), latent["samples"])
    assert "does not noise its latents" in words and "b = 0" in words, words


def test_fingerprints_read_device_tables_without_float64_on_the_device():
    class NoFloat64(torch.Tensor):  # stands in for a table on an MPS device, which has no float64
        def double(self, *args, **kwargs):
            raise TypeError("Cannot convert a MPS Tensor to float64")

        def cpu(self, *args, **kwargs):
            return self.as_subclass(torch.Tensor).clone()

    model_sampling = tiny_models.sd15_eps(seed=0).patcher.get_model_object("model_sampling")
    expected = pipeline.ModelFingerprint.of(model_sampling, comfy.latent_formats.SD15())
    on_device = copy.deepcopy(model_sampling)
    on_device.sigmas = on_device.sigmas.as_subclass(NoFloat64)
    on_device.log_sigmas = on_device.log_sigmas.as_subclass(NoFloat64)
    assert pipeline.ModelFingerprint.of(on_device, comfy.latent_formats.SD15()) == expected
    scales = steps.signal_and_noise_scales(model_sampling, on_device.sigmas[::100])
    assert torch.equal(scales, steps.signal_and_noise_scales(model_sampling, model_sampling.sigmas[::100]))


def test_something_else_wired_as_noise_maps_is_refused(eps):
    tiny = eps[0]
    with pytest.raises(EditFriendlyInputError, match="must come from an Edit-Friendly DDPM Inversion"):
        pipeline.regenerate(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), {"samples": eps[1]["samples"]}, 3.5, 0)


def transform(maps, **overrides):
    options = {
        "dx": 0, "dy": 0, "fill": "noise", "fill_seed": 0, "color": "#ff0000",
        "color_strength": 0.0, "start_percent": 0.0, "end_percent": 1.0, "mask": None,
    } | overrides
    return EditFriendlyNoiseMapTransform.execute(maps, **options).result[0]


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"dx": 12}, "as large as the latent"),
        ({"dy": -8}, "as large as the latent"),
        ({"dx": 6, "fill": "reflect"}, "at most half the latent"),
        ({"color": "blue", "color_strength": 1.0}, "#RRGGBB"),
        ({"start_percent": 0.8, "end_percent": 0.2, "color_strength": 1.0}, "start_percent"),
        ({"mask": torch.ones(1, 64, 64), "color_strength": 1.0}, "aspect ratios differ"),
        ({"mask": torch.ones(3, 8, 12), "color_strength": 1.0}, "batch of 3"),
        ({"mask": torch.ones(4, 4, 4, 4), "color_strength": 1.0}, "must be [height, width]"),
    ],
)
def test_bad_transforms_are_refused(eps, overrides, words):
    with pytest.raises(EditFriendlyInputError) as error:
        transform(eps[2], **overrides)
    assert words in str(error.value)


def test_a_mask_of_the_image_size_is_resized_to_the_latent(eps):
    maps = eps[2]
    image_mask = torch.zeros(1, 64, 96)  # 8 image pixels per latent pixel
    image_mask[:, :, :48] = 1.0
    result = transform(maps, mask=image_mask, color_strength=1.0)
    changed = (result.maps - maps.maps).abs().sum(dim=(0, 1, 2, 3))  # per latent column
    assert changed[:5].min() > 0 and changed[7:].max() == 0


def test_no_input_is_modified(eps):
    tiny, latent, maps = eps
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    snapshot = {
        "latent": latent["samples"].clone(),
        "positive": positive[0][0].clone(),
        "maps": maps.maps.clone(),
        "noisy": maps.noisy_latents.clone(),
        "source": maps.source_latent.clone(),
    }
    pipeline.invert(tiny.patcher, positive, negative, latent, 4, 3.5, "ddim_uniform", 1.0, 0)
    pipeline.regenerate(tiny.patcher, positive, negative, maps, 5.0, 2)
    for overrides in ({"dx": 2, "dy": 1}, {"dx": -3, "fill": "wrap"}, {"dy": 2, "fill": "reflect"}, {"color_strength": 1.0}):
        assert transform(maps, **overrides) is not maps
    assert torch.equal(latent["samples"], snapshot["latent"])
    assert torch.equal(positive[0][0], snapshot["positive"])
    assert torch.equal(maps.maps, snapshot["maps"])
    assert torch.equal(maps.noisy_latents, snapshot["noisy"])
    assert torch.equal(maps.source_latent, snapshot["source"])
