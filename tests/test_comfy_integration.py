"""ComfyUI features that act inside sampling (weight patches as LoRA uses, area and timestep-range
conditioning) pass through the edit-friendly nodes and keep reconstruction exact."""

import nodes as comfy_builtin_nodes  # ComfyUI's own nodes.py
import tiny_models
import torch
from edit_friendly_ddpm.nodes import pipeline

TOLERANCE = 1e-4


def lora_like(patcher, strength=0.5):
    """A clone with a seeded low-rank update on every attention projection, through ComfyUI's patch mechanism."""
    patched = patcher.clone()
    generator = torch.Generator().manual_seed(7)
    patches = {}
    for key, weight in patcher.model.state_dict().items():
        if key.endswith(("to_q.weight", "to_k.weight", "to_v.weight")):
            down = torch.randn(2, weight.shape[1], generator=generator) * 0.1
            up = torch.randn(weight.shape[0], 2, generator=generator) * 0.1
            patches[key] = (up @ down,)
    assert patches and len(patched.add_patches(patches, strength)) == len(patches)
    return patched


def test_weight_patched_model_inverts_and_edits_exactly():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, height=8, width=8, seed=2)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    patched = lora_like(tiny.patcher)
    maps = pipeline.invert(patched, positive, negative, latent, 10, 3.5, "ddim_uniform", 1.0, 0)
    assert (pipeline.regenerate(patched, positive, negative, maps, 3.5, 2) - latent["samples"]).abs().max().item() <= TOLERANCE
    # The patch is live during sampling: the same maps on the unpatched model give another image.
    plain = pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 2)
    assert (plain - latent["samples"]).abs().max().item() > 1e-3
    # And ComfyUI restored the weights afterwards: the plain model is unchanged by the patched runs.
    again = pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 2)
    assert torch.equal(plain, again)


def test_area_and_timestep_range_conditioning_reconstruct_exactly():
    tiny = tiny_models.sd15_eps(seed=0)
    latent = tiny_models.latent(tiny, height=16, width=16, seed=3)
    negative = tiny.conditioning(2)
    (whole,) = comfy_builtin_nodes.ConditioningSetTimestepRange().set_range(tiny.conditioning(1), 0.0, 0.6)
    (corner,) = comfy_builtin_nodes.ConditioningSetArea().append(tiny.conditioning(5), 64, 64, 0, 0, 1.0)
    (late,) = comfy_builtin_nodes.ConditioningSetTimestepRange().set_range(tiny.conditioning(6), 0.6, 1.0)
    positive = whole + corner + late
    maps = pipeline.invert(tiny.patcher, positive, negative, latent, 12, 3.5, "ddim_uniform", 1.0, 0)
    assert (pipeline.regenerate(tiny.patcher, positive, negative, maps, 3.5, 0) - latent["samples"]).abs().max().item() <= TOLERANCE
    # The timestep ranges matter: with the late prompt dropped the replay differs.
    different = pipeline.regenerate(tiny.patcher, whole + corner, negative, maps, 3.5, 0)
    assert (different - latent["samples"]).abs().max().item() > 1e-3
