"""The toy text-to-image model: a shrunk SD1.5-style UNet and a tiny CLIP, both ComfyUI's own classes.

- UNet: `comfy.supported_models.SD15` with fewer channels and blocks (32-64-64 channels, attention at
  8x8). Two models share it: `eps`, EPS prediction on ComfyUI's standard discrete schedule (SD's
  scaled-linear betas), and `flow`, rectified flow (velocity prediction on sigma = t in [0, 1]) with ComfyUI's
  `ModelSamplingDiscreteFlow`, the sampling SD3 uses, at shift FLOW_SHIFT.
- Latent format: pixel space. The latent of an RGB image in [0, 1] is 2 * image - 1, three channels at
  32x32, so the "VAE" is exact and the latent preview factors are the identity.
- Text: a 2-layer, 32-wide CLIP text transformer (`comfy.sd1_clip.SD1ClipModel`) behind ComfyUI's SD1
  tokenizer, wrapped in `comfy.sd.CLIP`, so prompts go through CLIPTextEncode as for any checkpoint. Its
  weights are seeded and frozen; the UNet's cross-attention learns to read them.
"""

from __future__ import annotations

import pathlib
import typing

import comfy.latent_formats
import comfy.model_base
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import safetensors.torch
import torch

WEIGHTS = pathlib.Path(__file__).resolve().parent / "toy-model.safetensors"
FLOW_WEIGHTS = pathlib.Path(__file__).resolve().parent / "toy-flow-model.safetensors"
KINDS = ("eps", "flow")
FLOW_SHIFT = 1.0
"""SD3 uses 3.0 for 128x128 latents; shift grows with the number of pixels, and at 32x32 no shift (1.0) is the fit."""
TEXT_WIDTH = 32
TEXT_CONFIG = {"hidden_size": TEXT_WIDTH, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2, "projection_dim": TEXT_WIDTH}
UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "model_channels": 32,
    "num_res_blocks": [1, 1, 1],
    "channel_mult": [1, 2, 2],
    "transformer_depth": [0, 0, 1],
    "transformer_depth_output": [0, 0, 0, 0, 1, 1],
    "transformer_depth_middle": 1,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": False,
    "context_dim": TEXT_WIDTH,
    "legacy": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


class PixelLatent(comfy.latent_formats.LatentFormat):
    """RGB pixels scaled to [-1, 1]; previews show them as they are."""

    latent_channels = 3

    def __init__(self):
        self.latent_rgb_factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        self.latent_rgb_factors_bias = [0.0, 0.0, 0.0]


def to_latent(images: torch.Tensor) -> dict:
    """A LATENT for images [B, 3, H, W] in [0, 1]."""
    return {"samples": images.float() * 2 - 1}


def to_images(latent: torch.Tensor) -> torch.Tensor:
    return ((latent.float() + 1) / 2).clamp(0, 1)


class _Target:
    """What comfy.sd.CLIP builds a text encoder from: SD1's classes, with the tiny config in model_options."""

    clip = comfy.sd1_clip.SD1ClipModel
    tokenizer = comfy.sd1_clip.SD1Tokenizer
    params: typing.ClassVar[dict] = {}


def build_unet(kind: str = "eps") -> comfy.model_base.BaseModel:
    config = comfy.supported_models.SD15(dict(UNET_CONFIG))
    config.latent_format = PixelLatent()
    config.unet_config["num_heads"] = 4  # SD1.5's 8 heads would be 8 channels wide at this size
    if kind == "flow":
        config.sampling_settings = {"shift": FLOW_SHIFT, "multiplier": 1000}  # as SD3's config, timestep = 1000 t
        return comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.FLOW)
    return comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS)


def build_clip() -> comfy.sd.CLIP:
    return comfy.sd.CLIP(_Target(), model_options={"clip_l_model_config": dict(TEXT_CONFIG), "dtype": torch.float32})


def seed_clip(clip: comfy.sd.CLIP, seed: int) -> None:
    """Seeded frozen text weights: unit-variance token embeddings, scaled Gaussian matrices, unit norms."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in clip.cond_stage_model.named_parameters():
            values = torch.randn(param.shape, generator=generator)
            if "embedding" in name:
                values = values if "token" in name else 0.1 * values
            elif param.ndim >= 2:
                values = values / param.shape[1] ** 0.5
            elif "norm" in name and name.endswith("weight"):
                values = torch.ones_like(values)
            else:
                values = torch.zeros_like(values)
            param.copy_(values)


def seed_unet(model: torch.nn.Module, seed: int) -> None:
    """The starting weights of training (ComfyUI's layers skip initialisation): uniform fan-in matrices, zero biases.

    1-D weights start at one only where the name says "norm"; the GroupNorms inside Sequential blocks
    (`in_layers.0`, `out_layers.0`, `out.0`) start at zero, so the untrained network predicts zero noise
    and each residual block starts as the identity. The shipped weights were trained from this start.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                bound = 1 / param[0].numel() ** 0.5
                param.copy_((torch.rand(param.shape, generator=generator) * 2 - 1) * bound)
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()


def patcher_for(model: comfy.model_base.BaseModel) -> comfy.model_patcher.ModelPatcher:
    device = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def save(path: pathlib.Path, model: comfy.model_base.BaseModel, clip: comfy.sd.CLIP, metadata: dict) -> None:
    """One safetensors file, UNet and text encoder in float16 (small enough to ship)."""
    tensors = {f"unet.{k}": v.half().contiguous() for k, v in model.diffusion_model.state_dict().items()}
    tensors.update({f"text.{k}": v.half().contiguous() for k, v in clip.cond_stage_model.state_dict().items()})
    safetensors.torch.save_file(tensors, str(path), metadata={k: str(v) for k, v in metadata.items()})


def load(path: pathlib.Path = WEIGHTS) -> tuple[comfy.model_patcher.ModelPatcher, comfy.sd.CLIP]:
    """A trained toy model (the file's metadata says which kind) as a ComfyUI MODEL and CLIP, in float32."""
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: train it with benchmarks/train_toy.py")
    tensors = safetensors.torch.load_file(str(path))
    with safetensors.safe_open(str(path), "pt") as handle:
        kind = (handle.metadata() or {}).get("kind", "eps")
    model = build_unet(kind)
    clip = build_clip()
    unet = {k[len("unet."):]: v.float() for k, v in tensors.items() if k.startswith("unet.")}
    text = {k[len("text."):]: v.float() for k, v in tensors.items() if k.startswith("text.")}
    model.diffusion_model.load_state_dict(unet, strict=True)
    clip.cond_stage_model.load_state_dict(text, strict=True)
    model.eval()
    return patcher_for(model), clip


def encode(clip: comfy.sd.CLIP, text: str) -> list:
    """CONDITIONING for `text` from ComfyUI's own CLIPTextEncode node."""
    import nodes as comfy_builtin_nodes  # ComfyUI's nodes.py; imported late, once ComfyUI is on the path

    return comfy_builtin_nodes.CLIPTextEncode().encode(clip, text)[0]
