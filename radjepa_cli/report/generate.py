"""`radjepa generate-report`: Findings text for PNG/JPG/DICOM files, folders, or shard folders.

Greedy decoding (the paper) or beam search, up to 150 new tokens, with the KV cache, in batches. Every image
shares one prompt, so a batch never needs padding. Output rows (predictions.jsonl, the `evaluate reports`
contract): id, image (file inputs), generated, reference + reference_labels (shard inputs: the shard's Findings
and ground-truth labels), labels (CheXpert-style rule labels of the generated text), encoder, llm, dataset.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from radjepa_cli.report.bundle import ReportBundle, load_report_model
from radjepa_cli.report.features import batched, encode, images_to_batch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
DEFAULT_MODEL_ENV = "RADJEPA_REPORT_MODEL"
QUICKSTART_MODEL = Path("runs/quickstart/report_model")


@dataclasses.dataclass
class GenerateConfig:
    inputs: list[str] = dataclasses.field(default_factory=list)
    model: str | None = None  # None: $RADJEPA_REPORT_MODEL, else runs/quickstart/report_model
    out: str | None = None  # predictions.jsonl; None: return rows only
    max_new_tokens: int = 150
    beams: int = 1  # 1 = greedy (the paper)
    repetition_penalty: float | None = None  # None / 1.0 = off (the paper); > 1 discourages repeated tokens
    batch_size: int = 8
    split: str | None = None  # shard inputs: which split (None: test if there is one, else all)
    limit: int | None = None  # at most this many images in all
    use_cache: bool = True
    probe: bool = True  # shard inputs with --out: fit the linear probe for predictions.summary.json
    device: str = "auto"
    trust_remote_code: bool = False

    def validate(self) -> None:
        if not self.inputs:
            raise ValueError("give at least one image, folder or shard folder")
        if self.max_new_tokens < 1 or self.beams < 1 or self.batch_size < 1:
            raise ValueError("--max-new-tokens, --beams and --batch-size must be >= 1")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError(f"--repetition-penalty must be > 0 (1 = off), not {self.repetition_penalty}")


@dataclasses.dataclass
class Item:
    id: str
    image_path: Path | None = None  # file inputs: decoded lazily
    image: np.ndarray | None = None  # shard inputs: already decoded
    reference: str | None = None
    reference_labels: dict | None = None
    dataset: str | None = None
    explicit: bool = False  # named on the command line (a decode failure is an error, not a skip)


def default_model_dir() -> Path:
    """$RADJEPA_REPORT_MODEL, else the quickstart's report model; a clear message when there is neither."""
    env = os.environ.get(DEFAULT_MODEL_ENV)
    if env:
        return Path(env)
    if QUICKSTART_MODEL.is_dir():
        return QUICKSTART_MODEL
    raise FileNotFoundError(
        f"no report model given and no default found (--model DIR, ${DEFAULT_MODEL_ENV}, or {QUICKSTART_MODEL}). "
        "Make one with `radjepa quickstart`, or train one: `radjepa prepare-data synthetic --out shards && "
        "radjepa train-report shards --encoder random:vit_tiny --llm tiny --out report_model`")


def _is_shard_dir(p: Path) -> bool:
    from radjepa_cli.data.manifest import MANIFEST
    return (p / MANIFEST).is_file() or any(p.glob("*.tar"))


def _looks_like_dicom(p: Path) -> bool:
    try:
        with p.open("rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def scan_inputs(paths: list[str], split: str | None) -> tuple[list[Item], list[tuple[str, str | None]]]:
    """(file items, shard sources [(folder or .tar, split)]). Checks every argument exists and is an image input."""
    files: list[Item] = []
    shards: list[tuple[str, str | None]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"input {p} does not exist")
        if p.is_dir() and _is_shard_dir(p):
            shards.append((str(p), split))
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")
                           and (q.suffix.lower() in IMAGE_SUFFIXES or (q.suffix == "" and _looks_like_dicom(q))))
            if not found:
                raise FileNotFoundError(f"folder {p} holds no PNG, JPEG or DICOM files (nor shards)")
            files += [Item(id=str(q.relative_to(p).with_suffix("")), image_path=q) for q in found]
        elif p.suffix == ".tar":
            shards.append((str(p), split))
        else:
            files.append(Item(id=p.stem, image_path=p, explicit=True))
    return files, shards


def iter_shard_items(source: str, split: str | None) -> Iterator[Item]:
    from radjepa_cli.data.loader import iter_records, shard_paths

    if split is None and Path(source).is_dir() and shard_paths(source, "test"):
        split = "test"  # held-out images by default
    for r in iter_records(source, split, with_masks=False):
        yield Item(id=r.key, image=r.image, reference=r.findings or None, reference_labels=dict(r.labels),
                   dataset=r.dataset)


def _labeller():
    try:
        from radjepa_cli.metrics.chexpert_rules import NAME, label_report
    except ImportError:
        return None, None
    return NAME, label_report


@torch.no_grad()
def generate_texts(bundle: ReportBundle, images: torch.Tensor, *, max_new_tokens: int = 150, beams: int = 1,
                   use_cache: bool = True, repetition_penalty: float | None = None) -> list[str]:
    """images [B, 1, S, S] in [0, 1] → one Findings text each."""
    device = bundle.encoder.device
    tokens = encode(bundle.encoder, images.to(device), bundle.feature_layer)
    return texts_from_tokens(bundle, tokens, max_new_tokens=max_new_tokens, beams=beams, use_cache=use_cache,
                             repetition_penalty=repetition_penalty)


@torch.no_grad()
def texts_from_tokens(bundle: ReportBundle, tokens: torch.Tensor, *, max_new_tokens: int = 150, beams: int = 1,
                      use_cache: bool = True, repetition_penalty: float | None = None) -> list[str]:
    """Encoder tokens [B, N, D] (e.g. from the training cache) → one Findings text each."""
    tok = bundle.tokenizer
    ids = bundle.model.generate(tokens.to(bundle.encoder.device), bundle.prompt, max_new_tokens=max_new_tokens,
                                num_beams=beams, use_cache=use_cache, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id, repetition_penalty=repetition_penalty)
    return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]


@dataclasses.dataclass
class GenerateResult:
    rows: list[dict]
    skipped: list[str]  # files found in folders that could not be decoded (each message names the file)
    model_dir: Path
    summary: dict  # report/scoring.py summarize(): distinct reports, warning, label F1 vs the probe's
    summary_path: Path | None = None


def summary_path(out: str | Path) -> Path:
    """predictions.jsonl → predictions.summary.json (beside it)."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".jsonl").removesuffix(".json") + ".summary.json")


def generate_reports(cfg: GenerateConfig, *, show_progress: bool = True, bundle: ReportBundle | None = None,
                     on_row=None) -> GenerateResult:
    """Run generation over cfg.inputs; write cfg.out atomically (tmp + rename) when given.

    A file named on the command line that cannot be decoded is an error; one found while scanning a folder is
    skipped and reported. `on_row(row)` is called as each row is ready (the CLI prints Findings with it)."""
    from radjepa_cli.data.decode import DecodeError, decode_image
    from radjepa_cli.report.progress import progress_bar as _progress

    cfg.validate()
    files, shard_sources = scan_inputs(cfg.inputs, cfg.split)
    if bundle is None:
        device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else \
            ("cpu" if cfg.device == "auto" else cfg.device)
        bundle = load_report_model(cfg.model or default_model_dir(), device=device,
                                   trust_remote_code=cfg.trust_remote_code)
    labeller_name, label = _labeller()
    size = bundle.encoder.image_size
    items: Iterator[Item] = iter(files)
    for src, split in shard_sources:
        items = _chain(items, iter_shard_items(src, split))
    total = len(files) if not shard_sources else None
    if cfg.limit is not None:
        items = _take(items, cfg.limit)
        total = min(total, cfg.limit) if total is not None else cfg.limit
    rows: list[dict] = []
    skipped: list[str] = []
    out_tmp = None
    if cfg.out:
        out = Path(cfg.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out_tmp = out.with_name(f".{out.name}.tmp")
        fh = out_tmp.open("w")
    try:
        with _progress(show_progress) as progress:
            task = progress.add_task("generating", total=total) if progress is not None else None
            for batch in batched(items, cfg.batch_size):
                ready: list[tuple[Item, np.ndarray]] = []
                for it in batch:
                    if it.image is not None:
                        ready.append((it, it.image))
                        continue
                    try:
                        ready.append((it, decode_image(it.image_path)))
                    except DecodeError as e:
                        if it.explicit:
                            raise
                        skipped.append(str(e))
                if not ready:
                    continue
                texts = generate_texts(bundle, images_to_batch([im for _, im in ready], size),
                                       max_new_tokens=cfg.max_new_tokens, beams=cfg.beams, use_cache=cfg.use_cache,
                                       repetition_penalty=cfg.repetition_penalty)
                for (it, _), text in zip(ready, texts):
                    row = {"id": it.id}
                    if it.image_path is not None:
                        row["image"] = str(it.image_path)
                    row["generated"] = text
                    if it.reference is not None:
                        row["reference"] = it.reference
                    if label is not None:
                        row["labels"] = label(text)
                        row["labeller"] = labeller_name
                    if it.reference_labels is not None:
                        row["reference_labels"] = it.reference_labels
                    row.update(encoder=bundle.encoder_name, llm=bundle.llm_name, dataset=it.dataset)
                    rows.append(row)
                    if cfg.out:
                        fh.write(json.dumps(row) + "\n")
                    if on_row is not None:
                        on_row(row)
                if task is not None:
                    progress.advance(task, len(batch))
        if cfg.out:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            out_tmp.replace(cfg.out)
    except BaseException:
        if out_tmp is not None:
            fh.close()
            out_tmp.unlink(missing_ok=True)
        raise
    if not rows:
        raise ValueError("no image could be read: " + "; ".join(skipped[:5]) if skipped else "no images in the inputs")
    from radjepa_cli.report.scoring import summarize

    # The probe needs the train/val splits of the one shard folder the rows came from.
    shards = shard_sources[0][0] if len(shard_sources) == 1 and Path(shard_sources[0][0]).is_dir() else None
    split = cfg.split or ("test" if shards and _has_split(shards, "test") else None)
    with _progress(show_progress and bool(cfg.out)) as progress:
        summary = summarize(rows, bundle=bundle, shards=shards if split else None, split=split,
                            probe=cfg.probe and bool(cfg.out), progress=progress)
    path = None
    if cfg.out:
        from radjepa_cli.io import write_json
        path = summary_path(cfg.out)
        write_json(path, {"predictions": str(cfg.out), "model": str(bundle.path), **summary})
    return GenerateResult(rows, skipped, bundle.path, summary, path)


def _has_split(source: str, split: str) -> bool:
    from radjepa_cli.data.loader import shard_paths
    return bool(shard_paths(source, split))


def _chain(a: Iterator, b: Iterator) -> Iterator:
    yield from a
    yield from b


def _take(it: Iterator, n: int) -> Iterator:
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x
