"""Edits made by transforming the noise maps themselves (paper, Sec. 5: shifts and colour changes).

Pure torch. Every function returns new NoiseMaps and leaves its input untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .noise_maps import NoiseMaps
from .sampling import rule_steps
from .validation import mask_for_latent

FILL_MODES = ("noise", "reflect", "wrap")
"""How the band a shift uncovers is filled: fresh seeded noise, a mirror of the edge, or the opposite edge."""


def _uncovered(sizes: tuple[int, ...], shifts: tuple[int, ...], device) -> torch.Tensor:
    """Boolean mask over the last len(sizes) dims of the band that shifting by `shifts` leaves without content."""
    band = torch.zeros(sizes, dtype=torch.bool, device=device)
    for dim, (size, shift) in enumerate(zip(sizes, shifts)):
        if shift:
            edge = slice(0, shift) if shift > 0 else slice(size + shift, size)
            band[(slice(None),) * dim + (edge,)] = True
    return band


def _reflect_shift(t: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    sizes = t.shape[-len(shifts) :]
    flat = t.reshape(-1, 1, *sizes)
    cropped = flat[(..., *(slice(max(0, -s), n - max(0, s)) for n, s in zip(sizes, shifts)))]
    padding = [amount for s in reversed(shifts) for amount in (max(0, s), max(0, -s))]  # F.pad lists the last dim first
    return F.pad(cropped, padding, mode="reflect").reshape(t.shape)


def shift_tensor(t: torch.Tensor, dx: int, dy: int, fill: str, fresh: torch.Tensor | None = None, dt: int = 0) -> torch.Tensor:
    """Translate the last two dims of `t` by (dx, dy), and with `dt` the third last (frames) by dt; `fresh` supplies
    the uncovered band for fill='noise'."""
    shifts = (dt, dy, dx) if dt else (dy, dx)
    if fill == "reflect":
        return _reflect_shift(t, shifts)
    shifted = torch.roll(t, shifts=shifts, dims=tuple(range(-len(shifts), 0)))
    if fill == "wrap":
        return shifted
    band = _uncovered(tuple(t.shape[-len(shifts) :]), shifts, t.device)
    return torch.where(band, fresh.to(t), shifted)


def shift_noise_maps(noise_maps: NoiseMaps, dx: int, dy: int, fill: str = "noise", seed: int = 0, dt: int = 0) -> NoiseMaps:
    """Shift every map and start latent by (dx, dy) latent pixels, and video maps by dt latent frames, so regeneration
    gives a shifted image or a video shifted in time (Sec. 5)."""
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {FILL_MODES}, got {fill!r}")
    if dx == 0 and dy == 0 and dt == 0:
        return noise_maps
    fresh = {}
    if fill == "noise":
        # New content for the band: fresh N(0, I) maps, a zero residual, and noisy latents at the
        # right noise level around the image's mean colour, so the model paints something plausible.
        generator = torch.Generator().manual_seed(int(seed))
        maps = noise_maps.maps
        fresh_maps = torch.randn(maps.shape, generator=generator, dtype=torch.float32)
        fresh_maps[-1] = 0.0
        spatial = tuple(range(2, noise_maps.source_latent.ndim))  # height and width, and frames for video
        clean_mean = noise_maps.noisy_latents[-1].float().cpu().mean(dim=spatial, keepdim=True)
        a, b = (noise_maps.scales[:-1, k].float().view(-1, *[1] * (maps.ndim - 1)) for k in (0, 1))
        level_noise = torch.randn(maps.shape, generator=generator, dtype=torch.float32)
        fresh["maps"] = fresh_maps
        fresh["noisy_latents"] = a * clean_mean + b * level_noise
        source = noise_maps.source_latent
        fresh["source_latent"] = source.mean(dim=spatial, keepdim=True).expand_as(source)
        if noise_maps.source_denoised is not None:
            fresh["source_denoised"] = clean_mean.expand_as(noise_maps.source_denoised)
        if noise_maps.residual is not None:
            fresh["residual"] = torch.zeros_like(noise_maps.residual)
    moved = ["maps", "noisy_latents", "source_latent"]
    # dpmpp_2m_sde maps replay against the source's clean estimates, lean maps close with their residual: both move too.
    moved += [name for name in ("source_denoised", "residual") if getattr(noise_maps, name) is not None]
    return noise_maps.replace(
        **{name: shift_tensor(getattr(noise_maps, name), dx, dy, fill, fresh.get(name), dt) for name in moved}
    )


def parse_hex_colour(text: str) -> tuple[float, float, float]:
    """'#RRGGBB' (or 'RRGGBB', or '#RGB') to an RGB triple in [0, 1]; ValueError otherwise."""
    value = text.strip().lstrip("#")
    if len(value) == 3:
        value = "".join(ch * 2 for ch in value)
    if len(value) != 6 or any(ch not in "0123456789abcdefABCDEF" for ch in value):
        raise ValueError(f"colour must look like #RRGGBB, got {text!r}")
    return tuple(int(value[i : i + 2], 16) / 255.0 for i in (0, 2, 4))


def preview_rgb(latent: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """ComfyUI's latent preview projection: [B, C, (T,) H, W] model-space latent to [B, 3, (T,) H, W] in [-1, 1]-ish."""
    rgb = torch.movedim(torch.movedim(latent, 1, -1) @ factors.to(latent), -1, 1)
    if bias is not None:
        rgb = rgb + bias.to(latent).view(1, 3, *[1] * (latent.ndim - 2))
    return rgb


def colour_direction(
    reference: torch.Tensor, colour: tuple[float, float, float], factors: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor
) -> torch.Tensor:
    """Smallest latent offset per image or video, [B, C, 1, 1(, 1)], that moves the masked mean preview colour of
    `reference` [B, C, (T,) H, W] to `colour`.

    The least-squares inverse of the preview projection: offsets in its null space would change
    texture but not colour, so the minimum-norm solution is taken.
    """
    spatial = tuple(range(2, reference.ndim))
    weights = mask / mask.sum(dim=spatial, keepdim=True).clamp_min(1e-8)
    current = (preview_rgb(reference, factors, bias) * weights).sum(dim=spatial)  # [B, 3]
    target = torch.tensor(colour, dtype=reference.dtype, device=reference.device) * 2.0 - 1.0
    change = target - current
    inverse = torch.linalg.pinv(factors.to(reference).T)  # [C, 3]
    return (change @ inverse.T).view(change.shape[0], -1, *[1] * len(spatial))


def colour_noise_maps(
    noise_maps: NoiseMaps,
    colour: tuple[float, float, float],
    strength: float,
    mask: torch.Tensor | None = None,
    start_percent: float = 0.0,
    end_percent: float = 1.0,
) -> NoiseMaps:
    """Add a colour offset to the maps inside `mask` over a range of steps (Sec. 5, colour manipulation).

    The offset is the latent direction of `colour` (from the model's preview factors), spread over
    the chosen steps in proportion to their noise scale, so that strength 1 moves the masked mean
    colour to the target for a denoiser that carries offsets through. `mask` is [B or 1, H, W] at
    latent resolution ([T or 1, H, W], frames, for video maps), 1 where the colour applies. A replay from skip k never sees the maps before k,
    so each noisy latent x_k (a start latent) also gets the offsets those maps add, as such a denoiser
    would keep them: the colour holds whatever skip the sampler uses, and a replay from skip 0, which
    starts at x_0, is unchanged by this.
    """
    if noise_maps.latent_rgb_factors is None:
        raise ValueError(
            f"The model's latent format ({noise_maps.fingerprint.latent_format}) has no preview colour factors, "
            "so a colour cannot be turned into a latent direction for it."
        )
    if strength == 0.0:
        return noise_maps
    shape = noise_maps.latent_shape
    if mask is None:
        mask = torch.ones(1, *shape[-2:])
    mask = mask_for_latent(mask.to(noise_maps.source_latent), shape)  # broadcasts over the latent, channels aside
    factors = torch.tensor(noise_maps.latent_rgb_factors, dtype=torch.float32)
    bias = None if noise_maps.latent_rgb_bias is None else torch.tensor(noise_maps.latent_rgb_bias, dtype=torch.float32)
    reference = noise_maps.noisy_latents[-1].float()  # x at the smallest sigma: the image, nearly clean
    direction = colour_direction(reference, colour, factors, bias, mask.expand(shape[0], 1, *shape[2:]))

    steps = rule_steps(noise_maps.rule, noise_maps.scales, noise_maps.eta)  # the scales the replay multiplies the maps by
    first = int(round(start_percent * noise_maps.steps))
    last = min(int(round(end_percent * noise_maps.steps)), noise_maps.steps - 1)  # never the final residual
    chosen = range(first, last)
    if not chosen:
        raise ValueError(
            f"start_percent {start_percent:g} to end_percent {end_percent:g} holds no step of these {noise_maps.steps}-step maps "
            "(the last map, the residual, is never coloured): widen the range, or set color_strength to 0."
        )
    total_scale = sum(steps[i].noise_scale for i in chosen)
    offset = (strength / total_scale) * direction * mask
    maps, noisy_latents = noise_maps.maps.clone(), noise_maps.noisy_latents.clone()
    carried = 0.0  # what the chosen maps before step k add to the latent, in units of `offset`
    for k in range(noise_maps.steps):
        if carried:
            noisy_latents[k] += carried * offset
        if k in chosen:
            maps[k] += offset
            carried += steps[k].noise_scale
    # The source's clean-latent estimates stay: a replay compares the changes in its own estimates with theirs.
    return noise_maps.replace(maps=maps, noisy_latents=noisy_latents, source_denoised=noise_maps.source_denoised)
