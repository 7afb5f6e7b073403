"""Lexical report metrics: BLEU-4 in two named conventions, and ROUGE-L.

Conventions differ between papers by > 10 BLEU points on the same text (ANCHORS.md, report metrics), so every
number we print says which one it is:

- ``bleu4-sacrebleu``: sacrebleu defaults (13a tokeniser, case-sensitive, exp smoothing, corpus level, 0–100);
  the Microsoft / LLaVA-Rad / RAD-DINO lineage the paper follows.
- ``bleu4-coco``: the R2Gen / pycocoevalcap lineage (lowercase, punctuation removed, whitespace split,
  corpus-level clipped counts, closest-reference brevity penalty, no smoothing, 0–1; we print ×100).
- ``rougeL``: rouge-score's ``rougeL`` F-measure (β = 1, no stemmer), averaged over reports (computed here with
  a bit-parallel LCS, equal to rouge-score to 1e-9).

Both BLEUs are computed from per-report sufficient statistics (``BLEU_STATS`` columns) so that a bootstrap can
re-sum them per resample instead of re-tokenising text (metrics.bootstrap).
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Sequence

import numpy as np

MAX_ORDER = 4
# Column layout of a per-report BLEU statistics row (sacrebleu's own order).
BLEU_STATS = ("hyp_len", "ref_len", "correct1", "correct2", "correct3", "correct4",
              "total1", "total2", "total3", "total4")
BLEU_VARIANTS = ("sacrebleu", "coco")

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def _ngrams(tokens: Sequence[str]) -> Counter:
    grams: Counter = Counter(zip(tokens))
    for n in range(2, MAX_ORDER + 1):
        grams.update(zip(*(tokens[i:] for i in range(n))))
    return grams


def _segment_stats(hyp_tokens: Sequence[str], ref_tokens: Sequence[str]) -> list[int]:
    """Clipped n-gram matches of one hypothesis against one reference."""
    hyp, ref = _ngrams(hyp_tokens), _ngrams(ref_tokens)
    correct, total = [0] * MAX_ORDER, [0] * MAX_ORDER
    for gram, count in hyp.items():
        n = len(gram) - 1
        total[n] += count
        if gram in ref:
            correct[n] += min(count, ref[gram])
    return [len(hyp_tokens), len(ref_tokens), *correct, *total]


_TOK13A = None


def tokenize(text: str, variant: str) -> list[str]:
    """The tokeniser of a BLEU convention (13a from sacrebleu itself; coco = lowercase, punctuation → space)."""
    global _TOK13A
    if variant == "sacrebleu":
        if _TOK13A is None:
            from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
            _TOK13A = Tokenizer13a()
        return _TOK13A(text.rstrip()).split()
    if variant == "coco":
        return _PUNCT.sub(" ", text.lower()).split()
    raise ValueError(f"unknown BLEU variant {variant!r}; choose one of {BLEU_VARIANTS}")


def bleu_stats(hypotheses: Sequence[str], references: Sequence[str], variant: str = "sacrebleu") -> np.ndarray:
    """Per-report BLEU sufficient statistics, int64 [N, 10] in ``BLEU_STATS`` order (one reference per report)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    rows = [_segment_stats(tokenize(h, variant), tokenize(r, variant)) for h, r in zip(hypotheses, references)]
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), len(BLEU_STATS))


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -9999999999.0  # sacrebleu's my_log


def bleu_from_stats(stats: np.ndarray, variant: str = "sacrebleu") -> float:
    """Corpus BLEU-4 (0–100) from summed statistics (a [10] vector, or [N, 10] which is summed first)."""
    s = np.asarray(stats, dtype=np.float64)
    if s.ndim == 2:
        s = s.sum(0)
    sys_len, ref_len = float(s[0]), float(s[1])
    correct, total = s[2:2 + MAX_ORDER], s[2 + MAX_ORDER:]
    if variant == "sacrebleu":
        # sacrebleu.BLEU.compute_bleu with smooth_method='exp' (the default), max order 4.
        bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
        if not correct.any():
            return 0.0
        precisions = [0.0] * MAX_ORDER
        smooth = 1.0
        for n in range(MAX_ORDER):
            if total[n] == 0:
                break
            if correct[n] == 0:
                smooth *= 2
                precisions[n] = 100.0 / (smooth * total[n])
            else:
                precisions[n] = 100.0 * correct[n] / total[n]
        return bp * math.exp(sum(_log(p) for p in precisions) / MAX_ORDER)
    if variant == "coco":
        # pycocoevalcap BleuScorer.compute_score(option='closest'): tiny/small guard the divisions.
        tiny, small = 1e-15, 1e-9
        log_p = sum(math.log((correct[n] + tiny) / (total[n] + small)) for n in range(MAX_ORDER))
        bleu = math.exp(log_p / MAX_ORDER)
        ratio = (sys_len + tiny) / (ref_len + small)
        if ratio < 1:
            bleu *= math.exp(1 - 1 / ratio)
        return 100.0 * bleu
    raise ValueError(f"unknown BLEU variant {variant!r}; choose one of {BLEU_VARIANTS}")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], variant: str = "sacrebleu") -> float:
    return bleu_from_stats(bleu_stats(hypotheses, references, variant), variant)


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation without stemming: lowercase, non-alphanumerics → space, split."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Longest common subsequence length, bit-parallel (Allison–Dix / Hyyrö): O(len(a)) big-int operations."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-report ROUGE-L F-measure exactly as rouge-score's ``rougeL`` (β = 1, no stemmer; 0 when either side is
    empty), float64 [N]; the corpus metric is its mean. Computed here (bit-parallel LCS) because it is ~10x faster
    and avoids importing nltk; tests check equality with rouge-score."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    out = np.zeros(len(hypotheses))
    for i, (h, r) in enumerate(zip(hypotheses, references)):
        ht, rt = rouge_tokens(h), rouge_tokens(r)
        if not ht or not rt:
            continue
        lcs = lcs_length(rt, ht)
        p, rec = lcs / len(ht), lcs / len(rt)
        out[i] = 2 * p * rec / (p + rec) if p + rec > 0 else 0.0
    return out
