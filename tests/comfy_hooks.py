"""ComfyUI's progress reports and interrupt, seen from a test."""

from __future__ import annotations

import contextlib

import comfy.model_management
import comfy.utils

THROTTLE_SETTINGS = ("PROGRESS_THROTTLE_MIN_INTERVAL", "PROGRESS_THROTTLE_MIN_PERCENT")


@contextlib.contextmanager
def recorded_progress(interrupt_at: int | None = None):
    """Record ComfyUI's progress reports as (value, total, preview) while the block runs.

    With `interrupt_at`, raise ComfyUI's interrupt flag when the report for that step arrives, as the Cancel
    button does; the flag and the hook are cleared on the way out.
    """
    reports = []

    def hook(value, total, preview, prompt_id=None, node_id=None):
        reports.append((value, total, preview))
        if value == interrupt_at:
            comfy.model_management.interrupt_current_processing(True)

    # Later ComfyUI versions hold back reports less than 0.1 s or 0.5% apart; a test wants every step's.
    throttle = {name: getattr(comfy.utils, name) for name in THROTTLE_SETTINGS if hasattr(comfy.utils, name)}
    for name in throttle:
        setattr(comfy.utils, name, 0)
    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        yield reports
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
        for name, value in throttle.items():
            setattr(comfy.utils, name, value)
