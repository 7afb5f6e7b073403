"""The LLaVA-style report model: frozen-encoder patch tokens → projector → causal LM.

The encoder is not part of this module: it is frozen, so training reads its tokens from a cache and
generation runs it separately (bundle.ReportBundle ties the three together).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from radjepa_cli.report.prompt import IGNORE_INDEX, IMAGE_TOKEN_INDEX, Prompt, prompt_batch


class ReportModel(nn.Module):
    def __init__(self, projector: nn.Module, lm: nn.Module):
        super().__init__()
        self.projector = projector
        self.lm = lm  # a transformers *ForCausalLM, possibly wrapped by peft

    @property
    def lm_dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def splice(self, input_ids: torch.Tensor, image_tokens: torch.Tensor, attention_mask: torch.Tensor,
               labels: torch.Tensor | None = None):
        """Replace each row's single IMAGE_TOKEN_INDEX by its projected image tokens.

        input_ids [B, L] (one placeholder per row), image_tokens [B, N, Dv] → inputs_embeds [B, L-1+N, Dl],
        attention_mask [B, L-1+N] and labels (IGNORE_INDEX on image positions) or None.
        """
        is_image = input_ids == IMAGE_TOKEN_INDEX
        if not bool((is_image.sum(1) == 1).all()):
            raise ValueError("every prompt must hold exactly one image placeholder")
        feats = self.projector(image_tokens.to(self.projector_dtype)).to(self.lm_dtype)
        B, N = feats.shape[:2]
        text_emb = self.lm.get_input_embeddings()(input_ids.clamp_min(0))
        pos = is_image.int().argmax(1)
        embeds, masks, labs = [], [], []
        for b in range(B):
            p = int(pos[b])
            embeds.append(torch.cat([text_emb[b, :p], feats[b], text_emb[b, p + 1:]]))
            ones = attention_mask.new_ones(N)
            masks.append(torch.cat([attention_mask[b, :p], ones, attention_mask[b, p + 1:]]))
            if labels is not None:
                ign = labels.new_full((N,), IGNORE_INDEX)
                labs.append(torch.cat([labels[b, :p], ign, labels[b, p + 1:]]))
        return torch.stack(embeds), torch.stack(masks), (torch.stack(labs) if labels is not None else None)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def forward(self, image_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None):
        """Teacher-forced pass; returns the LM output (`.loss` = mean NLL over non-ignored label tokens)."""
        embeds, mask, labels = self.splice(input_ids, image_tokens, attention_mask, labels)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False)

    @torch.no_grad()
    def generate(self, image_tokens: torch.Tensor, prompt: Prompt, *, max_new_tokens: int = 150,
                 num_beams: int = 1, use_cache: bool = True, pad_token_id: int | None = None,
                 eos_token_id: int | list[int] | None = None, repetition_penalty: float | None = None,
                 **generate_kwargs) -> torch.Tensor:
        """Greedy (num_beams=1, the paper) or beam-search decoding, optionally with a CTRL-style repetition penalty
        (> 1 discourages tokens already written); returns the new token ids [B, T]
        (EOS and padding included; decode with skip_special_tokens=True)."""
        inputs = prompt_batch(prompt, image_tokens.shape[0])
        device = image_tokens.device
        embeds, mask, _ = self.splice(inputs["input_ids"].to(device), image_tokens, inputs["attention_mask"].to(device))
        return self.lm.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
            do_sample=False, use_cache=use_cache, pad_token_id=pad_token_id, eos_token_id=eos_token_id,
            # Pure decoding as in the paper unless asked: no heuristics the LM's generation config may carry.
            temperature=None, top_p=None, top_k=None, repetition_penalty=repetition_penalty, length_penalty=1.0,
            early_stopping=num_beams > 1, **generate_kwargs)
