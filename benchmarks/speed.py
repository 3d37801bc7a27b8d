"""Speed and memory of inversion and editing against ComfyUI's own samplers, on the same model.

    .cache/venv/bin/python benchmarks/speed.py                # tiny models + full-size SD1.5 at 512x512
    .cache/venv/bin/python benchmarks/speed.py --sizes tiny    # seconds
    .cache/venv/bin/python benchmarks/speed.py --sizes sdxl --steps 2 --parts passes   # SDXL at 1024x1024: ~20 min on CPU
    .cache/venv/bin/python benchmarks/speed.py --sizes sdxl --steps 2 --alternate-edit 2   # edit vs KSamplerAdvanced in turn
    EF_DEVICE=cuda python benchmarks/speed.py --sizes sd15 sdxl --steps 100 --dtype fp16   # on a GPU

Prints wall-clock figures and ratios:
- inversion / KSampler (same model, steps, CFG, scheduler): the inversion is one sampling pass;
- edit / KSamplerAdvanced over the same remaining steps: an edit is one partial pass;
- batched CFG (ours: conditional and unconditional in one UNet call) against the reference
  implementation's structure (two separate UNet calls per step);
- bytes held by the noise maps, and peak memory (process memory on a CPU, allocated GPU memory on a GPU)
  during inversion and plain sampling (part `passes`);
- several variations (seeds) inverted in one batched run against one inversion per seed (`variations`);
- step-parallel inversion (`parallel_steps`) against one step at a time and KSampler (`parallel`);
- reconstruction error (inversion, then regeneration with the same prompt and CFG) for both step rules,
  one step at a time and step-parallel, in the model's dtype (`reconstruction`);
- the two roundings a step-parallel replay has to undo (docs/math.md): drawn latents that mean + tau z
  cannot reproduce, and the model's estimates in a batch of several steps against one step per call
  (`rounding`);
- the edit's and KSamplerAdvanced's cost per step outside the UNet, which is skipped (`overhead`).
Weights are random (timing needs no trained weights); the models are real ComfyUI model classes, built
and filled on the device ComfyUI picks (EF_DEVICE=cuda lets it pick the GPU; the default is the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402, F401  (puts ComfyUI on the path, on EF_DEVICE (default cpu), loads the pack)

import comfy.model_base  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402
import baselines  # noqa: E402
import psutil  # noqa: E402
import tiny_models  # noqa: E402
import torch  # noqa: E402
from edit_friendly_ddpm.nodes import pipeline  # noqa: E402
from edit_friendly_ddpm.nodes import steps as step_math  # noqa: E402

comfy.utils.PROGRESS_BAR_ENABLED = False
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PARTS = ("passes", "variations", "parallel", "reconstruction", "rounding", "overhead")


def on_device(model: comfy.model_base.BaseModel) -> comfy.model_patcher.ModelPatcher:
    """A random-weight model filled from a seeded generator on ComfyUI's device, wrapped for ComfyUI."""
    return tiny_models._patcher(model, 0, comfy.model_management.get_torch_device())


def full_size_sd15(dtype):
    unet = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1], "transformer_depth_middle": 1,
        "use_spatial_transformer": True, "use_linear_in_transformer": False, "context_dim": 768, "legacy": False,
        "adm_in_channels": None, "use_temporal_attention": False, "use_temporal_resblock": False,
    }
    config = comfy.supported_models.SD15(unet)
    config.set_inference_dtype(dtype, None)
    model = comfy.model_base.BaseModel(config, model_type=comfy.model_base.ModelType.EPS, device=comfy.model_management.get_torch_device())
    conditioning = tiny_models._cross_attn_conditioning(77, 768)
    return tiny_models.TinyModel("sd15", on_device(model), 4, conditioning), (64, 64)


def full_size_sdxl(dtype):
    unet = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10,
        "use_spatial_transformer": True, "use_linear_in_transformer": True, "context_dim": 2048, "legacy": False,
        "adm_in_channels": 2816, "num_classes": "sequential", "use_temporal_attention": False, "use_temporal_resblock": False,
    }
    config = comfy.supported_models.SDXL(unet)
    config.set_inference_dtype(dtype, None)
    model = comfy.model_base.SDXL(config, device=comfy.model_management.get_torch_device())
    conditioning = tiny_models._cross_attn_conditioning(77, 2048, {"pooled_output": (1280,)})
    return tiny_models.TinyModel("sdxl", on_device(model), 4, conditioning), (128, 128)


def tiny_sd15(dtype):
    return tiny_models.sd15_eps(0, dtype, comfy.model_management.get_torch_device()), (16, 16)


class PeakMemory:
    """Peak memory rise while the block runs: allocated GPU memory on a GPU, else resident process memory sampled every 5 ms."""

    def __enter__(self):
        self.device = comfy.model_management.get_torch_device()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
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
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.running = False
            self.thread.join()
        self.rise = self.peak - self.start


def peak_allocated_bytes(function) -> int:
    """Peak rise of the memory torch allocates while `function` runs: the allocator's peak on a GPU, else the
    allocation trace of torch's profiler (exact where sampled process memory is noise, for models of a few MiB)."""
    if comfy.model_management.get_torch_device().type == "cuda":
        with PeakMemory() as memory:  # on a GPU it reads the allocator's peak
            function()
        return memory.rise
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "trace.json")
        profiler.export_chrome_trace(path)
        with open(path) as trace:
            events = [event["args"] for event in json.load(trace)["traceEvents"] if event.get("name") == "[memory]"]
    if not events:
        return 0
    start = events[0]["Total Allocated"] - events[0]["Bytes"]
    return max(event["Total Allocated"] for event in events) - start


def synchronize():
    device = comfy.model_management.get_torch_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, repeats, warm_up=False):
    """Median wall-clock seconds of `repeats` calls (the device synchronised around each) and the last result.

    With `warm_up` one untimed call goes first (on a GPU a new batch size picks and loads new kernels).
    """
    times = []
    result = function() if warm_up else None
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        result = function()
        synchronize()
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


class Setup:
    """One model, input latent, prompts and schedule shared by every part of a size's benchmark."""

    def __init__(self, name, build, dtype, steps, cfg, skip):
        self.name, self.steps, self.cfg, self.skip = name, steps, cfg, skip
        tiny, (height, width) = build(dtype)
        self.patcher, self.tiny = tiny.patcher, tiny
        self.latent = tiny_models.latent(tiny, batch=1, height=height, width=width, seed=0)
        self.positive, self.negative, self.target = tiny.conditioning(1), tiny.conditioning(2), tiny.conditioning(3)
        self.scheduler = "ddim_uniform" if steps >= 10 else "simple"
        self.on_gpu = comfy.model_management.get_torch_device().type != "cpu"
        # Load the model (and on a GPU its first kernels) before anything is timed, so that no part's first
        # figure carries the loading.
        baselines.ksampler(self.patcher, self.positive, self.negative, self.latent["samples"], 1, cfg, "simple", 0)

    def ksampler(self, start_step=0, patcher=None):
        """KSampler, or KSamplerAdvanced from `start_step`, on this setup's model, input and prompts."""
        return baselines.ksampler(
            patcher or self.patcher, self.positive, self.negative, self.latent["samples"], self.steps, self.cfg, self.scheduler, 0, start_step
        )

    def invert(self, patcher=None, steps=None, seed=0, **options):
        return pipeline.invert(
            patcher or self.patcher, self.positive, self.negative, self.latent, steps or self.steps, self.cfg, self.scheduler, 1.0, seed, **options
        )

    def edit(self, maps, patcher=None):
        return pipeline.regenerate(patcher or self.patcher, self.target, self.negative, maps, self.cfg, self.skip)

    def reconstruction_error(self, maps):
        regenerated = pipeline.regenerate(self.patcher, self.positive, self.negative, maps, self.cfg, 0)
        return baselines.reconstruction_error(regenerated, self.latent["samples"])


def bench_passes(setup, repeats):
    """Inversion and edit against KSampler and KSamplerAdvanced, batched against split CFG, memory."""
    setup.ksampler()  # warm-up: first calls allocate and pick kernels
    with PeakMemory() as sampling_memory:
        ksampler_time, _ = timed(setup.ksampler, repeats)
    with PeakMemory() as inversion_memory:
        inversion_time, maps = timed(setup.invert, repeats)
    advanced_time, _ = timed(lambda: setup.ksampler(start_step=setup.skip), repeats)
    edit_time, _ = timed(lambda: setup.edit(maps), repeats)
    split = split_cfg_batch(setup.patcher)
    split_time, _ = timed(lambda: setup.invert(split), repeats, warm_up=setup.on_gpu)

    samples = setup.latent["samples"]
    latent_bytes = samples.numel() * samples.element_size()
    skip = setup.skip
    print(f"KSampler (ddpm)            {ksampler_time:8.3f} s")
    print(f"inversion                  {inversion_time:8.3f} s   ratio {inversion_time / ksampler_time:.3f}  (target <= 1.05)")
    print(f"KSamplerAdvanced from {skip:<4} {advanced_time:8.3f} s")
    print(f"edit from skip {skip:<4}        {edit_time:8.3f} s   ratio {edit_time / advanced_time:.3f}  (target <= 1.05)")
    print(f"two UNet calls per step    {split_time:8.3f} s   batched is {split_time / inversion_time:.2f}x faster")
    print(f"noise maps hold            {maps.nbytes() / 2**20:8.2f} MiB = {maps.nbytes() / latent_bytes:.1f} x the latent ({2 * maps.steps + 1} latents + schedule)")
    print(f"peak memory rise: inversion {inversion_memory.rise / 2**20:.1f} MiB, plain sampling {sampling_memory.rise / 2**20:.1f} MiB")
    print(f"maps stored on             {maps.maps.device}", flush=True)


def bench_variations(setup, repeats, variations=4):
    """Several seeds inverted in one batched run against one inversion per seed."""
    batched_time, _ = timed(lambda: setup.invert(variations=variations), repeats, warm_up=setup.on_gpu)
    one_by_one_time, _ = timed(lambda: [setup.invert(seed=seed) for seed in range(variations)], repeats)
    print(f"{variations} variations batched  {batched_time:8.3f} s   vs one inversion per seed {one_by_one_time:.3f} s: {one_by_one_time / batched_time:.2f}x faster", flush=True)


def denoiser_calls_only(model, x, sigmas, extra_args=None, callback=None, disable=None, chunk=1):
    """A sampler that only makes the model calls a step-parallel inversion makes: `chunk` steps per batch, no map arithmetic."""
    extra_args = {} if extra_args is None else extra_args
    steps = sigmas.shape[0] - 1
    s_in = x.new_ones([x.shape[0]])
    for start in range(0, steps, chunk):
        stop = min(start + chunk, steps)
        model(x.repeat(stop - start, 1, 1, 1), torch.cat([sigmas[i] * s_in for i in range(start, stop)]), **extra_args)
    return x


def bench_parallel_inversion(setup, repeats, chunks):
    """Step-parallel inversion (parallel_steps; 0 = automatic) against one step at a time and against KSampler.

    The settings and KSampler take turns, one call each per round, so that a drift of the machine's speed
    touches all alike. Also times the model calls alone at the same batch sizes: their speed-up is the
    ceiling for the inversion's.
    """
    if setup.on_gpu:
        for chunk in chunks:
            setup.invert(parallel_steps=chunk)
    rounds = {chunk: [] for chunk in chunks}
    ksampler_rounds = []
    for _ in range(repeats):
        for chunk in chunks:
            seconds, _ = timed(lambda chunk=chunk: setup.invert(parallel_steps=chunk), 1)
            rounds[chunk].append(seconds)
        ksampler_rounds.append(timed(setup.ksampler, 1)[0])
    times = {chunk: statistics.median(seconds) for chunk, seconds in rounds.items()}
    ksampler_time = statistics.median(ksampler_rounds)
    print(f"KSampler (ddpm), same steps   {ksampler_time:8.3f} s", flush=True)
    chosen = pipeline.auto_parallel_steps(setup.patcher.model, tuple(setup.latent["samples"].shape), setup.steps)
    sigmas = comfy.samplers.calculate_sigmas(setup.patcher.get_model_object("model_sampling"), setup.scheduler, setup.steps)
    guider = pipeline.cfg_guider(setup.patcher, setup.positive, setup.negative, setup.cfg)
    samples = setup.latent["samples"]

    def calls_only(chunk):
        sampler = comfy.samplers.KSAMPLER(denoiser_calls_only, extra_options={"chunk": chunk})
        return guider.sample(torch.zeros_like(samples), samples, sampler, sigmas, disable_pbar=True, seed=0)

    for chunk, seconds in times.items():
        batch = chosen if chunk == 0 else chunk
        calls_time, _ = timed(lambda batch=batch: calls_only(batch), 1, warm_up=setup.on_gpu)
        if chunk == chunks[0]:
            calls_baseline = calls_time
        label = f"{chunk} (auto: {chosen})" if chunk == 0 else str(chunk)
        print(
            f"parallel_steps {label:<12} {seconds:8.3f} s   speed-up {times[chunks[0]] / seconds:.2f}x, time / KSampler {seconds / ksampler_time:.2f}"
            f"   (model calls alone {calls_time:.3f} s, speed-up {calls_baseline / calls_time:.2f}x)",
            flush=True,
        )


def bench_reconstruction(setup, rules):
    """Largest absolute difference between the input latent and its regeneration with the source prompt and CFG.

    Step-parallel maps are replayed twice: through the inversion's batches (what a replay under the same
    prompts and CFG does) and one step at a time (what a replay under another kind of guider does).
    """
    for rule, steps in rules:
        sequential = setup.invert(steps=steps, rule=rule, parallel_steps=1)
        parallel = setup.invert(steps=steps, rule=rule, parallel_steps=0)
        replays = [("one step at a time", sequential)]
        if parallel.batches is not None:
            replays += [("step-parallel, batched replay", parallel), ("step-parallel, one-step replay", parallel.replace(batches=None))]
        for mode, maps in replays:
            print(f"reconstruction {rule:<13} {steps:>3} steps, {mode:<30} max |error| {setup.reconstruction_error(maps):.2e}", flush=True)


def estimates_in_batches(model, x, sigmas, extra_args=None, callback=None, disable=None, latents=None, size=1, sink=None):
    """A sampler that only evaluates the model on given latents [steps, batch, ...], `size` steps per call, into `sink`."""
    extra_args = {} if extra_args is None else extra_args
    steps, batch = latents.shape[:2]
    outputs = []
    for start in range(0, steps, size):
        stop = min(start + size, steps)
        inputs = latents[start:stop].to(x.device, x.dtype).flatten(0, 1)
        outputs += model(inputs, sigmas[start:stop].repeat_interleave(batch), **extra_args).split(batch)
    sink.append(torch.stack(outputs))
    return x


def bench_rounding(setup, sizes=(2, 4, 8, 16)):
    """The two roundings that keep a step-parallel replay off the inversion's path unless it settles and re-batches.

    (1) Inside a batch the model sees the drawn latents; the share of their elements that the replay's
    mean + tau z (same functions, same inputs) cannot reproduce. (2) The model's estimates of the same
    latents and sigmas in calls of `size` steps against one step per call.
    """
    count = min(setup.steps, max(sizes))
    # dpmpp_2m_sde records the model's estimates; its maps are first-order maps, so its replay of the same
    # prompt reaches x_{i+1} as mean + tau z, like ddpm's (the second-order correction is exactly zero).
    maps = setup.invert(steps=count, rule="dpmpp_2m_sde", parallel_steps=count)
    device = comfy.model_management.get_torch_device()
    first_order = step_math.rule_steps(maps.rule, maps.scales, maps.eta)
    missed = total = 0
    widest = 0.0  # in roundings of the step's operands, the unit of step_math.ROUNDING_SLACK
    for i, step in enumerate(first_order[:-1]):
        x, denoised, noise_map, drawn = (t.to(device) for t in (maps.noisy_latents[i], maps.source_denoised[i], maps.maps[i], maps.noisy_latents[i + 1]))
        mean = step_math.posterior_mean(x, denoised, step)
        reached = step_math.add_map(mean, noise_map, step)
        rounding = torch.finfo(torch.float32).eps * (mean.abs() + reached.abs())
        missed += int((reached != drawn).sum())
        total += reached.numel()
        widest = max(widest, float(((reached - drawn).abs() / rounding).max()))
    print(f"rounding: drawn latents that mean + tau z cannot reproduce  {100 * missed / total:.1f}% of elements, by at most "
          f"{widest:.2f} eps (|mean| + |x|) (settling takes up to {step_math.ROUNDING_SLACK:g}; {count - 1} steps inside one batch)")

    guider = pipeline.cfg_guider(setup.patcher, setup.positive, setup.negative, setup.cfg)
    samples = setup.latent["samples"]

    def estimates(size):
        sink = []
        sampler = comfy.samplers.KSAMPLER(estimates_in_batches, extra_options={"latents": maps.noisy_latents, "size": size, "sink": sink})
        guider.sample(torch.zeros_like(samples), samples, sampler, maps.sigmas[: count + 1].to(device), disable_pbar=True, seed=0)
        return sink[0].float()

    one_by_one = estimates(1)
    scale = float(one_by_one.abs().max())
    for size in sizes:
        difference = float((estimates(size) - one_by_one).abs().max())
        print(f"rounding: estimates {size:>2} steps per call vs one per call  max |difference| {difference:.1e} ({difference / scale:.1e} of the largest estimate)", flush=True)


def without_unet(patcher):
    """A clone whose UNet returns zeros at once: everything else in ComfyUI's sampling path still runs."""
    patched = patcher.clone()
    patched.set_model_unet_function_wrapper(lambda apply_model, args: torch.zeros_like(args["input"]))
    return patched


def bench_overhead(setup, repeats):
    """The edit's and KSamplerAdvanced's cost outside the UNet, per step, with the UNet skipped.

    Both make the same UNet calls (tests/test_cost.py), so edit / KSamplerAdvanced = (U + e) / (U + k) for
    the UNet time U and these per-step costs e and k: at most 1 when e <= k, whatever U is.
    """
    hollow = without_unet(setup.patcher)
    maps = setup.invert(hollow)
    steps = setup.steps - setup.skip
    advanced_time, _ = timed(lambda: setup.ksampler(start_step=setup.skip, patcher=hollow), repeats, warm_up=True)
    edit_time, _ = timed(lambda: setup.edit(maps, patcher=hollow), repeats, warm_up=True)
    print(f"outside the UNet, per step: edit {1000 * edit_time / steps:.3f} ms, KSamplerAdvanced {1000 * advanced_time / steps:.3f} ms"
          f" ({steps} steps, median of {repeats})", flush=True)


def bench_edit_alternating(setup, rounds):
    """Edit and KSamplerAdvanced timed in turn, edit first, in one process: for sizes where one run is one UNet call."""
    maps = setup.invert()
    print(f"edit and KSamplerAdvanced from step {setup.skip} of {setup.steps}, alternating, {rounds} rounds")
    for _ in range(rounds):
        edit_time, _ = timed(lambda: setup.edit(maps), 1)
        advanced_time, _ = timed(lambda: setup.ksampler(start_step=setup.skip), 1)
        print(f"edit {edit_time:8.3f} s   KSamplerAdvanced {advanced_time:8.3f} s   ratio {edit_time / advanced_time:.3f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "sd15"], choices=["tiny", "sd15", "sdxl"])
    parser.add_argument("--steps", type=int, default=None, help="steps (default: 50 for tiny, 3 for full size on a CPU, 100 on a GPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure, median reported (default: 3; 1 for full size on a CPU)")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="the model's weights and compute (fp16 on a GPU, as ComfyUI would)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which figures (default: all)")
    parser.add_argument("--chunks", nargs="+", type=int, default=None,
                        help="parallel_steps values for the step-parallel part, first one the baseline (default: 1 4 8 on a CPU, 1 0 4 16 on a GPU)")
    parser.add_argument("--alternate-edit", type=int, default=0, metavar="ROUNDS",
                        help="only time edit and KSamplerAdvanced in turn, ROUNDS times (a check of a one-call edit ratio)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    builders = {"tiny": tiny_sd15, "sd15": full_size_sd15, "sdxl": full_size_sdxl}
    device = comfy.model_management.get_torch_device()
    on_gpu = device.type != "cpu"
    described = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, device {described}, weights {args.dtype}")
    chunks = args.chunks or ([1, 0, 4, 16] if on_gpu else [1, 4, 8])
    for size in args.sizes:
        steps = args.steps or (50 if size == "tiny" else 100 if on_gpu else 3)
        repeats = args.repeats or (3 if size == "tiny" or on_gpu else 1)
        skip = max(1, round(0.36 * steps)) if steps > 2 else 1
        setup = Setup(size, builders[size], DTYPES[args.dtype], steps, 3.5, skip)
        print(f"\n== {size}: latent {tuple(setup.latent['samples'].shape)}, {steps} steps, cfg {setup.cfg}, skip {skip}, median of {repeats}", flush=True)
        if args.alternate_edit:
            bench_edit_alternating(setup, args.alternate_edit)
            continue
        if "passes" in args.parts:
            bench_passes(setup, repeats)
        if "variations" in args.parts:
            bench_variations(setup, repeats)
        if "parallel" in args.parts:
            bench_parallel_inversion(setup, repeats, chunks)
        if "reconstruction" in args.parts:
            bench_reconstruction(setup, [("ddpm", steps), ("dpmpp_2m_sde", max(2, steps // 4))])
        if "rounding" in args.parts:
            bench_rounding(setup)
        if "overhead" in args.parts:
            bench_overhead(setup, max(repeats, 5))
        del setup
        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()


if __name__ == "__main__":
    main()
