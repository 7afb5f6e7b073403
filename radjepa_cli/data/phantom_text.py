"""Radiology-style Findings / Impression text written from a phantom's ground truth.

Sentences follow a reading order (devices, lungs, pleura, heart and mediastinum, bones), with varied phrasing,
laterality and severity words. Absent findings are either negated ("No pleural effusion or pneumothorax.") or
simply not mentioned, as real reports do. Nothing here contradicts the labels: a negation is only written for a
finding that is absent, and every present finding is mentioned with its side.
"""
from __future__ import annotations

import numpy as np

ORDINAL = {1: "1st", 2: "2nd", 3: "3rd"}
ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}


def _ord(n: int) -> str:
    return ORDINAL.get(n, f"{n}th")


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _zone(side: str, zone: str, rng: np.random.Generator) -> str:
    if side == "bilateral":
        return str(rng.choice({"upper": ["both upper lobes", "the bilateral upper zones"],
                               "middle": ["both mid lung zones", "the bilateral mid lungs"],
                               "lower": ["both lower lobes", "the bilateral lung bases"]}[zone]))
    names = {("right", "upper"): ["right upper lobe", "right upper zone"],
             ("right", "middle"): ["right middle lobe", "right mid lung zone"],
             ("right", "lower"): ["right lower lobe", "right lung base"],
             ("left", "upper"): ["left upper lobe", "left upper zone"],
             ("left", "middle"): ["lingular segment of the left upper lobe", "left mid lung zone"],
             ("left", "lower"): ["left lower lobe", "left lung base"]}
    return "the " + str(rng.choice(names[(side, zone)]))


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _effusion(t: dict, rng) -> str:
    sev, side = t["severity"], t["side"]
    if side == "bilateral":
        return _pick(rng, [f"{_cap(sev)} bilateral pleural effusions.", f"There are {sev} bilateral pleural effusions.",
                           f"Bilateral {sev} pleural effusions with blunting of the costophrenic angles."])
    opts = [f"{_cap(sev)} {side} pleural effusion.", f"There is a {sev} {side} pleural effusion.",
            f"{_cap(sev)} {side} pleural effusion with a meniscus along the lateral chest wall."]
    if sev == "small":
        opts.append(f"Blunting of the {side} costophrenic angle, consistent with a small {side} pleural effusion.")
    return _pick(rng, opts)


def _positive(name: str, t: dict, view: str, rng: np.random.Generator) -> str:
    side, sev = t.get("side", ""), t.get("severity", "")
    if name == "Pleural Effusion":
        return _effusion(t, rng)
    if name == "Pneumothorax":
        opts = [f"There is a {sev} {side} pneumothorax.", f"{_cap(sev)} {side} pneumothorax with a visible pleural line."]
        if sev == "small":
            opts.append(f"Small {side} apical pneumothorax.")
        return _pick(rng, opts)
    if name == "Consolidation":
        z = _zone(side, t["zone"], rng)
        return _pick(rng, [f"Focal consolidation in {z}.", f"There is consolidation in {z} with air bronchograms.",
                           f"Airspace consolidation involving {z}."])
    if name == "Lung Opacity":
        z = _zone(side, t["zone"], rng)
        return _pick(rng, [f"Patchy opacity in {z}.", f"{_cap(sev)} hazy opacities in {z}.",
                           f"Ill-defined airspace opacity projecting over {z}."])
    if name == "Atelectasis":
        where = "both lung bases" if side == "bilateral" else f"the {side} lung base"
        if t["kind"] == "plate-like":
            return _pick(rng, [f"Plate-like atelectasis at {where}.", f"Subsegmental linear atelectasis at {where}.",
                               f"{_cap(t['severity'])} discoid atelectasis at {where}."])
        return _pick(rng, [f"{_cap(side)} lower lobe atelectasis with volume loss and elevation of the {side} hemidiaphragm.",
                           f"Volume loss in the {side} lower lobe, consistent with atelectasis."])
    if name == "Edema":
        # (no "lines" here: report labellers read "lines" as support devices)
        extra = " with interstitial and septal thickening" if t["strength"] > 0.35 else ""
        return _pick(rng, [f"{_cap(sev)} pulmonary edema{extra}.",
                           f"Bilateral perihilar haziness consistent with {sev} pulmonary edema.",
                           f"Findings of {sev} interstitial pulmonary edema{extra}."])
    if name == "Lung Lesion":
        z = _zone(side, t["zone"], rng)
        return _pick(rng, [f"There is a {t['size_cm']} cm {t['kind']} in {z}.",
                           f"A {t['size_cm']} cm {t['kind']} projects over {z}.",
                           f"{_cap(t['kind'])} measuring {t['size_cm']} cm in {z}."])
    if name == "Pleural Thickening":
        where = "bilateral" if side == "bilateral" else side
        if t["kind"] == "apical":
            return _pick(rng, [f"{_cap(where)} apical pleural thickening.", f"{_cap(t['severity'])} {where} apical pleural thickening."])
        return _pick(rng, [f"{_cap(t['severity'])} {where} lateral pleural thickening.",
                           f"Pleural thickening along the {where} lateral chest wall." if side != "bilateral"
                           else "Pleural thickening along both lateral chest walls."])
    if name == "Cardiomegaly":
        return _pick(rng, [f"{_cap(sev)} cardiomegaly.", f"The heart is {ADVERB[sev]} enlarged.",
                           f"{_cap(sev)} enlargement of the cardiac silhouette, compatible with cardiomegaly."])
    if name == "Enlarged Cardiomediastinum":
        return _pick(rng, ["The cardiomediastinal silhouette is enlarged.", f"{_cap(sev)} widening of the mediastinum.",
                           "The superior mediastinum is widened."])
    if name == "Aortic Enlargement":
        return _pick(rng, ["The thoracic aorta is enlarged.", f"{_cap(sev)} dilatation of the aortic arch.",
                           "Prominent aortic knob, consistent with aortic enlargement."])
    if name == "Fracture":
        return _pick(rng, [f"Acute {t['kind']} fracture of the {side} {_ord(t['rib'])} posterior rib.",
                           f"There is a {t['kind']} fracture of the {side} {_ord(t['rib'])} rib."])
    if name == "Support Devices":
        out = []
        for d in t["devices"]:
            if d == "endotracheal tube":
                out.append(f"Endotracheal tube terminates {t['ett_cm_above_carina']} cm above the carina.")
            elif d == "nasogastric tube":
                out.append(_pick(rng, ["Enteric tube courses below the diaphragm with the tip in the stomach.",
                                       "Nasogastric tube tip projects over the stomach."]))
            elif d == "central venous catheter":
                out.append(f"{_cap(t['cvc'])} central venous catheter with the tip in the SVC.")
            elif d == "pacemaker":
                out.append("Left chest wall pacemaker with a lead terminating in the right ventricle.")
            else:
                out.append("Overlying monitoring leads.")
        return " ".join(out)
    raise KeyError(name)


LUNG = ("Consolidation", "Lung Opacity", "Edema", "Atelectasis", "Lung Lesion")
CARDIAC = ("Cardiomegaly", "Enlarged Cardiomediastinum", "Aortic Enlargement")
ORDER = ("Support Devices",) + LUNG + ("Pleural Effusion", "Pneumothorax", "Pleural Thickening") + CARDIAC + ("Fracture",)


def _negations(truth: dict, rng: np.random.Generator) -> dict[str, str]:
    """Negative statements by section, each only when every finding it denies is absent; some are dropped."""
    has = truth.__contains__
    out: dict[str, str] = {}
    if not any(has(n) for n in LUNG):
        out["lungs"] = _pick(rng, ["The lungs are clear.", "Lungs are clear without focal consolidation.",
                                   "No focal consolidation, pulmonary edema or suspicious nodule.",
                                   "There is no focal airspace opacity."])
    elif not has("Consolidation") and rng.random() < 0.5:
        out["lungs"] = "No focal consolidation."
    if not has("Pleural Effusion") and not has("Pneumothorax"):
        out["pleura"] = _pick(rng, ["No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.",
                                    "No effusion or pneumothorax is seen."])
    elif not has("Pneumothorax"):
        out["pleura"] = "No pneumothorax."
    elif not has("Pleural Effusion"):
        out["pleura"] = _pick(rng, ["No pleural effusion.", "No associated pleural effusion."])
    if not any(has(n) for n in CARDIAC):
        out["cardiac"] = _pick(rng, ["The heart size is normal.", "Cardiomediastinal silhouette is within normal limits.",
                                     "Normal cardiomediastinal contours.", "Heart size and mediastinal contours are normal."])
    if not has("Fracture"):
        out["bones"] = _pick(rng, ["No acute osseous abnormality.", "Osseous structures are intact.",
                                   "No displaced rib fracture."])
    # real reports leave some normal sections unsaid
    return {k: v for k, v in out.items() if rng.random() < 0.8}


def write_report(truth: dict[str, dict], view: str, rng: np.random.Generator) -> tuple[str, str]:
    """(findings paragraph, impression) for the findings in `truth` (name -> details from sample_truth)."""
    neg = _negations(truth, rng)
    section = {n: "lungs" for n in LUNG} | {"Pleural Effusion": "pleura", "Pneumothorax": "pleura",
                                            "Pleural Thickening": "pleura", "Fracture": "bones", "Support Devices": "lines"}
    section |= {n: "cardiac" for n in CARDIAC}
    sentences: list[str] = []
    if view == "AP" and rng.random() < 0.5:
        sentences.append(_pick(rng, ["Single portable AP view of the chest.", "Portable AP radiograph."]))
    for part in ("lines", "lungs", "pleura", "cardiac", "bones"):
        names = [n for n in ORDER if n in truth and section[n] == part]
        sentences += [_positive(n, truth[n], view, rng) for n in names]
        if part in neg:
            sentences.append(neg[part])
    findings = " ".join(sentences) if sentences else "No acute abnormality."

    if not truth or set(truth) == {"Support Devices"}:
        impression = _pick(rng, ["No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                                 "No acute intrathoracic process."])
        if truth:
            impression = "Support devices as described. " + impression
        return findings, impression
    urgent = ("Pneumothorax", "Consolidation", "Pleural Effusion", "Edema", "Lung Lesion", "Cardiomegaly",
              "Fracture", "Atelectasis", "Lung Opacity", "Enlarged Cardiomediastinum", "Aortic Enlargement",
              "Pleural Thickening", "Support Devices")
    short = []
    for n in [n for n in urgent if n in truth][:3]:
        t = truth[n]
        side = t.get("side", "")
        words = {"Pneumothorax": f"{t.get('severity', '')} {side} pneumothorax",
                 "Pleural Effusion": f"{t.get('severity', '')} {side} pleural effusion" + ("s" if side == "bilateral" else ""),
                 "Consolidation": f"{side} consolidation", "Edema": f"{t.get('severity', '')} pulmonary edema",
                 "Lung Lesion": f"{side} lung {t.get('kind', '')}", "Cardiomegaly": f"{t.get('severity', '')} cardiomegaly",
                 "Fracture": f"{side} rib fracture", "Atelectasis": f"{side} basilar atelectasis",
                 "Lung Opacity": f"{side} lung opacity", "Enlarged Cardiomediastinum": "enlarged cardiomediastinum",
                 "Aortic Enlargement": "aortic enlargement", "Pleural Thickening": f"{side} pleural thickening",
                 "Support Devices": "support devices in place"}[n]
        short.append(_cap(" ".join(words.split())) + ".")
    return findings, " ".join(short)
