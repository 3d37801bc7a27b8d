"""Edit quality on the trained toy model: edit-friendly DDPM inversion against DDIM inversion, SDEdit
and plain generation, plus the noise-map manipulations and the fast DPM-Solver++(2M) SDE mode.

    .cache/venv/bin/python benchmarks/quality.py                      # about 30 minutes on 2 CPU cores
    .cache/venv/bin/python benchmarks/quality.py --images 8 --steps 10 --parts model edits   # smoke run

The task: held-out pictures of "a <colour> <shape>" (benchmarks/toy_shapes.py, a seed never used in
training) are recoloured to another colour by prompt ("a red circle" -> "a blue circle"). For each
method and setting it prints, averaged over the pictures:
- denoiser steps spent (inversion included), reconstruction error with the source prompt;
- edit success: the classifier reads the target colour; shape kept: it still reads the source shape;
- structure: IoU of the classifier's foreground masks before and after, and the mean absolute pixel
  change (0-1 scale) away from the shape (background error);
- diversity: mean per-pixel standard deviation across 4 seeds of the same edit;
- fast part: each setting's paired difference from the 100-step DDPM reference on the same pictures,
  with a 95% interval (`--images 200 --subset-images 200 --parts fast --output F` for a larger sample).
Writes a trade-off plot (docs/quality-tradeoff.png), a sample grid of the model (docs/toy-samples.png),
edit and manipulation grids (docs/quality-edits.png,
docs/quality-manipulations.png) and every figure as JSON (docs/quality-results.json).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402, F401  (puts ComfyUI on the path, CPU mode, loads the pack)

import baselines  # noqa: E402
import comfy.utils  # noqa: E402
import toy_model  # noqa: E402
import toy_shapes  # noqa: E402
import torch  # noqa: E402
from edit_friendly_ddpm.nodes import pipeline, transforms  # noqa: E402

HELD_OUT_SEED = 424242
SCHEDULER = "normal"
DOCS = ROOT / "docs"


class Prompts:
    """CONDITIONING for a list of captions, one row per picture, each caption encoded once by CLIPTextEncode."""

    def __init__(self, clip):
        self.clip = clip
        self.cache = {}

    def __call__(self, captions: list[str]) -> list:
        for text in set(captions) - set(self.cache):
            self.cache[text] = toy_model.encode(self.clip, text)[0]
        rows = [self.cache[text] for text in captions]
        return [[torch.cat([r[0] for r in rows]), {"pooled_output": torch.cat([r[1]["pooled_output"] for r in rows])}]]


def edit_targets(scenes: toy_shapes.Scenes) -> list[str]:
    """A different colour for each picture, cycling through those the model was trained on for its shape."""
    pairs = set(toy_shapes.training_pairs())
    targets = []
    for i, (colour, shape) in enumerate(zip(scenes.colours, scenes.shapes)):
        choices = [c for c in toy_shapes.COLOUR_NAMES if c != colour and (c, shape) in pairs]
        targets.append(choices[i % len(choices)])
    return targets


def score(before: torch.Tensor, after: torch.Tensor, source: toy_shapes.Reading, targets: list[str], shapes: list[str],
          per_picture: bool = False) -> dict:
    """Edit success, shape kept, IoU and background error of `after` (latents) against the source pictures.

    With `per_picture`, also the success and shape-kept reading of every picture (for paired comparisons).
    """
    images = toy_model.to_images(after)
    reading = toy_shapes.classify(images)
    success = [got == want for got, want in zip(reading.colours, targets)]
    kept = [got == want for got, want in zip(reading.shapes, shapes)]
    scores = {
        "success": sum(success) / len(success),
        "shape_kept": sum(kept) / len(kept),
        "iou": float(toy_shapes.iou(source.masks, reading.masks).mean()),
        "background_error": float(toy_shapes.background_error(toy_model.to_images(before), images, source.masks, reading.masks).mean()),
    }
    if per_picture:
        scores["per_picture"] = {"success": success, "shape_kept": kept}
    return scores


def paired_difference(values: list[bool], reference: list[bool]) -> list[float]:
    """Mean of values - reference over the same pictures, with a 95% normal-approximation interval: [mean, low, high]."""
    differences = torch.tensor(values, dtype=torch.float64) - torch.tensor(reference, dtype=torch.float64)
    half_width = 1.96 * float(differences.std()) / len(differences) ** 0.5 if len(differences) > 1 else float("inf")
    mean = float(differences.mean())
    return [mean, mean - half_width, mean + half_width]


def accuracy(reading: toy_shapes.Reading, colours: list[str], shapes: list[str]) -> dict:
    """Share of pictures whose colour, shape, and both, the classifier reads as named."""
    colour = [got == want for got, want in zip(reading.colours, colours)]
    shape = [got == want for got, want in zip(reading.shapes, shapes)]
    return {"colour": sum(colour) / len(colour), "shape": sum(shape) / len(shape), "both": sum(map(all, zip(colour, shape))) / len(colour)}


def check_classifier(count: int = 1000, seed: int = 7) -> dict:
    """The classifier on drawn pictures, whose colour, shape and mask are known."""
    scenes = toy_shapes.draw(count, seed)
    reading = toy_shapes.classify(scenes.images)
    iou = float(toy_shapes.iou(reading.masks, scenes.masks > 0.5).mean())
    return {"pictures": count, **accuracy(reading, scenes.colours, scenes.shapes), "mask_iou": iou}


def check_model(model, prompts, steps: int, cfg: float, per_caption: int, grid: pathlib.Path = DOCS / "toy-samples.png", scheduler: str = SCHEDULER) -> dict:
    """Samples for every caption (training pairs and the held-out pairs), read back by the classifier; the samples go to `grid`."""
    wanted = [(c, s) for c in toy_shapes.COLOUR_NAMES for s in toy_shapes.SHAPES for _ in range(per_caption)]
    captions = [toy_shapes.caption(c, s) for c, s in wanted]
    samples = baselines.generate(model, prompts(captions), prompts([""] * len(captions)), (len(captions), 3, 32, 32), steps, cfg, scheduler, seed=7, sampler="euler")
    reading = toy_shapes.classify(toy_model.to_images(samples))
    result = {}
    for group, members in (("training pairs", toy_shapes.training_pairs()), ("held-out pairs", list(toy_shapes.HELD_OUT_PAIRS))):
        rows = [i for i, pair in enumerate(wanted) if pair in members]
        picked = toy_shapes.Reading([reading.colours[i] for i in rows], [reading.shapes[i] for i in rows], reading.masks[rows])
        result[group] = {"samples": len(rows), **accuracy(picked, [wanted[i][0] for i in rows], [wanted[i][1] for i in rows])}
    save_grid(toy_model.to_images(samples), grid, per_caption)
    return result


def save_grid(images: torch.Tensor, path: pathlib.Path, columns: int) -> None:
    import torchvision.utils

    upscaled = torch.nn.functional.interpolate(images, scale_factor=2, mode="nearest")
    torchvision.utils.save_image(upscaled, str(path), nrow=columns, padding=2, pad_value=1.0)


def run_edits(model, prompts, scenes, targets, steps, cfg_source, cfgs, skips, strengths, seed) -> tuple[list[dict], dict]:
    """Every method over its sweep on the whole held-out set; returns rows and example outputs."""
    latent = toy_model.to_latent(scenes.images)
    samples = latent["samples"]
    source_captions = scenes.captions
    target_captions = [toy_shapes.caption(c, s) for c, s in zip(targets, scenes.shapes)]
    source, target, empty = prompts(source_captions), prompts(target_captions), prompts([""] * len(targets))
    reading = toy_shapes.classify(scenes.images)
    rows, examples = [], {"input": samples}

    def record(method, setting, calls, output, recon=None):
        row = {"method": method, "setting": setting, "steps": calls, "reconstruction": recon, **score(samples, output, reading, targets, scenes.shapes)}
        rows.append(row)
        print(format_row(row), flush=True)
        return row

    started = time.time()
    maps = pipeline.invert(model, source, empty, latent, steps, cfg_source, SCHEDULER, 1.0, seed)
    recon = baselines.reconstruction_error(pipeline.regenerate(model, source, empty, maps, cfg_source, 0), samples)
    print(f"edit-friendly inversion: {steps} steps, reconstruction max |error| {recon:.2e} ({time.time() - started:.0f} s)", flush=True)
    for skip in skips:
        for cfg in cfgs:
            output = pipeline.regenerate(model, target, empty, maps, cfg, skip)
            record("edit-friendly DDPM", f"skip {skip}, cfg {cfg:g}", steps + steps - skip, output, recon)
            examples[f"edit-friendly skip {skip} cfg {cfg:g}"] = output

    sigmas, trajectory = baselines.ddim_invert(model, source, empty, samples, steps, 1.0, SCHEDULER)
    ddim_recon = baselines.reconstruction_error(baselines.ddim_edit(model, source, empty, sigmas, trajectory, 1.0, 0), samples)
    print(f"DDIM inversion: reconstruction max |error| {ddim_recon:.2e} (same prompt, cfg 1)", flush=True)
    for cfg in cfgs:
        output = baselines.ddim_edit(model, target, empty, sigmas, trajectory, cfg, 0)
        record("DDIM inversion", f"cfg {cfg:g}", steps + steps, output, ddim_recon)
        examples[f"DDIM cfg {cfg:g}"] = output

    for strength in strengths:
        for cfg in cfgs:
            output = baselines.sdedit(model, target, empty, samples, steps, cfg, SCHEDULER, strength, seed)
            record("SDEdit", f"strength {strength:g}, cfg {cfg:g}", round(strength * steps), output)
            examples[f"SDEdit {strength:g} cfg {cfg:g}"] = output

    cfg = cfgs[len(cfgs) // 2]
    output = baselines.generate(model, target, empty, samples.shape, steps, cfg, SCHEDULER, seed)
    record("plain generation", f"cfg {cfg:g}", steps, output)
    examples[f"generation cfg {cfg:g}"] = output
    return rows, examples


def diversity(model, prompts, scenes, targets, steps, cfg_source, cfg, skip, strength, seeds=4) -> dict:
    """Mean per-pixel standard deviation over `seeds` runs of the same edit, for each method."""
    count = len(targets)
    latent = toy_model.to_latent(scenes.images)
    source = prompts(scenes.captions)
    target = prompts([toy_shapes.caption(c, s) for c, s in zip(targets, scenes.shapes)])
    empty = prompts([""] * count)

    def spread(outputs: torch.Tensor) -> float:  # outputs [seeds * count, 3, H, W], seed-major
        images = toy_model.to_images(outputs).view(seeds, count, 3, 32, 32)
        return float(images.std(0).mean())

    maps = pipeline.invert(model, source, empty, latent, steps, cfg_source, SCHEDULER, 1.0, 0, variations=seeds)
    result = {"edit-friendly DDPM": spread(pipeline.regenerate(model, target, empty, maps, cfg, skip))}
    sigmas, trajectory = baselines.ddim_invert(model, source, empty, latent["samples"], steps, 1.0, SCHEDULER)
    ddim = baselines.ddim_edit(model, target, empty, sigmas, trajectory, cfg, skip)
    result["DDIM inversion"] = spread(ddim.repeat(seeds, 1, 1, 1))  # deterministic: every seed gives the same output
    result["SDEdit"] = spread(torch.cat([baselines.sdedit(model, target, empty, latent["samples"], steps, cfg, SCHEDULER, strength, s) for s in range(seeds)]))
    result["plain generation"] = spread(torch.cat([baselines.generate(model, target, empty, latent["samples"].shape, steps, cfg, SCHEDULER, s) for s in range(seeds)]))
    return result


def manipulations(model, prompts, scenes, targets, steps, cfg_source, shift=4, strengths=(1.0, 2.0, 4.0)) -> dict:
    """Shifted maps move the shape; coloured maps recolour it inside a mask; both with the source prompt."""
    latent = toy_model.to_latent(scenes.images)
    source, empty = prompts(scenes.captions), prompts([""] * len(targets))
    reading = toy_shapes.classify(scenes.images)
    maps = pipeline.invert(model, source, empty, latent, steps, cfg_source, SCHEDULER, 1.0, 0)

    room = scenes.centres[:, 0] + scenes.sizes + shift < toy_shapes.SIZE - 1
    shifted = pipeline.regenerate(model, source, empty, transforms.shift_noise_maps(maps, shift, 0), cfg_source, 0)
    moved = toy_shapes.classify(toy_model.to_images(shifted))
    offset = moved.centres() - reading.centres()
    error = (offset - torch.tensor([shift, 0.0])).norm(dim=1)[room]
    shapes_kept = [m == s for m, s, r in zip(moved.shapes, scenes.shapes, room.tolist()) if r]

    region = torch.nn.functional.max_pool2d((scenes.masks > 0.05).float()[:, None], 5, stride=1, padding=2)[:, 0]
    colour = {}
    for strength in strengths:
        change = torch.zeros_like(maps.maps)
        for name in set(targets):  # the transform takes one colour per call: one call per target colour, masked to its pictures
            chosen = torch.tensor([t == name for t in targets], dtype=torch.float32)[:, None, None]
            change += transforms.colour_noise_maps(maps, toy_shapes.COLOURS[name], strength, region * chosen).maps - maps.maps
        coloured = pipeline.regenerate(model, source, empty, maps.replace(maps=maps.maps + change), cfg_source, 0)
        colour[f"strength {strength:g}"] = score(latent["samples"], coloured, reading, targets, scenes.shapes)
    return {
        "shift": {"pixels": shift, "pictures": int(room.sum()), "position_error": float(error.mean()), "shape_kept": sum(shapes_kept) / max(1, len(shapes_kept))},
        "colour": colour,
        "examples": {"shifted": shifted, "coloured": coloured},
    }


def fast_mode(model, prompts, scenes, targets, cfg_source, settings) -> list[dict]:
    """Edit-friendly edits with the DDPM rule and with DPM-Solver++(2M) SDE; settings are (rule, steps, skip fraction, cfg).

    The first setting is the reference: every other row also gets its paired difference from it in edit
    success and shape kept, picture by picture (`vs_reference`, [mean, 95% low, 95% high]).
    """
    latent = toy_model.to_latent(scenes.images)
    source, empty = prompts(scenes.captions), prompts([""] * len(targets))
    target = prompts([toy_shapes.caption(c, s) for c, s in zip(targets, scenes.shapes)])
    reading = toy_shapes.classify(scenes.images)
    rows, reference = [], None
    for rule, steps, skip_fraction, cfg in settings:
        started = time.time()
        maps = pipeline.invert(model, source, empty, latent, steps, cfg_source, SCHEDULER, 1.0, 0, rule=rule)
        skip = round(skip_fraction * steps)
        output = pipeline.regenerate(model, target, empty, maps, cfg, skip)
        recon = None  # DDPM's exactness is in the main table; here only the new rule's is worth the time
        if rule != "ddpm":
            recon = baselines.reconstruction_error(pipeline.regenerate(model, source, empty, maps, cfg_source, 0), latent["samples"])
        row = {"method": f"edit-friendly {rule}", "setting": f"{steps} steps, skip {skip}, cfg {cfg:g}", "steps": steps + steps - skip,
               "reconstruction": recon, "seconds": time.time() - started, "pictures": len(targets),
               **score(latent["samples"], output, reading, targets, scenes.shapes, per_picture=True)}
        pictures = row.pop("per_picture")
        if reference is None:
            reference = pictures
        else:
            row["vs_reference"] = {key: paired_difference(pictures[key], reference[key]) for key in pictures}
        rows.append(row)
        print(format_row(row, paired=True), flush=True)
    return rows


def format_row(row: dict, paired: bool = False) -> str:
    """A table row; with `paired`, two more cells: the differences from the reference in percentage points."""
    recon = "-" if row.get("reconstruction") is None else f"{row['reconstruction']:.1e}"
    line = (f"| {row['method']} | {row['setting']} | {row['steps']} | {recon} | {100 * row['success']:.0f}% | {100 * row['shape_kept']:.0f}% "
            f"| {row['iou']:.3f} | {row['background_error']:.3f} |")
    if paired and "vs_reference" not in row:
        line += " reference | reference |"
    elif paired:
        line += "".join(f" {100 * mean:+.0f} ({100 * low:+.0f} to {100 * high:+.0f}) |" for mean, low, high in row["vs_reference"].values())
    return line


TABLE_HEADER = "| method | setting | denoiser steps | reconstruction max abs error | edit success | shape kept | IoU | background error |\n|---|---|---|---|---|---|---|---|"
FAST_TABLE_HEADER = (TABLE_HEADER.replace(" |\n", " | success vs reference (95%) | shape kept vs reference (95%) |\n", 1) + "---|---|")


STYLES = {"edit-friendly DDPM": ("#1f8a8a", "o"), "DDIM inversion": ("#c0504d", "s"), "SDEdit": ("#8064a2", "^"), "plain generation": ("#7f7f7f", "x")}
PANELS = (
    ("iou", "structure kept: IoU of shape masks (higher is better)"),
    ("background_error", "background error, mean |change| (lower is better)"),
)
TITLE = "Toy model, held-out pictures, colour edits by prompt: every point is one setting of the sweep"


def plot_tradeoff(rows: list[dict], path: pathlib.Path, styles: dict = STYLES, panels=PANELS, title: str = TITLE) -> None:
    """One panel per measure against edit success, one curve per method (`styles`: method -> colour, marker)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), dpi=110)
    for method, (colour, marker) in styles.items():
        points = sorted((r["success"], *(r[key] for key, _ in panels)) for r in rows if r["method"] == method)
        if not points:
            continue
        success = [100 * p[0] for p in points]
        for column, ax in enumerate(axes, start=1):
            ax.plot(success, [p[column] for p in points], marker=marker, color=colour, label=method, linestyle="-" if len(points) > 1 else "none")
    for ax, (_, label) in zip(axes, panels):
        ax.set_ylabel(label)
        ax.set_xlabel("edit success: target colour read by the classifier (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=pathlib.Path, default=toy_model.WEIGHTS)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cfg-source", type=float, default=2.0)
    parser.add_argument("--cfgs", type=float, nargs="+", default=[3.0, 5.0, 8.0], help="target CFG sweep")
    parser.add_argument("--skips", type=float, nargs="+", default=[0.0, 0.2, 0.4], help="skip sweep, as fractions of the steps")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.75], help="SDEdit strength sweep")
    parser.add_argument("--diversity-images", type=int, default=10)
    parser.add_argument("--subset-images", type=int, default=50, help="pictures for the manipulations and the fast mode")
    parser.add_argument("--parts", nargs="+", default=["classifier", "model", "edits", "diversity", "manipulations", "fast"])
    parser.add_argument("--fast-steps", type=int, nargs="+", default=[100, 25], help="the DDPM reference's steps, then the fast modes'")
    parser.add_argument("--fast-skips", type=float, nargs="+", default=[0.2], help="skip fractions for the fast modes")
    parser.add_argument("--fast-cfgs", type=float, nargs="+", default=None, help="target CFGs for the fast modes (default: the middle of --cfgs)")
    parser.add_argument("--fast-reference", type=float, nargs=2, default=None, metavar=("SKIP", "CFG"),
                        help="the DDPM reference's skip fraction and target CFG (default: 0.2 and the middle of --cfgs)")
    parser.add_argument("--fast-rules", nargs="+", default=["dpmpp_2m_sde", "ddpm"], help="rules for the fast modes (the reference: ddpm)")
    parser.add_argument("--output", type=pathlib.Path, default=DOCS / "quality-results.json", help="JSON file of the figures (updated part by part)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip = toy_model.load(args.weights)
    prompts = Prompts(clip)
    scenes = toy_shapes.draw(args.images, HELD_OUT_SEED)
    targets = edit_targets(scenes)
    skips = [round(f * args.steps) for f in args.skips]
    output = args.output
    results = json.loads(output.read_text()) if output.is_file() else {}  # a run of some --parts updates those only
    results.update({"images": args.images, "steps": args.steps, "cfg_source": args.cfg_source, "scheduler": SCHEDULER})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} held-out pictures, {args.steps} steps, source cfg {args.cfg_source:g}")
    started = time.time()
    if "classifier" in args.parts:
        results["classifier_check"] = check_classifier()
        print("classifier on drawn pictures:", json.dumps(results["classifier_check"]), flush=True)
    if "model" in args.parts:
        results["model_check"] = check_model(model, prompts, args.steps, args.cfgs[1 if len(args.cfgs) > 1 else 0], per_caption=6)
        print("model check (classifier on samples):", json.dumps(results["model_check"]), flush=True)
    if "edits" in args.parts:
        print(TABLE_HEADER)
        rows, examples = run_edits(model, prompts, scenes, targets, args.steps, args.cfg_source, args.cfgs, skips, args.strengths, seed=0)
        results["edits"] = rows
        plot_tradeoff(rows, DOCS / "quality-tradeoff.png")
        chosen = [k for k in examples if k == "input" or k.startswith(("edit-friendly skip", "DDIM", "SDEdit 0.5", "generation"))]
        save_grid(torch.cat([toy_model.to_images(examples[k][:8]) for k in chosen]), DOCS / "quality-edits.png", 8)
        results["edit_grid_rows"] = chosen
    middle_cfg = args.cfgs[len(args.cfgs) // 2]
    if "diversity" in args.parts:
        count = min(args.diversity_images, args.images)
        subset = toy_shapes.draw(count, HELD_OUT_SEED)
        results["diversity"] = diversity(model, prompts, subset, targets[:count], args.steps, args.cfg_source, middle_cfg, skips[len(skips) // 2], args.strengths[0])
        print("diversity (mean per-pixel std over 4 seeds):", json.dumps(results["diversity"]), flush=True)
    subset = toy_shapes.draw(min(args.subset_images, args.images), HELD_OUT_SEED)  # the first pictures of the held-out set
    if "manipulations" in args.parts:
        manipulated = manipulations(model, prompts, subset, targets[: len(subset.colours)], args.steps, args.cfg_source)
        examples = manipulated.pop("examples")
        save_grid(torch.cat([subset.images[:8], toy_model.to_images(examples["shifted"][:8]), toy_model.to_images(examples["coloured"][:8])]), DOCS / "quality-manipulations.png", 8)
        results["manipulations"] = manipulated
        print("manipulations:", json.dumps(manipulated), flush=True)
    if "fast" in args.parts:
        print(FAST_TABLE_HEADER)
        reference_skip, reference_cfg = args.fast_reference or (0.2, middle_cfg)
        settings = [("ddpm", args.fast_steps[0], reference_skip, reference_cfg)]
        settings += [(rule, s, f, cfg) for s in args.fast_steps[1:] for f in args.fast_skips for cfg in args.fast_cfgs or [middle_cfg] for rule in args.fast_rules]
        results["fast"] = fast_mode(model, prompts, subset, targets[: len(subset.colours)], args.cfg_source, settings)
    seconds = round(time.time() - started)
    output.write_text(json.dumps(results, indent=1) + "\n")
    pictures = [part for part in ("model", "edits", "manipulations") if part in args.parts]
    print(f"done in {seconds / 60:.1f} min; wrote {output}" + (" and the pictures in docs/" if pictures else ""))


if __name__ == "__main__":
    main()
