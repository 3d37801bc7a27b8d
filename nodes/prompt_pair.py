"""A source and a target prompt encoded together, with the tokens that cross-attention control checks.

Prompt-to-Prompt's word swap gives the target's token in slot i the source's attention map of slot i, which is right
only where both prompts put the same words in the same slots. A CONDITIONING holds the text encoder's output, and
CLIP and T5 pad it to a fixed length, so an inserted word cannot be told there from a swapped one. The tokenizer can
tell: `encode` keeps each prompt's token ids beside its conditioning (under WORDS_KEY, which ComfyUI's samplers
ignore and its conditioning nodes copy along), and `check_word_swap` compares them.
"""

from __future__ import annotations

import difflib

from .validation import EditFriendlyInputError

WORDS_KEY = "edit_friendly_prompt"
"""Conditioning option: {"text": the prompt, "tokens": {text encoder: token ids, every chunk, padding included}}."""
EMBEDDING_TOKEN = -1
"""Stands for a textual-inversion embedding's vector in the token ids: it fills a slot like any token."""


def prompt_tokens(tokenized: dict) -> dict[str, tuple[int, ...]]:
    """The token ids per text encoder of a `CLIP.tokenize` result (chunks of (token, weight[, word]) tuples)."""
    return {
        name: tuple(token[0] if isinstance(token[0], int) else EMBEDDING_TOKEN for chunk in chunks for token in chunk)
        for name, chunks in tokenized.items()
    }


def encode(clip, text: str) -> list:
    """`text` encoded as ComfyUI's CLIPTextEncode does, with its tokens under WORDS_KEY (a new dict per entry)."""
    tokenized = clip.tokenize(text)
    words = {"text": text, "tokens": prompt_tokens(tokenized)}
    return [[tensor, {**options, WORDS_KEY: words}] for tensor, options in clip.encode_from_tokens_scheduled(tokenized)]


def same_slots(source: tuple, target: tuple) -> bool:
    """Whether every run of tokens common to both prompts sits in the same slots: a word swap keeps them all where
    they were (padding included, so the prompts also fill the same number of slots)."""
    matches = difflib.SequenceMatcher(None, source, target, autojunk=False).get_matching_blocks()
    return len(source) == len(target) and all(block.a == block.b for block in matches if block.size)


def quoted(words: list[str]) -> str:
    return " ".join(f'"{word}"' for word in words)


def word_changes(source_text: str, target_text: str) -> str:
    """What the target does to the source's words, for a message: 'inserts "big"', 'swaps "cat" for "capybara"'."""
    source, target = source_text.split(), target_text.split()
    changes = []
    for tag, a, b, c, d in difflib.SequenceMatcher(None, source, target, autojunk=False).get_opcodes():
        if tag == "insert":
            changes.append(f"inserts {quoted(target[c:d])}")
        elif tag == "delete":
            changes.append(f"removes {quoted(source[a:b])}")
        elif tag == "replace":
            changes.append(f"swaps {quoted(source[a:b])} for {quoted(target[c:d])}")
    return "; ".join(changes) or "changes the text's spacing or weights"


def check_word_swap(source_conditioning, target_conditioning) -> None:
    """Refuses, before any model call, a source/target pair whose words do not sit in the same token slots."""
    source, target = (conditioning[0][1].get(WORDS_KEY) for conditioning in (source_conditioning, target_conditioning))
    if source is None or target is None:
        raise EditFriendlyInputError(
            "Cross-attention control gives each target token the source's attention map in the same slot, which is right "
            "only when the target swaps words one for one; a plain CONDITIONING does not say which tokens are words. "
            "Encode both prompts with the Edit-Friendly Prompt Pair node, or set cross_attention to 0 (self-attention "
            "control takes any prompts)."
        )
    if source["tokens"].keys() != target["tokens"].keys():
        raise EditFriendlyInputError("The source and target prompts were encoded by different text encoders: use one CLIP for both.")
    for name, source_tokens in source["tokens"].items():
        if not same_slots(source_tokens, target["tokens"][name]):
            raise EditFriendlyInputError(
                "Cross-attention control maps the target's tokens onto the source's slot for slot, so the target may only swap "
                f"words for words of the same token length. Here the target {word_changes(source['text'], target['text'])}, "
                f"which moves the source's words to other slots (tokens of the {name} text encoder). Reword it, or set "
                "cross_attention to 0 (self-attention control takes any prompts)."
            )
