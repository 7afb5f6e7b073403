"""`radjepa diagnose-report`: where does a report model lose the image signal? (issue 14)

Four measurements on one trained model dir and the shards it was trained on, each a step of the path
encoder tokens → projector tokens → LM → generated text:
  1. linear probe (report/probe.py) on the encoder's tokens and on the projector's output tokens: label macro-F1
     on the test images, ridge strength and thresholds chosen on val. A drop here: the projector loses it.
  2. validation loss with each report's own image vs another report's image (a seeded derangement). Equal
     losses: the LM writes from its text prior and ignores the image.
  3. attention mass on the image tokens from the queries that predict report tokens, vs the share a uniform
     attention would give them (image tokens / visible positions). Far below uniform: the LM looks away.
  4. label macro-F1 of the generated text (chexpert-rules) on the same test images and labels, and its ratio
     to the probe ("label transfer"), with the number of distinct reports.
The verdict names the first step that loses the signal (thresholds below, with their reasons).
"""
from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import numpy as np
import torch

from radjepa_cli.report.bundle import ReportBundle, load_report_model
from radjepa_cli.report.generate import texts_from_tokens
from radjepa_cli.report.prompt import IGNORE_INDEX, build_batch
from radjepa_cli.report.scoring import (best_view, distinct_warning, probe_scores, report_f1, split_cache,
                                        transfer)

# The acceptance bar: a step that keeps less than this share of the previous step's F1 "loses" it.
KEEP_SHARE = 0.8
# A model that reads the image predicts its report better with it than with a stranger's image. Below a 1%
# relative loss gap the image changes the LM's predictions by less than run-to-run noise of the loss itself.
MIN_RELATIVE_GAP = 0.01


@dataclasses.dataclass
class DiagnoseConfig:
    model: str = ""
    shards: str = ""
    split: str = "test"  # where the probe and the generated reports are scored
    limit: int = 200  # test images generated and scored (generation is the slow part)
    max_val: int = 512  # validation samples for the real-vs-shuffled loss
    attention_samples: int = 64  # validation samples for the attention mass (eager attention: memory ~ L²)
    batch_size: int = 16
    max_new_tokens: int = 150
    max_target_tokens: int = 256
    repetition_penalty: float | None = None
    beams: int = 1
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # diagnostics.json

    def validate(self) -> None:
        if not self.model or not self.shards:
            raise ValueError("diagnose-report needs SHARDS and --model")
        if self.limit < 1 or self.max_val < 2 or self.attention_samples < 1 or self.batch_size < 1:
            raise ValueError("--limit, --attention-samples and --batch-size must be >= 1, --max-val >= 2")


def image_loss_gap(bundle: ReportBundle, val, cfg: DiagnoseConfig) -> dict:
    from radjepa_cli.report.train import Dist, image_gap

    d = Dist(device=bundle.encoder.device if isinstance(bundle.encoder.device, torch.device)
             else torch.device(bundle.encoder.device))
    ns = types.SimpleNamespace(max_val=cfg.max_val, batch_size=cfg.batch_size,
                               max_target_tokens=cfg.max_target_tokens, seed=cfg.seed)
    gap = image_gap(bundle.model, bundle.prompt, bundle.tokenizer, val, ns, d)
    if gap:
        gap["relative_gap"] = round(gap["gap"] / max(gap["val_loss_real"], 1e-12), 5)
    return gap


@torch.no_grad()
def attention_to_image(bundle: ReportBundle, split, cfg: DiagnoseConfig) -> dict:
    """Mean over layers, heads, report-predicting queries and samples of the attention weight on image tokens,
    and the same for a uniform attention over the visible (causal, unpadded) positions."""
    model, lm = bundle.model, bundle.model.lm
    n = min(len(split), cfg.attention_samples)
    if n == 0:
        return {}
    previous = lm.config._attn_implementation
    lm.set_attn_implementation("eager")  # fused kernels do not return attention weights
    mass, uniform, count = 0.0, 0.0, 0
    start = bundle.prompt.image_position
    try:
        model.eval()
        for lo in range(0, n, cfg.batch_size):
            idx = np.arange(lo, min(lo + cfg.batch_size, n))
            batch = build_batch(bundle.prompt, [split.findings[j] for j in idx], bundle.tokenizer,
                                cfg.max_target_tokens)
            device = next(model.parameters()).device
            batch = {k: v.to(device) for k, v in batch.items()}
            image = split.batch(idx).to(device)
            embeds, mask, labels = model.splice(batch["input_ids"], image, batch["attention_mask"], batch["labels"])
            n_img = embeds.shape[1] - batch["input_ids"].shape[1] + 1
            att = lm(inputs_embeds=embeds, attention_mask=mask, output_attentions=True, use_cache=False).attentions
            a = torch.stack([x.float() for x in att]).mean((0, 2))  # [B, Q, K], mean over layers and heads
            # Query q predicts token q+1: the queries that matter are those whose next label is a report token.
            q = torch.zeros_like(labels, dtype=torch.bool)
            q[:, :-1] = labels[:, 1:] != IGNORE_INDEX
            on_image = a[..., start:start + n_img].sum(-1)  # [B, Q]
            visible = torch.arange(1, a.shape[1] + 1, device=a.device, dtype=torch.float32)  # causal, right-padded
            mass += float(on_image[q].sum())
            uniform += float((n_img / visible).expand_as(on_image)[q].sum())
            count += int(q.sum())
    finally:
        lm.set_attn_implementation(previous)
    if count == 0:
        return {}
    m, u = mass / count, uniform / count
    return {"image_attention_mass": round(m, 4), "uniform_share": round(u, 4), "ratio": round(m / u, 4),
            "samples": n}


def verdict(d: dict) -> str:
    """The first step of encoder → projector → LM → text that keeps less than it was given."""
    enc, proj, rep = d.get("probe_macro_f1"), d.get("projector_probe_macro_f1"), d.get("report", {}).get("macro_f1")
    gap = d.get("image_loss", {}).get("relative_gap")
    if enc is not None and proj is not None and proj < KEEP_SHARE * enc:
        return "projector: its tokens carry less of the findings than the encoder's"
    if gap is not None and gap < MIN_RELATIVE_GAP:
        return "language model: the validation loss barely changes when the image is swapped (it ignores the image)"
    if rep is not None and proj is not None and rep < KEEP_SHARE * proj:
        return "text: the LM uses the image but the written findings keep less than the probe reads"
    return "no step loses the signal by these criteria"


def summary_line(d: dict) -> str:
    parts = []
    if d.get("probe_macro_f1") is not None:
        parts.append(f"probe F1 encoder {d['probe_macro_f1']:.3f} → projector {d['projector_probe_macro_f1']:.3f}")
    g = d.get("image_loss") or {}
    if g:
        parts.append(f"val loss real {g['val_loss_real']:.4f} vs shuffled {g['val_loss_shuffled']:.4f} "
                     f"(gap {100 * g['relative_gap']:.2f}%)")
    a = d.get("attention") or {}
    if a:
        parts.append(f"attention on image {a['image_attention_mass']:.3f} vs uniform {a['uniform_share']:.3f}")
    if "report" in d:
        parts.append(f"report F1 {d['report']['macro_f1']:.3f} (transfer {d.get('label_transfer')}), "
                     f"{d['distinct_reports']}/{d['generated']} distinct")
    return "; ".join(parts) + f" → lost at: {d['verdict']}"


def diagnose(cfg: DiagnoseConfig, *, bundle: ReportBundle | None = None, progress=None) -> dict:
    from radjepa_cli.data.labels import CHEXPERT_14
    from radjepa_cli.metrics.chexpert_rules import label_reports
    from radjepa_cli.report.probe import probe_label_names

    cfg.validate()
    if bundle is None:
        device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else \
            ("cpu" if cfg.device == "auto" else cfg.device)
        bundle = load_report_model(cfg.model, device=device)
    train, val = split_cache(bundle, cfg.shards, "train", progress=progress), \
        split_cache(bundle, cfg.shards, "val", progress=progress)
    test = split_cache(bundle, cfg.shards, cfg.split, progress=progress)
    names = probe_label_names(train.labels, CHEXPERT_14)
    if not names:
        raise ValueError(f"{cfg.shards}: no CheXpert-14 label has both outcomes in the training split")
    idx = np.arange(min(cfg.limit, len(test)))
    out: dict = {"model": str(bundle.path), "shards": cfg.shards, "split": cfg.split, "labels": names,
                 "llm": bundle.llm_name, "encoder": bundle.encoder_name}
    out["probe"] = probe_scores(bundle, train, val, test, idx, names)
    enc, proj = best_view(out["probe"], "encoder"), best_view(out["probe"], "projector")
    out["probe_macro_f1"], out["projector_probe_macro_f1"] = enc[1], proj[1]
    out["image_loss"] = image_loss_gap(bundle, val, cfg)
    out["attention"] = attention_to_image(bundle, val, cfg)
    texts: list[str] = []
    for lo in range(0, len(idx), cfg.batch_size):
        texts += texts_from_tokens(bundle, test.batch(idx[lo:lo + cfg.batch_size]),
                                   max_new_tokens=cfg.max_new_tokens, beams=cfg.beams,
                                   repetition_penalty=cfg.repetition_penalty)
    out["report"] = report_f1(label_reports(texts), [test.labels[i] for i in idx], names)
    out["label_transfer"] = transfer(out["report"]["macro_f1"], out["probe_macro_f1"])
    out["projector_transfer"] = transfer(out["report"]["macro_f1"], out["projector_probe_macro_f1"])
    out.update(generated=len(texts), distinct_reports=len(set(texts)), warning=distinct_warning(texts, hint=False))
    out["predictions"] = [{"id": test.keys[i], "generated": t, "reference": test.findings[i],
                           "reference_labels": test.labels[i]} for i, t in zip(idx, texts)]
    out["verdict"] = verdict(out)
    out["summary"] = summary_line(out)
    if cfg.out:
        from radjepa_cli.io import write_json
        write_json(Path(cfg.out), out)
    return out
