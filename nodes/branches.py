"""Several branches of one sampling step in one model call, each a list of conds with its own latent.

ComfyUI's calc_cond_batch batches conds that all see the sampler's latent. Edits that run a source branch
beside the target (attention control, FlowEdit) need some conds to see another latent. A model function
wrapper swaps those chunks' inputs just before the model runs, so that batching, memory checks, hooks,
patches and wrappers stay ComfyUI's own. ComfyUI runs a cond's ControlNet before that wrapper, on the sampler's
latent; where the wrapper swaps a latent in, it runs the ControlNet again on the latents the model will see.
"""

from __future__ import annotations

import comfy.samplers
import torch


class Branch:
    """Conds (ComfyUI's processed conds, or None) that all see the latent `x`."""

    def __init__(self, conds: list, x: torch.Tensor):
        self.conds, self.x = conds, x


def calc_branches(inner_model, branches: list[Branch], timestep: torch.Tensor, model_options: dict) -> list[list[torch.Tensor]]:
    """The model's predictions for every cond of every branch, batched by calc_cond_batch as memory allows.

    Returns one list per branch, one prediction per cond. The model sees each cond with its own branch's
    latent; `transformer_options["cond_or_uncond"]` numbers the conds across branches, in order.
    """
    conds = [cond for branch in branches for cond in branch.conds]
    inputs = [branch.x for branch in branches for _ in branch.conds]
    controls = [{id(entry.get("control")): entry.get("control") for entry in cond or []} for cond in conds]
    outer_wrapper = model_options.get("model_function_wrapper")

    def swap_inputs(apply_model, args):
        chunks = args["input"].chunk(len(args["cond_or_uncond"]))
        swapped = []
        for chunk, index in zip(chunks, args["cond_or_uncond"]):
            if chunk.shape != inputs[index].shape:
                raise ValueError("calc_branches: area conditioning cannot be combined with branches of different latents")
            swapped.append(inputs[index].to(chunk))
        swapped = torch.cat(swapped)
        args = {**args, "input": swapped, "c": with_own_control(args, swapped)}
        if outer_wrapper is not None:
            return outer_wrapper(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def with_own_control(args, swapped):
        """The model's kwargs, with the ControlNet's residuals for the swapped latents where it ran on others."""
        c = args["c"]
        if c.get("control") is None or torch.equal(swapped, args["input"]):
            return c
        (control, *others) = {key: value for index in args["cond_or_uncond"] for key, value in controls[index].items()}.values()
        if others or control is None:  # ComfyUI batches only conds of one ControlNet, so this is a cond of several
            raise ValueError("calc_branches: a prompt of several entries with different ControlNets cannot run in branches of different latents")
        own = {key: value for key, value in c.items() if key != "control"}
        return {**c, "control": control.get_control(swapped, args["timestep"], own, len(args["cond_or_uncond"]), c["transformer_options"])}

    predictions = comfy.samplers.calc_cond_batch(
        inner_model, conds, branches[0].x, timestep, {**model_options, "model_function_wrapper": swap_inputs}
    )
    result, start = [], 0
    for branch in branches:
        result.append(predictions[start : start + len(branch.conds)])
        start += len(branch.conds)
    return result
