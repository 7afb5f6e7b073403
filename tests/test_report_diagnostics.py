"""Issue 14's measurements: the linear probe and label F1, the real-vs-shuffled image loss, the attention mass on
image tokens, and that they tell a model that reads the image from one that does not."""
import types

import numpy as np
import pytest
import torch

from radjepa_cli.report.diagnostics import KEEP_SHARE, MIN_RELATIVE_GAP, DiagnoseConfig, attention_to_image, verdict
from radjepa_cli.report.features import CachedSplit, ShuffledImages
from radjepa_cli.report.lm import TinyLMConfig, build_tiny_lm, train_bpe_tokenizer
from radjepa_cli.report.model import ReportModel
from radjepa_cli.report.probe import label_matrix, masked_f1, probe_label_names, ridge_probe
from radjepa_cli.report.projector import build_projector
from radjepa_cli.report.prompt import PAPER_PROMPT, build_batch, build_prompt
from radjepa_cli.report.scoring import DISTINCT_FRACTION, MIN_IMAGES_FOR_WARNING, distinct_warning
from radjepa_cli.report.train import Dist, image_gap

TEXTS = ("The heart is enlarged.", "The lungs are clear.")


def test_label_matrix_and_masked_f1_drop_unknowns():
    labels = [{"A": 1, "B": None}, {"A": 0, "B": -1}, {"A": -1}]
    y, known = label_matrix(labels, ["A", "B"], "positive")
    assert y.tolist() == [[1, 0], [0, 1], [1, 0]] and known.tolist() == [[True, False], [True, True], [True, False]]
    y_neg, _ = label_matrix(labels, ["A", "B"], "negative")
    assert y_neg[:, 1].sum() == 0
    pred = np.array([[True, True], [False, False], [False, True]])
    macro, per = masked_f1(pred, y, known)
    # A: tp 1, fn 1 → 2/3; B: only sample 2 is known, a miss → 0. Unknown B predictions count for nothing.
    assert per == pytest.approx([2 / 3, 0.0]) and macro == pytest.approx(1 / 3)
    assert probe_label_names([{"A": 1, "B": 0}, {"A": 0, "B": 0}], ["A", "B", "C"]) == ["A"]


def test_ridge_probe_reads_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n, d = 300, 40
    x = rng.normal(size=(n, d))
    y = np.stack([x[:, 0] + 0.5 * x[:, 1] > 0.3, x[:, 2] < -0.5], 1).astype(float)
    known = np.ones_like(y, bool)
    tr, va, te = slice(0, 150), slice(150, 220), slice(220, n)
    res = ridge_probe(x[tr], y[tr], known[tr], x[va], y[va], known[va], x[te], ["a", "b"])
    good = res.f1(y[te], known[te])[0]
    noise = rng.normal(size=(n, d))
    res0 = ridge_probe(noise[tr], y[tr], known[tr], noise[va], y[va], known[va], noise[te], ["a", "b"])
    bad = res0.f1(y[te], known[te])[0]
    assert good > 0.8 and bad < good - 0.3
    with pytest.raises(ValueError, match="validation"):
        ridge_probe(x[:5], y[:5], known[:5], x[:0], y[:0], known[:0], x[:3], ["a", "b"])


def test_shuffled_images_is_a_derangement_of_the_first_n():
    tokens = np.arange(10, dtype=np.float16).reshape(10, 1, 1)
    split = CachedSplit(tokens, [str(i) for i in range(10)], ["t"] * 10, [{}] * 10, ["x"] * 10)
    sh = ShuffledImages(split, n=6, seed=1)
    got = sh.batch(range(10)).flatten().tolist()
    assert all(got[i] != i for i in range(6)) and sorted(got[:6]) == list(range(6)) and got[6:] == [6, 7, 8, 9]


def test_distinct_warning_threshold():
    n = MIN_IMAGES_FOR_WARNING
    few = int(np.ceil(DISTINCT_FRACTION * n)) - 1
    assert distinct_warning([f"r{i % few}" for i in range(n)]) is not None
    assert distinct_warning([f"r{i}" for i in range(n)]) is None
    assert distinct_warning(["same"] * (n - 1)) is None  # too few images to judge


def _two_class_split(n=32):
    """Image tokens ±1 that decide the text exactly: a model can only get the loss down by reading them."""
    cls = np.arange(n) % 2
    tokens = np.where(cls[:, None, None] == 0, 1.0, -1.0) * np.ones((n, 4, 8))
    return CachedSplit(tokens.astype(np.float16), [str(i) for i in range(n)], [TEXTS[c] for c in cls],
                       [{"Cardiomegaly": int(c == 0)} for c in cls], ["x"] * n)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    split = _two_class_split()
    tok = train_bpe_tokenizer(list(TEXTS) * 20, 300, extra_texts=[PAPER_PROMPT])
    lm = build_tiny_lm(tok, TinyLMConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64))
    model = ReportModel(build_projector("mlp2x_gelu", 8, 32), lm)
    prompt = build_prompt(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(150):
        idx = np.random.default_rng(step).choice(len(split), 8, replace=False)
        loss = model(split.batch(idx), **build_batch(prompt, [split.findings[i] for i in idx], tok)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, prompt, tok, split


def _cfg():
    return types.SimpleNamespace(max_val=32, batch_size=8, max_target_tokens=32, seed=0)


def test_image_gap_separates_a_reading_model_from_a_blind_one(trained):
    model, prompt, tok, split = trained
    gap = image_gap(model, prompt, tok, split, _cfg(), Dist())
    assert gap["val_loss_shuffled"] > gap["val_loss_real"] * (1 + MIN_RELATIVE_GAP)
    bundle = types.SimpleNamespace(model=model, tokenizer=tok, prompt=prompt, encoder=types.SimpleNamespace(
        device=torch.device("cpu")))
    from radjepa_cli.report.generate import texts_from_tokens
    texts = texts_from_tokens(bundle, split.batch([0, 1]), max_new_tokens=8)
    assert texts[0] != texts[1]  # the model reads the image: the two image types get different reports
    attn_impl = model.lm.config._attn_implementation
    att = attention_to_image(bundle, split, DiagnoseConfig(model="m", shards="s", attention_samples=8))
    assert 0 < att["image_attention_mass"] <= 1 and 0 < att["uniform_share"] < 1
    assert model.lm.config._attn_implementation == attn_impl  # the attention implementation is restored

    blind = ReportModel(build_projector("mlp2x_gelu", 8, 32), model.lm)
    with torch.no_grad():
        for p in blind.projector.parameters():
            p.zero_()  # every image projects to the same tokens
    gap0 = image_gap(blind, prompt, tok, split, _cfg(), Dist())
    assert gap0["gap"] == pytest.approx(0.0, abs=1e-5)
    assert len(set(texts_from_tokens(types.SimpleNamespace(model=blind, tokenizer=tok, prompt=prompt,
                                                           encoder=bundle.encoder), split.batch([0, 1]),
                                     max_new_tokens=8))) == 1


def test_verdict_names_the_first_lossy_step():
    ok = {"probe_macro_f1": 0.5, "projector_probe_macro_f1": 0.5, "report": {"macro_f1": 0.5},
          "image_loss": {"relative_gap": 10 * MIN_RELATIVE_GAP}}
    assert verdict(ok).startswith("no step")
    assert verdict({**ok, "projector_probe_macro_f1": 0.5 * KEEP_SHARE * 0.9}).startswith("projector")
    assert verdict({**ok, "image_loss": {"relative_gap": MIN_RELATIVE_GAP / 2}}).startswith("language model")
    assert verdict({**ok, "report": {"macro_f1": 0.5 * KEEP_SHARE * 0.9}}).startswith("text")


def test_quickstart_summary_shows_label_transfer(tmp_path):
    import json

    from radjepa_cli.summary import key_numbers

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "predictions.summary.json").write_text(json.dumps(
        {"n": 60, "distinct_reports": 3, "report": {"macro_f1": 0.05}, "probe_macro_f1": 0.5, "label_transfer": 0.1}))
    rows = dict(key_numbers(tmp_path))
    value = rows["report label transfer (report F1 / probe F1)"]
    assert value.startswith("0.10") and "probe 0.500" in value and "3/60 distinct" in value
