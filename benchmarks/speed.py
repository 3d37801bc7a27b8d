"""Speed and memory of inversion and editing against ComfyUI's own samplers, on the same model.

    .cache/venv/bin/python benchmarks/speed.py                # tiny models + full-size SD1.5 at 512x512
    .cache/venv/bin/python benchmarks/speed.py --sizes tiny    # seconds
    .cache/venv/bin/python benchmarks/speed.py --sizes sdxl --steps 2 --no-batching   # SDXL at 1024x1024: ~20 min on CPU
    .cache/venv/bin/python benchmarks/speed.py --sizes sdxl --steps 2 --alternate-edit 2   # edit vs KSamplerAdvanced in turn

Prints wall-clock figures and ratios:
- inversion / KSampler (same model, steps, CFG, scheduler): the inversion is one sampling pass;
- edit / KSamplerAdvanced over the same remaining steps: an edit is one partial pass;
- batched CFG (ours: conditional and unconditional in one UNet call) against the reference
  implementation's structure (two separate UNet calls per step);
- several variations (seeds) inverted in one batched run against one inversion per seed;
- bytes held by the noise maps, and peak process memory during inversion and plain sampling.
Weights are random (timing needs no trained weights); the models are real ComfyUI model classes.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402, F401  (puts ComfyUI on the path, CPU mode, loads the pack)

import comfy.model_base  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402
import psutil  # noqa: E402
import tiny_models  # noqa: E402
import torch  # noqa: E402
from edit_friendly_ddpm.nodes import pipeline  # noqa: E402

comfy.utils.PROGRESS_BAR_ENABLED = False


def full_size_sd15():
    unet = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], "transformer_depth_middle": 1,
        "use_spatial_transformer": True, "use_linear_in_transformer": False, "context_dim": 768, "legacy": False,
        "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
    }
    model = comfy.model_base.BaseModel(comfy.supported_models.SD15(unet), model_type=comfy.model_base.ModelType.EPS)
    conditioning = tiny_models._cross_attn_conditioning(77, 768)
    return tiny_models.TinyModel("sd15", tiny_models._patcher(model, 0), 4, conditioning), (64, 64)


def full_size_sdxl():
    unet = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10,
        "use_spatial_transformer": True, "use_linear_in_transformer": True, "context_dim": 2048, "legacy": False,
        "adm_in_channels": 2816, "num_classes": "sequential", "use_temporal_attention": False, "use_temporal_resblock": False,
    }
    config = comfy.supported_models.SDXL(unet)
    model = comfy.model_base.SDXL(config)
    conditioning = tiny_models._cross_attn_conditioning(77, 2048, {"pooled_output": (1280,)})
    return tiny_models.TinyModel("sdxl", tiny_models._patcher(model, 0), 4, conditioning), (128, 128)


def tiny_sd15():
    return tiny_models.sd15_eps(0), (16, 16)


class PeakMemory:
    """Peak resident memory of this process while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.process = psutil.Process(os.getpid())
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.rise = self.peak - self.start


def timed(function, repeats):
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def split_cfg_batch(patcher):
    """The reference implementation's structure: conditional and unconditional UNet calls made separately."""
    patched = patcher.clone()

    def one_call_per_condition(apply_model, args):
        x, t, c = args["input"], args["timestep"], args["c"]
        outputs = []
        conditions = len(args["cond_or_uncond"])
        rows_each = x.shape[0] // conditions
        for index in range(conditions):
            rows = slice(index * rows_each, (index + 1) * rows_each)
            part = {key: (value[rows] if torch.is_tensor(value) and value.shape[:1] == x.shape[:1] else value) for key, value in c.items()}
            outputs.append(apply_model(x[rows], t[rows], **part))
        return torch.cat(outputs)

    patched.set_model_unet_function_wrapper(one_call_per_condition)
    return patched


def bench(name, build, steps, cfg, skip, repeats, batching=True):
    tiny, (height, width) = build()
    patcher = tiny.patcher
    latent = tiny_models.latent(tiny, batch=1, height=height, width=width, seed=0)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    scheduler = "ddim_uniform" if steps >= 10 else "simple"

    def ksampler():
        noise = comfy.sample.prepare_noise(latent["samples"], 0)
        return comfy.sample.sample(patcher, noise, steps, cfg, "ddpm", scheduler, positive, negative, latent["samples"], disable_pbar=True, seed=0)

    def ksampler_advanced():
        noise = comfy.sample.prepare_noise(latent["samples"], 0)
        return comfy.sample.sample(
            patcher, noise, steps, cfg, "ddpm", scheduler, positive, negative, latent["samples"],
            start_step=skip, last_step=steps, force_full_denoise=True, disable_pbar=True, seed=0,
        )

    ksampler()  # warm-up: first calls allocate and pick kernels
    with PeakMemory() as sampling_memory:
        ksampler_time, _ = timed(ksampler, repeats)
    with PeakMemory() as inversion_memory:
        inversion_time, maps = timed(lambda: pipeline.invert(patcher, positive, negative, latent, steps, cfg, scheduler, 1.0, 0), repeats)
    advanced_time, _ = timed(ksampler_advanced, repeats)
    edit_time, _ = timed(lambda: pipeline.regenerate(patcher, tiny.conditioning(3), negative, maps, cfg, skip), repeats)
    split = split_cfg_batch(patcher)
    split_time, _ = timed(lambda: pipeline.invert(split, positive, negative, latent, steps, cfg, scheduler, 1.0, 0), repeats)

    variations = 4
    if batching:
        batched_time, _ = timed(lambda: pipeline.invert(patcher, positive, negative, latent, steps, cfg, scheduler, 1.0, 0, variations), repeats)
        one_by_one_time, _ = timed(
            lambda: [pipeline.invert(patcher, positive, negative, latent, steps, cfg, scheduler, 1.0, seed) for seed in range(variations)], repeats
        )

    latent_bytes = latent["samples"].numel() * latent["samples"].element_size()
    print(f"\n== {name}: latent {tuple(latent['samples'].shape)}, {maps.steps} steps, cfg {cfg}, skip {skip}, median of {repeats}")
    print(f"KSampler (ddpm)            {ksampler_time:8.3f} s")
    print(f"inversion                  {inversion_time:8.3f} s   ratio {inversion_time / ksampler_time:.3f}  (target <= 1.05)")
    print(f"KSamplerAdvanced from {skip:<4} {advanced_time:8.3f} s")
    print(f"edit from skip {skip:<4}        {edit_time:8.3f} s   ratio {edit_time / advanced_time:.3f}  (target <= 1.05)")
    print(f"two UNet calls per step    {split_time:8.3f} s   batched is {split_time / inversion_time:.2f}x faster")
    if batching:
        print(f"{variations} variations batched  {batched_time:8.3f} s   vs one inversion per seed {one_by_one_time:.3f} s: {one_by_one_time / batched_time:.2f}x faster")
    print(f"noise maps hold            {maps.nbytes() / 2**20:8.2f} MiB = {maps.nbytes() / latent_bytes:.1f} x the latent ({2 * maps.steps + 1} latents + schedule)")
    print(f"peak memory rise: inversion {inversion_memory.rise / 2**20:.1f} MiB, plain sampling {sampling_memory.rise / 2**20:.1f} MiB")
    print(f"maps stored on             {maps.maps.device}")


def bench_edit_alternating(name, build, steps, cfg, skip, rounds):
    """Edit and KSamplerAdvanced timed in turn, edit first, in one process: for sizes where one run is one UNet call."""
    tiny, (height, width) = build()
    patcher = tiny.patcher
    latent = tiny_models.latent(tiny, batch=1, height=height, width=width, seed=0)
    negative = tiny.conditioning(2)
    scheduler = "ddim_uniform" if steps >= 10 else "simple"
    maps = pipeline.invert(patcher, tiny.conditioning(1), negative, latent, steps, cfg, scheduler, 1.0, 0)

    def ksampler_advanced():
        noise = comfy.sample.prepare_noise(latent["samples"], 0)
        return comfy.sample.sample(
            patcher, noise, steps, cfg, "ddpm", scheduler, tiny.conditioning(1), negative, latent["samples"],
            start_step=skip, last_step=steps, force_full_denoise=True, disable_pbar=True, seed=0,
        )

    print(f"\n== {name}: edit and KSamplerAdvanced from step {skip} of {steps}, alternating, {rounds} rounds")
    for _ in range(rounds):
        edit_time, _ = timed(lambda: pipeline.regenerate(patcher, tiny.conditioning(3), negative, maps, cfg, skip), 1)
        advanced_time, _ = timed(ksampler_advanced, 1)
        print(f"edit {edit_time:8.1f} s   KSamplerAdvanced {advanced_time:8.1f} s   ratio {edit_time / advanced_time:.2f}", flush=True)


def bench_parallel_inversion(name, build, steps, cfg, repeats, chunks=(1, 4, 8)):
    """Step-parallel inversion (parallel_steps) against one step at a time, on the same model and input."""
    tiny, size = build()
    latent = tiny_models.latent(tiny, batch=1, height=size[0], width=size[1], seed=0)
    positive, negative = tiny.conditioning(1), tiny.conditioning(2)
    times = {}
    for chunk in chunks:
        times[chunk], _ = timed(lambda: pipeline.invert(tiny.patcher, positive, negative, latent, steps, cfg, "ddim_uniform", 1.0, 0, parallel_steps=chunk), repeats)
    print(f"\n== {name}: step-parallel inversion, {steps} steps, cfg {cfg}, median of {repeats}")
    for chunk, seconds in times.items():
        print(f"parallel_steps {chunk:<3}        {seconds:8.3f} s   speed-up {times[chunks[0]] / seconds:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "sd15"], choices=["tiny", "sd15", "sdxl"])
    parser.add_argument("--steps", type=int, default=None, help="steps (default: 50 for tiny, 3 for full size on CPU)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-batching", action="store_true", help="skip the variations and step-parallel figures (for SDXL on a CPU)")
    parser.add_argument("--alternate-edit", type=int, default=0, metavar="ROUNDS",
                        help="only time edit and KSamplerAdvanced in turn, ROUNDS times (a check of a one-call edit ratio)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    builders = {"tiny": tiny_sd15, "sd15": full_size_sd15, "sdxl": full_size_sdxl}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    for size in args.sizes:
        steps = args.steps or (50 if size == "tiny" else 3)
        repeats = args.repeats or (3 if size == "tiny" else 1)
        skip = max(1, round(0.36 * steps)) if steps > 2 else 1
        if args.alternate_edit:
            bench_edit_alternating(size, builders[size], steps, 3.5, skip, args.alternate_edit)
            continue
        bench(size, builders[size], steps, 3.5, skip, repeats, batching=not args.no_batching)
        if not args.no_batching:
            bench_parallel_inversion(size, builders[size], steps, 3.5, repeats)


if __name__ == "__main__":
    main()
