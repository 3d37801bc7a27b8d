"""Tiny, seeded ComfyUI video models: Wan 2.1/2.2, HunyuanVideo (1.0 and 1.5), LTXV, Mochi, Cosmos Predict2.

Like tiny_models, each is a real ComfyUI model: the family's own `comfy.supported_models` config, whose
`get_model` picks the `comfy.model_base` class ComfyUI would load a checkpoint of that family as, with
its real network (comfy.ldm.wan, hunyuan_video, lightricks, genmo, cosmos) shrunk to hidden sizes of
32-48 and one or two blocks, every parameter and checkpoint buffer filled from a seeded generator.
Each unet_config holds the keys comfy.model_detection derives from a checkpoint of that family, so that
`model_config_from_unet` on the tiny state dict picks the same supported_models class (see the tests).

The conditioning functions give what each model's `extra_conds` reads from a CLIPTextEncode output
(cross_attn of the tiny text width; pooled_output; attention_mask; guidance; frame_rate), and the
latents are [B, C, T, H, W] with each latent format's channel count.
"""

from __future__ import annotations

import comfy.clip_vision
import comfy.model_base
import comfy.model_patcher
import comfy.supported_models
import tiny_models
import torch

TEXT_DIM = tiny_models.CONTEXT_DIM  # the text encoder's width (4096 for T5-XXL, 3584 for Qwen2.5-VL) shrunk
CLIP_VISION_TOKENS = 4  # a CLIP vision output's tokens (257 for ViT-H/14), shrunk; the width stays real (the layers fix it)


def _build(config, expected_class, seed: int) -> comfy.model_patcher.ModelPatcher:
    """The model `config.get_model` makes (checked to be `expected_class`), seeded, wrapped in a ModelPatcher."""
    model = config.get_model({})
    assert type(model) is expected_class, (type(model), expected_class)
    return tiny_models._patcher(model, seed)


def _text(seed: int, batch: int, tokens: int, dim: int = TEXT_DIM):
    generator = torch.Generator().manual_seed(seed)
    return generator, torch.randn(batch, tokens, dim, generator=generator)


def _padded_text(seed: int, batch: int, padded_to: int):
    """T5 output as Mochi's and LTXV's encoders give it: padded to a fixed length, zeros past the prompt,
    with the attention mask (1 for the prompt's tokens) in the conditioning."""
    generator, cross_attn = _text(seed, batch, padded_to)
    length = 3 + seed % (padded_to - 3)  # prompts of different lengths
    mask = torch.zeros(batch, padded_to, dtype=torch.long)
    mask[:, :length] = 1
    cross_attn[:, length:] = 0.0
    return generator, cross_attn, mask


def clip_vision_output(seed: int, width: int, batch: int = 1) -> comfy.clip_vision.Output:
    """A CLIPVisionEncode output (comfy.clip_vision.Output) with the hidden states the video models read."""
    generator = torch.Generator().manual_seed(seed)
    output = comfy.clip_vision.Output()
    output.last_hidden_state = torch.randn(batch, CLIP_VISION_TOKENS, width, generator=generator)
    output.penultimate_hidden_states = torch.randn(batch, CLIP_VISION_TOKENS, width, generator=generator)
    output.image_embeds = torch.randn(batch, width, generator=generator)
    return output


# --- Wan --------------------------------------------------------------------------------------------


def _wan_unet_config(model_type: str, in_dim: int, out_dim: int) -> dict:
    # The keys model_detection gives a Wan checkpoint; dim 128 * heads shrunk to 32 with 2 heads of 16.
    return {
        "image_model": "wan2.1",
        "model_type": model_type,
        "dim": 32,
        "out_dim": out_dim,
        "num_heads": 2,
        "ffn_dim": 64,
        "num_layers": 1,
        "patch_size": (1, 2, 2),
        "freq_dim": 256,
        "window_size": (-1, -1),
        "qk_norm": True,
        "cross_attn_norm": True,
        "eps": 1e-6,
        "in_dim": in_dim,
        "text_dim": TEXT_DIM,
    }


def _wan_conditioning(seed: int, batch: int = 1):
    # UMT5-XXL output: zeroed past the prompt, no mask in the conditioning (WanT5Model zero_out_masked).
    _, cross_attn = _text(seed, batch, 6)
    return [[cross_attn, {"pooled_output": None}]]


IMAGE_SEED = 1234  # the start image's CLIP vision output: one image, whatever the prompt


def _wan_i2v_conditioning(seed: int, batch: int = 1):
    # A CLIPVisionEncode output of the start image (crop "none") as WanImageToVideo attaches it; its
    # concat_latent_image / concat_mask come from the node itself (see test_video_families).
    cond = _wan_conditioning(seed, batch)
    cond[0][1]["clip_vision_output"] = clip_vision_output(IMAGE_SEED, 1280, batch)
    return cond


def wan21_t2v(seed: int = 0) -> tiny_models.TinyModel:
    """Wan 2.1 text-to-video (the Wan 2.2 14B T2V experts have this same layout): 16-channel Wan21 latents."""
    config = comfy.supported_models.WAN21_T2V(_wan_unet_config("t2v", 16, 16))
    return tiny_models.TinyModel("wan21_t2v", _build(config, comfy.model_base.WAN21, seed), 16, _wan_conditioning)


def wan21_i2v(seed: int = 0) -> tiny_models.TinyModel:
    """Wan 2.1 image-to-video: 36 input channels (latent + 4 mask + 16 image latent), CLIP vision tokens
    (img_emb, 1280 wide) through the i2v cross-attention."""
    config = comfy.supported_models.WAN21_I2V(_wan_unet_config("i2v", 36, 16))
    return tiny_models.TinyModel("wan21_i2v", _build(config, comfy.model_base.WAN21, seed), 16, _wan_i2v_conditioning)


def wan22_14b_i2v(seed: int = 0) -> tiny_models.TinyModel:
    """Wan 2.2 14B image-to-video experts: 36 input channels like Wan 2.1 I2V but no CLIP vision branch,
    which ComfyUI loads as WAN21_T2V (model_type t2v, Wan21 16-channel latent format)."""
    config = comfy.supported_models.WAN21_T2V(_wan_unet_config("t2v", 36, 16))
    return tiny_models.TinyModel("wan22_14b_i2v", _build(config, comfy.model_base.WAN21, seed), 16, _wan_conditioning)


def wan22_5b(seed: int = 0) -> tiny_models.TinyModel:
    """Wan 2.2 TI2V 5B: WAN22_T2V, 48-channel Wan22 latents (16x spatial VAE), model_base.WAN22."""
    config = comfy.supported_models.WAN22_T2V(_wan_unet_config("t2v", 48, 48))
    return tiny_models.TinyModel("wan22_5b", _build(config, comfy.model_base.WAN22, seed), 48, _wan_conditioning)


# --- HunyuanVideo -----------------------------------------------------------------------------------


def _hunyuan_unet_config(**changes) -> dict:
    config = {
        "image_model": "hunyuan_video",
        "in_channels": 16,
        "out_channels": 16,
        "patch_size": [1, 2, 2],
        "vec_in_dim": 16,  # CLIP-L pooled (768) shrunk
        "axes_dim": [4, 6, 6],  # sums to the head width, 32 / 2
        "meanflow": False,
        "context_in_dim": TEXT_DIM,
        "hidden_size": 32,
        "mlp_ratio": 2.0,
        "num_heads": 2,
        "depth": 1,
        "depth_single_blocks": 1,
        "theta": 256,
        "qkv_bias": True,
        "byt5": False,
        "guidance_embed": True,
        "use_cond_type_embedding": False,
        "vision_in_dim": None,
    }
    config.update(changes)
    return config


def _hunyuan_conditioning(seed: int, batch: int = 1):
    # The Llama hidden states, CLIP-L's pooled output (HunyuanVideo.encode_adm reads it as y) and the
    # embedded guidance (FluxGuidance; extra_conds defaults it to 6.0).
    generator, cross_attn = _text(seed, batch, 6)
    pooled = torch.randn(batch, 16, generator=generator)
    return [[cross_attn, {"pooled_output": pooled, "guidance": 6.0}]]


def hunyuan_video(seed: int = 0) -> tiny_models.TinyModel:
    """HunyuanVideo (1.0) text-to-video: double and single stream blocks, 16-channel latents, embedded guidance."""
    config = comfy.supported_models.HunyuanVideo(_hunyuan_unet_config())
    return tiny_models.TinyModel("hunyuan_video", _build(config, comfy.model_base.HunyuanVideo, seed), 16, _hunyuan_conditioning)


def _hunyuan15_conditioning(seed: int, batch: int = 1):
    # Qwen2.5-VL hidden states; no pooled output (the Qwen encoder gives None, and encode_adm reads the key).
    _, cross_attn = _text(seed, batch, 6)
    return [[cross_attn, {"pooled_output": None}]]


def hunyuan_video15(seed: int = 0) -> tiny_models.TinyModel:
    """HunyuanVideo 1.5: 32-channel latents, patch 1, 65 input channels (latent + 32 image latent + 1 mask,
    built by HunyuanVideo15.concat_cond), the SigLIP vision projection (1152 wide) and the condition-type
    embedding. The ByT5 glyph branch (7M parameters even when tiny, used only for quoted text) is left out."""
    unet_config = _hunyuan_unet_config(
        in_channels=65, out_channels=32, patch_size=[1, 1, 1], vec_in_dim=None, guidance_embed=False,
        use_cond_type_embedding=True, vision_in_dim=1152,
    )
    config = comfy.supported_models.HunyuanVideo15(unet_config)
    return tiny_models.TinyModel("hunyuan_video15", _build(config, comfy.model_base.HunyuanVideo15, seed), 32, _hunyuan15_conditioning)


# --- LTXV, Mochi ------------------------------------------------------------------------------------


def _ltxv_conditioning(seed: int, batch: int = 1):
    # T5-XXL padded to a fixed length with its attention mask, and LTXVConditioning's frame_rate.
    _, cross_attn, mask = _padded_text(seed, batch, 8)
    return [[cross_attn, {"pooled_output": None, "attention_mask": mask, "frame_rate": 24.0}]]


def ltxv(seed: int = 0) -> tiny_models.TinyModel:
    """LTX-Video: 128-channel latents (32x spatial, 8x temporal VAE), patch 1, RoPE on pixel coordinates."""
    unet_config = {
        "image_model": "ltxv",
        "num_layers": 1,
        "attention_head_dim": 24,  # inner width 48: LTXV's RoPE splits it into thirds of pairs
        "num_attention_heads": 2,
        "cross_attention_dim": 48,
        "caption_channels": TEXT_DIM,
        "in_channels": 128,
    }
    config = comfy.supported_models.LTXV(unet_config)
    return tiny_models.TinyModel("ltxv", _build(config, comfy.model_base.LTXV, seed), 128, _ltxv_conditioning)


def _mochi_conditioning(seed: int, batch: int = 1):
    # T5-XXL padded to a fixed length with its attention mask (extra_conds turns it into num_tokens too).
    _, cross_attn, mask = _padded_text(seed, batch, 8)
    return [[cross_attn, {"pooled_output": None, "attention_mask": mask}]]


def mochi(seed: int = 0) -> tiny_models.TinyModel:
    """Genmo Mochi preview: asymmetric joint DiT on 12-channel latents; two blocks, so that one updates the text stream.

    ComfyUI's block asserts the full-size visual MLP width (12288, a SwiGLU of 8192), the bulk of the parameters."""
    unet_config = {
        "image_model": "mochi_preview",
        "depth": 2,
        "patch_size": 2,
        "num_heads": 2,
        "hidden_size_x": 32,
        "hidden_size_y": 16,
        "mlp_ratio_x": 12288 / 32,  # AsymmetricJointBlock asserts Mochi's visual MLP width, 1536 * 8
        "mlp_ratio_y": 2.0,
        "learn_sigma": False,
        "in_channels": 12,
        "qk_norm": True,
        "qkv_bias": False,
        "out_bias": True,
        "attn_drop": 0.0,
        "patch_embed_bias": True,
        "posenc_preserve_area": True,
        "timestep_mlp_bias": True,
        "attend_to_padding": False,
        "timestep_scale": 1000.0,
        "use_t5": True,
        "t5_feat_dim": TEXT_DIM,
        "t5_token_length": 8,
        "rope_theta": 10000.0,
    }
    config = comfy.supported_models.GenmoMochi(unet_config)
    return tiny_models.TinyModel("mochi", _build(config, comfy.model_base.GenmoMochi, seed), 12, _mochi_conditioning)


# --- Cosmos Predict2 --------------------------------------------------------------------------------


def _cosmos_conditioning(seed: int, batch: int = 1):
    # The old-T5-XXL output (1024 wide, shrunk); fps stays None as CLIPTextEncode leaves it.
    _, cross_attn = _text(seed, batch, 6)
    return [[cross_attn, {"pooled_output": None}]]


def cosmos_predict2_video(seed: int = 0) -> tiny_models.TinyModel:
    """Cosmos Predict2 Video2World: 17 input channels (16 + the mask_inverted concat), padding-mask channel,
    RoPE-3D, AdaLN-LoRA, the Wan21 latent format and the COSMOS_RFLOW model sampling."""
    unet_config = {
        "image_model": "cosmos_predict2",
        "max_img_h": 240,
        "max_img_w": 240,
        "max_frames": 128,
        "in_channels": 17,
        "out_channels": 16,
        "patch_spatial": 2,
        "patch_temporal": 1,
        "model_channels": 32,
        "concat_padding_mask": True,
        "crossattn_emb_channels": TEXT_DIM,
        "pos_emb_cls": "rope3d",
        "pos_emb_learnable": True,
        "pos_emb_interpolation": "crop",
        "min_fps": 1,
        "max_fps": 30,
        "use_adaln_lora": True,
        "adaln_lora_dim": 16,
        "num_blocks": 1,
        "num_heads": 2,
        "extra_per_block_abs_pos_emb": False,
        "rope_h_extrapolation_ratio": 3.0,
        "rope_w_extrapolation_ratio": 3.0,
        "rope_t_extrapolation_ratio": 1.0,
    }
    config = comfy.supported_models.CosmosI2VPredict2(unet_config)
    return tiny_models.TinyModel("cosmos_predict2_video", _build(config, comfy.model_base.CosmosPredict2, seed), 16, _cosmos_conditioning)


VIDEO_FAMILIES = {
    "wan21_t2v": wan21_t2v,
    "wan21_i2v": wan21_i2v,
    "wan22_14b_i2v": wan22_14b_i2v,
    "wan22_5b": wan22_5b,
    "hunyuan_video": hunyuan_video,
    "hunyuan_video15": hunyuan_video15,
    "ltxv": ltxv,
    "mochi": mochi,
    "cosmos_predict2_video": cosmos_predict2_video,
}


def latent(tiny: tiny_models.TinyModel, batch: int = 1, frames: int = 3, height: int = 8, width: int = 8, seed: int = 0) -> dict:
    """A LATENT dict standing in for a VAE-encoded video, [B, C, T, H, W]: smooth seeded structure that
    also changes from frame to frame, plus a little detail."""
    latent_format = tiny.patcher.get_model_object("latent_format")
    assert latent_format.latent_dimensions == 3 and latent_format.latent_channels == tiny.latent_channels
    generator = torch.Generator().manual_seed(seed)
    channels = tiny.latent_channels
    coarse = torch.randn(batch, channels, max(2, (frames + 1) // 2), max(2, height // 4), max(2, width // 4), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(frames, height, width), mode="trilinear", align_corners=False)
    detail = 0.3 * torch.randn(batch, channels, frames, height, width, generator=generator)
    return {"samples": smooth + detail}
