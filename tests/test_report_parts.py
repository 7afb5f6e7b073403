"""Report generation parts: projector, prompt/labels, splicing, and that image tokens actually condition the LM."""
import pytest
import torch

from radjepa_cli.report.lm import TinyLMConfig, build_tiny_lm, load_language_model, train_bpe_tokenizer
from radjepa_cli.report.model import ReportModel
from radjepa_cli.report.projector import MLP2xGelu, ResidualAdapter, build_projector
from radjepa_cli.report.prompt import (IGNORE_INDEX, IMAGE_TOKEN_INDEX, INSTRUCTION, PAPER_PROMPT, build_batch,
                                       build_prompt)

REPORTS = ["The heart size is normal. The lungs are clear.",
           "Moderate left pleural effusion. The heart is enlarged."]
SMALL = TinyLMConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=400)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(REPORTS * 10, 400, extra_texts=[PAPER_PROMPT])


def test_projectors_shapes_and_residual_form():
    x = torch.randn(2, 5, 16)
    mlp = build_projector("mlp2x_gelu", 16, 32)
    assert isinstance(mlp, MLP2xGelu) and mlp(x).shape == (2, 5, 32)
    res = build_projector("residual", 16, 16)
    assert isinstance(res, ResidualAdapter) and float(res.lam.detach()) == 1.0 and res.lam.requires_grad
    expected = x + res.lam * res.fc2(torch.nn.functional.gelu(res.fc1(x)))
    torch.testing.assert_close(res(x), expected)
    with torch.no_grad():
        res.lam.zero_()
    torch.testing.assert_close(res(x), x)  # λ = 0 → identity: λ really scales the MLP branch
    with pytest.raises(ValueError, match="equal widths.*16.*32"):
        build_projector("residual", 16, 32)
    with pytest.raises(ValueError, match="unknown projector"):
        build_projector("linear", 16, 32)


def test_prompt_has_one_placeholder_and_labels_mask_prompt(tokenizer):
    p = build_prompt(tokenizer)
    assert p.ids.count(IMAGE_TOKEN_INDEX) == 1 and not p.chat_template
    assert p.ids[0] == tokenizer.bos_token_id
    decoded = tokenizer.decode([i for i in p.ids if i >= 0], skip_special_tokens=True)
    assert INSTRUCTION in decoded
    b = build_batch(p, REPORTS, tokenizer, max_target_tokens=64)
    n = len(p.ids)
    assert (b["labels"][:, :n] == IGNORE_INDEX).all()
    for i, text in enumerate(REPORTS):
        real = b["attention_mask"][i].bool()
        target = b["labels"][i, n:][real[n:]]
        assert target[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]) == text
        assert (b["labels"][i][~real] == IGNORE_INDEX).all()


def test_chat_template_is_used_when_present(tokenizer):
    tokenizer.chat_template = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    try:
        p = build_prompt(tokenizer)
        assert p.chat_template and p.text.startswith("<|endoftext|>user: <image>") and p.text.endswith("assistant: ")
        assert p.ids.count(IMAGE_TOKEN_INDEX) == 1
        assert build_prompt(tokenizer, use_chat_template=False).text == PAPER_PROMPT + "\n"
    finally:
        tokenizer.chat_template = None


def test_splice_places_image_tokens_and_masks_their_labels(tokenizer):
    p = build_prompt(tokenizer)
    lm = build_tiny_lm(tokenizer, SMALL)
    m = ReportModel(build_projector("mlp2x_gelu", 8, SMALL.hidden_size), lm)
    b = build_batch(p, REPORTS, tokenizer)
    img = torch.randn(2, 3, 8)
    emb, mask, labels = m.splice(b["input_ids"], img, b["attention_mask"], b["labels"])
    pos = p.image_position
    assert emb.shape[1] == b["input_ids"].shape[1] - 1 + 3
    torch.testing.assert_close(emb[:, pos:pos + 3], m.projector(img))
    assert (labels[:, pos:pos + 3] == IGNORE_INDEX).all() and (mask[:, pos:pos + 3] == 1).all()
    torch.testing.assert_close(labels[:, pos + 3:], b["labels"][:, pos + 1:])


def test_image_tokens_condition_generation_and_kv_cache_matches():
    """Two 'images' → two reports: after a short fit, greedy decoding recovers each image's own report.
    Without using the image tokens this is impossible (the prompt is identical), so this fails if splicing,
    masking or the projector's gradient path break."""
    torch.manual_seed(0)
    lm = load_language_model("tiny", texts=REPORTS * 10, extra_texts=[PAPER_PROMPT], tiny=SMALL)
    tok = lm.tokenizer
    p = build_prompt(tok)
    m = ReportModel(build_projector("mlp2x_gelu", 8, lm.hidden_size), lm.model)
    img = torch.randn(2, 4, 8)
    b = build_batch(p, REPORTS, tok)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(150):
        loss = m(img, **b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    m.eval()
    kw = dict(max_new_tokens=40, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    ids = m.generate(img, p, **kw)
    assert tok.batch_decode(ids, skip_special_tokens=True) == REPORTS
    # the KV cache changes the speed, never the greedy result
    assert torch.equal(m.generate(img, p, use_cache=False, **kw), ids)
    # swapped images → swapped reports
    assert tok.batch_decode(m.generate(img.flip(0), p, **kw), skip_special_tokens=True) == REPORTS[::-1]
    beams = m.generate(img, p, num_beams=3, **kw)
    assert tok.batch_decode(beams, skip_special_tokens=True) == REPORTS


def test_tiny_lm_needs_texts_and_local_lm_errors(tmp_path):
    with pytest.raises(ValueError, match="texts"):
        load_language_model("tiny")
    with pytest.raises(ValueError, match="no Findings text"):
        train_bpe_tokenizer(["", "  "])
    with pytest.raises(FileNotFoundError, match="not 'tiny', 'smollm2' or an existing"):
        load_language_model(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_language_model(str(tmp_path))


def test_token_cache_is_reused_only_for_the_same_identity(tmp_path):
    import numpy as np
    from radjepa_cli.data.record import Record
    from radjepa_cli.models.zoo import load_encoder
    from radjepa_cli.report.features import cache_split

    enc = load_encoder("pixels:16")
    calls = []
    forward = enc.forward
    enc.forward = lambda x: calls.append(len(x)) or forward(x)
    rng = np.random.default_rng(0)
    recs = [Record(key=f"k{i}", image=rng.random((20, 24), dtype=np.float32), dataset="t",
                   findings="" if i == 2 else f"report {i}", labels={"Edema": i % 2}) for i in range(5)]
    kw = dict(image_size=16, feature_layer=None, batch_size=2)
    c = cache_split(enc, iter(recs), tmp_path, identity={"encoder": "a"}, **kw)
    assert len(c) == 4 and c.keys == ["k0", "k1", "k3", "k4"]  # the record without Findings is left out
    assert c.tokens.shape == (4, 4, 64) and c.batch([1, 0]).dtype == torch.float32
    from radjepa_cli.report.features import image_to_square
    expected = forward(image_to_square(recs[3].image, 16)[None]).patch_tokens[0]
    torch.testing.assert_close(c.batch([2])[0], expected, atol=2e-3, rtol=0)  # fp16 storage
    n = len(calls)
    cache_split(enc, iter(recs), tmp_path, identity={"encoder": "a"}, **kw)
    assert len(calls) == n  # reused
    cache_split(enc, iter(recs), tmp_path, identity={"encoder": "b"}, **kw)
    assert len(calls) > n  # another encoder: recomputed
    (tmp_path / "index.json").unlink()  # an interrupted cache is never trusted
    m = len(calls)
    cache_split(enc, iter(recs), tmp_path, identity={"encoder": "b"}, **kw)
    assert len(calls) > m
