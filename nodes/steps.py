"""The paper's step math in ComfyUI's sigma space: posterior steps, the step rules, and the map arithmetic.

Huberman-Spiegelglas, Kulikov, Michaeli, "An Edit Friendly DDPM Noise Space: Inversion and
Manipulations", CVPR 2024. Written for x = a(s) * x0 + b(s) * noise, so one code path serves EPS,
v-prediction and rectified-flow models. Pure torch: nothing here imports ComfyUI or the pack's other modules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch


@dataclasses.dataclass(frozen=True)
class PosteriorStep:
    """Coefficients of one DDPM posterior step s -> s' in sigma space (paper, Eq. 3)."""

    a: float
    """Signal scale a(s) of the current latent."""
    b: float
    """Noise scale b(s) of the current latent."""
    c_x0: float
    """a(s'): weight of the predicted clean latent in the posterior mean."""
    c_eps: float
    """sqrt(b(s')^2 - (eta * tau)^2): weight of the predicted noise in the posterior mean."""
    noise_scale: float
    """eta * tau, the posterior std the map is multiplied by; 1 on the last step (the residual)."""
    is_last: bool = False
    """The step into sigma 0, where the map is the residual to the clean latent."""
    history_weight: float = 0.0
    """Weight of the change in the clean-latent estimate since the previous step (second-order rules only)."""


def signal_and_noise_scales(model_sampling, sigmas: torch.Tensor) -> torch.Tensor:
    """(a(s), b(s)) for every sigma, read from the model's own noise_scaling, as float64 [len, 2]."""
    s = sigmas.detach().cpu().double()
    ones, zeros = torch.ones_like(s), torch.zeros_like(s)
    a = model_sampling.noise_scaling(s, zeros, ones)
    b = model_sampling.noise_scaling(s, ones, zeros)
    return torch.stack([a, b], dim=1).double()


def ddpm_steps(scales: torch.Tensor, eta: float) -> list[PosteriorStep]:
    """Posterior steps for a schedule given its (a, b) pairs; eta = 1 is DDPM (paper, Eqs. 3-4)."""
    steps = []
    pairs = scales.tolist()
    for (a, b), (a_next, b_next) in zip(pairs[:-1], pairs[1:]):
        if b_next == 0.0:
            steps.append(PosteriorStep(a, b, a_next, 0.0, 1.0, is_last=True))
            continue
        snr_ratio = (a * b_next) ** 2 / (a_next * b) ** 2
        tau = b_next * math.sqrt(max(0.0, 1.0 - snr_ratio))
        noise_scale = eta * tau
        c_eps = math.sqrt(max(0.0, b_next**2 - noise_scale**2))
        steps.append(PosteriorStep(a, b, a_next, c_eps, noise_scale))
    return steps


def dpmpp_2m_sde_steps(scales: torch.Tensor, eta: float) -> list[PosteriorStep]:
    """Steps of DPM-Solver++(2M) SDE (midpoint form, as ComfyUI's sample_dpmpp_2m_sde) in the a(s), b(s) form.

    With e = exp(-h) = (a b') / (a' b) (h: change in half-log-SNR log(a/b)) the first-order part is
    x' = (b'/b) e^eta x + a' (1 - e^(eta+1)) x0_hat + b' sqrt(1 - e^(2 eta)) z, which is the DDPM posterior
    step when eta = 1. The second-order part adds history_weight * (x0_hat_i - x0_hat_{i-1}) with
    history_weight = a' (1 - e^(eta+1)) h_i / (2 h_{i-1}); it is 0 on the first step and on the step into 0.
    """
    steps = []
    previous_h = None
    for (a, b), (a_next, b_next) in zip(scales.tolist()[:-1], scales.tolist()[1:]):
        if b_next == 0.0:
            steps.append(PosteriorStep(a, b, a_next, 0.0, 1.0, is_last=True))
            continue
        e = (a * b_next) / (a_next * b)
        h = -math.log(e) if e > 0.0 else math.inf
        c_eps = b_next * e**eta
        denoised_weight = a_next * (1.0 - e ** (eta + 1.0))
        noise_scale = b_next * math.sqrt(max(0.0, 1.0 - e ** (2.0 * eta)))
        history = 0.0
        if previous_h is not None and math.isfinite(previous_h):
            history = 0.5 * denoised_weight * h / previous_h
        steps.append(PosteriorStep(a, b, denoised_weight + c_eps * a / b, c_eps, noise_scale, history_weight=history))
        previous_h = h
    return steps


@dataclasses.dataclass(frozen=True)
class StepRule:
    """A sampler the maps can be made for and replayed with."""

    steps: Callable[[torch.Tensor, float], list[PosteriorStep]]
    """(a, b) pairs of the schedule and eta -> the steps."""
    keeps_history: bool
    """Whether its replay needs the source's clean-latent estimates (second-order rules)."""


STEP_RULES = {
    "ddpm": StepRule(ddpm_steps, keeps_history=False),
    "dpmpp_2m_sde": StepRule(dpmpp_2m_sde_steps, keeps_history=True),
}
"""ddpm: the DDPM posterior step of the paper. dpmpp_2m_sde: DPM-Solver++(2M) SDE (ComfyUI's sample_dpmpp_2m_sde,
midpoint form). The inversion and the sampler must use the same one."""


def rule_steps(rule: str, scales: torch.Tensor, eta: float) -> list[PosteriorStep]:
    """The steps of a rule (STEP_RULES) over a schedule given by its (a, b) pairs."""
    if rule not in STEP_RULES:
        raise ValueError(f"Unknown step rule {rule!r}; known rules: {', '.join(STEP_RULES)}")
    return STEP_RULES[rule].steps(scales, eta)


def history_term(step: PosteriorStep, denoised, previous, source_denoised, source_previous) -> torch.Tensor:
    """history_weight * (change of x0_hat now - change of x0_hat during the inversion).

    The inversion recorded first-order maps along the drawn latents; the second-order part of the
    rule enters as the difference between the current and the source's correction, so with the
    source prompt the difference is exactly zero (same inputs, same operations) and the replay
    stays bit for bit on the inversion's path, while an edit gets the full second-order step:
    mean1 + tau z1 + w (D - D_prev) - w (Ds - Ds_prev) = mean2 + tau z2 with z2 = z1 - w (Ds - Ds_prev) / tau.
    """
    return step.history_weight * ((denoised - previous) - (source_denoised - source_previous))


def posterior_mean(x: torch.Tensor, denoised: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
    """mu(x_t) of Eq. 3, with the noise estimate taken from the model's clean-latent estimate."""
    predicted_noise = (x - step.a * denoised) / step.b
    return step.c_x0 * denoised + step.c_eps * predicted_noise


def add_map(mean: torch.Tensor, noise_map: torch.Tensor, step: PosteriorStep) -> torch.Tensor:
    """x_{t-1} = mu(x_t) + sigma_t z_t (Eq. 5); shared by inversion and regeneration so both round alike."""
    return mean + step.noise_scale * noise_map


def round_to_storage(x: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    """x rounded to the maps' storage precision, kept in x's dtype: inversion and replay round every latent alike."""
    return x if storage == x.dtype else x.to(storage).to(x.dtype)


ROUNDING_SLACK = 4.0
"""How many float roundings of the step's operands a replayed latent may be off the recorded one and still be taken as it."""


def settle_on_recorded(x: torch.Tensor, recorded: torch.Tensor, mean: torch.Tensor, storage: torch.dtype = torch.float32) -> torch.Tensor:
    """x, except where it is within rounding of the latent the inversion fed the model: there, that latent.

    A step-parallel inversion feeds the model the drawn latents (Eq. 6) inside a batch, and mean + tau z
    cannot land on every float32 value exactly (a third of the elements may miss, by about one rounding).
    Taking the recorded value where the replay is that close keeps a reconstruction on the inversion's
    path; the change is at most a few roundings of the step itself, far below any difference a prompt or a
    map edit makes.
    """
    # The storage precision's rounding (float32 unless the maps are lean), whatever the latent's dtype, so that a
    # half-precision latent cannot widen the reach.
    tolerance = ROUNDING_SLACK * torch.finfo(storage).eps * (mean.abs() + x.abs())
    return torch.where((x - recorded).abs() <= tolerance, recorded, x)


def draw_noisy_latents(x0: torch.Tensor, scales: torch.Tensor, seeds):
    """Yield x_i = a_i x0 + b_i eps_i with independent eps_i from seeded CPU generators (Eq. 6).

    `seeds` is one seed or a list of them: the batch is split into equal groups, one per seed, so a
    group's noise is the same as a run with that seed alone.
    """
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if x0.shape[0] % len(seeds):
        raise ValueError(f"a batch of {x0.shape[0]} cannot be split among {len(seeds)} seeds")
    group_shape = (x0.shape[0] // len(seeds), *x0.shape[1:])
    generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]
    for a, b in scales.tolist()[:-1]:
        eps = torch.cat([torch.randn(group_shape, generator=g, dtype=torch.float32) for g in generators])
        yield a * x0 + b * eps.to(x0.device, x0.dtype)


