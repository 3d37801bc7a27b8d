"""The edit-friendly noise maps of one inversion, and the fingerprint of the model they belong to.

Pure torch: nothing here imports ComfyUI, so tools and tests can use it without a host.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

import torch

from .steps import STEP_RULES

SAMPLING_RULES = tuple(STEP_RULES)
"""Step rules a set of maps can be replayed with (steps.STEP_RULES); the inversion and the sampler must use the same one."""

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
"""Precisions the maps can be kept in. float16 halves their memory (video): the inversion then rounds every latent
it feeds the model to float16 and each map absorbs the rounding of the one before, so the replay, which rounds
alike, still ends exactly on the source through the float32 residual."""


@dataclasses.dataclass(frozen=True)
class ModelFingerprint:
    """What must match between the model that made the maps and the model that replays them.

    Only the sampling side is fingerprinted (prediction type, noise schedule, latent space), so a
    LoRA, a ControlNet or a patched copy of the same base model may replay the maps; another family may not.
    """

    prediction: str
    """The model_sampling prediction class, such as EPS, V_PREDICTION or CONST."""
    schedule: str
    """Short digest of the model's sigma table (or of its sigma function for continuous schedules)."""
    latent_format: str
    """Name of the latent format class, such as SD15, SDXL, SD3 or Flux."""
    latent_channels: int
    timesteps: str = ""
    """Short digest of the timesteps the model is given for a few sigmas (ModelSamplingAuraFlow and SD3 share a sigma
    table but not this); empty in maps saved before it existed, which then match on the other fields alone."""

    @staticmethod
    def of(model_sampling, latent_format) -> ModelFingerprint:
        """Fingerprint a ComfyUI model from its `model_sampling` and `latent_format` objects."""
        return ModelFingerprint(
            prediction=_prediction_name(model_sampling),
            schedule=_schedule_digest(model_sampling),
            latent_format=type(latent_format).__name__,
            latent_channels=int(latent_format.latent_channels),
            timesteps=_timesteps_digest(model_sampling),
        )

    def describe(self) -> str:
        return f"{self.latent_format} latents ({self.latent_channels} channels), {self.prediction} prediction, schedule {self.schedule}"

    def mismatch(self, other: ModelFingerprint) -> str | None:
        """A sentence saying how `other` differs from this fingerprint, or None when they match."""
        pairs = [
            ("latent format", self.latent_format, other.latent_format),
            ("latent channels", self.latent_channels, other.latent_channels),
            ("prediction type", self.prediction, other.prediction),
            ("noise schedule", self.schedule, other.schedule),
        ]
        if self.timesteps and other.timesteps:  # empty in maps saved before it was recorded
            pairs.append(("timestep mapping", self.timesteps, other.timesteps))
        differences = [f"{name}: maps have {mine}, model has {theirs}" for name, mine, theirs in pairs if mine != theirs]
        return "; ".join(differences) or None


_PREDICTION_TYPES = ("V_PREDICTION", "EDM", "EPS", "CONST", "COSMOS_RFLOW", "IMG_TO_IMG", "X0")


def _prediction_name(model_sampling) -> str:
    # ComfyUI builds model_sampling as a class mixing a prediction type and a schedule, e.g.
    # class ModelSampling(ModelSamplingDiscrete, EPS); the first prediction class in the MRO is the one in force.
    for cls in type(model_sampling).__mro__:
        if cls.__name__ in _PREDICTION_TYPES:
            return cls.__name__
    return type(model_sampling).__name__


def _digest(values: torch.Tensor) -> str:
    # To the CPU before float64, which some devices (MPS) do not have.
    rounded = torch.round(values.detach().cpu().double() * 1e5).to(torch.int64).numpy().tobytes()
    return hashlib.sha256(rounded).hexdigest()[:12]


def _schedule_digest(model_sampling) -> str:
    table = getattr(model_sampling, "sigmas", None)
    if not isinstance(table, torch.Tensor):
        probe = torch.linspace(0.0, 1.0, 33)
        table = model_sampling.sigma(probe * 999.0) if hasattr(model_sampling, "sigma") else probe
    return _digest(table)


def _timesteps_digest(model_sampling) -> str:
    if not all(hasattr(model_sampling, name) for name in ("timestep", "sigma_min", "sigma_max")):
        return ""
    low, high = float(model_sampling.sigma_min), float(model_sampling.sigma_max)
    probe = torch.tensor([low, math.sqrt(low * high), high], dtype=torch.float32)
    return _digest(model_sampling.timestep(probe).float())


@dataclasses.dataclass(frozen=True, eq=False)
class NoiseMaps:
    """Everything one edit-friendly inversion extracts from an image (paper, Eqs. 6-7).

    For a schedule s_0 > s_1 > ... > s_N = 0 the sampler replays, from any start step k (T_skip),

        x_k = noisy_latents[k];   x_{i+1} = mean_i(x_i) + eta * tau_i * maps[i]

    where mean_i is the posterior mean of the step rule under the current conditioning. With the
    source conditioning and CFG this returns the source latent exactly; the last map is the residual
    that makes it so (added with scale 1). Tensors are in the model's latent space (after process_latent_in),
    kept on ComfyUI's intermediate device. Instances are never modified: transforms return new ones.
    """

    sigmas: torch.Tensor
    """Schedule, shape [N + 1], strictly decreasing, ending at 0."""
    noisy_latents: torch.Tensor
    """x_0 .. x_{N-1}, shape [N, *latent_shape]: the start latent for every possible skip. In the storage
    precision (float32, or float16 for lean maps, whose inversion and replay round every latent to it)."""
    maps: torch.Tensor
    """z_0 .. z_{N-1}, shape [N, *latent_shape], in the storage precision; maps[N-1] is the final residual."""
    scales: torch.Tensor
    """(a_i, b_i) per sigma, shape [N + 1, 2], float64: x_i = a_i * x0 + b_i * noise for this model family."""
    source_latent: torch.Tensor
    """The input LATENT's samples (before process_latent_in) in float32, shape [B, C, H, W] or, for models with
    video latents (Wan, HunyuanVideo, Qwen-Image...), [B, C, T, H, W]."""
    eta: float
    seed: int
    """Seed of the first variation; variation k was drawn with seed + k."""
    source_cfg: float
    fingerprint: ModelFingerprint
    rule: str = "ddpm"
    variations: int = 1
    """How many seeds the batch holds: the batch is `variations` copies of the source batch, one per seed."""
    latent_rgb_factors: tuple | None = None
    """The model's preview projection (C rows of RGB), used to turn a colour into a latent direction."""
    latent_rgb_bias: tuple | None = None
    source_denoised: torch.Tensor | None = None
    """dpmpp_2m_sde only: the inversion's clean-latent estimates x0_hat_0 .. x0_hat_{N-1}, shape [N, B, C, H, W].
    The second-order part of the step is replayed as its change against these, so the same prompt
    stays on the inversion's path exactly. None for ddpm."""
    batches: tuple[tuple[int, int], ...] | None = None
    """Step-parallel maps only: the step ranges [start, stop) the inversion put through the model together.
    A replay under the same conditioning evaluates the same batches again, so it rounds as the inversion did."""
    conditioning_digest: str | None = None
    """Step-parallel maps only: a digest of the inversion guider's prompts and CFG (digest.guider_digest), to
    recognise a replay under them."""
    residual: torch.Tensor | None = None
    """Lean (float16) maps only: the final residual in float32, shaped like the latent, which closes the replay on
    the source latent exactly (maps[N-1] holds it rounded, for pictures and statistics). None for float32 maps."""

    def __post_init__(self):
        steps = self.maps.shape[0]
        if self.sigmas.ndim != 1 or self.sigmas.shape[0] != steps + 1:
            raise ValueError(f"NoiseMaps: {steps} maps need {steps + 1} sigmas, got shape {tuple(self.sigmas.shape)}")
        if self.noisy_latents.shape != self.maps.shape or self.maps.ndim not in (5, 6):
            raise ValueError("NoiseMaps: noisy latents and maps must have the same shape, [steps, B, C, (T,) H, W]")
        if self.noisy_latents.dtype != self.maps.dtype or self.maps.dtype not in STORAGE_DTYPES.values():
            raise ValueError(f"NoiseMaps: maps and noisy latents must share one storage precision ({', '.join(STORAGE_DTYPES)})")
        if (self.residual is None) != (self.maps.dtype == torch.float32) or (
            self.residual is not None and (self.residual.shape != self.maps.shape[1:] or self.residual.dtype != torch.float32)
        ):
            raise ValueError("NoiseMaps: lean maps need their residual in float32, shaped like the latent; float32 maps keep none")
        if self.scales.shape != (steps + 1, 2):
            raise ValueError("NoiseMaps: one (signal, noise) scale pair per sigma is needed")
        if self.variations < 1 or self.maps.shape[1] % self.variations:
            raise ValueError(f"NoiseMaps: a batch of {self.maps.shape[1]} cannot hold {self.variations} variations")
        if self.rule not in SAMPLING_RULES:
            raise ValueError(f"NoiseMaps: unknown step rule {self.rule!r}")
        needs_history = STEP_RULES[self.rule].keeps_history
        if needs_history and (self.source_denoised is None or self.source_denoised.shape != self.maps.shape):
            raise ValueError(f"NoiseMaps: the {self.rule} rule needs source_denoised shaped like the maps")
        if not needs_history and self.source_denoised is not None:
            raise ValueError(f"NoiseMaps: the {self.rule} rule keeps no source_denoised")
        if self.batches is not None:
            starts = [start for start, _ in self.batches]
            stops = [stop for _, stop in self.batches]
            if not starts or starts[0] != 0 or stops[-1] != steps or starts[1:] != stops[:-1] or any(b <= a for a, b in self.batches):
                raise ValueError(f"NoiseMaps: the batches {list(self.batches)} do not split the {steps} steps into consecutive ranges")

    @property
    def steps(self) -> int:
        """Number of sampling steps N (the number of maps)."""
        return self.maps.shape[0]

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of the latent batch the maps regenerate: (B, C, H, W), or (B, C, T, H, W) for video latents."""
        return tuple(self.maps.shape[1:])

    @property
    def frames(self) -> int | None:
        """Latent frames of video-layout maps; None for image latents."""
        return self.latent_shape[2] if len(self.latent_shape) == 5 else None

    @property
    def storage(self) -> str:
        """The precision the maps and latents are kept in (a key of STORAGE_DTYPES)."""
        return next(name for name, dtype in STORAGE_DTYPES.items() if dtype == self.maps.dtype)

    def noise_map(self, step: int) -> torch.Tensor:
        """z_step in float32 as the replay adds it: the exact residual at the last step of lean maps."""
        if self.residual is not None and step == self.steps - 1:
            return self.residual
        return self.maps[step].float()

    @property
    def batch_size(self) -> int:
        return self.maps.shape[1]

    def start_latent(self, skip: int) -> torch.Tensor:
        """x_skip: where regeneration starts when the `skip` noisiest steps are left out."""
        return self.noisy_latents[skip]

    def nbytes(self) -> int:
        """Memory held by the tensors of this object."""
        tensors = (self.sigmas, self.scales, self.noisy_latents, self.maps, self.source_latent)
        tensors += tuple(t for t in (self.source_denoised, self.residual) if t is not None)
        return sum(t.numel() * t.element_size() for t in tensors)

    def replace(self, **changes) -> NoiseMaps:
        """A new NoiseMaps with some fields changed; this one stays as it is.

        The source's clean-latent estimates (dpmpp_2m_sde) are aligned with the noisy latents: a change
        that moves the noisy latents (a shift) must move them too, or it is refused rather than
        giving an edit that mixes a moved image with an unmoved correction.
        """
        if self.source_denoised is not None and "noisy_latents" in changes and "source_denoised" not in changes:
            raise ValueError(
                "This transform moves the noisy latents but not the dpmpp_2m_sde maps' source_denoised; "
                "it is not supported for dpmpp_2m_sde maps yet. Invert with rule ddpm to use it."
            )
        if {"maps", "noisy_latents"} & changes.keys():
            # Changed maps leave the recorded path at once, so re-evaluating the inversion's batches would be wasted.
            changes = {"batches": None, "conditioning_digest": None, **changes}
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        b, *sizes = self.latent_shape
        return (
            f"NoiseMaps({self.steps} steps, batch {b} ({self.variations} variations), {'x'.join(map(str, sizes))} latents, "
            f"rule {self.rule}, eta {self.eta}, {self.storage}, seed {self.seed}, source cfg {self.source_cfg}, "
            f"{self.fingerprint.latent_format})"
        )
