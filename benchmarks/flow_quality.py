"""Do edits work on flow models? The quality benchmark on the rectified-flow toy model.

    .cache/venv/bin/python benchmarks/train_toy.py --kind flow   # trains benchmarks/toy-flow-model.safetensors (shipped)
    .cache/venv/bin/python benchmarks/flow_quality.py             # about 25 minutes on 2 CPU cores
    .cache/venv/bin/python benchmarks/flow_quality.py --images 8 --steps 10 --parts model edits   # smoke run

The same task and measures as benchmarks/quality.py (held-out pictures recoloured by prompt; edit success, shape
kept, IoU, background error, diversity over 4 seeds), on the same shapes world, with a model trained as SD3 is
(rectified flow, ComfyUI's ModelSamplingDiscreteFlow). Methods, all through ComfyUI's own guiders and samplers:
- edit-friendly inversion with the ddpm rule and with dpmpp_2m_sde (the pack's Inversion + Sampler);
- ODE inversion: the flow ODE run backwards with the source prompt (Euler), then ComfyUI's `euler` forwards with the
  target prompt (the flow form of DDIM inversion);
- SDEdit: KSamplerAdvanced with added noise and ComfyUI's `euler` from a strength;
- FlowEdit (the pack's node): inversion-free, its published defaults scaled to the toy.
"Denoiser steps" counts CFG evaluations of the model (one per branch and step), so that methods are compared at
matched model calls. Writes docs/flow-quality-results.json, docs/flow-quality-tradeoff.png, docs/flow-quality-edits.png
and docs/toy-flow-samples.png.
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
import quality  # noqa: E402
import toy_model  # noqa: E402
import toy_shapes  # noqa: E402
import torch  # noqa: E402
from edit_friendly_ddpm.nodes import flowedit, pipeline  # noqa: E402

SCHEDULER = "simple"  # ComfyUI's default for flow models
DOCS = ROOT / "docs"
STYLES = {
    "edit-friendly ddpm": ("#1f8a8a", "o"),
    "edit-friendly dpmpp_2m_sde": ("#4bacc6", "D"),
    "ODE inversion": ("#c0504d", "s"),
    "SDEdit": ("#8064a2", "^"),
    "FlowEdit": ("#f79646", "v"),
}


def run_flowedit(model, source, target, empty, samples, steps, skip, source_cfg, cfg, seed, n_avg=1):
    """FlowEdit through the pack's node code: `steps - skip` steps (its n_max), no plain-sampling tail (n_min 0)."""
    return flowedit.flowedit(model, source, empty, target, empty, {"samples": samples}, steps, skip, 0, n_avg, source_cfg, cfg, SCHEDULER, seed)


def run_edits(model, prompts, scenes, targets, args) -> tuple[list[dict], dict]:
    latent = toy_model.to_latent(scenes.images)
    samples = latent["samples"]
    source = prompts(scenes.captions)
    target = prompts([toy_shapes.caption(c, s) for c, s in zip(targets, scenes.shapes)])
    empty = prompts([""] * len(targets))
    reading = toy_shapes.classify(scenes.images)
    rows, examples = [], {"input": samples}
    steps, cfg_source = args.steps, args.cfg_source
    skips = [round(f * steps) for f in args.skips]

    def record(method, setting, calls, output, recon=None, seconds=None):
        row = {"method": method, "setting": setting, "steps": calls, "reconstruction": recon, "seconds": seconds,
               **quality.score(samples, output, reading, targets, scenes.shapes)}
        rows.append(row)
        examples[f"{method} {setting}"] = output
        print(quality.format_row(row), flush=True)

    for rule, rule_skips, rule_cfgs in (("ddpm", skips, args.cfgs), ("dpmpp_2m_sde", skips[:2], args.cfgs[1:2])):
        started = time.time()
        maps = pipeline.invert(model, source, empty, latent, steps, cfg_source, SCHEDULER, 1.0, 0, rule=rule)
        recon = baselines.reconstruction_error(pipeline.regenerate(model, source, empty, maps, cfg_source, 0), samples)
        print(f"edit-friendly {rule}: reconstruction max |error| {recon:.2e} ({time.time() - started:.0f} s)", flush=True)
        for skip in rule_skips:
            for cfg in rule_cfgs:
                started = time.time()
                output = pipeline.regenerate(model, target, empty, maps, cfg, skip)
                record(f"edit-friendly {rule}", f"skip {skip}, cfg {cfg:g}", steps + steps - skip, output, recon, time.time() - started)

    sigmas, trajectory = baselines.ddim_invert(model, source, empty, samples, steps, 1.0, SCHEDULER)
    ode_recon = baselines.reconstruction_error(baselines.ddim_edit(model, source, empty, sigmas, trajectory, 1.0, 0), samples)
    print(f"ODE inversion: reconstruction max |error| {ode_recon:.2e} (same prompt, cfg 1)", flush=True)
    for skip in skips[:2]:
        for cfg in args.cfgs:
            output = baselines.ddim_edit(model, target, empty, sigmas, trajectory, cfg, skip)
            record("ODE inversion", f"skip {skip}, cfg {cfg:g}", steps + steps - skip, output, ode_recon)

    for strength in args.strengths:
        for cfg in args.cfgs:
            output = baselines.sdedit(model, target, empty, samples, steps, cfg, SCHEDULER, strength, 0, sampler="euler")
            record("SDEdit", f"strength {strength:g}, cfg {cfg:g}", round(strength * steps), output)

    recon = baselines.reconstruction_error(run_flowedit(model, source, source, empty, samples, steps, 0, args.flowedit_source_cfg, args.flowedit_source_cfg, 0), samples)
    print(f"FlowEdit: source prompt as target returns the input to max |error| {recon:.2e}", flush=True)
    for fraction in args.flowedit_n_max:
        skip = steps - round(fraction * steps)
        for cfg in args.flowedit_cfgs:
            started = time.time()
            output = run_flowedit(model, source, target, empty, samples, steps, skip, args.flowedit_source_cfg, cfg, 0)
            record("FlowEdit", f"n_max {steps - skip}, cfg {args.flowedit_source_cfg:g}/{cfg:g}", 2 * (steps - skip), output, recon, time.time() - started)
    return rows, examples


def diversity(model, prompts, scenes, targets, args, seeds: int = 4) -> dict:
    """Mean per-pixel standard deviation over `seeds` runs of the same edit, for each method."""
    count, steps = len(targets), args.steps
    latent = toy_model.to_latent(scenes.images)
    source, empty = prompts(scenes.captions), prompts([""] * count)
    target = prompts([toy_shapes.caption(c, s) for c, s in zip(targets, scenes.shapes)])
    cfg, skip = args.cfgs[len(args.cfgs) // 2], round(0.2 * steps)

    def spread(outputs: torch.Tensor) -> float:
        return float(toy_model.to_images(outputs).view(seeds, count, 3, 32, 32).std(0).mean())

    result = {}
    for rule in ("ddpm", "dpmpp_2m_sde"):
        maps = pipeline.invert(model, source, empty, latent, steps, args.cfg_source, SCHEDULER, 1.0, 0, variations=seeds, rule=rule)
        result[f"edit-friendly {rule}"] = spread(pipeline.regenerate(model, target, empty, maps, cfg, skip))
    sigmas, trajectory = baselines.ddim_invert(model, source, empty, latent["samples"], steps, 1.0, SCHEDULER)
    result["ODE inversion"] = spread(baselines.ddim_edit(model, target, empty, sigmas, trajectory, cfg, skip).repeat(seeds, 1, 1, 1))
    result["SDEdit"] = spread(torch.cat([baselines.sdedit(model, target, empty, latent["samples"], steps, cfg, SCHEDULER, args.strengths[0], s, sampler="euler") for s in range(seeds)]))
    fe_skip = steps - round(args.flowedit_n_max[0] * steps)
    fe_cfg = args.flowedit_cfgs[len(args.flowedit_cfgs) // 2]
    result["FlowEdit"] = spread(torch.cat([run_flowedit(model, source, target, empty, latent["samples"], steps, fe_skip, args.flowedit_source_cfg, fe_cfg, s) for s in range(seeds)]))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=pathlib.Path, default=toy_model.FLOW_WEIGHTS)
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cfg-source", type=float, default=2.0)
    parser.add_argument("--cfgs", type=float, nargs="+", default=[3.0, 5.0, 8.0], help="target CFG sweep")
    parser.add_argument("--skips", type=float, nargs="+", default=[0.0, 0.2, 0.4], help="skip sweep, as fractions of the steps")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.75], help="SDEdit strength sweep")
    parser.add_argument("--flowedit-source-cfg", type=float, default=2.0, help="FlowEdit's source CFG (SD3's 3.5, scaled as the others)")
    parser.add_argument("--flowedit-cfgs", type=float, nargs="+", default=[5.0, 8.0], help="FlowEdit's target CFG (SD3's 13.5, scaled)")
    parser.add_argument("--flowedit-n-max", type=float, nargs="+", default=[0.66, 1.0], help="FlowEdit's n_max as a fraction of the steps (SD3: 33 of 50)")
    parser.add_argument("--diversity-images", type=int, default=10)
    parser.add_argument("--parts", nargs="+", default=["model", "edits", "diversity"])
    parser.add_argument("--output", type=pathlib.Path, default=DOCS / "flow-quality-results.json")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip = toy_model.load(args.weights)
    prompts = quality.Prompts(clip)
    scenes = toy_shapes.draw(args.images, quality.HELD_OUT_SEED)
    targets = quality.edit_targets(scenes)
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results.update({"images": args.images, "steps": args.steps, "cfg_source": args.cfg_source, "scheduler": SCHEDULER})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} held-out pictures, {args.steps} steps")
    started = time.time()
    if "model" in args.parts:
        results["model_check"] = quality.check_model(model, prompts, args.steps, 5.0, 6, DOCS / "toy-flow-samples.png", SCHEDULER)
        print("model check (classifier on samples):", json.dumps(results["model_check"]), flush=True)
    if "edits" in args.parts:
        print(quality.TABLE_HEADER)
        rows, examples = run_edits(model, prompts, scenes, targets, args)
        results["edits"] = rows
        quality.plot_tradeoff(rows, DOCS / "flow-quality-tradeoff.png", STYLES, title="Rectified-flow toy model, held-out pictures, colour edits by prompt: one point per setting")
        best = {}
        for row in rows:  # one grid row per method: its setting with the best success, then the lowest background error
            key = (row["success"], -row["background_error"])
            if row["method"] not in best or key > best[row["method"]][0]:
                best[row["method"]] = (key, f"{row['method']} {row['setting']}")
        chosen = ["input"] + [name for _, name in best.values()]
        quality.save_grid(torch.cat([toy_model.to_images(examples[k][:8]) for k in chosen]), DOCS / "flow-quality-edits.png", 8)
        results["edit_grid_rows"] = chosen
    if "diversity" in args.parts:
        count = min(args.diversity_images, args.images)
        subset = toy_shapes.draw(count, quality.HELD_OUT_SEED)
        results["diversity"] = diversity(model, prompts, subset, targets[:count], args)
        print("diversity (mean per-pixel std over 4 seeds):", json.dumps(results["diversity"]), flush=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"done in {(time.time() - started) / 60:.1f} min; wrote {args.output}")


if __name__ == "__main__":
    main()
