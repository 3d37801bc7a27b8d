"""Tiny, seeded ComfyUI models of every family the pack supports, built from ComfyUI's own classes.

No weights can be downloaded here, so each model is a real ComfyUI model (its supported_models config,
model_base class, UNet/MMDiT/Flux network and ModelPatcher) shrunk to a few thousand parameters and
filled from a seeded generator (ComfyUI's layers skip weight initialisation). Conditioning is built
in ComfyUI's CONDITIONING format with tensors of the sizes each model expects.
"""

from __future__ import annotations

import dataclasses

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.supported_models
import torch

CONTEXT_DIM = 32


@dataclasses.dataclass
class TinyModel:
    family: str
    patcher: comfy.model_patcher.ModelPatcher
    latent_channels: int
    conditioning: callable
    """conditioning(seed) -> a CONDITIONING list for this model; different seeds are different prompts."""


def fill_seeded(module: torch.nn.Module, seed: int, device: str | torch.device = "cpu") -> None:
    """Give every parameter a seeded value: scaled Gaussian weights, unit norm scales, small biases.

    The values are drawn on `device` (a GPU fills a full-size model in a moment; the values differ from the CPU's).
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in _checkpoint_tensors(module):
            if param.numel() == 0:
                continue
            values = torch.randn(param.shape, generator=generator, dtype=torch.float32, device=device)
            if param.ndim >= 2:
                fan_in = param[0].numel()
                values = values / fan_in**0.5
            elif name.endswith(("norm.weight", "scale")) or ".norm" in name and name.endswith("weight"):
                values = 1.0 + 0.05 * values
            else:
                values = 0.02 * values
            param.copy_(values.to(param.dtype))


def _checkpoint_tensors(module: torch.nn.Module):
    """The tensors a checkpoint supplies: every parameter, and the diffusion model's persistent floating buffers.

    ComfyUI allocates some of those buffers empty (SD3's pos_embed), so unfilled they hold whatever the
    memory held, NaN included. Non-persistent buffers (Cosmos' RoPE ranges) are no checkpoint's: they keep the
    values ComfyUI computed.
    """
    yield from module.named_parameters()
    persistent = module.state_dict(keep_vars=True).keys()
    for name, buffer in module.named_buffers():
        if name.startswith("diffusion_model.") and buffer.is_floating_point() and name in persistent:
            yield name, buffer


def _with_unet_hook(patcher, hook):
    """A clone of `patcher` whose UNet forward goes through `hook(forward, x, timesteps, *args, **kwargs)`.

    An object patch of the diffusion model's `forward`, so that it is on only while this clone is loaded
    and, unlike a model_options wrapper, leaves the pack's batching as it would be without it.
    """
    patched = patcher.clone()
    unet = patcher.get_model_object("diffusion_model")
    forward = type(unet).forward.__get__(unet)  # the class's own, not another loaded clone's patched one

    def hooked(x, timesteps, *args, **kwargs):
        return hook(forward, x, timesteps, *args, **kwargs)

    patched.add_object_patch("diffusion_model.forward", hooked)
    return patched


def counting_model_calls(patcher):
    """A clone of `patcher` that records every UNet call (input shape, timesteps)."""
    calls = []

    def hook(forward, x, timesteps, *args, **kwargs):
        calls.append((tuple(x.shape), timesteps.detach().cpu()))
        return forward(x, timesteps, *args, **kwargs)

    return _with_unet_hook(patcher, hook), calls


def batch_dependent_rounding(patcher, relative=1e-3):
    """A clone of `patcher` whose UNet output moves by about `relative` of its largest value, differently for each batch size.

    A stand-in for float16 kernels on a GPU (none here), which pick another blocking for a larger batch and so
    round a step's estimate differently in a step-parallel batch than alone (about 1e-3 relative on an H200).
    Like those kernels it is deterministic: the same inputs in the same batch shape give the same bits.
    """

    def hook(forward, x, timesteps, *args, **kwargs):
        output = forward(x, timesteps, *args, **kwargs)
        wobble = torch.randn(output.shape, generator=torch.Generator().manual_seed(output.shape[0]), dtype=output.dtype)
        return output + relative * output.abs().amax() * wobble.to(output.device)

    return _with_unet_hook(patcher, hook)


def _patcher(model: torch.nn.Module, seed: int, device: torch.device | None = None) -> comfy.model_patcher.ModelPatcher:
    """Fill `model` with seeded values on `device` (default: the CPU, where the tests run) and wrap it for ComfyUI."""
    device = torch.device("cpu") if device is None else device
    model.to(device)
    fill_seeded(model, seed, device=device)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def _sd_unet_config(in_channels: int, adm_in_channels=None) -> dict:
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "model_channels": 32,
        "num_res_blocks": [1],
        "channel_mult": [1],
        "transformer_depth": [1],
        "transformer_depth_output": [1, 1],
        "transformer_depth_middle": 1,
        "use_spatial_transformer": True,
        "use_linear_in_transformer": False,
        "context_dim": CONTEXT_DIM,
        "legacy": False,
        "adm_in_channels": adm_in_channels,
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


def _cross_attn_conditioning(tokens: int, dim: int, extra=None):
    def conditioning(seed: int, batch: int = 1):
        generator = torch.Generator().manual_seed(seed)
        options = {}
        for key, shape in (extra or {}).items():
            options[key] = torch.randn((batch, *shape), generator=generator)
        return [[torch.randn(batch, tokens, dim, generator=generator), options]]

    return conditioning


def sd15_eps(seed: int = 0, dtype: torch.dtype | None = None, device: torch.device | None = None) -> TinyModel:
    """SD1.x layout: UNet with cross-attention, EPS prediction, the SD15 latent format (weights in `dtype` on `device`, if given)."""
    config = comfy.supported_models.SD15(_sd_unet_config(4))
    if dtype is not None:
        config.set_inference_dtype(dtype, None)
    model = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, device=device)
    return TinyModel("eps", _patcher(model, seed, device), 4, _cross_attn_conditioning(6, CONTEXT_DIM))


def sd15_controlnet(tiny: TinyModel, seed: int = 0):
    """A ControlNet for the tiny SD1.x UNet: ComfyUI's cldm network with the same layout and a 3-channel hint,
    seeded like the models (its zero convolutions too, so that it changes the UNet's output)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    config = dict(tiny.patcher.model.model_config.unet_config, hint_channels=3, dtype=torch.float32, device="cpu")
    network = comfy.cldm.cldm.ControlNet(**config, operations=comfy.ops.disable_weight_init)
    fill_seeded(network, seed)
    return comfy.controlnet.ControlNet(network, load_device=torch.device("cpu"))


def sd2_v_prediction(seed: int = 0) -> TinyModel:
    """SD2.x layout: the same UNet with v-prediction."""
    config = comfy.supported_models.SD20(_sd_unet_config(4))
    config.unet_config["num_head_channels"] = 16  # SD2's 64-channel heads would leave 0 heads at this width
    model = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.V_PREDICTION)
    return TinyModel("v_prediction", _patcher(model, seed), 4, _cross_attn_conditioning(6, CONTEXT_DIM))


def sdxl_eps(seed: int = 0) -> TinyModel:
    """SDXL layout: the UNet with linear transformer projections and the size-embedding ADM input, EPS."""
    unet_config = _sd_unet_config(4, adm_in_channels=16 + 6 * 256)  # pooled text (16 here) + six 256-d size embeddings
    unet_config.update({"num_classes": "sequential", "use_linear_in_transformer": True})
    config = comfy.supported_models.SDXL(unet_config)
    config.unet_config["num_head_channels"] = 16  # SDXL's 64-channel heads would leave 0 heads at this width
    model = comfy.model_base.SDXL(config)
    conditioning = _cross_attn_conditioning(6, CONTEXT_DIM, {"pooled_output": (16,)})
    return TinyModel("sdxl", _patcher(model, seed), 4, conditioning)


def sd3_flow(seed: int = 0) -> TinyModel:
    """SD3 layout: an MMDiT on 16-channel latents, rectified flow (CONST) with SD3's shift."""
    unet_config = {
        "in_channels": 16,
        "out_channels": 16,
        "patch_size": 2,
        "depth": 1,
        "input_size": None,
        "adm_in_channels": 16,
        "context_embedder_config": {
            "target": "torch.nn.Linear",
            "params": {"in_features": CONTEXT_DIM, "out_features": 64},
        },
        "num_patches": 256,
        "pos_embed_max_size": 16,
        "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": [],
    }
    config = comfy.supported_models.SD3(unet_config)
    model = comfy.model_base.SD3(config)
    conditioning = _cross_attn_conditioning(6, CONTEXT_DIM, {"pooled_output": (16,)})
    return TinyModel("flow_sd3", _patcher(model, seed), 16, conditioning)


def flux_flow(seed: int = 0) -> TinyModel:
    """Flux layout: double and single stream blocks on 16-channel latents, Flux's shifted flow schedule."""
    unet_config = {
        "image_model": "flux",
        "guidance_embed": True,
        "in_channels": 16,
        "out_channels": 16,
        "patch_size": 2,
        "hidden_size": 32,
        "num_heads": 2,
        "axes_dim": [4, 6, 6],
        "mlp_ratio": 2.0,
        "theta": 10000,
        "qkv_bias": True,
        "context_in_dim": CONTEXT_DIM,
        "vec_in_dim": 16,
        "depth": 1,
        "depth_single_blocks": 1,
    }
    config = comfy.supported_models.Flux(unet_config)
    model = comfy.model_base.Flux(config)
    conditioning = _cross_attn_conditioning(6, CONTEXT_DIM, {"pooled_output": (16,)})

    def with_guidance(seed: int, batch: int = 1):
        cond = conditioning(seed, batch)
        cond[0][1]["guidance"] = 3.5
        return cond

    return TinyModel("flow_flux", _patcher(model, seed), 16, with_guidance)


FAMILIES = {
    "eps": sd15_eps,
    "v_prediction": sd2_v_prediction,
    "sdxl": sdxl_eps,
    "flow_sd3": sd3_flow,
    "flow_flux": flux_flow,
}


def latent(tiny: TinyModel, batch: int = 1, height: int = 8, width: int = 8, seed: int = 0) -> dict:
    """A LATENT dict standing in for a VAE-encoded image: smooth seeded structure, not white noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, tiny.latent_channels, max(2, height // 4), max(2, width // 4), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    detail = 0.3 * torch.randn(batch, tiny.latent_channels, height, width, generator=generator)
    return {"samples": smooth + detail}
