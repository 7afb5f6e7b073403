"""RadGraph set-F1 over annotation dicts, the GREEN parser, optional scorers without weights, CheXbert strict load."""
import numpy as np
import pytest

from radjepa_cli.metrics import green, radgraph
from radjepa_cli.metrics.radgraph import ScorerUnavailable


def ann(*entities):
    return {"text": "", "entities": {str(i + 1): {"tokens": t, "label": l, "relations": rel}
                                     for i, (t, l, rel) in enumerate(entities)}}


REF = ann(("effusion", "OBS-DP", [["located_at", "2"]]), ("pleural", "ANAT-DP", []), ("heart", "ANAT-DP", []))
HYP = ann(("effusion", "OBS-DP", []), ("pleural", "ANAT-DP", []), ("lungs", "ANAT-DP", []))


def test_radgraph_levels_hand_worked():
    # RG_E: hyp {effusion/OBS, pleural/ANAT, lungs/ANAT}, ref {effusion/OBS, pleural/ANAT, heart/ANAT}: 2/3, 2/3.
    assert radgraph.entity_f1(HYP, REF, "rg_e")[0] == pytest.approx(2 / 3)
    # RG_ER: ref has (effusion, OBS-DP, True); hyp has (effusion, OBS-DP): only "pleural" matches -> 1/3.
    assert radgraph.entity_f1(HYP, REF, "rg_er")[0] == pytest.approx(1 / 3)
    # RG_ER-bar: ref items {(effusion, OBS-DP, located_at, pleural), pleural, heart}; hyp {effusion, pleural, lungs}.
    assert radgraph.entity_f1(HYP, REF, "rg_er_bar")[0] == pytest.approx(1 / 3)
    assert radgraph.entity_f1(REF, REF, "rg_er") == (1.0, 1.0, 1.0)
    assert radgraph.entity_f1(ann(), REF, "rg_er") == (0.0, 0.0, 0.0)
    s = radgraph.radgraph_scores([HYP, REF], [REF, REF])
    assert s["rg_er"] == pytest.approx(np.array([1 / 3, 1.0]))


def test_optional_scorers_say_why_they_cannot_run(tmp_path):
    with pytest.raises(ScorerUnavailable, match="no local weights"):
        radgraph.RadGraphModel(None)
    with pytest.raises(ScorerUnavailable, match="no local weights"):
        radgraph.RadGraphModel(tmp_path / "nothing")
    with pytest.raises(ScorerUnavailable, match="config.json"):
        green.GreenJudge(tmp_path)
    from radjepa_cli.metrics.chexbert import CheXbertLabeller

    with pytest.raises(ScorerUnavailable, match="chexbert.pth"):
        CheXbertLabeller(tmp_path)


RESPONSE = """[Explanation]:
The candidate misses the effusion and reports a pneumothorax.

[Clinically Significant Errors]:
(a) False report of a finding in the candidate: 1. Pneumothorax.
(b) Missing a finding present in the reference: 1. Left effusion.
(c) Misidentification of a finding's anatomic location/position: 0.
(d) Misassessment of the severity of a finding: 0.
(e) Mentioning a comparison that isn't in the reference: 0.
(f) Omitting a comparison detailing a change from a prior study: 0.

[Clinically Insignificant Errors]:
(a) False report of a finding in the candidate: 0.
(b) Missing a finding present in the reference: 2. Granuloma; degenerative spine.

[Matched Findings]:
3. Normal heart size; clear lungs; no consolidation.
"""


def test_green_parser_and_score():
    r = green.parse_response("prompt echo [Explanation]: x\n" + RESPONSE.split("[Explanation]:", 1)[1])
    assert r.significant == (1, 1, 0, 0, 0, 0)
    assert r.insignificant == (0, 2, 0, 0, 0, 0)
    assert r.matched == 3 and r.score == pytest.approx(3 / 5)
    no_match = RESPONSE.replace("3. Normal heart size; clear lungs; no consolidation.", "No matched findings.")
    assert green.parse_response(no_match).score == 0.0
    assert green.parse_response("I cannot evaluate this.").score is None
    assert "Candidate Report:\n    no effusion" in green.make_prompt("effusion", "no effusion")


def _tiny_chexbert_dir(tmp_path):
    import torch
    from transformers import BertConfig, BertTokenizer

    from radjepa_cli.metrics.chexbert import build_model

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "effusion", "pleural", "."]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    cfg.save_pretrained(tmp_path)
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "model_state_dict": state}, tmp_path / "chexbert.pth")
    return state


def test_chexbert_loads_strictly(tmp_path):
    import torch

    from radjepa_cli.metrics.chexbert import CHEXBERT_ORDER, CheXbertLabeller

    state = _tiny_chexbert_dir(tmp_path)
    labels = CheXbertLabeller(tmp_path).label(["no pleural effusion.", "effusion."])
    assert len(labels) == 2 and list(labels[0]) == list(CHEXBERT_ORDER)
    assert all(v in (None, 1, 0, -1) for lab in labels for v in lab.values())
    state.pop("module.linear_heads.13.bias")
    torch.save({"model_state_dict": state}, tmp_path / "chexbert.pth")
    with pytest.raises(ValueError, match="not a CheXbert checkpoint"):
        CheXbertLabeller(tmp_path)
