"""The newer ComfyUI image families (Flux 2, Chroma, HiDream, AuraFlow, PixArt Sigma, Lumina 2, Z-Image, Qwen-Image,
OmniGen2, HunyuanImage 2.1, Cosmos Predict2): each tiny model is real and runs under ComfyUI's KSampler, and
inversion followed by regeneration gives its LATENT back, reference latents (ReferenceLatent) included.
"""

import comfy.sample
import pytest
import tiny_image_families
import tiny_models
import torch
from comfy_extras.nodes_edit_model import ReferenceLatent
from edit_friendly_ddpm.nodes import pipeline

TOLERANCE = 1e-5  # as tests/test_reconstruction.py
FAMILIES = list(tiny_image_families.IMAGE_FAMILIES)
VIDEO_FORMAT_FAMILIES = ["qwen_image", "cosmos_predict2"]  # Wan 2.1 VAE latents: latent_dimensions == 3


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request):
    return tiny_image_families.IMAGE_FAMILIES[request.param](seed=0)


def max_error(a, b):
    return (a - b).abs().max().item()


def odd_latent(tiny, batch=2, seed=1):
    """A non-square latent whose token grid (side / 2 for patch-2 models) is odd on both sides."""
    height, width = tiny_image_families.latent_size(tiny.family, 6, 10)
    return tiny_image_families.latent(tiny, batch=batch, height=height, width=width, seed=seed)


def test_tiny_models_are_fully_seeded(tiny):
    """Every tensor a checkpoint would supply is set from the seed, so a test cannot pass on leftover memory."""
    again = tiny_image_families.IMAGE_FAMILIES[tiny.family](seed=0).patcher.model.state_dict()
    state = tiny.patcher.model.state_dict()
    assert state.keys() == again.keys()
    for name, tensor in state.items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
            assert torch.equal(tensor, again[name]), name


def test_latent_is_what_comfy_hands_the_model(tiny):
    """The LATENT has the model's channels and dimensions: KSampler's adjustment leaves it as it is, and turns an
    empty 4-D latent into the same layout."""
    latent_format = tiny.patcher.get_model_object("latent_format")
    samples = odd_latent(tiny)["samples"]
    assert samples.shape[1] == latent_format.latent_channels == tiny.latent_channels
    assert samples.ndim == latent_format.latent_dimensions + 2
    assert comfy.sample.fix_empty_latent_channels(tiny.patcher, samples).shape == samples.shape
    empty = comfy.sample.fix_empty_latent_channels(tiny.patcher, torch.zeros(2, 4, *samples.shape[-2:]))
    assert empty.shape == samples.shape


def test_ksampler_runs(tiny):
    """ComfyUI's own KSampler path (comfy.sample.sample) runs the model with this conditioning, with CFG."""
    samples = odd_latent(tiny, batch=1)["samples"]
    noise = comfy.sample.prepare_noise(samples, 0)
    out = comfy.sample.sample(
        tiny.patcher, noise, 2, 3.0, "euler", "simple", tiny.conditioning(1), tiny.conditioning(2), samples, disable_pbar=True
    )
    assert out.shape == samples.shape
    assert torch.isfinite(out).all()
    assert max_error(out, samples) > 1e-3  # the sampler changed it


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_exact_reconstruction_batch_odd_size(tiny, cfg):
    latent = odd_latent(tiny)
    positive, negative = tiny.conditioning(10), tiny.conditioning(11)
    expected_shape = comfy.sample.fix_empty_latent_channels(tiny.patcher, latent["samples"]).shape
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, cfg, "simple", 1.0, seed=3)
    assert tuple(maps.latent_shape) == tuple(expected_shape)
    for skip in (0, 3):
        regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, cfg, skip)
        assert regenerated.shape == expected_shape
        assert torch.isfinite(regenerated).all()
        assert max_error(regenerated, latent["samples"]) <= TOLERANCE, f"skip {skip}"


@pytest.mark.parametrize("family", VIDEO_FORMAT_FAMILIES)
def test_image_shaped_latent_of_a_video_format_model(family):
    """A 4-D LATENT given to a model with 3-D latents is sampled as one frame, as KSampler does
    (fix_empty_latent_channels adds the frame axis), and comes back as that frame."""
    tiny = tiny_image_families.IMAGE_FAMILIES[family](seed=0)
    latent = {"samples": odd_latent(tiny)["samples"][:, :, 0]}
    assert latent["samples"].ndim == 4
    positive, negative = tiny.conditioning(10), tiny.conditioning(11)
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 8, 3.0, "simple", 1.0, seed=3)
    regenerated = pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.0, 0)
    assert regenerated.shape == comfy.sample.fix_empty_latent_channels(tiny.patcher, latent["samples"]).shape
    assert max_error(regenerated, latent["samples"].unsqueeze(2)) <= TOLERANCE


# Families whose model_base turns the conditioning's reference_latents into the network's ref_latents.
REFERENCE_FAMILIES = {
    "flux2": lambda: tiny_image_families.flux2(seed=0),
    "qwen_image": lambda: tiny_image_families.qwen_image(seed=0),
    "omnigen2": lambda: tiny_image_families.omnigen2(seed=0),
    "flux_kontext": lambda: tiny_models.flux_flow(seed=0),  # Flux 1's model_base takes reference latents (Kontext)
}


def latent_for(tiny, batch, height, width, seed):
    if tiny.family in tiny_image_families.IMAGE_FAMILIES:
        return tiny_image_families.latent(tiny, batch=batch, height=height, width=width, seed=seed)
    return tiny_models.latent(tiny, batch=batch, height=height, width=width, seed=seed)


def with_reference(conditioning, latent):
    """ComfyUI's ReferenceLatent node, as the graph runs it."""
    return ReferenceLatent.execute(conditioning, latent).result[0]


def reference_counting(patcher):
    """A clone whose diffusion model forward records the ref_latents it is given (None when not given)."""
    seen = []

    def hook(forward, x, timesteps, *args, **kwargs):
        refs = kwargs.get("ref_latents")
        seen.append(None if refs is None else [tuple(r.shape) for r in refs])
        return forward(x, timesteps, *args, **kwargs)

    return tiny_models._with_unet_hook(patcher, hook), seen


@pytest.mark.parametrize("family", list(REFERENCE_FAMILIES))
def test_reference_latents_reconstruct_and_steer_the_edit(family):
    tiny = REFERENCE_FAMILIES[family]()
    cfg = 3.0
    latent = latent_for(tiny, batch=2, height=6, width=10, seed=1)
    reference = latent_for(tiny, batch=1, height=8, width=6, seed=7)  # another image, another size
    source = with_reference(tiny.conditioning(10), reference)
    edit_plain = tiny.conditioning(12)
    edit = with_reference(edit_plain, reference)
    negative = tiny.conditioning(11)
    assert [r.shape for r in source[0][1]["reference_latents"]] == [reference["samples"].shape]

    counted, seen = reference_counting(tiny.patcher)
    maps = pipeline.invert(counted, source, negative, latent, 8, cfg, "simple", 1.0, seed=3)
    expected_refs = [(2, *reference["samples"].shape[1:])]  # the reference, repeated to the batch
    assert expected_refs in seen, seen  # the positive's model calls had the reference
    for skip in (0, 3):
        regenerated = pipeline.regenerate(tiny.patcher, source, negative, maps, cfg, skip)
        assert max_error(regenerated, latent["samples"]) <= TOLERANCE, f"skip {skip}"

    seen.clear()
    edited = pipeline.regenerate(counted, edit, negative, maps, cfg, 0)
    with_refs = [refs for refs in seen if refs is not None]
    assert with_refs and all(refs == expected_refs for refs in with_refs), seen
    assert len(with_refs) >= maps.steps  # at least every step's positive call
    unreferenced = pipeline.regenerate(tiny.patcher, edit_plain, negative, maps, cfg, 0)
    assert torch.isfinite(edited).all()
    assert max_error(edited, unreferenced) > 1e-3
    assert max_error(edited, latent["samples"]) > 1e-3
