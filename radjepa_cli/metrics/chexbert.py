"""CheXbert (Smit et al., 2020) report labeller: optional, local weights only, strict loading.

Expected directory: ``chexbert.pth`` (the released checkpoint: {"model_state_dict": {"module.bert.…",
"module.linear_heads.{0..13}.…"}}) plus a BERT-base-uncased ``config.json`` and tokenizer files. The weights are
under a research licence and ~1.3 GB: we never download them. Loading is strict: a missing or unexpected key is an
error, never a silently random head.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .radgraph import ScorerUnavailable

# CheXbert's head order; 13 heads with classes (blank, positive, negative, uncertain), No Finding (blank, positive).
CHEXBERT_ORDER = (
    "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
    "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
    "No Finding",
)
_CLASS_VALUE = {0: None, 1: 1, 2: 0, 3: -1}


def build_model(config):
    import torch
    from transformers import BertModel

    class CheXbert(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(0.1)
            d = config.hidden_size
            self.linear_heads = torch.nn.ModuleList([torch.nn.Linear(d, 4) for _ in range(13)] +
                                                    [torch.nn.Linear(d, 2)])

        def forward(self, input_ids, attention_mask):
            cls = self.dropout(self.bert(input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])
            return [head(cls) for head in self.linear_heads]

    return CheXbert()


class CheXbertLabeller:
    def __init__(self, model_dir: str | Path | None, device: str = "cpu"):
        if not model_dir:
            raise ScorerUnavailable("no local weights: pass --chexbert-dir DIR (chexbert.pth + bert-base-uncased files)")
        model_dir = Path(model_dir)
        ckpt = model_dir / "chexbert.pth"
        if not ckpt.is_file() or not (model_dir / "config.json").is_file():
            raise ScorerUnavailable(f"no local weights: {model_dir} needs chexbert.pth and config.json")
        import torch
        from transformers import AutoTokenizer, BertConfig

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = build_model(BertConfig.from_pretrained(model_dir, local_files_only=True))
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = state.get("model_state_dict", state)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        state.pop("bert.embeddings.position_ids", None)  # a buffer in older transformers, not a weight
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{ckpt}: not a CheXbert checkpoint for this architecture ({e})") from None
        self.device = device
        self.model.to(device).eval()

    def label(self, texts: Sequence[str], batch_size: int = 16) -> list[dict[str, int | None]]:
        import torch

        out = []
        for i in range(0, len(texts), batch_size):
            batch = [" ".join(t.split()) for t in texts[i:i + batch_size]]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=512)
            with torch.no_grad():
                logits = self.model(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
            classes = torch.stack([lg.argmax(-1) for lg in logits], dim=1).cpu().tolist()
            out += [{name: _CLASS_VALUE[c] for name, c in zip(CHEXBERT_ORDER, row)} for row in classes]
        return out
