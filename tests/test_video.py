"""Video maps on a tiny real Wan 2.1 model: lean (float16) maps, shifts in time, masks read as frames, files, refusals.

The exactness of every video family is in test_video_families.py; this file covers what video adds to the pack.
"""

import comfy_extras.nodes_custom_sampler as custom_sampler
import pytest
import tiny_image_families
import tiny_models
import tiny_video_families
import torch
from edit_friendly_ddpm.nodes import comfy_nodes, pipeline, serialization, transforms
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError, fit_mask
from tiny_models import counting_model_calls

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def wan():
    tiny = tiny_video_families.wan21_t2v(seed=0)
    latent = tiny_video_families.latent(tiny, batch=1, frames=5, height=6, width=10, seed=1)
    return tiny, latent, tiny.conditioning(1), tiny.conditioning(2)


def max_error(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize("rule,parallel_steps", [("ddpm", 1), ("dpmpp_2m_sde", 1), ("ddpm", 4), ("dpmpp_2m_sde", 4)])
def test_lean_video_maps_reconstruct_exactly(wan, rule, parallel_steps):
    tiny, latent, positive, negative = wan
    lean = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 4.0, "simple", 1.0, 3, rule=rule, parallel_steps=parallel_steps)
    assert lean.storage == "float16" and lean.residual is not None  # auto: float16 for several frames
    full = pipeline.invert(tiny.patcher, positive, negative, latent, 10, 4.0, "simple", 1.0, 3, rule=rule, precision="float32")
    assert lean.nbytes() < 0.6 * full.nbytes()
    for skip in (0, 4, 9):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, lean, 4.0, skip)
        assert regenerated.shape == latent["samples"].shape
        assert max_error(regenerated, latent["samples"]) <= TOLERANCE, f"skip {skip}"
    # The rounding stays small: lean maps are the float32 maps to about float16 precision, so edits are alike too.
    assert max_error(lean.maps[:-1], full.maps[:-1]) < 0.05 * full.maps[:-1].abs().max().item()


def test_lean_maps_of_an_image_reconstruct_and_auto_keeps_float32_for_one_frame():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, batch=2, height=8, width=12, seed=1)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    assert pipeline.invert(tiny.patcher, positive, negative, latent, 6, 3.5, "ddim_uniform", 1.0, 0).storage == "float32"
    lean = pipeline.invert(tiny.patcher, positive, negative, latent, 12, 3.5, "ddim_uniform", 1.0, 0, precision="float16")
    assert lean.maps.dtype == lean.noisy_latents.dtype == torch.float16
    for skip in (0, 5):
        assert max_error(pipeline.regenerate(tiny.patcher, positive, negative, lean, 3.5, skip), latent["samples"]) <= TOLERANCE
    # Lean maps still edit: another prompt changes the output.
    edited = pipeline.regenerate(tiny.patcher, tiny.conditioning(7), negative, lean, 3.5, 3)
    assert max_error(edited, latent["samples"]) > 1e-2


def test_video_maps_replay_through_sampler_custom_advanced(wan):
    tiny, latent, positive, negative = wan
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 4.0, "simple", 1.0, 0)
    sampler, sigmas, source = comfy_nodes.EditFriendlySamplerCustom.execute(maps, 2).result
    (guider,) = custom_sampler.CFGGuider.execute(tiny.patcher, positive, negative, 4.0).result
    (noise,) = custom_sampler.DisableNoise.execute().result
    (output, _) = custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, source).result
    assert max_error(output["samples"], latent["samples"]) <= TOLERANCE
    # The same maps with a latent of another frame count are refused, not silently replayed.
    other = {"samples": tiny_video_families.latent(tiny, frames=3, height=6, width=10)["samples"]}
    with pytest.raises(EditFriendlyInputError, match="shape"):
        custom_sampler.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, other)


def test_mask_frames_one_per_latent_frame_or_per_video_frame():
    shape = (1, 16, 3, 4, 4)
    single = fit_mask(torch.ones(4, 4), shape)
    assert single.shape == (1, 4, 4)
    video = torch.zeros(9, 4, 4)  # (3 - 1) * 4 + 1 video frames: frame 0, then two groups of 4
    video[6] = 1.0  # inside the second group: latent frame 2
    fitted = fit_mask(video, shape)
    assert fitted.shape == (3, 4, 4) and fitted[:, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert fit_mask(torch.rand(3, 8, 8), shape).shape == (3, 4, 4)
    with pytest.raises(EditFriendlyInputError, match="4 frames but the video latent has 3"):
        fit_mask(torch.ones(4, 4, 4), shape)


def test_masked_video_edit_keeps_unmasked_frames_exactly(wan):
    tiny, latent, positive, negative = wan
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 4.0, "simple", 1.0, 0)
    mask = torch.zeros(maps.frames, 6, 10)
    mask[1:3] = 1.0  # edit latent frames 1 and 2 only
    edited = pipeline.regenerate(tiny.patcher, tiny.conditioning(9), negative, maps, 4.0, 2, mask)
    source = latent["samples"]
    # Outside the mask the source comes back (up to the rounding of the latent format's scaling in and out).
    assert max_error(edited[:, :, [0, 3, 4]], source[:, :, [0, 3, 4]]) <= TOLERANCE
    assert max_error(edited[:, :, 1:3], source[:, :, 1:3]) > 1e-3


@pytest.mark.parametrize("fill", transforms.FILL_MODES)
def test_shift_in_time_moves_whole_frames(wan, fill):
    tiny, latent, positive, negative = wan
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 4.0, "simple", 1.0, 0)
    (shifted,) = comfy_nodes.EditFriendlyNoiseMapTransform.execute(maps, 0, 0, fill, 5, "#ff0000", 0.0, 0.0, 1.0, dt=2).result
    for name in ("maps", "noisy_latents"):
        before, after = getattr(maps, name), getattr(shifted, name)
        assert torch.equal(after[:, :, :, 2:], before[:, :, :, :-2]), name  # frames 0..2 are now frames 2..4
    uncovered = shifted.noisy_latents[:, :, :, :2]
    if fill == "wrap":
        assert torch.equal(uncovered, maps.noisy_latents[:, :, :, -2:])
    elif fill == "reflect":
        assert torch.equal(uncovered, maps.noisy_latents[:, :, :, [2, 1]])
    else:
        assert not torch.equal(uncovered, maps.noisy_latents[:, :, :, :2])
    assert torch.equal(shifted.residual[:, :, 2:], maps.residual[:, :, :-2])
    output = pipeline.regenerate(tiny.patcher, positive, negative, shifted, 4.0, 2)
    assert output.shape == latent["samples"].shape and torch.isfinite(output).all()
    # With wrap, a source-prompt replay of maps shifted by the full loop of frames is the input again.
    if fill == "wrap":
        looped = transforms.shift_noise_maps(maps, 0, 0, "wrap", dt=maps.frames - 1)
        looped = transforms.shift_noise_maps(looped, 0, 0, "wrap", dt=1)
        assert max_error(pipeline.regenerate(tiny.patcher, positive, negative, looped, 4.0, 0), latent["samples"]) <= TOLERANCE


def test_shift_in_time_refusals(wan):
    tiny, latent, positive, negative = wan
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 4, 4.0, "simple", 1.0, 0)
    with pytest.raises(EditFriendlyInputError, match="leaves nothing"):
        comfy_nodes.EditFriendlyNoiseMapTransform.execute(maps, 0, 0, "noise", 0, "#ff0000", 0.0, 0.0, 1.0, dt=5)
    with pytest.raises(EditFriendlyInputError, match="at most 2"):
        comfy_nodes.EditFriendlyNoiseMapTransform.execute(maps, 0, 0, "reflect", 0, "#ff0000", 0.0, 0.0, 1.0, dt=3)
    sd15 = tiny_models.sd15_eps(seed=0)
    image_maps = pipeline.invert(sd15.patcher, sd15.conditioning(1), sd15.conditioning(2), tiny_models.latent(sd15), 4, 3.5, "ddim_uniform", 1.0, 0)
    with pytest.raises(EditFriendlyInputError, match="needs video noise maps"):
        comfy_nodes.EditFriendlyNoiseMapTransform.execute(image_maps, 0, 0, "noise", 0, "#ff0000", 0.0, 0.0, 1.0, dt=1)


def test_colour_inside_a_per_frame_mask(wan):
    tiny, latent, positive, negative = wan
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 4.0, "simple", 1.0, 0)
    video_mask = torch.zeros(17, 6, 10)  # one mask per video frame: (5 - 1) * 4 + 1
    video_mask[:5] = 1.0  # video frames 0-4: latent frames 0 and 1
    (coloured,) = comfy_nodes.EditFriendlyNoiseMapTransform.execute(maps, 0, 0, "noise", 0, "#0000ff", 1.0, 0.0, 1.0, video_mask).result
    change = (coloured.maps.float() - maps.maps.float()).abs().amax(dim=(0, 1, 2, 4, 5))
    assert change[:2].min() > 0 and change[2:].max() == 0


def test_video_maps_round_trip_through_a_file(wan, tmp_path):
    tiny, latent, positive, negative = wan
    for rule in ("ddpm", "dpmpp_2m_sde"):
        maps = pipeline.invert(tiny.patcher, positive, negative, latent, 6, 4.0, "simple", 1.0, 0, rule=rule)
        path = str(tmp_path / f"{rule}.safetensors")
        serialization.save(maps, path)
        loaded = serialization.load(path)
        assert loaded.latent_shape == maps.latent_shape and loaded.storage == "float16"
        for name in ("maps", "noisy_latents", "source_latent", "residual", "source_denoised"):
            mine, theirs = getattr(maps, name), getattr(loaded, name)
            assert (mine is None and theirs is None) or (torch.equal(mine, theirs) and mine.dtype == theirs.dtype), name
        assert max_error(pipeline.regenerate(tiny.patcher, positive, negative, loaded, 4.0, 2), latent["samples"]) <= TOLERANCE
    import json
    import struct

    with open(path, "rb") as handle:
        header = json.loads(handle.read(struct.unpack("<Q", handle.read(8))[0]))
    assert header["__metadata__"]["format_version"] == "3" and header["maps"]["dtype"] == "F16"


def test_preview_picks_a_frame(wan):
    tiny, latent, positive, negative = wan
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 4, 4.0, "simple", 1.0, 0)
    first = comfy_nodes.EditFriendlyNoiseMapPreview.execute(maps, 2, 0, 0).result[0]
    last = comfy_nodes.EditFriendlyNoiseMapPreview.execute(maps, 2, 0, 4).result[0]
    assert first.shape == last.shape and not torch.equal(first, last)
    with pytest.raises(EditFriendlyInputError, match="frame 5 is outside"):
        comfy_nodes.EditFriendlyNoiseMapPreview.execute(maps, 2, 0, 5)


def invert_refused(tiny, samples):
    patched, calls = counting_model_calls(tiny.patcher)
    with pytest.raises(EditFriendlyInputError) as error:
        pipeline.invert(patched, tiny.conditioning(1), tiny.conditioning(2), {"samples": samples}, 4, 3.5, "simple", 1.0, 0)
    assert calls == [], "the check must come before any model call"
    return str(error.value)


def test_layout_refusals_come_before_any_model_call(wan):
    tiny, latent, _, _ = wan
    sd15 = tiny_models.sd15_eps(seed=0)
    assert "works on image latents" in invert_refused(sd15, torch.randn(1, 4, 3, 8, 8))
    assert "works on video latents" in invert_refused(tiny, torch.randn(1, 16, 2, 3, 6, 10))
    qwen = tiny_image_families.IMAGE_FAMILIES["qwen_image"](seed=0)
    assert "is an image model" in invert_refused(qwen, torch.randn(1, 16, 3, 6, 10))
    # Video maps on an image model are refused before any step.
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), latent, 4, 4.0, "simple", 1.0, 0)
    patched, calls = counting_model_calls(qwen.patcher)
    with pytest.raises(EditFriendlyInputError):
        pipeline.regenerate(patched, qwen.conditioning(1), qwen.conditioning(2), maps, 4.0, 0)
    assert calls == []


def test_a_lean_file_without_its_residual_is_refused(wan, tmp_path):
    import safetensors.torch

    tiny, latent, positive, negative = wan
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 4, 4.0, "simple", 1.0, 0)
    path = tmp_path / "lean.safetensors"
    serialization.save(maps, str(path))
    with safetensors.safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys() if name != "residual"}
    damaged = tmp_path / "no-residual.safetensors"
    safetensors.torch.save_file(tensors, str(damaged), metadata=metadata)
    with pytest.raises(serialization.NoiseMapsFileError, match="residual"):
        serialization.load(str(damaged))


def test_lean_maps_beyond_float16_are_refused_with_a_way_out():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = {"samples": tiny_models.latent(tiny, seed=1)["samples"] * 1e6}  # far outside any VAE's range
    with pytest.raises(EditFriendlyInputError, match="precision float32"):
        pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), latent, 4, 3.5, "ddim_uniform", 1.0, 0, precision="float16")
