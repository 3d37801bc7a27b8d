"""Memory and speed of video noise maps: a 5-second 832x480 Wan 2.1 clip, and a tiny Wan 2.1 against ComfyUI's samplers.

    .cache/venv/bin/python benchmarks/video.py                 # about 6 min on 2 CPU cores (5m51 at a load average of 4)
    .cache/venv/bin/python benchmarks/video.py --quick         # about 1 min (56 s): smaller latent, ddpm only at full size
    .cache/venv/bin/python benchmarks/video.py --parts speed --rounds 60
    .cache/venv/bin/python benchmarks/video.py --parts memory --measured 21 30 52   # a quarter of the clip's pixels (~15 min)

Prints, for the clip's latent [1, 16, 21, 60, 104] (81 frames of 832x480) at 50 steps (part `memory`):
- full clip, network output zeros: the pack's own inversion (pipeline.invert, every tensor it keeps, at the clip's
  size) with the tiny Wan's network answering zeros, since the tiny Wan takes about a minute a step at that size on
  a CPU; for rules ddpm and dpmpp_2m_sde, precisions float32 and auto (float16 for a latent of several frames):
  bytes held by the maps (`maps.nbytes()`), the prediction `pipeline.maps_bytes(...)`, the peak rise of resident
  process memory during the inversion (speed.PeakMemory), and that rise less the maps (working memory), with
  KSampler's rise under the same network for comparison;
- tiny Wan 2.1, real network, on the clip's 21 frames at a quarter of its height and width (`--measured`): the
  same figures, `maps_bytes` of the full clip (the measured latent scaled up), and the reconstruction error
  (max |regenerate(...) - input|, same prompt and CFG) from skip 0 and from the middle skip: float16 stays exact;
- the goal, PASS or FAIL: ddpm maps of the full clip at 50 steps, precision auto, hold at most 0.5 GB (10^9 bytes)
  and reconstruct within 1e-5 (the tests' tolerance).
Part `refusal`: with ComfyUI's free memory faked at 64 MiB, the inversion of the full clip raises EditFriendlyInputError
with no model call (diffusion_model.forward calls counted by an object patch, tests/tiny_models.py counting_model_calls);
the same counter then counts the calls of an inversion that fits.
Part `speed`, tiny Wan 2.1 (latent [1, 16, 5, 16, 16], 20 steps, CFG 5, scheduler simple), all runs in turn, the order
reversed every other round:
- inversion (precision auto: float16) / KSampler (comfy.sample.sample, sampler ddpm, same steps, CFG, scheduler) and
  edit (pipeline.regenerate from skip 8, another prompt) / KSamplerAdvanced from step 8 to the end: medians, the
  ratio of the medians (PASS at most 1.05) and the median of each round's ratio;
- where the time goes, in ms per step: the model calls (ComfyUI's KSamplerX0Inpaint), the sampler function less them
  (step arithmetic, noise, float16 rounding, records) and the rest (input checks, noise preparation, conditioning,
  building the maps), for each run and for the inversion in float32.
Weights are random; the models are ComfyUI's real Wan 2.1 classes (tests/tiny_video_families.py), on the CPU.
Other processes on the machine skew the speed figures: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402, F401  (puts ComfyUI on the path, on EF_DEVICE (default cpu), loads the pack)

import baselines  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.utils  # noqa: E402
import speed  # noqa: E402  (PeakMemory, synchronize)
import tiny_models  # noqa: E402
import tiny_video_families  # noqa: E402
import torch  # noqa: E402
from edit_friendly_ddpm.nodes import pipeline  # noqa: E402
from edit_friendly_ddpm.nodes.noise_maps import STORAGE_DTYPES  # noqa: E402
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError  # noqa: E402

comfy.utils.PROGRESS_BAR_ENABLED = False
CLIP = (1, 16, 21, 60, 104)
"""Wan 2.1's latent of 81 frames of 832x480 (5 s at 16 fps): 16 channels, (81 - 1) / 4 + 1 frames, 8x smaller sides."""
GOAL_BYTES = 0.5e9
TOLERANCE = 1e-5
"""Largest reconstruction error taken as exact, as tests/test_video_families.py: float32 rounding of the last step's operands."""
PARTS = ("memory", "refusal", "speed")
RULES = ("ddpm", "dpmpp_2m_sde")
PRECISIONS = ("float32", "float16")

try:
    _libc = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: the figures then include freed memory the allocator kept
    _libc = None


def release_freed_memory():
    """Collect garbage and hand freed heap pages back to the system, so that a peak-memory rise starts from what is in use."""
    gc.collect()
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def network_output_zeros(patcher):
    """A clone whose Wan network returns zeros (an object patch of diffusion_model.forward): everything else runs."""
    return tiny_models._with_unet_hook(patcher, lambda forward, x, timesteps, *args, **kwargs: torch.zeros_like(x))


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:6.3f} GB"


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:8.1f} MiB"


class Video:
    """A tiny Wan 2.1 text-to-video model with a source prompt, a negative and a target prompt."""

    def __init__(self, cfg: float):
        self.tiny = tiny_video_families.wan21_t2v(0)
        self.patcher = self.tiny.patcher
        self.positive, self.negative, self.target = (self.tiny.conditioning(seed) for seed in (1, 2, 3))
        self.cfg = cfg

    def latent(self, shape) -> dict:
        batch, _, frames, height, width = shape
        return tiny_video_families.latent(self.tiny, batch=batch, frames=frames, height=height, width=width, seed=0)

    def invert(self, latent, steps, patcher=None, rule="ddpm", precision="auto", scheduler="simple"):
        return pipeline.invert(
            patcher or self.patcher, self.positive, self.negative, latent, steps, self.cfg, scheduler, 1.0, 0,
            rule=rule, precision=precision,
        )

    def regenerate(self, maps, skip, patcher=None, positive=None):
        return pipeline.regenerate(patcher or self.patcher, positive or self.positive, self.negative, maps, self.cfg, skip)


def measure_inversion(video, latent, steps, patcher, rule, precision):
    release_freed_memory()
    with speed.PeakMemory() as memory:
        maps = video.invert(latent, steps, patcher, rule, precision)
    return maps, memory.rise


# --- memory ---------------------------------------------------------------------------------------


def bench_memory(video, measured, steps, clip_rules=RULES) -> bool:
    clip = torch.empty(CLIP, device="meta")  # maps_bytes reads only the size
    middle = steps // 2
    print(f"\n== memory: 5 s of 832x480 Wan 2.1, latent {CLIP}, {steps} steps, cfg {video.cfg}", flush=True)

    print("full clip, the pack's inversion with the network's output replaced by zeros (maps kept as with the real one):")
    print(f"  {'rule':<13} {'precision':<14} {'maps hold':>10} {'maps_bytes':>10} {'peak RSS rise':>14} {'rise - maps':>12} {'seconds':>8}")
    hollow = network_output_zeros(video.patcher)
    latent = video.latent(CLIP)
    held = {}
    for rule in clip_rules:
        for precision in PRECISIONS:
            start = time.perf_counter()
            # float16 as the default keeps it: precision auto, which picks float16 for a latent of several frames.
            maps, rise = measure_inversion(video, latent, steps, hollow, rule, "auto" if precision == "float16" else precision)
            seconds = time.perf_counter() - start
            assert maps.storage == precision, (maps.storage, precision)
            predicted = pipeline.maps_bytes(clip, steps, rule, STORAGE_DTYPES[precision])
            held[rule, precision] = maps.nbytes()
            label = "float16 (auto)" if precision == "float16" else precision
            print(f"  {rule:<13} {label:<14} {gb(maps.nbytes())} {gb(predicted)} {mib(rise):>14} "
                  f"{mib(rise - maps.nbytes()):>12} {seconds:8.1f}",
                  flush=True)
            del maps
    release_freed_memory()
    with speed.PeakMemory() as memory:
        start = time.perf_counter()
        baselines.ksampler(hollow, video.positive, video.negative, latent["samples"], steps, video.cfg, "simple", 0)
        seconds = time.perf_counter() - start
    print(f"  {'KSampler (ddpm), for comparison':<28} {'':>10} {'':>10} {mib(memory.rise):>14} {mib(memory.rise):>12} {seconds:8.1f}",
          flush=True)
    del latent

    ratio = math.prod(CLIP) / math.prod(measured)
    print(f"tiny Wan 2.1, real network, latent {tuple(measured)} (1/{ratio:g} of the clip's elements), {steps} steps; "
          f"full clip = maps_bytes of the clip's latent:")
    print(f"  {'rule':<13} {'precision':<9} {'maps hold':>10} {'maps_bytes':>10} {'full clip':>9} {'peak RSS rise':>14} "
          f"{'max|err| skip 0':>15} {f'skip {middle}':>8} {'seconds':>8}")
    latent = video.latent(measured)
    samples = latent["samples"]
    errors = []
    for rule in RULES:
        for precision in PRECISIONS:
            start = time.perf_counter()
            maps, rise = measure_inversion(video, latent, steps, None, rule, precision)
            seconds = time.perf_counter() - start
            storage = STORAGE_DTYPES[precision]
            predicted = pipeline.maps_bytes(samples, steps, rule, storage)
            full = pipeline.maps_bytes(clip, steps, rule, storage)
            error = [baselines.reconstruction_error(video.regenerate(maps, skip), samples) for skip in (0, middle)]
            errors += error
            print(f"  {rule:<13} {precision:<9} {mib(maps.nbytes())} {mib(predicted)} {gb(full)} {mib(rise):>14} "
                  f"{error[0]:15.1e} {error[1]:8.1e} {seconds:8.1f}", flush=True)
            del maps
    # maps_bytes leaves out the schedule (sigmas and scales, a few hundred bytes); nbytes counts it.
    schedule = 4 * (steps + 1) + 8 * 2 * (steps + 1)
    exact = all(held[key] - schedule == pipeline.maps_bytes(clip, steps, key[0], STORAGE_DTYPES[key[1]]) for key in held)
    print(f"maps_bytes + the schedule ({schedule} bytes) == maps.nbytes() of the full clip for every row: {exact}")
    kept = held["ddpm", "float16"]
    passed = kept <= GOAL_BYTES and max(errors) <= TOLERANCE
    print(f"goal: ddpm maps of the full clip at {steps} steps, precision auto, hold at most {GOAL_BYTES / 1e9:g} GB: {gb(kept).strip()} "
          f"({kept / 2**30:.3f} GiB; float32 {gb(held['ddpm', 'float32']).strip()}), and reconstruct within {TOLERANCE:g} "
          f"(max |error| {max(errors):.1e}): {'PASS' if passed else 'FAIL'}", flush=True)
    return passed


# --- refusal --------------------------------------------------------------------------------------


def bench_refusal(video, steps) -> bool:
    counted, calls = tiny_models.counting_model_calls(video.patcher)
    latent = video.latent(CLIP)
    fake_free = 64 * 2**20
    real = comfy.model_management.get_free_memory
    print(f"\n== refusal: latent {CLIP}, {steps} steps, ComfyUI's free memory faked at {fake_free / 2**20:.0f} MiB", flush=True)
    comfy.model_management.get_free_memory = lambda *args, **kwargs: fake_free
    try:
        refused = []
        for precision in ("auto", "float16", "float32"):
            calls.clear()
            try:
                video.invert(latent, steps, counted, precision=precision)
                outcome = "no error"
            except EditFriendlyInputError as error:
                outcome = f"EditFriendlyInputError: {error}"
            print(f"precision {precision:<8} model calls {len(calls)}   {outcome}")
            refused.append(len(calls) == 0 and outcome.startswith("EditFriendlyInputError"))
    finally:
        comfy.model_management.get_free_memory = real
    calls.clear()
    video.invert(video.latent((1, 16, 5, 16, 16)), 4, counted)
    print(f"the same counter, real free memory, latent (1, 16, 5, 16, 16), 4 steps: {len(calls)} model calls "
          f"(cond and uncond in one call per step)")
    passed = all(refused) and len(calls) > 0
    print(f"goal: refused before the first model call: {'PASS' if passed else 'FAIL'}", flush=True)
    return passed


# --- speed ----------------------------------------------------------------------------------------


class Breakdown:
    """Splits runs' wall-clock time at ComfyUI's own boundaries: the model calls (KSamplerX0Inpaint.__call__), the sampler
    function around them (KSAMPLER.sample less the model calls: the step arithmetic, noise, rounding, records), and the
    rest (outside KSAMPLER.sample: input checks, noise preparation, conditioning, building the maps)."""

    def __enter__(self):
        self.model = self.sampling = 0.0
        self.originals = comfy.samplers.KSamplerX0Inpaint.__call__, comfy.samplers.KSAMPLER.sample
        model_call, sample = self.originals
        breakdown = self

        def timed_model_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return model_call(*args, **kwargs)
            finally:
                breakdown.model += time.perf_counter() - start

        def timed_sample(*args, **kwargs):
            start = time.perf_counter()
            try:
                return sample(*args, **kwargs)
            finally:
                breakdown.sampling += time.perf_counter() - start

        comfy.samplers.KSamplerX0Inpaint.__call__, comfy.samplers.KSAMPLER.sample = timed_model_call, timed_sample
        return self

    def __exit__(self, *exc):
        comfy.samplers.KSamplerX0Inpaint.__call__, comfy.samplers.KSAMPLER.sample = self.originals

    def run(self, function) -> tuple[float, float, float]:
        """(total, model calls, sampler function less model calls) seconds of one call of `function`."""
        self.model = self.sampling = 0.0
        speed.synchronize()
        start = time.perf_counter()
        function()
        speed.synchronize()
        total = time.perf_counter() - start
        return total, self.model, self.sampling - self.model


def alternating(runs: dict, rounds: int) -> dict:
    """(total, model calls, sampler arithmetic) seconds of each run per round, taken in turn, the order reversed every
    other round, after one warm-up each."""
    for function in runs.values():
        function()
    times = {name: [] for name in runs}
    names = list(runs)
    with Breakdown() as breakdown:
        for index in range(rounds):
            for name in names if index % 2 == 0 else reversed(names):
                times[name].append(breakdown.run(runs[name]))
    return times


def ratio(times: dict, name: str, baseline: str) -> tuple[float, float]:
    """Ratio of the median totals, and median of the ratios of each round (runs next to each other in time)."""
    totals, baselines_ = [t[0] for t in times[name]], [t[0] for t in times[baseline]]
    paired = statistics.median(a / b for a, b in zip(totals, baselines_))
    return statistics.median(totals) / statistics.median(baselines_), paired


def bench_speed(video, shape, steps, skip, rounds):
    print(f"\n== speed: tiny Wan 2.1, latent {tuple(shape)}, {steps} steps, cfg {video.cfg}, scheduler simple, skip {skip}, "
          f"{rounds} alternating rounds (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)", flush=True)
    latent = video.latent(shape)
    samples = latent["samples"]
    maps = video.invert(latent, steps)

    def ksampler(start_step=0):
        return baselines.ksampler(video.patcher, video.positive, video.negative, samples, steps, video.cfg, "simple", 0, start_step)

    runs = {
        "inversion": lambda: video.invert(latent, steps),
        "KSampler": ksampler,
        "edit": lambda: pipeline.regenerate(video.patcher, video.target, video.negative, maps, video.cfg, skip),
        "KSamplerAdvanced": lambda: ksampler(start_step=skip),
        "inversion float32": lambda: video.invert(latent, steps, precision="float32"),
    }
    times = alternating(runs, rounds)
    median = {name: statistics.median(t[0] for t in values) for name, values in times.items()}
    rows = (
        ("KSampler (ddpm)", "KSampler", None),
        (f"inversion ({maps.storage}, auto)", "inversion", "KSampler"),
        (f"KSamplerAdvanced from {skip}", "KSamplerAdvanced", None),
        (f"edit from skip {skip}", "edit", "KSamplerAdvanced"),
    )
    print(f"  {'':<27} {'median':>8}   {'ratio of medians':>16} {'median of round ratios':>22}")
    verdicts = []
    for label, name, baseline in rows:
        line = f"  {label:<27} {median[name]:8.4f} s"
        if baseline:
            of_medians, paired = ratio(times, name, baseline)
            verdicts.append(of_medians <= 1.05)
            line += f"   {of_medians:16.3f} {paired:22.3f}   goal <= 1.05: {'PASS' if verdicts[-1] else 'FAIL'}"
        print(line, flush=True)

    of_medians, paired = ratio(times, "inversion", "inversion float32")
    print(f"where the time goes (ms per step, medians; model calls = KSamplerX0Inpaint, sampler = the sampler function "
          f"less them, rest = outside KSAMPLER.sample); inversion float16 / float32 {of_medians:.3f} (per round {paired:.3f}):")
    print(f"  {'run':<18} {'total':>8} {'model calls':>12} {'sampler':>8} {'rest':>8}")
    overhead = {}
    for name, values in times.items():
        run_steps = steps - skip if name in ("edit", "KSamplerAdvanced") else steps
        total, model, sampler = (1000 * statistics.median(t[k] for t in values) / run_steps for k in range(3))
        overhead[name] = total - model
        print(f"  {name:<18} {total:8.3f} {model:12.3f} {sampler:8.3f} {total - model - sampler:8.3f}")
    # Both runs of a pair make the same model calls (tests/test_cost.py): with the model calls' time pooled, the ratio
    # is what their own costs make of it, free of the machine's drift between the runs' model calls.
    for name, baseline, run_steps in (("inversion", "KSampler", steps), ("edit", "KSamplerAdvanced", steps - skip)):
        model = 1000 * statistics.median(t[1] for t in times[name] + times[baseline]) / run_steps
        pooled = (model + overhead[name]) / (model + overhead[baseline])
        print(f"  {name} / {baseline} with the model calls pooled ({model:.3f} ms a step): {pooled:.3f}, goal <= 1.05: "
              f"{'PASS' if pooled <= 1.05 else 'FAIL'} (own costs {overhead[name]:.3f} against {overhead[baseline]:.3f} ms a step)")
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)", flush=True)
    return verdicts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about a minute: a smaller measured latent and fewer rounds")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--steps", type=int, default=50, help="steps of the memory and refusal parts (default 50)")
    parser.add_argument("--measured", nargs=3, type=int, metavar=("T", "H", "W"), default=None,
                        help="frames, height, width of the latent the real tiny Wan inverts (default 21 15 26: a quarter of "
                             "each side of the clip; --quick 21 5 8; 21 60 104 is the full clip, about a minute a step)")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds of the speed part (default 30, --quick 10)")
    parser.add_argument("--speed-latent", nargs=3, type=int, metavar=("T", "H", "W"), default=[5, 16, 16])
    parser.add_argument("--speed-steps", type=int, default=20)
    parser.add_argument("--skip", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, 
                        help="torch CPU threads (default: torch's choice); 1 is steadier on a busy machine")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    measured = (1, 16, *(args.measured or ((21, 5, 8) if args.quick else (21, 15, 26))))
    rounds = args.rounds or (10 if args.quick else 30)
    print(f"torch {torch.__version__}, device {comfy.model_management.get_torch_device()}, {torch.get_num_threads()} threads", flush=True)
    video = Video(args.cfg)
    verdicts = {}
    if "memory" in args.parts:
        verdicts["memory"] = bench_memory(video, measured, args.steps, ("ddpm",) if args.quick else RULES)
    if "refusal" in args.parts:
        verdicts["refusal"] = bench_refusal(video, args.steps)
    if "speed" in args.parts:
        shape = (1, 16, *args.speed_latent)
        verdicts["inversion speed"], verdicts["edit speed"] = bench_speed(video, shape, args.speed_steps, args.skip, rounds)
    print("\nsummary: " + ", ".join(f"{name} {'PASS' if passed else 'FAIL'}" for name, passed in verdicts.items()))


if __name__ == "__main__":
    main()
