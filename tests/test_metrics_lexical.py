"""Lexical metrics on the real IU-Xray reports, against sacrebleu / rouge-score / an independent coco BLEU."""
import math
from collections import Counter

import numpy as np
import pytest

from radjepa_cli.metrics import lexical


@pytest.fixture(scope="module")
def iu_pairs():
    """Each report's findings paired with the next report's findings as the "generation" (real text, real scale)."""
    from radjepa_cli.metrics.iu_xray_mesh import load_reports

    refs = [r.findings for r in load_reports() if r.findings]
    assert len(refs) > 3000
    return refs[1:] + refs[:1], refs


def test_sacrebleu_variant_equals_sacrebleu_corpus_score(iu_pairs):
    import sacrebleu

    hyps, refs = iu_pairs
    ours = lexical.corpus_bleu(hyps, refs, "sacrebleu")
    theirs = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert abs(ours - theirs) < 1e-9
    assert 1 < ours < 30  # a real, non-degenerate score


def test_rouge_l_equals_rouge_score_mean(iu_pairs):
    from rouge_score import rouge_scorer

    hyps, refs = iu_pairs
    hyps, refs = hyps[:2000], refs[:2000]  # rouge-score's own LCS is slow; 2,000 real pairs
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    theirs = np.array([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)])
    ours = lexical.rouge_l(hyps, refs)
    assert abs(ours.mean() - theirs.mean()) < 1e-9
    assert np.abs(ours - theirs).max() < 1e-12  # per report, too (our LCS is bit-parallel, theirs a DP table)
    assert lexical.lcs_length("a b c b d a b".split(), "b d c a b a".split()) == 4


def _coco_reference(hyps, refs):
    """Independent pycocoevalcap-style BLEU-4: lowercase, punctuation → space, corpus clipped counts,
    closest-reference brevity penalty, no smoothing (written here from the definition, not from our module)."""
    import string

    table = str.maketrans({c: " " for c in string.punctuation})
    correct, guess = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs):
        ht, rt = h.lower().translate(table).split(), r.lower().translate(table).split()
        hyp_len, ref_len = hyp_len + len(ht), ref_len + len(rt)
        for n in range(1, 5):
            hc = Counter(tuple(ht[i:i + n]) for i in range(len(ht) - n + 1))
            rc = Counter(tuple(rt[i:i + n]) for i in range(len(rt) - n + 1))
            guess[n - 1] += sum(hc.values())
            correct[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
    logp = sum(math.log(c / g) for c, g in zip(correct, guess)) / 4
    bp = min(1.0, math.exp(1 - ref_len / hyp_len))
    return 100 * bp * math.exp(logp)


def test_coco_variant_matches_independent_reference(iu_pairs):
    hyps, refs = iu_pairs
    ours = lexical.corpus_bleu(hyps, refs, "coco")
    assert ours == pytest.approx(_coco_reference(hyps, refs), rel=1e-9, abs=1e-9)
    # The two conventions genuinely differ on the same text (casing, punctuation tokens).
    assert abs(ours - lexical.corpus_bleu(hyps, refs, "sacrebleu")) > 0.5


def test_coco_hand_worked_example():
    # hyp "the cat sat" vs ref "the cat sat down": p1=3/3, p2=2/2, p3=1/1, p4=0/0 -> pycocoevalcap guards 0/0
    # with tiny/small, giving ~ (1e-15/1e-9)^(1/4) * exp(1 - 4/3) for the last precision.
    got = lexical.corpus_bleu(["The cat, sat!"], ["the cat sat down"], "coco")
    expected = 100 * math.exp((math.log(1) * 3 + math.log(1e-15 / 1e-9)) / 4) * math.exp(1 - 4 / 3)
    assert got == pytest.approx(expected, rel=1e-6)


def test_stats_are_additive_and_match_direct_corpus_score(iu_pairs):
    hyps, refs = iu_pairs
    stats = lexical.bleu_stats(hyps[:200], refs[:200])
    assert stats.shape == (200, len(lexical.BLEU_STATS))
    assert lexical.bleu_from_stats(stats) == pytest.approx(lexical.corpus_bleu(hyps[:200], refs[:200]), abs=1e-12)
    assert lexical.bleu_from_stats(stats.sum(0)) == lexical.bleu_from_stats(stats)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="hypotheses"):
        lexical.bleu_stats(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="variant"):
        lexical.corpus_bleu(["a"], ["a"], "nist")
    assert lexical.corpus_bleu([""], ["no pneumothorax"]) == 0.0
