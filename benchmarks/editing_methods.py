"""Edit-friendly maps inside existing editing methods: attention control (Prompt-to-Prompt), semantic guidance
with implicit masks (LEDITS++-style) and plain edits inside an implicit mask (DiffEdit-style, `--methods masked`),
against plain edit-friendly editing, on the trained toy model.

    .cache/venv/bin/python benchmarks/editing_methods.py               # about 25 minutes on 2 CPU cores
    .cache/venv/bin/python benchmarks/editing_methods.py --images 8 --steps 10   # smoke run

The task and measures of benchmarks/quality.py (held-out pictures recoloured by prompt: edit success, shape kept,
IoU, background error), every method replaying the same maps (one inversion with the source prompt, CFG 2, skip 0)
through the pack's Custom Sampling route (Edit-Friendly Sampler (Custom Sampling) + a guider), as a user's graph
runs it. "Model rows per step" is the batch one model call holds per step, in multiples of the latent batch
(a plain CFG edit: 2); every method makes one model call per step, and the activation memory ComfyUI budgets for a
call (model.memory_required) grows in proportion to those rows. Also seconds per edit of the whole set, and with
--memory the peak memory torch allocates for one edit of the first chunk of pictures (finding the mask included),
against the first plain edit's:

    .cache/venv/bin/python benchmarks/editing_methods.py --images 10 --memory --methods plain masked attention semantic \
        --cfgs 5 --attention-cfgs 5 --scales 4 --thresholds 0.8 --mask-thresholds 0.5 --output docs/editing-methods-memory-results.json
Writes docs/editing-methods-results.json, docs/editing-methods-tradeoff.png and docs/editing-methods-edits.png (named
after --output).
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

import comfy.utils  # noqa: E402
import quality  # noqa: E402
import speed  # noqa: E402  (peak_allocated_bytes)
import toy_model  # noqa: E402
import toy_shapes  # noqa: E402
import torch  # noqa: E402
from edit_friendly_ddpm.nodes import attention_control, implicit_mask, pipeline, prompt_pair, semantic_guidance  # noqa: E402

DOCS = ROOT / "docs"
SCHEDULER = quality.SCHEDULER
STYLES = {
    "edit-friendly": ("#1f8a8a", "o"),
    "edit-friendly + implicit mask": ("#4f81bd", "D"),
    "attention control": ("#c0504d", "s"),
    "semantic guidance": ("#8064a2", "^"),
    "semantic guidance + attention control": ("#f79646", "v"),
}


TABLE_HEADER = (
    "| method | setting | model rows per step | seconds | peak memory | edit success | shape kept | IoU | background error |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def replay(guider, maps, skip: int, mask=None) -> torch.Tensor:
    """The Custom Sampling route: the pack's replay sampler over the maps' sigmas after skip, driven by `guider`."""
    return pipeline.run_guider(guider, pipeline.edit_friendly_sampler(maps, mask), maps.sigmas[skip:], maps.source_latent, maps.seed)


def plain(model, maps, target, empty, cfg):
    return pipeline.cfg_guider(model, target, empty, cfg)


def as_prompt_pairs(clip, source, target, source_captions, target_captions):
    """The batched prompts with the tokens Edit-Friendly Prompt Pair keeps for one picture, once every picture's pair is
    checked to line up as that node's would be (the captions differ in their colour word, one token each)."""
    def words(text):
        return {prompt_pair.WORDS_KEY: {"text": text, "tokens": prompt_pair.prompt_tokens(clip.tokenize(text))}}

    for pair in zip(source_captions, target_captions):
        prompt_pair.check_word_swap(*([[None, words(text)]] for text in pair))
    return ([[tensor, {**options, **words(captions[0])}] for tensor, options in conditioning]
            for conditioning, captions in ((source, source_captions), (target, target_captions)))


def attention(model, maps, source, target, empty, cfg, self_share, cross_share):
    return attention_control.AttentionControlGuider(model, maps, source, target, empty, cfg, self_share, cross_share)


def semantic(model, maps, base, empty, cfg, concepts):
    return semantic_guidance.SemanticGuider(model, base, empty, cfg, concepts)


def concept(conditioning, scale, direction, steps, threshold, warmup=0):
    return semantic_guidance.EditConcept(conditioning=conditioning, scale=scale, direction=direction, warmup=warmup, cooldown=steps, threshold=threshold)


def settings(args, source, target, empty) -> list[tuple[str, str, int, callable, float | None]]:
    """(method, setting, model rows per step, guider factory(model, maps), implicit mask threshold or None) per row."""
    rows = []
    for cfg in args.cfgs if "plain" in args.methods else []:
        rows.append(("edit-friendly", f"cfg {cfg:g}", 2, lambda m, maps, cfg=cfg: plain(m, maps, target, empty, cfg), None))
    for cfg in args.cfgs if "masked" in args.methods else []:
        for threshold in args.mask_thresholds:
            rows.append((
                "edit-friendly + implicit mask", f"cfg {cfg:g}, mask threshold {threshold:g}", 2,
                lambda m, maps, cfg=cfg: plain(m, maps, target, empty, cfg), threshold,
            ))
    for cfg in args.attention_cfgs if "attention" in args.methods else []:
        for self_share, cross_share in args.attention:
            rows.append((
                "attention control", f"cfg {cfg:g}, self {self_share:g}, cross {cross_share:g}", 3,
                lambda m, maps, cfg=cfg, s=self_share, c=cross_share: attention(m, maps, source, target, empty, cfg, s, c), None,
            ))
    for scale in args.scales if "semantic" in args.methods else []:
        for threshold in args.thresholds:
            rows.append((
                "semantic guidance", f"add target, scale {scale:g}, threshold {threshold:g}", 3,
                lambda m, maps, scale=scale, t=threshold: semantic(m, maps, source, empty, args.cfg_source, [concept(target, scale, "add", args.steps, t)]),
                None,
            ))
        for threshold in args.thresholds[:1]:
            rows.append((
                "semantic guidance", f"add target, remove source, scale {scale:g}, threshold {threshold:g}", 4,
                lambda m, maps, scale=scale, t=threshold: semantic(
                    m, maps, source, empty, args.cfg_source, [concept(target, scale, "add", args.steps, t), concept(source, scale, "remove", args.steps, t)]
                ),
                None,
            ))
    return rows


def peak_text(row, first) -> str:
    """The row's peak memory and its ratio to the first row's (a plain edit in the default order), or "-"."""
    if "peak_mib" not in row:
        return "-"
    return f"{row['peak_mib']:.2f} MiB ({row['peak_mib'] / first['peak_mib']:.2f}x)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=pathlib.Path, default=toy_model.WEIGHTS)
    parser.add_argument("--images", type=int, default=50, help="held-out pictures (quality.py's first 50)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=0)
    parser.add_argument("--cfg-source", type=float, default=2.0)
    parser.add_argument("--cfgs", type=float, nargs="+", default=[3.0, 5.0, 8.0], help="target CFG of plain edits")
    parser.add_argument("--attention-cfgs", type=float, nargs="+", default=[5.0, 8.0], help="target CFG of attention-controlled edits")
    parser.add_argument("--attention", type=float, nargs=2, action="append", metavar=("SELF", "CROSS"), help="attention-control windows (default: 0.2 0.6 and 0.4 0.8)")
    parser.add_argument("--scales", type=float, nargs="+", default=[4.0, 8.0], help="semantic guidance scales")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.8, 0.9], help="semantic guidance mask quantiles (the first also with a remove concept)")
    parser.add_argument("--mask-thresholds", type=float, nargs="+", default=[0.5, 0.6], help="implicit mask thresholds (method masked)")
    parser.add_argument("--mask-window", type=float, nargs=2, default=[0.25, 0.75], metavar=("START", "END"), help="implicit mask's steps")
    parser.add_argument("--mask-grow", type=int, default=1, help="implicit mask's growth in latent pixels")
    parser.add_argument("--methods", nargs="+", default=["plain", "attention", "semantic"], choices=["plain", "masked", "attention", "semantic"],
                        help="masked: plain edits inside Edit-Friendly Implicit Mask's mask")
    parser.add_argument("--chunk", type=int, default=10, help="pictures per inversion and edit")
    parser.add_argument("--memory", action="store_true", help="also measure each setting's peak memory on the first chunk")
    parser.add_argument("--output", type=pathlib.Path, default=DOCS / "editing-methods-results.json")
    args = parser.parse_args()
    args.attention = args.attention or [(0.2, 0.6), (0.4, 0.8)]
    torch.set_grad_enabled(False)
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, clip = toy_model.load(args.weights)
    prompts = quality.Prompts(clip)
    scenes = toy_shapes.draw(args.images, quality.HELD_OUT_SEED)
    targets = quality.edit_targets(scenes)
    samples = toy_model.to_latent(scenes.images)["samples"]
    captions = scenes.captions
    target_captions = [toy_shapes.caption(c, s) for c, s in zip(targets, scenes.shapes)]
    reading = toy_shapes.classify(scenes.images)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.images} held-out pictures, {args.steps} steps, skip {args.skip}")
    # Chunks of pictures: ComfyUI's memory estimate, made for full-size models, would otherwise split a call of the
    # whole set, and attention control refuses a call that cannot hold its source branch.
    outputs, seconds, peaks, reconstruction = {}, {}, {}, {}
    for start in range(0, args.images, args.chunk):
        chunk = slice(start, start + args.chunk)
        source, target = as_prompt_pairs(clip, prompts(captions[chunk]), prompts(target_captions[chunk]), captions[chunk], target_captions[chunk])
        empty = prompts([""] * len(captions[chunk]))
        maps = pipeline.invert(model, source, empty, {"samples": samples[chunk]}, args.steps, args.cfg_source, SCHEDULER, 1.0, 0)
        masks = {}  # threshold -> (mask, seconds it took): one per chunk, shared by the CFGs
        for method, setting, batch_rows, make, threshold in settings(args, source, target, empty):
            if threshold is not None and threshold not in masks:
                started = time.time()
                mask = implicit_mask.implicit_edit_mask(model, maps, source, target, threshold, *args.mask_window, args.mask_grow)
                masks[threshold] = (mask, time.time() - started)
            mask, mask_seconds = masks[threshold] if threshold is not None else (None, 0.0)
            started = time.time() - mask_seconds  # a row's time includes finding its mask
            output = replay(make(model, maps), maps, args.skip, mask)
            key = (method, setting, batch_rows)
            seconds[key] = seconds.get(key, 0.0) + time.time() - started
            outputs.setdefault(key, []).append(output)
            if args.memory and start == 0:  # a second run, so that the profiler does not slow the timed one
                def edit(make=make, threshold=threshold):
                    mask = None if threshold is None else implicit_mask.implicit_edit_mask(
                        model, maps, source, target, threshold, *args.mask_window, args.mask_grow)
                    replay(make(model, maps), maps, args.skip, mask)
                peaks[key] = speed.peak_allocated_bytes(edit)
        if start == 0:
            checks = {
                "attention control": attention(model, maps, source, source, empty, args.cfg_source, 1.0, 1.0),
                "semantic guidance (inactive concept)": semantic(model, maps, source, empty, args.cfg_source, [concept(target, 0.0, "add", args.steps, 0.9)]),
            }
            for name, guider in checks.items():
                reconstruction[name] = float((replay(guider, maps, 0) - samples[chunk]).abs().max())
                print(f"{name} with the source prompt: reconstruction max |error| {reconstruction[name]:.1e}", flush=True)
        print(f"pictures {start}-{min(args.images, start + args.chunk) - 1} done", flush=True)
    print(TABLE_HEADER)
    rows, examples = [], {"input": samples}
    for (method, setting, batch_rows), parts in outputs.items():
        output = torch.cat(parts)
        key = (method, setting, batch_rows)
        row = {"method": method, "setting": setting, "rows_per_step": batch_rows, "seconds": seconds[key],
               **quality.score(samples, output, reading, targets, scenes.shapes)}
        if key in peaks:
            row["peak_mib"] = peaks[key] / 2**20
        rows.append(row)
        examples[f"{method} {setting}"] = output
        print(f"| {method} | {setting} | {batch_rows} | {row['seconds']:.0f} | {peak_text(row, rows[0])} | {100 * row['success']:.0f}% "
              f"| {100 * row['shape_kept']:.0f}% | {row['iou']:.3f} | {row['background_error']:.3f} |", flush=True)
    result = {"images": args.images, "steps": args.steps, "skip": args.skip, "cfg_source": args.cfg_source, "rows": rows,
              "reconstruction": reconstruction, "memory_pictures": min(args.chunk, args.images) if peaks else 0}
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    panels = (("shape_kept", "shape kept (higher is better)"), *quality.PANELS)
    title = "Toy model, held-out pictures, colour edits replaying the same edit-friendly maps: one point per setting"
    stem = args.output.name.removesuffix("-results.json")  # the pictures are named after the JSON file
    quality.plot_tradeoff(rows, args.output.with_name(f"{stem}-tradeoff.png"), STYLES, panels, title)
    best = {}
    for row in rows:  # per method, the setting with the lowest background error among those at 90% success or more
        if row["success"] >= 0.9 and (row["method"] not in best or row["background_error"] < best[row["method"]][0]):
            best[row["method"]] = (row["background_error"], f"{row['method']} {row['setting']}")
    chosen = ["input"] + [name for _, name in best.values()]
    quality.save_grid(torch.cat([toy_model.to_images(examples[k][:8]) for k in chosen]), args.output.with_name(f"{stem}-edits.png"), 8)
    print(f"grid rows: {chosen}; wrote {args.output}")


if __name__ == "__main__":
    main()
