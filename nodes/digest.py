"""A digest of a guider's prompts and CFG, so a replay can recognise the inversion's own conditioning.

Computed by the sampler functions from the guider that drives them (the Edit-Friendly Sampler node's
and SamplerCustomAdvanced's alike), so inversion and replay hash the same representation. A match only
saves model calls: the replay uses a batched estimate only where its latent is the recorded one.
"""

from __future__ import annotations

import hashlib

import torch

VERSION = b"guider conditioning digest 2"
"""Part of every digest: a change of what is hashed must never match digests stored by an older version."""


def guider_digest(guider) -> str | None:
    """SHA-256 of a guider's class, CFG and conditioning (its `original_conds`, without ComfyUI's per-run uuid).

    None when there is no guider, or the conditioning holds something that cannot be compared by value
    (a ControlNet, hooks, model_conds objects): such a replay never matches.
    """
    conds = getattr(guider, "original_conds", None)
    if not isinstance(conds, dict) or not all(isinstance(c, list) and all(isinstance(d, dict) for d in c) for c in conds.values()):
        return None
    digest = hashlib.sha256(VERSION)
    kind = type(guider)
    cfg = getattr(guider, "cfg", None)
    values = [
        f"{kind.__module__}.{kind.__qualname__}",
        float(cfg) if isinstance(cfg, (int, float)) and not isinstance(cfg, bool) else cfg,  # 4 and 4.0 are the same CFG
        {key: [{name: value for name, value in cond.items() if name != "uuid"} for cond in conds[key]] for key in conds},
    ]
    return digest.hexdigest() if _digest_value(digest, values) else None


def _digest_value(digest, value) -> bool:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return True
    if value is None or isinstance(value, (bool, int, float, str)):
        digest.update(f"{type(value).__name__} {value!r}".encode())
        return True
    if isinstance(value, (list, tuple)):
        digest.update(f"sequence {len(value)}".encode())
        return all(_digest_value(digest, item) for item in value)
    if isinstance(value, dict):
        digest.update(f"dict {len(value)}".encode())
        return all(_digest_value(digest, str(key)) and _digest_value(digest, value[key]) for key in sorted(value, key=str))
    return False
