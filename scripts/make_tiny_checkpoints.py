#!/usr/bin/env python
"""Generates tiny, seeded model files that a real ComfyUI loads with its ordinary loader nodes.

No model weights can be downloaded for tests or for a first look at the nodes, so this writes:

* ``checkpoints/tiny-sd15.safetensors``: a checkpoint that ComfyUI detects as SD1.5
  (CheckpointLoaderSimple): a UNet with SD1.5's model_channels (320) and context_dim (768) but one
  level, one res block and one transformer block; the full CLIP-L text encoder (ComfyUI builds it
  from a fixed config, so every weight must be there; stored in fp16); and a TAESD-style VAE under
  ``first_stage_model.``.
* ``diffusion_models/tiny-sd3.safetensors``: an SD3-layout MMDiT of depth 1 on 16 latent channels
  (UNETLoader), whose text inputs (context 768, pooled 768) fit the tiny CLIP-L's conditioning.
* ``vae/tiny-sd3-vae.safetensors``: a 16-channel TAESD-style VAE (VAELoader) for that model.
* ``text_encoders/tiny-clip-l.safetensors``: the tiny SD1.5 checkpoint's CLIP-L on its own (CLIPLoader).
  With type ``sd3`` ComfyUI pads its 768-wide output to 4096, the width of T5-XXL / UMT5-XXL, so it
  stands in for Wan's UMT5-XXL, whose fixed full-size config cannot be made tiny.
* ``diffusion_models/tiny-wan21.safetensors``: a Wan 2.1 text-to-video DiT (UNETLoader detects it as
  WAN21_T2V) of width 128 (one head: ComfyUI sizes the heads as width / 128), one block, 16 latent channels;
  its text input is 4096 wide because ComfyUI builds every Wan model with UMT5-XXL's width.
* ``diffusion_models/tiny-qwen-image.safetensors``: a Qwen-Image MMDiT with one block. ComfyUI sizes only
  the input channels and the block count from the weights; the width (3072) and the text width (3584,
  Qwen2.5-VL 7B's) are fixed, so this file is large (about 0.7 GB in bfloat16) although it has one block.
* ``vae/tiny-wan21-vae.safetensors``: a Wan 2.1 causal 3-D VAE (16 latent channels, 8x spatial and 4x
  temporal compression) of base width 8; ComfyUI's VAELoader sizes it from the weights. Qwen-Image uses
  the same VAE, as the real qwen_image_vae.safetensors is the Wan 2.1 VAE.

Every weight comes from a seeded generator, so the files are the same on every machine, and the
pictures they make are noise: these models test plumbing, not image quality. A file is rewritten only
when it is missing or was written by another version of this script (recorded in its metadata).

    python scripts/make_tiny_checkpoints.py MODELS_DIR [--comfyui PATH] [--only NAME]... [--force] [--verify]

NAME is one of sd15, sd3, sd3_vae, clip_l, wan, wan_vae, qwen; --only can be given several times.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
import time

VERSION = "2"
SEED = 20240617
SD15_CHECKPOINT = "tiny-sd15.safetensors"
SD3_DIFFUSION_MODEL = "tiny-sd3.safetensors"
SD3_VAE = "tiny-sd3-vae.safetensors"
CLIP_L = "tiny-clip-l.safetensors"
WAN_DIFFUSION_MODEL = "tiny-wan21.safetensors"
WAN_VAE = "tiny-wan21-vae.safetensors"
QWEN_DIFFUSION_MODEL = "tiny-qwen-image.safetensors"

SD15_UNET_CONFIG = {
    "use_checkpoint": False,
    "image_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 320,
    "num_res_blocks": [1],
    "channel_mult": [1],
    "transformer_depth": [1],
    "transformer_depth_output": [1, 1],
    "transformer_depth_middle": 1,
    "use_spatial_transformer": True,
    "use_linear_in_transformer": False,
    "context_dim": 768,
    "legacy": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

SD3_UNET_CONFIG = {
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "depth": 1,  # hidden size 64 * depth
    "input_size": None,
    "adm_in_channels": 768,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 768, "out_features": 64}},
    "num_patches": 64 * 64,
    "pos_embed_max_size": 64,
    "pos_embed_scaling_factor": None,
    "x_block_self_attn_layers": [],
}

# The keys comfy.model_detection derives from a Wan 2.1 checkpoint (dim, ffn_dim, num_layers, in_dim and out_dim
# from the weights; the rest fixed): num_heads is dim // 128, text_dim is always UMT5-XXL's 4096.
WAN_UNET_CONFIG = {
    "image_model": "wan2.1",
    "model_type": "t2v",
    "dim": 128,
    "out_dim": 16,
    "num_heads": 1,
    "ffn_dim": 256,
    "num_layers": 1,
    "patch_size": (1, 2, 2),
    "freq_dim": 256,
    "window_size": (-1, -1),
    "qk_norm": True,
    "cross_attn_norm": True,
    "eps": 1e-6,
    "in_dim": 16,
}
# Qwen-Image: model_detection reads in_channels (16 latent channels x 2 x 2 patch) and the block count only.
QWEN_UNET_CONFIG = {"image_model": "qwen_image", "in_channels": 64, "num_layers": 1}
WAN_VAE_DIM = 8  # the real Wan 2.1 VAE's is 96

DEFAULT_COMFYUI = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "ComfyUI"


def _spec_hash(name: str, spec) -> str:
    text = json.dumps({"version": VERSION, "seed": SEED, "name": name, "spec": spec}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def setup_comfyui(comfyui: str | os.PathLike | None = None) -> pathlib.Path:
    """Puts ComfyUI on sys.path (from the argument, $EF_COMFYUI or .cache/ComfyUI) and forces the CPU."""
    path = pathlib.Path(comfyui or os.environ.get("EF_COMFYUI") or DEFAULT_COMFYUI).resolve()
    if not (path / "comfy").is_dir():
        raise SystemExit(f"ComfyUI not found at {path}: pass --comfyui or set EF_COMFYUI (scripts/setup.sh builds one).")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    return path


def fill_seeded(module, seed: int) -> None:
    """Fill every parameter from a seeded generator: N(0, 1/fan_in) weights, unit norm scales, small biases.

    ComfyUI's layers skip initialisation, so without this the weights would be whatever memory held.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module_name, sub in module.named_modules():
            is_norm = "norm" in type(sub).__name__.lower()
            for name, param in sub.named_parameters(recurse=False):
                if param.numel() == 0:
                    continue
                if param.ndim == 0:
                    # TAESD's vae_scale / vae_shift, CLIP's logit_scale: identity-like values.
                    values = torch.tensor(1.0 if "scale" in name else 0.0)
                elif is_norm or (param.ndim == 1 and name in ("weight", "scale") and "norm" in module_name.lower()):
                    values = torch.ones(param.shape) if name in ("weight", "scale") else torch.zeros(param.shape)
                else:
                    values = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                    if param.ndim >= 2:
                        values = values / param[0].numel() ** 0.5
                    else:
                        values = 0.02 * values
                param.copy_(values.to(param.dtype))


def _build_sd15_state_dict():
    import comfy.sd1_clip
    import comfy.supported_models
    import comfy.taesd.taesd
    import torch

    config = comfy.supported_models.SD15(json.loads(json.dumps(SD15_UNET_CONFIG)))
    model = config.get_model({}, device="cpu")
    fill_seeded(model.diffusion_model, SEED)

    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32)
    fill_seeded(clip, SEED + 1)
    clip_sd = {k: v.to(torch.float16) for k, v in clip.state_dict().items()}

    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    fill_seeded(vae, SEED + 2)

    state_dict = model.state_dict_for_saving(clip_sd, vae.state_dict())
    # fp16 keeps the file small (most of it is CLIP-L); ComfyUI casts to its compute dtype on load.
    return {k: v.detach().to(torch.float16).contiguous() for k, v in state_dict.items()}


def _build_sd3_state_dict():
    import comfy.supported_models

    config = comfy.supported_models.SD3(json.loads(json.dumps(SD3_UNET_CONFIG)))
    model = config.get_model({}, device="cpu")
    fill_seeded(model.diffusion_model, SEED + 3)
    # UNETLoader reads bare diffusion-model keys (no model.diffusion_model. prefix).
    return {k: v.detach().contiguous() for k, v in model.diffusion_model.state_dict().items()}


def _build_clip_l_state_dict():
    """The CLIP-L of the tiny SD1.5 checkpoint (same seed, same fp16 weights) with the keys a CLIP-L file has."""
    import comfy.sd1_clip
    import torch

    clip = comfy.sd1_clip.SD1ClipModel(device="cpu", dtype=torch.float32)
    fill_seeded(clip, SEED + 1)
    return {k: v.detach().to(torch.float16).contiguous() for k, v in clip.clip_l.transformer.state_dict().items()}


def _build_diffusion_model_state_dict(config_class: str, unet_config: dict, seed: int, dtype=None):
    import comfy.supported_models

    config = getattr(comfy.supported_models, config_class)(json.loads(json.dumps(unet_config)))
    model = config.get_model({}, device="cpu")
    fill_seeded(model.diffusion_model, seed)
    return {k: v.detach().to(dtype or v.dtype).contiguous() for k, v in model.diffusion_model.state_dict().items()}


def _build_wan_vae_state_dict():
    import comfy.ldm.wan.vae

    # The configuration comfy.sd.VAE builds for a Wan 2.1 VAE, at the base width it reads from decoder.head.0.gamma.
    vae = comfy.ldm.wan.vae.WanVAE(dim=WAN_VAE_DIM, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    fill_seeded(vae, SEED + 7)
    for name, param in vae.named_parameters():
        if name.endswith("gamma"):  # RMS_norm scales: fill_seeded zeroes parameters of norms other than weight/scale
            param.data.fill_(1.0)
    return {k: v.detach().contiguous() for k, v in vae.state_dict().items()}


def _build_taesd_state_dict(latent_channels: int, seed: int):
    import comfy.taesd.taesd

    vae = comfy.taesd.taesd.TAESD(latent_channels=latent_channels)
    fill_seeded(vae, seed)
    return {k: v.detach().contiguous() for k, v in vae.state_dict().items()}


TARGETS = {
    # name -> (relative path, builder, spec for the content hash)
    "sd15": (pathlib.Path("checkpoints") / SD15_CHECKPOINT, _build_sd15_state_dict, {"unet": SD15_UNET_CONFIG, "clip": "clip_l fp16", "vae": "taesd 4"}),
    "sd3": (pathlib.Path("diffusion_models") / SD3_DIFFUSION_MODEL, _build_sd3_state_dict, {"unet": SD3_UNET_CONFIG}),
    "sd3_vae": (pathlib.Path("vae") / SD3_VAE, lambda: _build_taesd_state_dict(16, SEED + 4), {"vae": "taesd 16"}),
    "clip_l": (pathlib.Path("text_encoders") / CLIP_L, _build_clip_l_state_dict, {"clip": "clip_l fp16 of sd15"}),
    "wan": (pathlib.Path("diffusion_models") / WAN_DIFFUSION_MODEL,
            lambda: _build_diffusion_model_state_dict("WAN21_T2V", WAN_UNET_CONFIG, SEED + 5), {"unet": WAN_UNET_CONFIG}),
    "wan_vae": (pathlib.Path("vae") / WAN_VAE, _build_wan_vae_state_dict, {"vae": f"wan21 dim {WAN_VAE_DIM}"}),
    "qwen": (pathlib.Path("diffusion_models") / QWEN_DIFFUSION_MODEL,
             lambda: _build_diffusion_model_state_dict("QwenImage", QWEN_UNET_CONFIG, SEED + 6, _bfloat16()),
             {"unet": QWEN_UNET_CONFIG, "dtype": "bfloat16"}),
}


def _bfloat16():
    import torch

    return torch.bfloat16


def _existing_hash(path: pathlib.Path) -> str | None:
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("ef_tiny_hash")
    except Exception:
        return None


def make(models_dir: str | os.PathLike, only=None, force: bool = False, comfyui=None, log=print) -> dict[str, pathlib.Path]:
    """Writes the tiny model files under `models_dir` (cached); returns {target name: path}."""
    setup_comfyui(comfyui)
    from safetensors.torch import save_file

    models_dir = pathlib.Path(models_dir)
    written = {}
    for name, (relative, build, spec) in TARGETS.items():
        if only and name not in only:
            continue
        path = models_dir / relative
        digest = _spec_hash(name, spec)
        if not force and path.is_file() and _existing_hash(path) == digest:
            written[name] = path
            continue
        start = time.monotonic()
        state_dict = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        save_file(state_dict, str(partial), metadata={"ef_tiny_hash": digest, "ef_tiny_version": VERSION, "note": "seeded random weights for tests; makes noise"})
        os.replace(partial, path)
        log(f"[tiny models] wrote {path} ({path.stat().st_size / 2**20:.0f} MiB, {time.monotonic() - start:.1f} s)")
        written[name] = path
    return written


def verify(models_dir: str | os.PathLike, comfyui=None) -> None:
    """Loads the files the way ComfyUI's loader nodes do and runs an encode/sample/decode on each."""
    setup_comfyui(comfyui)
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.supported_models
    import comfy.utils
    import torch

    models_dir = pathlib.Path(models_dir)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(models_dir / TARGETS["sd15"][0]))[:4]
    assert type(model.model.model_config) is comfy.supported_models.SD15, type(model.model.model_config)
    cond = clip.encode_from_tokens_scheduled(clip.tokenize("a photo of a cat"))
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    latent = vae.encode(image)
    assert latent.shape == (1, 4, 8, 8), latent.shape
    samples = comfy.sample.sample(model, torch.randn_like(latent), 2, 5.0, "euler", "normal", cond, cond, latent, seed=0)
    decoded = vae.decode(samples)
    assert decoded.shape == (1, 64, 64, 3) and torch.isfinite(decoded).all()

    sd3 = comfy.sd.load_diffusion_model(str(models_dir / TARGETS["sd3"][0]))
    assert type(sd3.model.model_config) is comfy.supported_models.SD3, type(sd3.model.model_config)
    vae16 = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(models_dir / TARGETS["sd3_vae"][0])))
    latent16 = vae16.encode(image)
    assert latent16.shape == (1, 16, 8, 8), latent16.shape
    samples16 = comfy.sample.sample(sd3, torch.randn_like(latent16), 2, 5.0, "euler", "simple", cond, cond, latent16, seed=0)
    decoded16 = vae16.decode(samples16)
    assert decoded16.shape == (1, 64, 64, 3) and torch.isfinite(decoded16).all()

    # Wan 2.1: the CLIP-L file under type sd3 gives 4096-wide text; five frames make two latent frames.
    clip_l = comfy.sd.load_clip([str(models_dir / TARGETS["clip_l"][0])], clip_type=comfy.sd.CLIPType.SD3)
    wide = clip_l.encode_from_tokens_scheduled(clip_l.tokenize("a photo of a cat"))
    assert wide[0][0].shape[-1] == 4096, wide[0][0].shape
    wan = comfy.sd.load_diffusion_model(str(models_dir / TARGETS["wan"][0]))
    assert type(wan.model.model_config) is comfy.supported_models.WAN21_T2V, type(wan.model.model_config)
    wan_vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(models_dir / TARGETS["wan_vae"][0])))
    video = torch.rand(5, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    latent_video = wan_vae.encode(video)
    assert latent_video.shape == (1, 16, 2, 8, 8), latent_video.shape
    samples_video = comfy.sample.sample(wan, torch.randn_like(latent_video), 2, 5.0, "euler", "simple", wide, wide, latent_video, seed=0)
    decoded_video = wan_vae.decode(samples_video)
    assert decoded_video.shape == (1, 5, 64, 64, 3) and torch.isfinite(decoded_video).all(), decoded_video.shape

    # Qwen-Image: a one-frame Wan latent and 3584-wide text (Qwen2.5-VL 7B's width; seeded here).
    qwen = comfy.sd.load_diffusion_model(str(models_dir / TARGETS["qwen"][0]))
    assert type(qwen.model.model_config) is comfy.supported_models.QwenImage, type(qwen.model.model_config)
    latent_image = wan_vae.encode(image)
    assert latent_image.shape == (1, 16, 1, 8, 8), latent_image.shape
    text = [[torch.randn(1, 6, 3584, generator=torch.Generator().manual_seed(2)), {}]]
    samples_image = comfy.sample.sample(qwen, torch.randn_like(latent_image), 2, 2.5, "euler", "simple", text, text, latent_image, seed=0)
    assert torch.isfinite(wan_vae.decode(samples_image)).all()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models_dir", help="ComfyUI models folder to write into (checkpoints/, diffusion_models/, vae/)")
    parser.add_argument("--comfyui", default=None, help="ComfyUI folder (default: $EF_COMFYUI or .cache/ComfyUI)")
    parser.add_argument("--only", action="append", choices=sorted(TARGETS), help="write only this file (repeatable)")
    parser.add_argument("--force", action="store_true", help="rewrite even if an up-to-date file exists")
    parser.add_argument("--verify", action="store_true", help="load the files with ComfyUI and run a tiny sample")
    args = parser.parse_args(argv)
    paths = make(args.models_dir, only=args.only, force=args.force, comfyui=args.comfyui)
    for path in paths.values():
        print(path)
    if args.verify:
        verify(args.models_dir, comfyui=args.comfyui)
        print("[tiny models] verified: loaded by ComfyUI, sampled and decoded with finite values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
