"""GREEN (Ostmeier et al., 2024): a judge LM counts clinically significant errors (a)–(f) and matched findings.

score = matched / (matched + significant errors); 0 when there are no matched findings; None when the judge's
response cannot be parsed (we never substitute a number). The judge (GREEN-RadLlama2-7b or a sibling) is
optional and loads from a local directory only.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

from .radgraph import ScorerUnavailable

ERROR_TYPES = (
    "False report of a finding in the candidate",
    "Missing a finding present in the reference",
    "Misidentification of a finding's anatomic location/position",
    "Misassessment of the severity of a finding",
    "Mentioning a comparison that isn't in the reference",
    "Omitting a comparison detailing a change from a prior study",
)
SECTIONS = ("Clinically Significant Errors", "Clinically Insignificant Errors", "Matched Findings")

# The judge was fine-tuned on this instruction (GREEN's prompt; the wording must match for its numbers to hold).
PROMPT = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference radiology report "
    "composed by expert radiologists.\n\n    Process Overview: You will be presented with:\n\n    1. The criteria for "
    "making a judgment.\n    2. The reference radiology report.\n    3. The candidate radiology report.\n    4. The "
    "desired format for your assessment.\n\n    1. Criteria for Judgment:\n\n    For each candidate report, determine:"
    "\n\n    The count of clinically significant errors.\n    The count of clinically insignificant errors.\n\n    "
    "Errors can fall into one of these categories:\n\n"
    + "".join(f"    {c}) {t}.\n" for c, t in zip("abcdef", ERROR_TYPES))
    + "    Note: Concentrate on the clinical findings rather than the report's writing style. Evaluate only the "
    "findings that appear in both reports.\n\n    2. Reference Report:\n    {reference}\n\n    3. Candidate Report:\n"
    "    {candidate}\n\n    4. Reporting Your Assessment:\n\n    Follow this specific format for your output, even if "
    "no errors are found:\n    ```\n    [Explanation]:\n    <Explanation>\n\n    [Clinically Significant Errors]:\n"
    "    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n    ....\n    (f) <Error "
    "Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n    [Clinically Insignificant Errors]:\n"
    "    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n    ....\n    (f) <Error "
    "Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n    [Matched Findings]:\n    <The number "
    "of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n    ```\n")


def make_prompt(reference: str, candidate: str) -> str:
    return PROMPT.replace("{reference}", reference).replace("{candidate}", candidate)


@dataclasses.dataclass(frozen=True)
class GreenResponse:
    significant: tuple[int, ...] | None    # counts for (a)–(f); None when the section is missing
    insignificant: tuple[int, ...] | None
    matched: int | None

    @property
    def score(self) -> float | None:
        if self.matched == 0:
            return 0.0
        if self.matched is None or self.significant is None:
            return None
        return self.matched / (self.matched + sum(self.significant))


def _section(text: str, name: str) -> str | None:
    m = re.search(rf"\[{re.escape(name)}\]:\s*(.*?)(?:\n\s*\n|\Z)", text, re.DOTALL)
    return m.group(1) if m else None


def _error_counts(body: str | None) -> tuple[int, ...] | None:
    if body is None:
        return None
    counts = [0] * 6
    if body.strip().startswith("No"):
        return tuple(counts)
    for line in body.splitlines():
        m = re.match(r"\s*\(([a-f1-6])\)[^:]*:\s*(\d+)\s*\.", line)
        if m:
            key = m.group(1)
            counts["abcdef".index(key) if key.isalpha() else int(key) - 1] = int(m.group(2))
    return tuple(counts)


def parse_response(text: str) -> GreenResponse:
    """Parse the judge's answer (everything after the last '[Explanation]:' if the prompt is echoed)."""
    if "[Explanation]:" in text:
        text = text.split("[Explanation]:")[-1]
    text = text.replace("</s>", "").replace("<unk>", "")
    matched_body = _section(text, SECTIONS[2])
    matched = None
    if matched_body is not None:
        if matched_body.strip().startswith("No"):
            matched = 0
        else:
            m = re.match(r"\s*(\d+)\s*\.", matched_body)
            matched = int(m.group(1)) if m else None
    return GreenResponse(_error_counts(_section(text, SECTIONS[0])), _error_counts(_section(text, SECTIONS[1])),
                         matched)


class GreenJudge:
    """A GREEN judge LM from a local HF directory (greedy decoding, as GREEN requires)."""

    def __init__(self, model_dir: str | Path | None, device: str | None = None, max_new_tokens: int = 512):
        if not model_dir:
            raise ScorerUnavailable("no local weights: pass --green-dir DIR (e.g. a local GREEN-RadLlama2-7b)")
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ScorerUnavailable(f"no local weights: {model_dir}/config.json not found")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, padding_side="left")
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
        except Exception as e:
            raise ScorerUnavailable(f"no local weights: could not load {model_dir} ({e})") from None
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self.max_new_tokens = max_new_tokens

    def respond(self, references: Sequence[str], candidates: Sequence[str], batch_size: int = 4) -> list[str]:
        import torch

        out = []
        for i in range(0, len(references), batch_size):
            prompts = [self._chat(make_prompt(r, c)) for r, c in
                       zip(references[i:i + batch_size], candidates[i:i + batch_size])]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
            with torch.no_grad():
                gen = self.model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens,
                                          pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    def _chat(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def score(self, references: Sequence[str], candidates: Sequence[str]) -> list[float | None]:
        return [parse_response(t).score for t in self.respond(references, candidates)]
