"""The toy world: seeded pictures of one coloured shape on a plain or textured background, and a classifier.

Images are float tensors [B, 3, 32, 32] in [0, 1]. Each comes with a caption such as "a red circle". The
classifier reads a picture back: which colour and shape it shows, and where (a foreground mask). Shapes
are saturated and backgrounds are greys and muted tints, so saturation separates them; the shape follows
from how much of its bounding box the mask fills (square 1, circle pi/4, triangle 1/2).
"""

from __future__ import annotations

import dataclasses
import math

import torch

SIZE = 32
SUPERSAMPLE = 4
COLOURS = {
    "red": (0.86, 0.16, 0.16),
    "yellow": (0.90, 0.80, 0.14),
    "green": (0.16, 0.66, 0.24),
    "blue": (0.16, 0.31, 0.86),
    "purple": (0.58, 0.22, 0.80),
}
SHAPES = ("circle", "square", "triangle")
HELD_OUT_PAIRS = (("green", "triangle"), ("yellow", "square"))
"""Colour-shape pairs never shown in training, to see whether the model composes what it learnt."""
BACKGROUNDS = ((0.85, 0.85, 0.85), (0.55, 0.55, 0.55), (0.28, 0.28, 0.30), (0.86, 0.82, 0.76), (0.70, 0.74, 0.78))
SATURATION_THRESHOLD = 0.25
FILL_TRIANGLE_BELOW = 0.70
FILL_SQUARE_ABOVE = 0.89

COLOUR_NAMES = tuple(COLOURS)
PALETTE = torch.tensor([COLOURS[name] for name in COLOUR_NAMES])


def caption(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def training_pairs() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]


@dataclasses.dataclass
class Scenes:
    """A batch of pictures with what is in them."""

    images: torch.Tensor
    colours: list[str]
    shapes: list[str]
    masks: torch.Tensor
    """[B, 32, 32] fraction of each pixel covered by the shape."""
    centres: torch.Tensor
    """[B, 2] shape centre (x, y) in pixels."""
    sizes: torch.Tensor

    @property
    def captions(self) -> list[str]:
        return [caption(c, s) for c, s in zip(self.colours, self.shapes)]


def shape_coverage(shape: str, cx: float, cy: float, half: float) -> torch.Tensor:
    """[32, 32] anti-aliased coverage of one shape centred at (cx, cy) with half-extent `half`."""
    fine = SIZE * SUPERSAMPLE
    axis = (torch.arange(fine, dtype=torch.float32) + 0.5) / SUPERSAMPLE
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= half**2
    elif shape == "square":
        inside = ((x - cx).abs() <= half) & ((y - cy).abs() <= half)
    elif shape == "triangle":  # upright: apex at the top, base at the bottom, both 2*half
        depth = y - (cy - half)
        inside = (depth >= 0) & (y <= cy + half) & ((x - cx).abs() <= depth / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return torch.nn.functional.avg_pool2d(inside.float()[None, None], SUPERSAMPLE)[0, 0]


def background(generator: torch.Generator) -> torch.Tensor:
    """A plain muted background, or the same with low-contrast stripes or blotches."""
    base = torch.tensor(BACKGROUNDS[int(torch.randint(len(BACKGROUNDS), (1,), generator=generator))])
    image = base[:, None, None].expand(3, SIZE, SIZE).clone()
    kind = int(torch.randint(3, (1,), generator=generator))
    axis = torch.arange(SIZE, dtype=torch.float32)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    if kind == 1:
        angle = float(torch.rand(1, generator=generator)) * math.pi
        period = 4 + 6 * float(torch.rand(1, generator=generator))
        image = image + 0.07 * torch.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    elif kind == 2:
        coarse = torch.randn(1, 1, 5, 5, generator=generator)
        blotches = torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)[0]
        image = image + 0.06 * blotches
    return image.clamp(0, 1)


def draw(count: int, seed: int, pairs: list[tuple[str, str]] | None = None) -> Scenes:
    """`count` seeded scenes; colour and shape drawn from `pairs` (default: the training pairs)."""
    pairs = pairs or training_pairs()
    generator = torch.Generator().manual_seed(seed)
    images, colours, shapes, masks, centres, sizes = [], [], [], [], [], []
    for _ in range(count):
        colour, shape = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        half = 6.0 + 4.5 * float(torch.rand(1, generator=generator))
        low, high = half + 1.0, SIZE - half - 1.0
        cx, cy = (low + (high - low) * torch.rand(2, generator=generator)).tolist()
        tint = torch.tensor(COLOURS[colour]) + 0.04 * torch.randn(3, generator=generator)
        coverage = shape_coverage(shape, cx, cy, half)
        image = background(generator) * (1 - coverage) + tint.clamp(0, 1)[:, None, None] * coverage
        images.append(image)
        colours.append(colour)
        shapes.append(shape)
        masks.append(coverage)
        centres.append((cx, cy))
        sizes.append(half)
    return Scenes(torch.stack(images), colours, shapes, torch.stack(masks), torch.tensor(centres), torch.tensor(sizes))


@dataclasses.dataclass
class Reading:
    """What the classifier sees in a batch of pictures."""

    colours: list[str | None]
    shapes: list[str | None]
    masks: torch.Tensor
    """[B, 32, 32] boolean foreground."""

    def centres(self) -> torch.Tensor:
        """[B, 2] foreground centroid (x, y), NaN where there is no foreground."""
        axis = torch.arange(SIZE, dtype=torch.float32) + 0.5
        weight = self.masks.float()
        total = weight.sum((1, 2))
        cx = (weight * axis[None, None, :]).sum((1, 2)) / total
        cy = (weight * axis[None, :, None]).sum((1, 2)) / total
        return torch.stack([cx, cy], 1)


def foreground(images: torch.Tensor) -> torch.Tensor:
    """Saturated pixels with at least four saturated neighbours (drops isolated specks)."""
    saturation = images.amax(1) - images.amin(1)
    mask = (saturation > SATURATION_THRESHOLD).float()
    neighbours = torch.nn.functional.conv2d(mask[:, None], torch.ones(1, 1, 3, 3), padding=1)[:, 0] - mask
    return (mask > 0) & (neighbours >= 4)


def classify(images: torch.Tensor) -> Reading:
    """Colour (nearest palette entry to the mean foreground colour) and shape (bounding-box fill) of each picture."""
    images = images.float().clamp(0, 1).cpu()
    masks = foreground(images)
    colours, shapes = [], []
    for image, mask in zip(images, masks):
        if mask.sum() < 6:
            colours.append(None)
            shapes.append(None)
            continue
        mean = image[:, mask].mean(1)
        colours.append(COLOUR_NAMES[int(((PALETTE - mean) ** 2).sum(1).argmin())])
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        fill = float(mask.sum()) / float(box)
        shapes.append("triangle" if fill < FILL_TRIANGLE_BELOW else "square" if fill > FILL_SQUARE_ABOVE else "circle")
    return Reading(colours, shapes, masks)


def iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """[B] intersection over union of two batches of boolean masks (1 where both are empty)."""
    union = (first | second).sum((1, 2)).float()
    inter = (first & second).sum((1, 2)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def background_error(before: torch.Tensor, after: torch.Tensor, masks_before: torch.Tensor, masks_after: torch.Tensor) -> torch.Tensor:
    """[B] mean absolute pixel change away from the shape (outside both masks, grown by one pixel)."""
    shape = (masks_before | masks_after).float()[:, None]
    grown = torch.nn.functional.max_pool2d(shape, 3, stride=1, padding=1)[:, 0] > 0
    outside = (~grown).float()
    change = (before.float() - after.float()).abs().mean(1)
    return (change * outside).sum((1, 2)) / outside.sum((1, 2)).clamp(min=1)
