"""Looking at the maps: per-step statistics and pictures of chosen steps (the paper's Sec. 4 analysis).

Torch for the numbers, PIL (which ComfyUI ships) for captions and the plot. Images are returned in
ComfyUI's IMAGE layout: [batch, height, width, 3] floats in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .noise_maps import NoiseMaps

TILE = 128
CAPTION = 30
PLOT_SIZE = (640, 320)
STD_COLOUR = (46, 196, 182)
CORRELATION_COLOUR = (255, 159, 28)


def map_statistics(noise_maps: NoiseMaps, batch_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step std of the noise maps and the correlation of each map with the next one (residual excluded).

    White noise would give std 1 and correlation 0; edit-friendly maps depart from both.
    """
    flat = noise_maps.maps[:-1, batch_index].flatten(1).cpu().double()  # every frame of a video
    if flat.shape[0] == 0:  # a one-step inversion: only the residual
        return flat.new_zeros(0), flat.new_zeros(0)
    std = flat.std(dim=1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    a, b = centred[:-1], centred[1:]
    correlation = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return std, correlation


def chosen_steps(steps: int, count: int) -> list[int]:
    """`count` steps spread evenly from the first map to the residual."""
    count = max(1, min(count, steps))
    if count == 1:
        return [0]
    return sorted({round(i * (steps - 1) / (count - 1)) for i in range(count)})


def _to_rgb(latent: torch.Tensor, factors) -> torch.Tensor:
    """[C, H, W] map to [3, H, W] through the preview projection, or its first channels if there is none."""
    if factors is not None:
        return torch.einsum("chw,cr->rhw", latent.cpu().float(), torch.tensor(factors, dtype=torch.float32))
    channels = latent[:3].cpu().float()
    return torch.cat([channels, channels[-1:].expand(3 - channels.shape[0], -1, -1)]) if channels.shape[0] < 3 else channels


def _font():
    return ImageFont.load_default()


def render_map_grid(noise_maps: NoiseMaps, count: int = 8, batch_index: int = 0, frame: int = 0) -> torch.Tensor:
    """One row of tiles, one per chosen step, each captioned with its step, sigma, std and lag-1 correlation.

    Video maps show latent frame `frame`; the statistics cover every frame.
    """
    std, correlation = map_statistics(noise_maps, batch_index)
    steps = chosen_steps(noise_maps.steps, count)
    height, width = noise_maps.latent_shape[-2:]
    scale = max(1, TILE // max(height, width))
    canvas = Image.new("RGB", (len(steps) * width * scale, height * scale + CAPTION), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for column, step in enumerate(steps):
        shown = noise_maps.maps[step, batch_index]
        shown = shown[:, frame] if noise_maps.frames is not None else shown
        rgb = _to_rgb(shown.float(), noise_maps.latent_rgb_factors)
        rgb = 0.5 + rgb / (4 * rgb.std().clamp_min(1e-8))  # +-2 std fills the range
        pixels = (rgb.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        tile = Image.fromarray(pixels).resize((width * scale, height * scale), Image.NEAREST)
        left = column * width * scale
        canvas.paste(tile, (left, 0))
        last = step == noise_maps.steps - 1
        title = f"step {step}" + (" (residual)" if last else f"  s={float(noise_maps.sigmas[step]):.3g}")
        numbers = f"std {float(noise_maps.maps[step, batch_index].float().std()):.2f}"
        if step < len(correlation):
            numbers += f"  r {float(correlation[step]):+.2f}"
        draw.text((left + 3, height * scale + 2), title, fill=(230, 230, 230), font=_font())
        draw.text((left + 3, height * scale + 15), numbers, fill=(170, 170, 170), font=_font())
    return _to_image_tensor(canvas)


def render_statistics_plot(noise_maps: NoiseMaps, batch_index: int = 0) -> torch.Tensor:
    """A line plot of per-step std and lag-1 correlation against step, with white noise's values for reference."""
    std, correlation = map_statistics(noise_maps, batch_index)
    width, height = PLOT_SIZE
    margin = 44
    canvas = Image.new("RGB", PLOT_SIZE, (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    top = max(1.5, float(std.max()) * 1.1) if len(std) else 1.5  # a one-step inversion has only the residual
    bottom = min(-1.0, float(correlation.min()) * 1.1) if len(correlation) else -1.0
    steps = max(len(std) - 1, 1)

    def point(step, value):
        x = margin + (width - 2 * margin) * step / steps
        y = height - margin - (height - 2 * margin) * (value - bottom) / (top - bottom)
        return x, y

    draw.rectangle([margin, margin, width - margin, height - margin], outline=(120, 120, 120))
    for value, label in ((0.0, "0"), (1.0, "1")):
        draw.line([point(0, value), point(steps, value)], fill=(200, 200, 200), width=1)
        draw.text((6, point(0, value)[1] - 6), label, fill=(80, 80, 80), font=_font())
    for series, colour in ((std, STD_COLOUR), (correlation, CORRELATION_COLOUR)):
        if len(series) > 1:
            draw.line([point(i, float(v)) for i, v in enumerate(series)], fill=colour, width=2)
        elif len(series) == 1:
            x, y = point(0, float(series[0]))
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((margin, 8), "per-step std of the maps (white noise: 1)", fill=STD_COLOUR, font=_font())
    draw.text((margin, 22), "correlation with the next step's map (white noise: 0)", fill=CORRELATION_COLOUR, font=_font())
    draw.text((width // 2 - 40, height - margin + 12), f"step (0 .. {len(std) - 1})", fill=(80, 80, 80), font=_font())
    return _to_image_tensor(canvas)


def _to_image_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
