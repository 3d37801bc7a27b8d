"""Edit-Friendly Prompt Pair: prompts encoded with their tokens, and cross-attention control's check that they line up.

The node runs on the toy model's text encoder, a real `comfy.sd.CLIP` with ComfyUI's SD1 tokenizer; the check runs on
the real tokenizers of SDXL (two CLIPs), Flux (CLIP-L and T5, padded) and Qwen-Image (a chat template, unpadded), which
ComfyUI ships without weights. Attention control then refuses a misaligned pair before any model call and edits with
an aligned one, on the toy model.
"""

from __future__ import annotations

import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.text_encoders.flux
import comfy.text_encoders.qwen_image
import pytest
import torch
import toy_model
from comfy_extras import nodes_flux
from edit_friendly_ddpm.nodes import pipeline, prompt_pair
from edit_friendly_ddpm.nodes.attention_nodes import EditFriendlyAttentionControl, EditFriendlyPromptPair
from edit_friendly_ddpm.nodes.validation import EditFriendlyInputError
from tiny_models import counting_model_calls

import nodes as comfy_core_nodes

TOKENIZERS = {
    "sd1": comfy.sd1_clip.SD1Tokenizer,
    "sdxl": comfy.sdxl_clip.SDXLTokenizer,
    "flux": comfy.text_encoders.flux.FluxTokenizer,
    "qwen_image": comfy.text_encoders.qwen_image.QwenImageTokenizer,
}


@pytest.fixture(scope="module")
def toy():
    return toy_model.load()


def pair(clip, source_text, target_text):
    return EditFriendlyPromptPair.execute(clip, source_text, target_text).result


def words_of(tokenizer, text):
    """A conditioning entry as the node makes it, from a real tokenizer's output (no text encoder weights needed)."""
    tokens = prompt_pair.prompt_tokens(tokenizer.tokenize_with_weights(text))
    return [[torch.zeros(1, 1, 1), {prompt_pair.WORDS_KEY: {"text": text, "tokens": tokens}}]]


def check(tokenizer, source_text, target_text):
    prompt_pair.check_word_swap(words_of(tokenizer, source_text), words_of(tokenizer, target_text))


def refusal(tokenizer, source_text, target_text) -> str:
    with pytest.raises(EditFriendlyInputError) as error:
        check(tokenizer, source_text, target_text)
    return str(error.value)


def test_node_encodes_as_clip_text_encode_and_adds_only_the_tokens(toy):
    _, clip = toy
    source, target = pair(clip, "a red square", "a blue square")
    for conditioning, text in ((source, "a red square"), (target, "a blue square")):
        (expected,) = comfy_core_nodes.CLIPTextEncode().encode(clip, text)
        assert len(conditioning) == len(expected) == 1
        assert torch.equal(conditioning[0][0], expected[0][0])
        options = dict(conditioning[0][1])
        words = options.pop(prompt_pair.WORDS_KEY)
        assert options.keys() == expected[0][1].keys() and torch.equal(options["pooled_output"], expected[0][1]["pooled_output"])
        assert words["text"] == text and list(words["tokens"]) == ["l"] and len(words["tokens"]["l"]) == 77
        assert words["tokens"]["l"] == tuple(token for token, _ in clip.tokenize(text)["l"][0])
    prompt_pair.check_word_swap(source, target)


def test_node_refuses_a_missing_text_encoder():
    with pytest.raises(EditFriendlyInputError, match="no text encoder"):
        pair(None, "a red square", "a blue square")


@pytest.mark.parametrize("family", TOKENIZERS)
def test_a_word_swap_lines_up_on_every_tokenizer(family):
    tokenizer = TOKENIZERS[family]()
    check(tokenizer, "a photo of a cat on a sofa", "a photo of a dog on a sofa")
    check(tokenizer, "a photo of a cat on a sofa", "a sketch of a dog on a sofa")  # two words swapped, still slot for slot
    check(tokenizer, "a (cat:1.2) on a sofa", "a (dog:1.2) on a sofa")


@pytest.mark.parametrize("family", TOKENIZERS)
def test_an_inserted_or_removed_word_is_refused_on_every_tokenizer_with_the_words_named(family):
    tokenizer = TOKENIZERS[family]()
    message = refusal(tokenizer, "a photo of a cat on a sofa", "a photo of a big cat on a sofa")
    assert 'inserts "big"' in message and "cross_attention to 0" in message
    assert 'removes "photo"' in refusal(tokenizer, "a photo of a cat", "a of a cat")
    # As many words as the source, but one removed and one added: the padding lines up, the words in between do not.
    message = refusal(tokenizer, "a cat on a red sofa", "a cat on a sofa today")
    assert 'removes "red"' in message and 'inserts "today"' in message


def test_a_swapped_word_of_another_token_length_is_refused():
    tokenizer = comfy.sd1_clip.SD1Tokenizer()
    assert len(prompt_pair.prompt_tokens(tokenizer.tokenize_with_weights("capybara"))["l"]) == 77
    message = refusal(tokenizer, "a photo of a cat on a sofa", "a photo of a capybara on a sofa")
    assert 'swaps "cat" for "capybara"' in message and "same token length" in message and "tokens of the l text encoder" in message


def test_prompts_of_different_text_encoders_are_refused():
    source = words_of(comfy.sd1_clip.SD1Tokenizer(), "a cat")
    target = words_of(comfy.text_encoders.flux.FluxTokenizer(), "a dog")
    with pytest.raises(EditFriendlyInputError, match="different text encoders"):
        prompt_pair.check_word_swap(source, target)


def test_comfyuis_conditioning_nodes_keep_the_tokens(toy):
    _, clip = toy
    source, _ = pair(clip, "a red square", "a blue square")
    (guided,) = nodes_flux.FluxGuidance.execute(source, 5.5).result
    (ranged,) = comfy_core_nodes.ConditioningSetTimestepRange().set_range(guided, 0.0, 1.0)
    assert ranged[0][1][prompt_pair.WORDS_KEY] == source[0][1][prompt_pair.WORDS_KEY]
    assert prompt_pair.WORDS_KEY in source[0][1] and "guidance" not in source[0][1], "the node's output was changed"


@pytest.fixture(scope="module")
def toy_maps(toy):
    patcher, clip = toy
    source, _ = pair(clip, "a red square", "a blue square")
    (empty,) = comfy_core_nodes.CLIPTextEncode().encode(clip, "")
    latent = toy_model.to_latent(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)))
    return pipeline.invert(patcher, source, empty, latent, 6, 2.0, "normal", 1.0, 0), empty


def controlled(patcher, maps, source, target, negative, cross_attention=0.6):
    (guider,) = EditFriendlyAttentionControl.execute(patcher, maps, source, target, negative, 7.0, 0.2, cross_attention).result
    return pipeline.run_guider(guider, pipeline.edit_friendly_sampler(maps), maps.sigmas, maps.source_latent, maps.seed)


@pytest.mark.parametrize("target_text, expected", [
    ("a big red square", 'inserts "big"'),
    ("a square", 'removes "red"'),
])
def test_attention_control_refuses_a_misaligned_pair_before_any_model_call(toy, toy_maps, target_text, expected):
    patcher, clip = toy
    maps, empty = toy_maps
    source, target = pair(clip, "a red square", target_text)
    counted, calls = counting_model_calls(patcher)
    with pytest.raises(EditFriendlyInputError, match=expected):
        controlled(counted, maps, source, target, empty)
    assert calls == []
    assert controlled(counted, maps, source, target, empty, cross_attention=0.0).shape == maps.source_latent.shape
    assert calls, "self-attention control alone takes the same prompts"


def test_attention_control_refuses_prompts_without_tokens_for_cross_attention(toy, toy_maps):
    patcher, clip = toy
    maps, empty = toy_maps
    (source,) = comfy_core_nodes.CLIPTextEncode().encode(clip, "a red square")
    (target,) = comfy_core_nodes.CLIPTextEncode().encode(clip, "a blue square")
    counted, calls = counting_model_calls(patcher)
    with pytest.raises(EditFriendlyInputError, match="Edit-Friendly Prompt Pair"):
        controlled(counted, maps, source, target, empty)
    assert calls == []


def test_attention_control_edits_with_an_aligned_pair_and_gives_the_input_back_with_the_source(toy, toy_maps):
    patcher, clip = toy
    maps, empty = toy_maps
    source, target = pair(clip, "a red square", "a blue square")
    edited = controlled(patcher, maps, source, target, empty)
    assert (edited - maps.source_latent).abs().mean() > 0.01
    (guider,) = EditFriendlyAttentionControl.execute(patcher, maps, source, source, empty, 2.0, 0.2, 0.6).result
    back = pipeline.run_guider(guider, pipeline.edit_friendly_sampler(maps), maps.sigmas, maps.source_latent, maps.seed)
    assert (back - maps.source_latent).abs().max() < 1e-5
