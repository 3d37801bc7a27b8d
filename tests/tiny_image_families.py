"""Tiny, seeded ComfyUI models of the newer image families, each from its own ComfyUI classes.

Like tiny_models: every model is its `comfy.supported_models` config and `comfy.model_base` class with ComfyUI's
own network (Flux 2, Chroma, HiDream, AuraFlow, PixArt Sigma, Lumina 2, Z-Image, Qwen-Image, OmniGen2,
HunyuanImage 2.1, Cosmos Predict2), shrunk to hidden sizes of 32 and one block of each kind, filled from a
seeded generator and wrapped in a ModelPatcher. The unet_config of each is what comfy.model_detection reads
from that family's checkpoint, with only the sizes made small.

Conditioning has the keys each model's `extra_conds` reads, as ComfyUI's text encoder for that family hands
them on (CLIPTextEncode keeps `pooled_output` even where it is None): cross-attention tensors of the tiny
width, pooled vectors, guidance for the guidance-distilled models, attention masks where the encoder returns
them, HiDream's stacked Llama hidden states.

`latent()` gives the LATENT ComfyUI hands each model: its latent format's channels, and for the formats with
`latent_dimensions == 3` (Qwen-Image and Cosmos use the Wan 2.1 VAE) a [B, C, 1, H, W] video-shaped latent, as
VAEEncode gives there.
"""

from __future__ import annotations

import comfy.latent_formats
import comfy.model_base
import comfy.supported_models
import torch

import tiny_models

TEXT_TOKENS = 6


def _text_conditioning(tokens: int, dim: int, tensors=None, values=None, attention_mask: bool = False):
    """conditioning(seed, batch) -> [[cross_attn, options]] with seeded tensors of the given per-item shapes,
    constant `values`, and (where the family's text encoder returns one) an all-ones long attention mask."""

    def conditioning(seed: int, batch: int = 1):
        generator = torch.Generator().manual_seed(seed)
        cross_attn = torch.randn(batch, tokens, dim, generator=generator)
        options = {}
        for key, shape in (tensors or {}).items():
            options[key] = None if shape is None else torch.randn((batch, *shape), generator=generator)
        options.update(values or {})
        if attention_mask:
            options["attention_mask"] = torch.ones(batch, tokens, dtype=torch.long)
        return [[cross_attn, options]]

    return conditioning


def _model(config_class, unet_config: dict, model_class, **kwargs):
    config = config_class(unet_config)
    return model_class(config, **kwargs)


def flux2(seed: int = 0) -> tiny_models.TinyModel:
    """Flux 2 (dev): 128-channel latents (the 32-channel VAE latent packed 2x2), patch size 1, global modulation,
    four RoPE axes, guidance embedding; the Mistral text encoder's three stacked layers as context."""
    unet_config = {
        "image_model": "flux2",
        "axes_dim": [4, 4, 4, 4],
        "num_heads": 2,
        "mlp_ratio": 3.0,
        "theta": 2000,
        "out_channels": 128,
        "global_modulation": True,
        "vec_in_dim": None,
        "mlp_silu_act": True,
        "qkv_bias": False,
        "ops_bias": False,
        "default_ref_method": "index",
        "ref_index_scale": 10.0,
        "in_channels": 128,
        "hidden_size": 32,
        "context_in_dim": 48,
        "patch_size": 1,
        "depth": 1,
        "depth_single_blocks": 1,
        "guidance_embed": True,
    }
    model = _model(comfy.supported_models.Flux2, unet_config, comfy.model_base.Flux2)
    conditioning = _text_conditioning(TEXT_TOKENS, 48, {"pooled_output": None}, {"guidance": 4.0}, attention_mask=True)
    return tiny_models.TinyModel("flux2", tiny_models._patcher(model, seed), 128, conditioning)


def chroma(seed: int = 0) -> tiny_models.TinyModel:
    """Chroma: Flux without the pooled vector, modulations from the distilled guidance approximator; T5 context."""
    unet_config = {
        "image_model": "chroma",
        "axes_dim": [4, 6, 6],
        "num_heads": 2,
        "mlp_ratio": 4.0,
        "theta": 10000,
        "out_channels": 64,
        "qkv_bias": True,
        "in_channels": 64,
        "hidden_size": 32,
        "context_in_dim": 32,
        "patch_size": 2,
        "depth": 1,
        "depth_single_blocks": 1,
        "in_dim": 64,
        "out_dim": 32,
        "hidden_dim": 32,
        "n_layers": 1,
    }
    model = _model(comfy.supported_models.Chroma, unet_config, comfy.model_base.Chroma)
    conditioning = _text_conditioning(TEXT_TOKENS, 32, {"pooled_output": None})
    return tiny_models.TinyModel("chroma", tiny_models._patcher(model, seed), 16, conditioning)


HIDREAM_LLAMA_LAYERS = 4


def hidream(seed: int = 0) -> tiny_models.TinyModel:
    """HiDream I1: double and single stream blocks with mixture-of-experts feed-forwards; T5 context, a pooled
    CLIP-L+G vector, and a stack of Llama 3 hidden layers (conditioning_llama3), one projected per block."""
    unet_config = {
        "image_model": "hidream",
        "attention_head_dim": 16,
        "axes_dims_rope": [8, 4, 4],
        "caption_channels": [32, 24],  # T5, Llama
        "max_resolution": [16, 16],
        "in_channels": 16,
        "llama_layers": [1, 3],
        "num_attention_heads": 2,
        "num_routed_experts": 3,
        "num_activated_experts": 2,
        "num_layers": 1,
        "num_single_layers": 1,
        "out_channels": 16,
        "patch_size": 2,
        "text_emb_dim": 16,
    }
    model = _model(comfy.supported_models.HiDream, unet_config, comfy.model_base.HiDream)
    conditioning = _text_conditioning(
        TEXT_TOKENS, 32, {"pooled_output": (16,), "conditioning_llama3": (HIDREAM_LLAMA_LAYERS, TEXT_TOKENS + 2, 24)}
    )
    return tiny_models.TinyModel("hidream", tiny_models._patcher(model, seed), 16, conditioning)


def auraflow(seed: int = 0) -> tiny_models.TinyModel:
    """AuraFlow: an MMDiT on SDXL-format 4-channel latents with register tokens and a learned position grid."""
    unet_config = {
        "max_seq": 64,
        "cond_seq_dim": 32,
        "n_double_layers": 1,
        "n_layers": 2,
        "dim": 32,
        "n_heads": 2,
        "global_conddim": 32,
        "in_channels": 4,
        "out_channels": 4,
        "patch_size": 2,
    }
    model = _model(comfy.supported_models.AuraFlow, unet_config, comfy.model_base.AuraFlow)
    conditioning = _text_conditioning(TEXT_TOKENS, 32, {"pooled_output": None})
    return tiny_models.TinyModel("auraflow", tiny_models._patcher(model, seed), 4, conditioning)


def pixart_sigma(seed: int = 0) -> tiny_models.TinyModel:
    """PixArt Sigma: a DiT with cross-attention to T5, EPS prediction (learned sigma, first half returned),
    SDXL-format latents, no micro-conditions."""
    unet_config = {
        "image_model": "pixart_sigma",
        "num_heads": 2,
        "patch_size": 2,
        "hidden_size": 32,
        "in_channels": 4,
        "depth": 1,
        "model_max_length": 8,
        "micro_condition": False,
        "caption_channels": 32,
    }
    model = _model(comfy.supported_models.PixArtSigma, unet_config, comfy.model_base.PixArt)
    conditioning = _text_conditioning(TEXT_TOKENS, 32, {"pooled_output": None})
    return tiny_models.TinyModel("pixart_sigma", tiny_models._patcher(model, seed), 4, conditioning)


def lumina2(seed: int = 0) -> tiny_models.TinyModel:
    """Lumina Image 2: NextDiT with context and noise refiners; Gemma 2 hidden states with their attention mask
    (which sets num_tokens)."""
    unet_config = {
        "image_model": "lumina2",
        "patch_size": 2,
        "in_channels": 16,
        "dim": 32,
        "cap_feat_dim": 24,
        "n_layers": 1,
        "n_refiner_layers": 1,
        "qk_norm": True,
        "n_heads": 2,
        "n_kv_heads": 1,
        "multiple_of": 16,
        "axes_dims": [4, 6, 6],
        "axes_lens": [300, 512, 512],
        "rope_theta": 10000.0,
        "ffn_dim_multiplier": 4.0,
    }
    model = _model(comfy.supported_models.Lumina2, unet_config, comfy.model_base.Lumina2)
    conditioning = _text_conditioning(TEXT_TOKENS, 24, {"pooled_output": None}, attention_mask=True)
    return tiny_models.TinyModel("lumina2", tiny_models._patcher(model, seed), 16, conditioning)


def z_image(seed: int = 0) -> tiny_models.TinyModel:
    """Z-Image (Turbo): the Lumina 2 NextDiT with Z-Image's modulation, time scale and pad tokens; Qwen 3 context.

    The one model here at width 256: below that its time embedding (256 wide) does not fit its modulation layers."""
    unet_config = {
        "image_model": "lumina2",
        "patch_size": 2,
        "in_channels": 16,
        "dim": 256,  # Z-Image modulation feeds a 256-wide time embedding to min(dim, 256)-wide adaLN layers
        "cap_feat_dim": 24,
        "n_layers": 1,
        "n_refiner_layers": 1,
        "qk_norm": True,
        "n_heads": 8,
        "n_kv_heads": 8,
        "multiple_of": 16,
        "axes_dims": [8, 12, 12],
        "axes_lens": [1536, 512, 512],
        "rope_theta": 256.0,
        "ffn_dim_multiplier": 0.25,  # 8/3 in Z-Image; small here
        "z_image_modulation": True,
        "time_scale": 1000.0,
        "pad_tokens_multiple": 32,
    }
    model = _model(comfy.supported_models.ZImage, unet_config, comfy.model_base.Lumina2)
    conditioning = _text_conditioning(TEXT_TOKENS, 24, {"pooled_output": None}, attention_mask=True)
    return tiny_models.TinyModel("z_image", tiny_models._patcher(model, seed), 16, conditioning)


def qwen_image(seed: int = 0) -> tiny_models.TinyModel:
    """Qwen-Image: a double-stream MMDiT on Wan 2.1 VAE latents ([B, 16, 1, H, W]); Qwen 2.5 VL context
    (its all-ones attention mask is dropped by the text encoder)."""
    unet_config = {
        "image_model": "qwen_image",
        "in_channels": 64,
        "out_channels": 16,
        "num_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 24,
        "axes_dims_rope": (4, 6, 6),
    }
    model = _model(comfy.supported_models.QwenImage, unet_config, comfy.model_base.QwenImage)
    conditioning = _text_conditioning(TEXT_TOKENS, 24, {"pooled_output": None})
    return tiny_models.TinyModel("qwen_image", tiny_models._patcher(model, seed), 16, conditioning)


def omnigen2(seed: int = 0) -> tiny_models.TinyModel:
    """OmniGen2: a Lumina-style DiT with reference-image refiners; Qwen 2.5 VL context with its attention mask."""
    unet_config = {
        "image_model": "omnigen2",
        "axes_dim_rope": [4, 6, 6],
        "axes_lens": [1024, 1664, 1664],
        "ffn_dim_multiplier": None,
        "hidden_size": 32,
        "in_channels": 16,
        "multiple_of": 16,
        "norm_eps": 1e-05,
        "num_attention_heads": 2,
        "num_kv_heads": 1,
        "num_layers": 1,
        "num_refiner_layers": 1,
        "out_channels": None,
        "patch_size": 2,
        "text_feat_dim": 24,
        "timestep_scale": 1000.0,
    }
    model = _model(comfy.supported_models.Omnigen2, unet_config, comfy.model_base.Omnigen2)
    conditioning = _text_conditioning(TEXT_TOKENS, 24, {"pooled_output": None}, attention_mask=True)
    return tiny_models.TinyModel("omnigen2", tiny_models._patcher(model, seed), 16, conditioning)


def hunyuan_image21(seed: int = 0) -> tiny_models.TinyModel:
    """HunyuanImage 2.1 (base): the HunyuanVideo network with 2-D 1x1 patches on the 64-channel 32x VAE latent;
    Qwen 2.5 VL context through the token refiner. Without the ByT5 glyph mapper, whose fixed 1472/2048 widths
    alone would be 7M parameters (ComfyUI only feeds it for quoted text)."""
    unet_config = {
        "image_model": "hunyuan_video",
        "in_channels": 64,
        "out_channels": 64,
        "patch_size": [1, 1],
        "vec_in_dim": None,
        "axes_dim": [8, 8],
        "meanflow": False,
        "context_in_dim": 24,
        "hidden_size": 32,
        "mlp_ratio": 4.0,
        "num_heads": 2,
        "depth": 1,
        "depth_single_blocks": 1,
        "theta": 256,
        "qkv_bias": True,
        "byt5": False,
        "guidance_embed": False,
        "use_cond_type_embedding": False,
        "vision_in_dim": None,
    }
    model = _model(comfy.supported_models.HunyuanImage21, unet_config, comfy.model_base.HunyuanImage21)
    conditioning = _text_conditioning(TEXT_TOKENS, 24, {"pooled_output": None})
    return tiny_models.TinyModel("hunyuan_image21", tiny_models._patcher(model, seed), 64, conditioning)


def cosmos_predict2(seed: int = 0) -> tiny_models.TinyModel:
    """Cosmos Predict2 text-to-image: MiniTrainDIT with 3-D RoPE and AdaLN-LoRA, the FLOW_COSMOS (EDM-style)
    sampling, Wan 2.1 VAE latents ([B, 16, 1, H, W]); old T5-XXL context with its attention mask."""
    unet_config = {
        "image_model": "cosmos_predict2",
        "max_img_h": 240,
        "max_img_w": 240,
        "max_frames": 128,
        "in_channels": 16,
        "out_channels": 16,
        "patch_spatial": 2,
        "patch_temporal": 1,
        "model_channels": 32,
        "concat_padding_mask": True,
        "crossattn_emb_channels": 24,
        "pos_emb_cls": "rope3d",
        "pos_emb_learnable": True,
        "pos_emb_interpolation": "crop",
        "min_fps": 1,
        "max_fps": 30,
        "use_adaln_lora": True,
        "adaln_lora_dim": 8,
        "num_blocks": 1,
        "num_heads": 2,
        "extra_per_block_abs_pos_emb": False,
        "rope_h_extrapolation_ratio": 4.0,
        "rope_w_extrapolation_ratio": 4.0,
        "rope_t_extrapolation_ratio": 1.0,
        "extra_h_extrapolation_ratio": 1.0,
        "extra_w_extrapolation_ratio": 1.0,
        "extra_t_extrapolation_ratio": 1.0,
        "rope_enable_fps_modulation": False,
    }
    model = _model(comfy.supported_models.CosmosT2IPredict2, unet_config, comfy.model_base.CosmosPredict2)
    conditioning = _text_conditioning(TEXT_TOKENS, 24, {"pooled_output": None}, attention_mask=True)
    return tiny_models.TinyModel("cosmos_predict2", tiny_models._patcher(model, seed), 16, conditioning)


# PixArt's position embedding divides by round(mean latent side / 64): it runs on latents whose mean side is
# at least 33 (264 pixels), so its tests use a larger latent than the others.
MIN_LATENT_SIDE = {"pixart_sigma": 33}


def latent_size(family: str, height: int, width: int) -> tuple[int, int]:
    """(height, width), grown where the family cannot run a latent that small: by a multiple of 4, so that the
    patch-2 token grid keeps the parity of its sides."""
    side = MIN_LATENT_SIDE.get(family, 0)
    if (height + width) // 2 >= side:
        return height, width
    grow = side - (height + width) // 2
    grow += -grow % 4
    return height + grow, width + grow


IMAGE_FAMILIES = {
    "flux2": flux2,
    "chroma": chroma,
    "hidream": hidream,
    "auraflow": auraflow,
    "pixart_sigma": pixart_sigma,
    "lumina2": lumina2,
    "z_image": z_image,
    "qwen_image": qwen_image,
    "omnigen2": omnigen2,
    "hunyuan_image21": hunyuan_image21,
    "cosmos_predict2": cosmos_predict2,
}


def latent_format(tiny: tiny_models.TinyModel) -> comfy.latent_formats.LatentFormat:
    return tiny.patcher.get_model_object("latent_format")


def latent(tiny: tiny_models.TinyModel, batch: int = 1, height: int = 8, width: int = 8, seed: int = 0) -> dict:
    """A LATENT standing in for a VAE-encoded image for this model: smooth seeded structure plus detail, with the
    latent format's channels, and a frame axis of 1 where the format is 3-D (Wan 2.1 VAE: [B, C, 1, H, W])."""
    image = tiny_models.latent(tiny, batch=batch, height=height, width=width, seed=seed)["samples"]
    if latent_format(tiny).latent_dimensions == 3:
        image = image.unsqueeze(2)
    return {"samples": image}
