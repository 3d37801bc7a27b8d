"""Prompt-to-Prompt attention control on edit-friendly noise maps (Hertz et al. 2022, with Huberman-Spiegelglas et al. 2024).

Replayed with the source prompt, the maps give the image back exactly, so a source branch fed the inversion's recorded
latent at each step carries the real image's attention. The source branch is batched beside the target's conditional
and unconditional passes in one model call (branches.calc_branches); its output is not used. During the first part of
the replayed steps, the target's conditional pass attends with the source's weights and its own values,
softmax(q_src k_src^T) v_target: in self-attention (the source's image queries and keys) and in cross-attention (the
source's image queries and text keys, where the prompts line up token for token: P2P's word swap, checked on the
tokens that prompt_pair keeps). The unconditional pass is left alone, as in Prompt-to-Prompt.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import comfy.patcher_extension
import comfy.samplers
import torch

from .branches import Branch, calc_branches
from .noise_maps import NoiseMaps
from .pipeline import batch_fits, model_fingerprint
from .prompt_pair import check_word_swap
from .validation import EditFriendlyInputError, check_in_range, check_maps_fit_model

TARGET, NEGATIVE, SOURCE = 0, 1, 2
"""Indices of the target's conditional and unconditional passes and of the source branch in calc_branches' flat cond list."""
PLAN_KEY = "edit_friendly_attention_control"
"""transformer_options entry through which one model call tells the attention hooks what to do."""
WRAPPER_KEY = "edit_friendly_attention_control"


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a model family's attention is reached and where its text tokens are."""

    hooks: str
    """"unet": ComfyUI's attn1/attn2 patches; "joint": text and image tokens in one attention (MMDiT, Flux);
    "separate": a DiT with its own self- and cross-attention. The last two go through optimized_attention_override."""
    text_first: bool = True
    """joint: the text tokens come before the image tokens in the sequence."""

    @property
    def equal_tokens(self) -> bool:
        """DiTs batch conds of the same token count only (CONDRegular); the UNet's CLIP conds of 77 and 154 tokens batch."""
        return self.hooks != "unet"


UNET, JOINT_TEXT_FIRST, SEPARATE = Layout("unet"), Layout("joint", text_first=True), Layout("separate")
FAMILIES = {
    **dict.fromkeys(("SD15", "SD20", "SDXL", "SDXLRefiner", "SSD1B", "Segmind_Vega", "KOALA_700M", "KOALA_1B"), UNET),
    # Flux's and Chroma's blocks cat (txt, img); SD3's _block_mixing cats (context, x); Qwen-Image cats (txt, img).
    **dict.fromkeys(("SD3", "Flux", "FluxSchnell", "Flux2", "Chroma", "QwenImage"), JOINT_TEXT_FIRST),
    # Wan's blocks: self_attn on the video tokens, then cross_attn on the text (and, for I2V, CLIP image tokens apart).
    **dict.fromkeys(("WAN21_T2V", "WAN22_T2V"), SEPARATE),
}
"""supported_models class name -> Layout. Families not listed are refused while a control is on."""


def family_of(model) -> str:
    return type(getattr(model.model, "model_config", None)).__name__


def token_count(conditioning) -> int | None:
    """Text tokens of a CONDITIONING with one entry, or None where it holds no cross-attention tensor."""
    tensor = conditioning[0][0] if conditioning and isinstance(conditioning[0][0], torch.Tensor) else None
    return None if tensor is None or tensor.ndim != 3 else tensor.shape[1]


def image_tokens(latent_shape, patch_size) -> int:
    """Tokens a DiT makes of one latent: its sides (frames too) padded to the patch and divided by it."""
    sides = latent_shape[2:]
    patch = (patch_size,) * 2 if isinstance(patch_size, int) else tuple(patch_size)
    patch = (1,) * (len(sides) - len(patch)) + patch
    return math.prod(math.ceil(side / p) for side, p in zip(sides, patch))


def window(fraction: float, steps: int) -> int:
    """Replayed steps a control acts on: the first int(fraction * steps), as Prompt-to-Prompt counts them."""
    return int(fraction * steps + 1e-9)


@dataclasses.dataclass
class CallPlan:
    """What the attention hooks do in one model call: which batch rows are the target's conditional pass and the
    source's, which controls are on, and where the text sits. `applied` counts what was done, per kind."""

    target: slice
    source: slice
    rows: int
    self_on: bool
    cross_on: bool
    layout: Layout
    text_tokens: int | None
    image_tokens: int | None
    applied: collections.Counter

    def take_source(self, tensor: torch.Tensor, dim: int | None = None, positions: slice | None = None) -> torch.Tensor:
        """A copy of `tensor` whose target rows (at `positions` along `dim`, or all) are the source's."""
        if tensor.shape[0] != self.rows:
            raise RuntimeError(
                f"Attention control expected {self.rows} batch rows in an attention call, got {tensor.shape[0]}; "
                "this model's attention is laid out in a way the control does not know."
            )
        target, source = [self.target], [self.source]
        if positions is not None:
            target += [slice(None)] * (dim - 1) + [positions]
            source += [slice(None)] * (dim - 1) + [positions]
        swapped = tensor.clone()
        swapped[tuple(target)] = tensor[tuple(source)]
        return swapped

    def dit_attention(self, q: torch.Tensor, k: torch.Tensor, sequence_dim: int):
        """q, k of one DiT attention call with the source's where a control is on (see Layout)."""
        length, keys = q.shape[sequence_dim], k.shape[sequence_dim]
        text, image = self.text_tokens, self.image_tokens
        if self.layout.hooks == "joint":
            if length == keys and length >= text + image:
                text_part = slice(0, text) if self.layout.text_first else slice(length - text, length)
                image_part = slice(text, length) if self.layout.text_first else slice(0, length - text)
                if self.self_on:
                    q, k = (self.take_source(t, sequence_dim, image_part) for t in (q, k))
                    self.applied["self"] += 1
                if self.cross_on:
                    k = self.take_source(k, sequence_dim, text_part)
                    self.applied["cross"] += 1
            elif length == keys == image and self.self_on:  # an image-only attention (SD3.5 MMDiT-X's second one)
                q, k = self.take_source(q), self.take_source(k)
                self.applied["self"] += 1
            return q, k
        if length == keys == text:
            raise RuntimeError(
                f"Attention control cannot tell this model's self- from its cross-attention: both have {text} tokens. "
                "Use another image size."
            )
        kind = "self" if length == keys else "cross" if keys == text else None  # other keys: Wan I2V's CLIP image tokens
        if kind is not None and (self.self_on if kind == "self" else self.cross_on):
            q, k = self.take_source(q), self.take_source(k)
            self.applied[kind] += 1
        return q, k


def unet_self_attention_patch(n, context, value, extra_options):
    """attn1_patch: the target's self-attention takes the source's queries and keys, keeps its own values."""
    plan = extra_options.get(PLAN_KEY)
    if plan is None or not plan.self_on:
        return n, context, value
    swapped = plan.take_source(n)
    plan.applied["self"] += 1
    return swapped, swapped if context is n else plan.take_source(context), value


def unet_cross_attention_patch(n, context, value, extra_options):
    """attn2_patch: the target's cross-attention takes the source's image queries and text keys, keeps its own text values."""
    plan = extra_options.get(PLAN_KEY)
    if plan is None or not plan.cross_on:
        return n, context, value
    plan.applied["cross"] += 1
    return plan.take_source(n), plan.take_source(context), value


def dit_attention_override(previous=None):
    """An optimized_attention_override that applies a call's plan to q and k, then runs `previous` (another override) or the attention."""

    def override(func, *args, **kwargs):
        plan = (kwargs.get("transformer_options") or {}).get(PLAN_KEY)
        if plan is not None and len(args) >= 3:
            q, k = plan.dit_attention(args[0], args[1], 2 if kwargs.get("skip_reshape") else 1)
            args = (q, k, *args[2:])
        if previous is not None:
            return previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    return override


def reserve_source_branch(executor, model, noise_shape, conds, model_options=None):
    """PREPARE_SAMPLING wrapper: ComfyUI loads the model with room for a cond and uncond batch; make it 3 chunks, not 2."""
    batch = math.ceil(noise_shape[0] * 3 / 2)
    return executor(model, [batch, *noise_shape[1:]], conds, model_options=model_options)


def with_attention_hooks(model, layout: Layout):
    """A clone of the MODEL with the hooks installed (the user's model is left as it is)."""
    patched = model.clone()
    if layout.hooks == "unet":
        patched.set_model_attn1_patch(unet_self_attention_patch)
        patched.set_model_attn2_patch(unet_cross_attention_patch)
    else:
        options = patched.model_options.setdefault("transformer_options", {})
        options["optimized_attention_override"] = dit_attention_override(options.get("optimized_attention_override"))
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, WRAPPER_KEY, reserve_source_branch)
    return patched


def check_attention_control(
    model, noise_maps: NoiseMaps, source_positive, positive, self_attention: float, cross_attention: float
) -> Layout | None:
    """Every refusal that needs no model call; returns the family's Layout (None with both controls off)."""
    check_maps_fit_model(noise_maps, model_fingerprint(model))
    for name, value in (("self_attention", self_attention), ("cross_attention", cross_attention)):
        check_in_range(name, value, 0.0, 1.0)
    if self_attention == 0 and cross_attention == 0:
        return None
    family = family_of(model)
    layout = FAMILIES.get(family)
    if layout is None:
        raise EditFriendlyInputError(
            f"Attention control has no hooks for this model ({family}); it supports {', '.join(sorted(FAMILIES))}. "
            "Set self_attention and cross_attention to 0 for a plain edit, or use Edit-Friendly Sampler."
        )
    if "sampler_calc_cond_batch_function" in model.model_options:
        raise EditFriendlyInputError(
            "This model carries a patch that replaces ComfyUI's batching of conds (sampler_calc_cond_batch_function); "
            "attention control must batch the source branch itself and cannot run with it."
        )
    for name, conditioning in (("source_positive", source_positive), ("positive", positive)):
        if not isinstance(conditioning, list) or len(conditioning) != 1:
            raise EditFriendlyInputError(
                f"Attention control pairs one source prompt with one target prompt, but {name} holds "
                f"{len(conditioning) if isinstance(conditioning, list) else 'no'} conditioning entries: "
                "do not combine or concatenate several here."
            )
        options = conditioning[0][1]
        if any(options.get(key) is not None for key in ("area", "mask", "hooks")):
            raise EditFriendlyInputError(f"Attention control cannot use area, mask or hook conditioning on {name}.")
    if any(source_positive[0][1].get(key) is not positive[0][1].get(key) for key in ("control", "gligen")):
        raise EditFriendlyInputError(
            "A ControlNet (or GLIGEN) on the target prompt must be on the source prompt too, the same one (apply it to "
            "both in one node): ComfyUI batches the two branches together only then."
        )
    if cross_attention > 0:
        check_word_swap(source_positive, positive)
    source_tokens, target_tokens = token_count(source_positive), token_count(positive)
    if source_tokens != target_tokens and (cross_attention > 0 or layout.equal_tokens):
        reason = (
            "cross_attention maps the target's tokens onto the source's one for one" if cross_attention > 0
            else f"{family} runs the two prompts in one model call only at the same length"
        )
        raise EditFriendlyInputError(
            f"The source prompt has {source_tokens} tokens and the target prompt {target_tokens}, but {reason}. "
            "Change words one for one (same token count)"
            + (", or set cross_attention to 0." if cross_attention > 0 and not layout.equal_tokens else ".")
        )
    if layout.hooks == "separate":
        tokens = image_tokens(noise_maps.latent_shape, model.get_model_object("diffusion_model").patch_size)
        if tokens == target_tokens:
            raise EditFriendlyInputError(
                f"The latent makes {tokens} tokens, as many as the prompt: attention control cannot tell {family}'s "
                "self- from its cross-attention. Use another image size."
            )
    return layout


class AttentionControlGuider(comfy.samplers.CFGGuider):
    """CFG on the target prompt, with the target's conditional pass taking the source's attention (module docstring).

    Drives the Edit-Friendly Sampler (Custom Sampling) through SamplerCustomAdvanced: the model's sigmas must be the
    maps'. `self_attention` and `cross_attention` are fractions of the replayed steps, counted from the first one,
    during which each control acts; with both 0 it is a CFGGuider. `applied[step]` counts the controlled attention
    calls of each replayed step, by kind.
    """

    def __init__(
        self, model, noise_maps: NoiseMaps, source_positive, positive, negative, cfg: float, self_attention: float, cross_attention: float
    ):
        self.layout = check_attention_control(model, noise_maps, source_positive, positive, self_attention, cross_attention)
        super().__init__(model if self.layout is None else with_attention_hooks(model, self.layout))
        self.noise_maps, self.fractions = noise_maps, (float(self_attention), float(cross_attention))
        self.inner_set_conds({"positive": positive, "negative": negative, "source_positive": source_positive})
        self.set_cfg(cfg)
        self.applied: dict[int, collections.Counter] = {}
        self._checked = False

    def sample(self, *args, **kwargs):
        self.applied, self._checked = {}, False
        return super().sample(*args, **kwargs)

    def predict_noise(self, x, timestep, model_options=None, seed=None):
        model_options = {} if model_options is None else model_options
        step, replayed = self._step(timestep, model_options)
        self_on, cross_on = (step < window(fraction, replayed) for fraction in self.fractions)
        if not (self_on or cross_on):
            return super().predict_noise(x, timestep, model_options, seed)
        cond, source = self.conds.get("positive"), self.conds.get("source_positive")
        uncond = self.conds.get("negative")
        if math.isclose(self.cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False):
            uncond = None
        if not self._checked:
            self._check_first_call(x, cond, source, uncond)
        recorded = self.noise_maps.noisy_latents[self.noise_maps.steps - replayed + step].to(x)
        applied = self.applied.setdefault(step, collections.Counter())
        guard = self._guard(model_options.get("model_function_wrapper"), self_on, cross_on, applied)
        (cond_out, uncond_out), _ = calc_branches(
            self.inner_model, [Branch([cond, uncond], x), Branch([source], recorded)], timestep,
            {**model_options, "model_function_wrapper": guard},
        )
        for kind, on in (("self", self_on), ("cross", cross_on)):
            if on and not applied[kind]:
                raise RuntimeError(
                    f"Attention control found no {kind}-attention to control in this model; its attention code may have changed."
                )
        out = [cond_out, uncond_out]
        for fn in model_options.get("sampler_pre_cfg_function", []):
            out = fn({"conds": [cond, uncond], "conds_out": out, "cond_scale": self.cfg, "timestep": timestep,
                      "input": x, "sigma": timestep, "model": self.inner_model, "model_options": model_options})
        return comfy.samplers.cfg_function(
            self.inner_model, out[0], out[1], self.cfg, x, timestep, model_options=model_options, cond=cond, uncond=uncond
        )

    def _step(self, timestep, model_options) -> tuple[int, int]:
        """(replayed step, replayed steps) of the call at `timestep`, from the maps' sigmas and the sampler's."""
        sigmas = self.noise_maps.sigmas
        sample_sigmas = (model_options.get("transformer_options") or {}).get("sample_sigmas")
        sigma = float(timestep.reshape(-1)[0])
        found = torch.isclose(sigmas[:-1], torch.tensor(sigma), rtol=1e-6, atol=0.0).nonzero()
        replayed = -1 if sample_sigmas is None else len(sample_sigmas) - 1
        tail = sigmas[sigmas.shape[0] - replayed - 1 :] if 0 < replayed <= self.noise_maps.steps else None
        if len(found) == 0 or tail is None or not torch.allclose(sample_sigmas.detach().float().cpu(), tail, rtol=1e-6, atol=0.0):
            raise EditFriendlyInputError(
                f"Attention control replays the noise maps' own steps, but the model was called at sigma {sigma:.4g} of "
                "another schedule: use the SAMPLER and SIGMAS of Edit-Friendly Sampler (Custom Sampling) made from the same "
                "noise maps."
            )
        return int(found[0, 0]) - (self.noise_maps.steps - replayed), replayed

    def _check_first_call(self, x, cond, source, uncond) -> None:
        """Before the first controlled model call: the source must batch with the target, and the batch must fit."""
        target_conds, source_conds = cond[0]["model_conds"], source[0]["model_conds"]
        if target_conds.keys() != source_conds.keys() or not all(target_conds[k].can_concat(source_conds[k]) for k in target_conds):
            raise EditFriendlyInputError(
                "The source and target prompts cannot share one model call (their conditioning differs in shape, such as "
                "the token count): change words one for one."
            )
        chunks = 2 if uncond is None else 3
        if not batch_fits(self.inner_model, tuple(x.shape), x.device, entries=chunks):
            raise EditFriendlyInputError(
                f"Attention control runs {chunks} passes of a {tuple(x.shape)} latent in one model call, which does not "
                "fit in the free memory: use a smaller image or batch, fewer frames, or Edit-Friendly Sampler without it."
            )
        self._checked = True

    def _guard(self, outer, self_on: bool, cross_on: bool, applied: collections.Counter):
        """A model_function_wrapper that hands each call's plan to the hooks, and refuses a call with only one branch."""
        layout, patch_size = self.layout, getattr(self.inner_model.diffusion_model, "patch_size", None)

        def guard(apply_model, args):
            order = args["cond_or_uncond"]
            targets = [chunk for chunk, index in enumerate(order) if index == TARGET]
            sources = [chunk for chunk, index in enumerate(order) if index == SOURCE]
            if len(targets) != len(sources) or len(targets) > 1:
                raise EditFriendlyInputError(
                    "ComfyUI split the source and target branches into separate model calls (short of memory?), so the "
                    "target cannot take the source's attention: use a smaller image or batch."
                )
            if targets:
                batch = args["input"].shape[0] // len(order)
                context = args["c"].get("c_crossattn")
                if context is None and layout.hooks != "unet":
                    raise RuntimeError("Attention control found no text conditioning (c_crossattn) in the model call.")
                text = None if context is None else context.shape[1] + getattr(self.inner_model.diffusion_model, "register_length", 0)
                plan = CallPlan(
                    slice(targets[0] * batch, (targets[0] + 1) * batch), slice(sources[0] * batch, (sources[0] + 1) * batch),
                    len(order) * batch, self_on, cross_on, layout, text,
                    None if patch_size is None else image_tokens(args["input"].shape, patch_size), applied,
                )
                options = {**args["c"].get("transformer_options", {}), PLAN_KEY: plan}
                args = {**args, "c": {**args["c"], "transformer_options": options}}
            if outer is not None:
                return outer(apply_model, args)
            return apply_model(args["input"], args["timestep"], **args["c"])

        return guard
