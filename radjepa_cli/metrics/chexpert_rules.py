"""chexpert-rules: a rule-based CheXpert-14 labeller for report text (our own; NOT CheXbert, NOT the original).

Written after the published description of the CheXpert labeller (Irvin et al., AAAI 2019):
  1. mention extraction with per-observation phrase lists (``chexpert_phrases.json``), minus "unmentions";
  2. each mention is classified, in this order, as uncertain (negation-shaped hedges such as "cannot be
     excluded", "upper limits of normal"), negative ("no", "without", "resolved", "is not seen", ...),
     uncertain ("may", "possible", "likely", "versus", ...) or positive;
  3. per report: any positive → 1; otherwise any uncertain → -1; otherwise only negatives → 0; unmentioned → None;
  4. "No Finding" = 1 iff no observation other than Support Devices is positive or uncertain (else None).
The original classifies mentions with NegBio patterns over a dependency parse; we use clause-bounded word windows
instead (clauses end at "but", "however", "which", ";" ...). "Weak" mentions (the heart, the mediastinum) count
only when an abnormality word ("enlarged", "widened") is near, or when they are negated or hedged ("heart size is
normal" → Cardiomegaly 0). The labeller is deterministic, offline and fast (~1 ms per report).
"""
from __future__ import annotations

import dataclasses
import json
import re
from functools import lru_cache
from importlib import resources
from typing import Iterable, Sequence

from ..data.labels import CHEXPERT_14

NAME = "chexpert-rules"
OBSERVATIONS = tuple(n for n in CHEXPERT_14 if n != "No Finding")

# ---- cue patterns (applied to lowercased text windows) -------------------------------------------------------------
def _any(*alternatives: str, extra: str = "") -> re.Pattern:
    """One regex: any of the word-bounded alternatives (regex syntax allowed inside), plus raw `extra`."""
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b" + (f"|{extra}" if extra else ""))


# Hedges that contain a negation word: checked first so that "cannot be excluded" is uncertain, not negative.
UNC_NEG_PRE = _any(r"(?:cannot|can ?not|can't|could not|unable to|difficult to|not) (?:be )?"
                   r"(?:entirely |completely |totally |definitely )?(?:exclude[ds]?|rule[sd]? out)",
                   "rule out", "r/o", "question of", "borderline", "upper limits? of normal", "upper normal",
                   "high normal", "top normal", "top-normal", "high-normal", "upper range of normal",
                   "upper limits normal")
UNC_NEG_POST = UNC_NEG_PRE
# Phrases that contain "no"/"not" but do not negate the finding that follows ("no change in the effusion").
PSEUDO_NEG = _any(r"(?:no|not|without) (?:(?:significant|appreciable|substantial|definite|significantly|substantially|"
                  r"interval|other|further|apparent|acute) )*(?:change|changes|changed|increase|increased|decrease|"
                  r"decreased|worsening|worse|improvement|improved|enlarging|new (?:focal )?change)",
                  "not only", r"no longer (?:requires|needed)")
NEG_PRE = _any("no", "not", "without", "negative for", "free of", "clear of", "absence of", "absent", "resolution of",
               "resolved", "removal of", "rather than", "ruled out", "never", "neither", "nor", "exclude[sd]?",
               "lack of", "clearing of", "interval clearing of")
NEG_POST = _any(r"(?:(?:is|are|was|were|has|have|has been|have been|been) )?"
                r"(?:not (?:significantly |definitely |clearly |substantially |appreciably |well |currently |again |)"
                r"(?:seen|identified|present|visuali[sz]ed|demonstrated|appreciated|evident|noted|detected|apparent|"
                r"enlarged|dilated|widened|large|increased|shown|visible|evidenced)"
                r"|resolved|absent|removed|cleared|negative"
                r"|no longer (?:seen|present|visuali[sz]ed|evident|identified|demonstrated|visible|noted|appreciated))")
# "normal"-type words negate weak mentions only: "heart size is normal", "normal cardiac silhouette".
NEG_WEAK = _any("normal", "unremarkable", "within normal limits", "normal-sized", "normal sized", "not enlarged",
                "negative", "stable and normal", "grossly normal")
UNC_PRE = _any("may", "might", "could", "possible", "possibly", "probable", "probably", "likely", "questionabl[ey]",
               "suspect(?:ed)?", "suspicious", "suspicion", r"suggest\w*", r"concern\w*", "worrisome", "differential",
               "equivocal", "indeterminate", "uncertain", "versus", "vs", r"presum\w*", "query", "question",
               r"favou?r\w*", "evaluate for", "assess for", "possibility of", "cannot exclude", "can not exclude",
               "not exclude", "either", extra=r"\?")
UNC_POST = _any("possible", "possibly", "probable", "probably", "likely", "suspected", "questionable", "versus", "vs",
                "a consideration", "considered", "could", "may", "might", "cannot be excluded", "is suspected",
                "are suspected", "not excluded", "suggested", extra=r"\?")
_VERSUS = re.compile(r"\b(?:versus|vs)\b")
# Hedges on a cause, not on the finding's presence ("fibrosis, may be due to radiation").
POST_CAUSE = _any(r"(?:may|might|could|likely|probably|possibly|presumably)(?: be)? "
                  r"(?:due to|related to|secondary to|caused by|the result of|from)")
# Clause boundaries: a cue never reaches across these.
CLAUSE_BREAK = _any("but", "however", "although", "though", "except", "apart from", "aside from", "other than",
                    "besides", "whereas", "while", "which", "that", "otherwise", "with the exception of", "unlike",
                    r"and (?:there|the|this|it|a|an|mild|moderate|small|large|stable|new|minimal|slight|persistent|"
                    r"increased|decreased|interval)", r"there (?:is|are|has|have)",
                    extra=r";|:|,\s*(?:there|the|with|and there)\b")
# A pre-negation cue stops at a verb between it and the mention ("no effusion is seen, the heart is enlarged").
NEG_TERMINATE = re.compile(r"\b(?:is|are|was|were|has|have|had|remains?|persists?|shows?|measures?|demonstrates?)\b")
PRE_NEG_WORDS, PRE_UNC_WORDS, POST_WORDS = 12, 8, 9


def _compile(phrases: Sequence[str]) -> re.Pattern | None:
    if not phrases:
        return None
    alts = []
    for p in sorted(phrases, key=len, reverse=True):  # longest first: "heart size" wins over "heart"
        star = p.endswith("*")
        body = r"\s+".join(re.escape(w) for w in p.rstrip("*").split())
        alts.append(body + (r"[\w-]*" if star else r"(?![\w])"))
    return re.compile(r"(?<![\w-])(?:" + "|".join(alts) + ")")


@dataclasses.dataclass(frozen=True)
class _Label:
    strong: re.Pattern | None
    weak: re.Pattern | None
    qualifiers: re.Pattern | None
    unmention: re.Pattern | None


@lru_cache(maxsize=1)
def _phrase_table() -> dict[str, _Label]:
    data = json.loads(resources.files(__package__).joinpath("chexpert_phrases.json").read_text())["labels"]
    missing = set(OBSERVATIONS) - set(data)
    if missing:
        raise ValueError(f"chexpert_phrases.json lacks observations {sorted(missing)}")
    return {name: _Label(*(_compile(data[name][k]) for k in ("strong", "weak", "qualifiers", "unmention")))
            for name in OBSERVATIONS}


@dataclasses.dataclass(frozen=True)
class Mention:
    label: str
    text: str
    sentence: str
    value: int  # 1 positive, 0 negative, -1 uncertain
    rule: str   # which rule decided (for explanations and tests)


def _sentences(text: str) -> list[str]:
    text = " ".join(text.lower().split())
    return [s for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip()]


def _clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    lo, hi = 0, len(sentence)
    for m in CLAUSE_BREAK.finditer(sentence):
        if m.end() <= start:
            lo = max(lo, m.end())
        elif m.start() >= end:
            hi = min(hi, m.start())
            break
    return lo, hi


def _last_words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[-n:]) if n else ""


def _neg_pre(pre: str) -> bool:
    """A negation cue within PRE_NEG_WORDS words before the mention, with no verb in between."""
    pre = PSEUDO_NEG.sub(" _ ", pre)
    window = _last_words(pre, PRE_NEG_WORDS + 3)
    for m in reversed(list(NEG_PRE.finditer(window))):
        between = window[m.end():]
        if len(between.split()) > PRE_NEG_WORDS:
            return False
        return NEG_TERMINATE.search(between) is None
    return False


def _post_window(sentence: str, end: int, hi: int) -> str:
    """The text right after a mention, up to POST_WORDS words, keeping sentence offsets (starts at `end`)."""
    words = list(re.finditer(r"\S+", sentence[end:hi]))
    return sentence[end:end + words[POST_WORDS - 1].end()] if len(words) >= POST_WORDS else sentence[end:hi]


def _post_hedge(pattern: re.Pattern, post: str, later: list[int]) -> bool:
    """A hedge after the mention counts unless another mention follows it in the clause ("opacity, likely
    atelectasis": the hedge is atelectasis's). "X versus Y" hedges X when nothing stands between X and versus.
    `later`: offsets (relative to `post`) of mentions that start after this one."""
    post = POST_CAUSE.sub(lambda m: " " * len(m.group(0)), post)  # "may be due to …" hedges the cause
    for m in pattern.finditer(post):
        if _VERSUS.fullmatch(m.group(0)):
            if not any(s < m.start() for s in later):
                return True
        elif not any(s >= m.end() for s in later):
            return True
    return False


def _classify(label: str, weak: bool, sentence: str, start: int, end: int, table: dict[str, _Label],
              all_starts: list[int]) -> tuple[int | None, str]:
    lo, hi = _clause_bounds(sentence, start, end)
    pre = sentence[lo:start]
    post_w = _post_window(sentence, end, hi)
    pre_u = _last_words(pre, PRE_UNC_WORDS)
    later = [s - end for s in all_starts if end <= s < end + len(post_w)]
    if UNC_NEG_PRE.search(pre_u) or _post_hedge(UNC_NEG_POST, post_w, later):
        return -1, "uncertain (negated hedge)"
    if _neg_pre(pre):
        return 0, "negative (pre)"
    if NEG_POST.match(post_w.strip()) or re.search(r"\b(?:is|are|has|have|was|were|been) (?:now )?(?:not|no longer|"
                                                   r"resolved|removed|absent|cleared)\b", post_w):
        return 0, "negative (post)"
    spec = table[label]
    if weak:
        qual_post = spec.qualifiers.search(post_w) if spec.qualifiers else None
        neg_post = NEG_WEAK.search(post_w)
        if neg_post and (qual_post is None or neg_post.start() < qual_post.start()):
            return 0, "negative (normal)"
        if NEG_WEAK.search(_last_words(pre, 4)):
            return 0, "negative (normal)"
    if weak:  # "the heart" says nothing by itself; only its enlargement (possibly hedged) is a finding
        near = _last_words(pre, 3) + " | " + post_w
        if not (spec.qualifiers and spec.qualifiers.search(near)):
            return None, "weak mention without qualifier"
    if UNC_PRE.search(pre_u) or _post_hedge(UNC_POST, post_w, later):
        return -1, "uncertain"
    return 1, "positive"


def mentions(text: str) -> list[Mention]:
    """Every classified mention in `text` (the labeller's evidence, in reading order)."""
    table = _phrase_table()
    out: list[Mention] = []
    for sent in _sentences(text):
        found: list[tuple[int, int, str, bool]] = []
        for name, spec in table.items():
            blocked = [m.span() for m in spec.unmention.finditer(sent)] if spec.unmention else []
            strong = [m.span() for m in spec.strong.finditer(sent)] if spec.strong else []
            weak = [m.span() for m in spec.weak.finditer(sent)] if spec.weak else []

            def free(span, others):
                return not any(span[0] < o[1] and o[0] < span[1] for o in others)

            found += [(s, e, name, False) for s, e in strong if free((s, e), blocked)]
            found += [(s, e, name, True) for s, e in weak if free((s, e), blocked) and free((s, e), strong)]
        starts = sorted({s for s, *_ in found})
        for s, e, name, weak in sorted(found):
            value, rule = _classify(name, weak, sent, s, e, table, starts)
            if value is not None:
                out.append(Mention(name, sent[s:e], sent, value, rule))
    return out


def aggregate(found: Iterable[Mention]) -> dict[str, int | None]:
    """Per-report rule: any positive → 1; else any uncertain → -1; else negatives only → 0; unmentioned → None."""
    values: dict[str, set[int]] = {}
    for m in found:
        values.setdefault(m.label, set()).add(m.value)
    labels: dict[str, int | None] = {}
    for name in OBSERVATIONS:
        v = values.get(name)
        labels[name] = None if not v else 1 if 1 in v else -1 if -1 in v else 0
    abnormal = any(labels[n] in (1, -1) for n in OBSERVATIONS if n != "Support Devices")
    labels["No Finding"] = None if abnormal else 1
    return {name: labels[name] for name in CHEXPERT_14}


def label_report(text: str) -> dict[str, int | None]:
    """CheXpert-14 labels {name: 1 | 0 | -1 | None} of one report (findings and/or impression text)."""
    return aggregate(mentions(text))


def label_reports(texts: Iterable[str]) -> list[dict[str, int | None]]:
    """Labels of many reports; identical texts (common in generated reports) are labelled once."""
    cache: dict[str, dict[str, int | None]] = {}
    out = []
    for t in texts:
        if t not in cache:
            cache[t] = label_report(t)
        out.append(dict(cache[t]))
    return out
