"""The instruction prompt and the training batches built around it (LLaVA-1.5 conventions).

The prompt holds one image placeholder, tokenised as IMAGE_TOKEN_INDEX (-200, LLaVA's value: not a real
vocabulary id); the model replaces it by the projected patch tokens. Prompt and image positions get label
IGNORE_INDEX (-100), so the loss is the NLL of the Findings text and its end-of-text token only.
"""
from __future__ import annotations

import dataclasses
import re

import torch

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"
# RadJEPA Section 5.1: "<image_tokens> Provide a description of the findings in the radiology image."
INSTRUCTION = "Provide a description of the findings in the radiology image."
PAPER_PROMPT = f"{IMAGE_PLACEHOLDER} {INSTRUCTION}"


@dataclasses.dataclass(frozen=True)
class Prompt:
    """Token ids of the full prompt (chat template applied) with exactly one IMAGE_TOKEN_INDEX."""
    ids: tuple[int, ...]
    text: str  # the rendered prompt, for the model card and debugging
    chat_template: bool

    @property
    def image_position(self) -> int:
        return self.ids.index(IMAGE_TOKEN_INDEX)


def build_prompt(tokenizer, prompt: str = PAPER_PROMPT, use_chat_template: bool = True) -> Prompt:
    """Render `prompt` with the tokenizer's chat template (when it has one) as a user turn followed by the
    assistant's generation prompt; otherwise as BOS + prompt + newline. Then splice the image placeholder."""
    if prompt.count(IMAGE_PLACEHOLDER) != 1:
        raise ValueError(f"the prompt must contain exactly one {IMAGE_PLACEHOLDER} placeholder: {prompt!r}")
    templated = bool(use_chat_template and getattr(tokenizer, "chat_template", None))
    if templated:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        bos: list[int] = []  # a template writes its own special tokens
    else:
        text = prompt + "\n"
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    before, _, after = text.partition(IMAGE_PLACEHOLDER)

    def enc(s: str) -> list[int]:
        return tokenizer(s, add_special_tokens=False)["input_ids"] if s else []

    ids = bos + enc(before) + [IMAGE_TOKEN_INDEX] + enc(after)
    return Prompt(tuple(ids), text, templated)


def clean_report(text: str) -> str:
    """One line of Findings text: whitespace collapsed (reports come with hard line wraps)."""
    return re.sub(r"\s+", " ", text or "").strip()


def encode_target(tokenizer, text: str, max_tokens: int) -> list[int]:
    """Findings text → ids + EOS (the EOS teaches the model to stop), truncated to `max_tokens` in all."""
    ids = tokenizer(clean_report(text), add_special_tokens=False)["input_ids"][: max(0, max_tokens - 1)]
    return ids + [tokenizer.eos_token_id]


def build_batch(prompt: Prompt, targets: list[str], tokenizer, max_target_tokens: int = 256) -> dict[str, torch.Tensor]:
    """Right-padded training batch: input_ids (with the image placeholder), labels, attention_mask."""
    rows = [list(prompt.ids) + encode_target(tokenizer, t, max_target_tokens) for t in targets]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    n_prompt = len(prompt.ids)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r)
        labels[i, n_prompt: len(r)] = torch.tensor(r[n_prompt:])
        attention_mask[i, : len(r)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def prompt_batch(prompt: Prompt, batch_size: int) -> dict[str, torch.Tensor]:
    """Generation inputs: the same prompt for every image (so no padding is ever needed)."""
    ids = torch.tensor(prompt.ids, dtype=torch.long).expand(batch_size, -1).contiguous()
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
