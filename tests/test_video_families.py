"""Video models of every ComfyUI video family: real, seeded, sampled by KSampler, inverted and replayed exactly.

The models are tiny_video_families' (real ComfyUI supported_models configs, model_base classes and networks);
the latents are [B, C, T, H, W]. Wan image-to-video gets its conditioning from ComfyUI's own WanImageToVideo
node with a tiny real Wan VAE (comfy.sd.VAE sizes the Wan 2.1 VAE from its state dict, so a seeded 4-wide one loads).
"""

import comfy.ldm.wan.vae
import comfy.model_detection
import comfy.sample
import comfy.sd
import comfy_extras.nodes_wan as nodes_wan
import pytest
import tiny_models
import tiny_video_families
import torch
from edit_friendly_ddpm.nodes import pipeline

TOLERANCE = 1e-5  # as test_reconstruction
FAMILIES = list(tiny_video_families.VIDEO_FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return tiny_video_families.VIDEO_FAMILIES[request.param](seed=0)


def max_error(a, b):
    return (a - b).abs().max().item()


def test_tiny_video_models_are_fully_seeded(tiny):
    """Every tensor a checkpoint would supply is set from the seed; the computed RoPE buffers are ComfyUI's own."""
    model = tiny.patcher.model
    again = tiny_video_families.VIDEO_FAMILIES[tiny.family](seed=0).patcher.model.state_dict()
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
            assert torch.equal(tensor, again[name]), name
    for name, buffer in model.named_buffers():
        assert torch.isfinite(buffer).all(), name
    other = tiny_video_families.VIDEO_FAMILIES[tiny.family](seed=1).patcher.model.state_dict()
    weights = [name for name, tensor in model.state_dict().items() if name.startswith("diffusion_model.") and tensor.is_floating_point()]
    assert all(not torch.equal(model.state_dict()[name], other[name]) for name in weights), "another seed gives other weights"


def test_comfyui_detects_the_family_from_the_tiny_state_dict(tiny):
    """ComfyUI's checkpoint detection would load these weights as the same supported_models class."""
    detected = comfy.model_detection.model_config_from_unet(tiny.patcher.model.diffusion_model.state_dict(), "")
    assert type(detected) is type(tiny.patcher.model.model_config)
    assert detected.latent_format.latent_channels == tiny.latent_channels


def test_ksampler_samples_the_tiny_video_model(tiny):
    latent = tiny_video_families.latent(tiny, frames=3, height=8, width=8, seed=1)["samples"]
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    negative = tiny.conditioning(11)
    outputs = []
    for prompt in (10, 12):
        positive = tiny.conditioning(prompt)
        samples = comfy.sample.sample(tiny.patcher, noise, 6, 3.0, "euler", "simple", positive, negative, latent, disable_pbar=True, seed=0)
        assert samples.shape == latent.shape
        assert torch.isfinite(samples).all()
        outputs.append(samples)
    assert max_error(*outputs) > 1e-3, "the prompt does not reach the model"


# The input channels (latent + the model's own concat) and the conditioning the network gets, besides context.
MODEL_INPUTS = {
    "wan21_t2v": (16, set()),
    "wan21_i2v": (36, {"clip_fea"}),
    "wan22_14b_i2v": (36, set()),
    "wan22_5b": (48, set()),
    "hunyuan_video": (16, {"y", "guidance"}),
    "hunyuan_video15": (65, {"guidance"}),
    "ltxv": (128, {"attention_mask", "frame_rate"}),
    "mochi": (12, {"attention_mask", "num_tokens"}),
    "cosmos_predict2_video": (17, set()),  # fps stays None: no node sets a frame_rate for Cosmos
}


def test_the_conditioning_reaches_the_network(tiny):
    calls = []

    def record(forward, x, timesteps, *args, **kwargs):
        calls.append((x.shape, {key for key, value in kwargs.items() if value is not None} - {"context", "transformer_options"}))
        return forward(x, timesteps, *args, **kwargs)

    latent = tiny_video_families.latent(tiny, frames=2, seed=1)["samples"]
    hooked = tiny_models._with_unet_hook(tiny.patcher, record)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    comfy.sample.sample(hooked, torch.zeros_like(latent), 1, 3.0, "euler", "simple", positive, negative, latent, disable_pbar=True, seed=0)
    channels, keys = MODEL_INPUTS[tiny.family]
    assert calls and all(shape[1] == channels and found == keys for shape, found in calls), calls
    assert sum(shape[0] for shape, _ in calls) == 2  # the positive and the negative prompt


# (frames, height, width, cfg, batch): a single frame, an odd frame count, a non-square size, CFG off and on, a batch.
CASES = [(1, 8, 8, 3.0, 1), (2, 6, 10, 1.0, 2), (5, 6, 10, 3.0, 1)]


@pytest.mark.parametrize("frames,height,width,cfg,batch", CASES, ids=lambda v: str(v))
def test_exact_video_reconstruction(tiny, frames, height, width, cfg, batch):
    latent = tiny_video_families.latent(tiny, batch=batch, frames=frames, height=height, width=width, seed=frames)
    positive, negative = tiny.conditioning(10, batch), tiny.conditioning(11, batch)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, cfg, "simple", 1.0, seed=3)
    assert tuple(maps.latent_shape) == tuple(latent["samples"].shape)
    for skip in (0, 3):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, cfg, skip)
        assert regenerated.shape == latent["samples"].shape
        assert max_error(regenerated, latent["samples"]) <= TOLERANCE, f"skip {skip}"


# --- Wan image-to-video through ComfyUI's WanImageToVideo node ------------------------------------


def tiny_wan_vae(seed: int = 0) -> comfy.sd.VAE:
    """A real comfy.sd.VAE around ComfyUI's Wan 2.1 VAE, 4 channels wide: VAE.__init__ recognises the state dict
    (decoder.middle.0.residual.0.gamma) and reads the width from decoder.head.0.gamma."""
    network = comfy.ldm.wan.vae.WanVAE(
        dim=4, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True]
    )
    tiny_models.fill_seeded(network, seed)
    vae = comfy.sd.VAE(sd=network.state_dict())
    assert isinstance(vae.first_stage_model, comfy.ldm.wan.vae.WanVAE) and vae.latent_channels == 16
    return vae


def smooth_video(frames: int, size: int, seed: int) -> torch.Tensor:
    """IMAGE frames [T, H, W, 3] in [0, 1]: a smooth seeded picture drifting to the right."""
    coarse = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    picture = torch.nn.functional.interpolate(coarse, size=(size, size + frames), mode="bicubic", align_corners=False).clamp(0, 1)
    return torch.stack([picture[0, :, :, t:t + size] for t in range(frames)]).movedim(1, -1)


@pytest.mark.parametrize("family", ["wan21_i2v", "wan22_14b_i2v"])
def test_wan_image_to_video_inverts_exactly_and_edits_keep_the_image(family):
    tiny = tiny_video_families.VIDEO_FAMILIES[family](seed=0)
    vae = tiny_wan_vae()
    length, size = 9, 64  # 3 latent frames of 8 x 8
    video = smooth_video(length, size, seed=5)
    clip_vision = tiny_video_families.clip_vision_output(tiny_video_families.IMAGE_SEED, 1280) if family == "wan21_i2v" else None

    def image_conditioning(positive, negative):
        with torch.no_grad():
            output = nodes_wan.WanImageToVideo.execute(
                positive, negative, vae, size, size, length, 1, start_image=video[:1], clip_vision_output=clip_vision
            )
        return output.result

    positive, negative, empty = image_conditioning(tiny.conditioning(10), tiny.conditioning(11))
    edit_positive, edit_negative, _ = image_conditioning(tiny.conditioning(12), tiny.conditioning(11))
    concat_latent = positive[0][1]["concat_latent_image"]
    concat_mask = positive[0][1]["concat_mask"]
    assert concat_latent.shape == (1, 16, 3, 8, 8) and empty["samples"].shape == (1, 16, 3, 8, 8)
    with torch.no_grad():
        source = {"samples": vae.encode(video)}  # the video whose first frame is the start image
    assert source["samples"].shape == (1, 16, 3, 8, 8)

    calls = []

    def record(forward, x, timesteps, *args, **kwargs):
        calls.append((x.detach().clone(), kwargs.get("clip_fea")))
        return forward(x, timesteps, *args, **kwargs)

    hooked = tiny_models._with_unet_hook(tiny.patcher, record)
    cfg = 3.0
    maps = pipeline.invert(hooked, positive, negative, source, 8, cfg, "simple", 1.0, seed=3)
    for skip in (0, 3):
        regenerated = pipeline.regenerate(hooked, positive, negative, maps, cfg, skip)
        assert max_error(regenerated, source["samples"]) <= TOLERANCE, f"skip {skip}"
    calls_before_edit = len(calls)
    edited = pipeline.regenerate(hooked, edit_positive, edit_negative, maps, cfg, 3)
    assert len(calls) - calls_before_edit >= 8 - 3, "the edit's model calls"
    assert torch.isfinite(edited).all()
    assert max_error(edited, source["samples"]) > 1e-3, "the edit prompt changed nothing"

    # Every model call, the edit's included, got the mask and the start image's latent concatenated (36 channels),
    # and the CLIP vision tokens where the model takes them.
    latent_format = tiny.patcher.get_model_object("latent_format")
    expected_image = latent_format.process_in(concat_latent)
    expected_mask = (1.0 - concat_mask).expand(1, 4, -1, -1, -1)
    assert len(calls) > 3 * 8
    for x, clip_fea in calls:
        assert x.shape[1] == 36
        assert torch.equal(x[:, 16:20], expected_mask.expand(x.shape[0], -1, -1, -1, -1))
        assert torch.allclose(x[:, 20:], expected_image.expand(x.shape[0], -1, -1, -1, -1), atol=1e-6)
        if clip_vision is None:
            assert clip_fea is None
        else:
            assert clip_fea is not None and clip_fea.shape[-1] == 1280
            assert torch.equal(clip_fea[0], clip_vision.penultimate_hidden_states[0])
    assert float(expected_mask[:, :, 0].min()) == 1.0 and float(expected_mask[:, :, 1:].max()) == 0.0  # frame 0 is given
