"""Train the toy text-to-image model (benchmarks/toy_model.py) on seeded shape pictures, on the CPU.

    .cache/venv/bin/python benchmarks/train_toy.py                 # about 24 minutes on 2 idle CPU cores
    .cache/venv/bin/python benchmarks/train_toy.py --steps 20 --out /tmp/toy.safetensors   # smoke run
    .cache/venv/bin/python benchmarks/train_toy.py --kind flow   # the rectified-flow toy (toy-flow-model.safetensors)

Every batch is freshly drawn (benchmarks/toy_shapes.py, seed = --seed x 1000003 + step), so the model never sees
the benchmark's held-out pictures (drawn from other seeds) and never sees HELD_OUT_PAIRS at all. The
objective of `--kind eps` is ComfyUI's EPS parametrisation on its discrete schedule, with min-SNR-5 weighting;
that of `--kind flow` is rectified flow as SD3 trains it (velocity noise - x0 at t drawn logit-normal, plain MSE),
read through ComfyUI's flow model sampling. Both use 10% empty captions for classifier-free guidance. The saved weights are an exponential moving average.
Writes the weights (--out) and a loss curve (--plot).
"""

from __future__ import annotations

import argparse
import copy
import math
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import conftest  # noqa: E402, F401  (puts ComfyUI on the path, CPU mode)

import torch  # noqa: E402
import toy_model  # noqa: E402
import toy_shapes  # noqa: E402

MIN_SNR = 5.0
EMPTY_CAPTION_RATE = 0.1


def caption_table(clip) -> tuple[list[str], torch.Tensor]:
    """Text embeddings of the training captions and the empty caption (last row); the encoder is frozen."""
    captions = [toy_shapes.caption(c, s) for c, s in toy_shapes.training_pairs()] + [""]
    with torch.no_grad():
        rows = [toy_model.encode(clip, text)[0][0][0] for text in captions]
    return captions, torch.stack(rows)


def learning_rate(step: int, steps: int, peak: float) -> float:
    warmup = max(1, steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def eps_loss(model, x0, conditioning, sigmas, generator):
    """Weighted noise MSE at a sigma of the discrete schedule (min-SNR-5)."""
    sigma = sigmas[torch.randint(len(sigmas), (x0.shape[0],), generator=generator)]
    noise = torch.randn(x0.shape, generator=generator)
    noisy = x0 + sigma[:, None, None, None] * noise
    denoised = model.apply_model(noisy, sigma, c_crossattn=conditioning)
    predicted_noise = (noisy - denoised) / sigma[:, None, None, None]
    weight = (1 / sigma**2).clamp(max=MIN_SNR) * sigma**2  # min(SNR, 5) / SNR
    return (weight * (predicted_noise - noise).pow(2).mean((1, 2, 3))).mean()


def flow_loss(model, x0, conditioning, sigmas, generator):
    """Velocity MSE at t = sigmoid(normal) (SD3's logit-normal sampling); ComfyUI's flow sampling gives
    denoised = x_t - t v, so the model's velocity is read back as (x_t - denoised) / t."""
    t = torch.sigmoid(torch.randn(x0.shape[0], generator=generator)).clamp(1e-3, 1.0)
    noise = torch.randn(x0.shape, generator=generator)
    noisy = model.model_sampling.noise_scaling(t[:, None, None, None], noise, x0)
    denoised = model.apply_model(noisy, t, c_crossattn=conditioning)
    velocity = (noisy - denoised) / t[:, None, None, None]
    return (velocity - (noise - x0)).pow(2).mean()


def train(steps: int, batch: int, seed: int, peak_lr: float, log_every: int = 20, kind: str = "eps"):
    torch.manual_seed(seed)
    model = toy_model.build_unet(kind)
    loss_of = flow_loss if kind == "flow" else eps_loss
    toy_model.seed_unet(model.diffusion_model, seed)
    clip = toy_model.build_clip()
    toy_model.seed_clip(clip, seed + 1)
    captions, table = caption_table(clip)
    index = {text: row for row, text in enumerate(captions)}
    sigmas = model.model_sampling.sigmas.float()
    ema = copy.deepcopy(model.diffusion_model).requires_grad_(False)
    optimiser = torch.optim.AdamW(model.diffusion_model.parameters(), lr=peak_lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    history, running, start = [], [], time.time()
    model.train()
    for step in range(steps):
        scenes = toy_shapes.draw(batch, seed=seed * 1_000_003 + step)
        x0 = toy_model.to_latent(scenes.images)["samples"]
        rows = torch.tensor([index[text] for text in scenes.captions])
        rows[torch.rand(batch, generator=generator) < EMPTY_CAPTION_RATE] = len(captions) - 1
        loss = loss_of(model, x0, table[rows], sigmas, generator)
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, steps, peak_lr)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.diffusion_model.parameters(), 1.0)
        optimiser.step()
        decay = min(0.998, (1 + step) / (10 + step))
        with torch.no_grad():
            for kept, live in zip(ema.parameters(), model.diffusion_model.parameters()):
                kept.lerp_(live, 1 - decay)
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            history.append((step + 1, sum(running) / len(running)))
            running = []
            print(f"step {step + 1:5d}/{steps}  loss {history[-1][1]:.4f}  {time.time() - start:7.1f} s", flush=True)
    model.diffusion_model.load_state_dict(ema.state_dict())
    model.eval()
    return model, clip, history, time.time() - start


def plot_loss(history, path: pathlib.Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=110)
    axes.plot([s for s, _ in history], [v for _, v in history], color="#1f8a8a")
    axes.set_xlabel("training step")
    axes.set_ylabel("training loss")
    axes.set_yscale("log")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, help="default: 2400 (eps), 1800 (flow: what fits about 30 minutes on a CPU shared with other work)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kind", choices=toy_model.KINDS, default="eps", help="eps: the DDPM toy; flow: the rectified-flow toy")
    parser.add_argument("--out", type=pathlib.Path, help="default: benchmarks/toy-model.safetensors (eps) or toy-flow-model.safetensors (flow)")
    parser.add_argument("--plot", type=pathlib.Path, help="default: docs/toy-training-loss.png (eps) or docs/toy-flow-training-loss.png (flow)")
    args = parser.parse_args()
    flow = args.kind == "flow"
    args.steps = args.steps or (1800 if flow else 2400)
    args.out = args.out or (toy_model.FLOW_WEIGHTS if flow else toy_model.WEIGHTS)
    args.plot = args.plot or ROOT / "docs" / ("toy-flow-training-loss.png" if flow else "toy-training-loss.png")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    model, clip, history, seconds = train(args.steps, args.batch, args.seed, args.lr, kind=args.kind)
    metadata = {"steps": args.steps, "batch": args.batch, "seed": args.seed, "lr": args.lr, "seconds": round(seconds), "torch": torch.__version__}
    if flow:
        metadata.update(kind="flow", shift=toy_model.FLOW_SHIFT)  # the eps file predates the key: absent means eps
    toy_model.save(args.out, model, clip, metadata)
    plot_loss(history, args.plot, f"{args.kind} toy model: {args.steps} steps x {args.batch} pictures, {seconds / 60:.0f} min on {torch.get_num_threads()} CPU threads")
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB) and {args.plot} in {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
