"""The cost claims behind benchmarks/speed.py: an inversion is one sampling pass, an edit one partial pass.

Timing belongs in the benchmark; these tests pin the structure that makes the ratios hold on any
model: the same UNet calls (count, batch shape, timesteps) as ComfyUI's own KSampler and
KSamplerAdvanced, so only the cheap per-step arithmetic differs.
"""

import baselines
import pytest
import speed  # benchmarks/speed.py: its memory probe gives benchmarks/editing_methods.py's --memory figures
import tiny_models
import torch
from edit_friendly_ddpm.nodes import pipeline
from tiny_models import counting_model_calls

STEPS, SKIP, CFG = 10, 4, 3.5


@pytest.fixture(scope="module")
def setup():
    tiny = tiny_models.sdxl_eps(seed=0)
    latent = tiny_models.latent(tiny, batch=2, height=8, width=12, seed=1)
    return tiny, latent


def comfy_sampler_calls(tiny, latent, start_step=0):
    patched, calls = counting_model_calls(tiny.patcher)
    baselines.ksampler(patched, tiny.conditioning(1), tiny.conditioning(2), latent["samples"], STEPS, CFG, "ddim_uniform", 0, start_step)
    return calls


def assert_same_calls(ours, comfy_calls):
    assert len(ours) == len(comfy_calls) > 0
    for (shape, timesteps), (comfy_shape, comfy_timesteps) in zip(ours, comfy_calls):
        assert shape == comfy_shape
        torch.testing.assert_close(timesteps, comfy_timesteps)


def test_inversion_makes_the_model_calls_of_one_ksampler_run(setup):
    tiny, latent = setup
    patched, calls = counting_model_calls(tiny.patcher)
    pipeline.invert(patched, tiny.conditioning(1), tiny.conditioning(2), latent, STEPS, CFG, "ddim_uniform", 1.0, 0)
    assert_same_calls(calls, comfy_sampler_calls(tiny, latent))


def test_edit_makes_the_model_calls_of_ksampler_advanced_over_the_remaining_steps(setup):
    tiny, latent = setup
    maps = pipeline.invert(tiny.patcher, tiny.conditioning(1), tiny.conditioning(2), latent, STEPS, CFG, "ddim_uniform", 1.0, 0)
    patched, calls = counting_model_calls(tiny.patcher)
    pipeline.regenerate(patched, tiny.conditioning(3), tiny.conditioning(2), maps, CFG, SKIP)
    comfy_calls = comfy_sampler_calls(tiny, latent, start_step=SKIP)
    assert len(comfy_calls) == maps.steps - SKIP
    assert_same_calls(calls, comfy_calls)


def test_step_parallel_inversion_makes_fewer_larger_calls_over_the_same_timesteps(setup):
    tiny, latent = setup
    patched, calls = counting_model_calls(tiny.patcher)
    pipeline.invert(patched, tiny.conditioning(1), tiny.conditioning(2), latent, STEPS, CFG, "ddim_uniform", 1.0, 0, parallel_steps=4)
    comfy_calls = comfy_sampler_calls(tiny, latent)
    assert [shape[0] for shape, _ in calls] == [16, 16, 8]  # 4 + 4 + 2 steps, each batch x (cond, uncond)
    torch.testing.assert_close(torch.cat([t for _, t in calls]).unique(), torch.cat([t for _, t in comfy_calls]).unique())


def test_the_benchmarks_memory_probe_sees_the_peak_of_what_a_function_allocates():
    mib = 2**20

    def held_then_freed():
        held = torch.ones(4 * mib // 4)  # 4 MiB of float32
        extra = torch.ones(2 * mib // 4)  # 2 more at once: the peak is 6 MiB
        del extra
        return held.sum()

    peak = speed.peak_allocated_bytes(held_then_freed)
    assert 6 * mib <= peak < 7 * mib
    assert speed.peak_allocated_bytes(lambda: None) < mib
