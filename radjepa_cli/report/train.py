"""`radjepa train-report`: the LLaVA-1.5 two-stage recipe on cached frozen-encoder tokens.

Stage 1 trains the projector alone (LM frozen, LR 1e-3); stage 2 trains projector + LM (full at 2e-5, or LoRA
r128/α256 at 2e-4). AdamW, cosine schedule with 3% warmup, bf16 autocast on GPU. The encoder is frozen, so its
patch tokens are computed once into OUT/cache and every epoch of both stages reads them from there.
`--gpus N` (NCCL) / `--procs N` (gloo, CPU) run N data-parallel processes over that cache.
Each stage ends by logging the validation loss with real vs shuffled images ("image_gap"): ~0 means the LM ignores
the image. Levers (off by default; none has won yet on CPU budgets, see benchmarks/results/report_levers_*.json):
--aux-label-loss (label head on projector tokens), --keep-best (best-val weights per stage), --token-norm.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from radjepa_cli import config as config_mod
from radjepa_cli.report.lm import TinyLMConfig, load_language_model, num_trainable
from radjepa_cli.report.projector import (DEFAULT_PROJECTOR, DEFAULT_TOKEN_NORM, TOKEN_NORMS, build_image_adapter,
                                          merge_tokens, token_statistics)
from radjepa_cli.report.prompt import PAPER_PROMPT, Prompt, build_batch, build_prompt
from radjepa_cli.report.model import ReportModel
from radjepa_cli.report.progress import progress_bar as _progress

STAGES = {"1": (1,), "2": (2,), "both": (1, 2)}
LARGE_LM_PARAMS = 1_000_000_000  # gradient checkpointing is switched on above this size ("auto")


@dataclasses.dataclass
class ReportTrainConfig:
    shards: str = ""
    encoder: str = ""
    llm: str = "tiny"  # tiny | smollm2 | a local HF causal-LM dir
    out: str = ""
    stage: str = "both"  # 1 (projector only) | 2 (projector + LM) | both
    lora: bool = False  # stage 2 through LoRA adapters instead of full fine-tuning
    projector: str = DEFAULT_PROJECTOR  # mlp2x_gelu | residual (equal widths only)
    token_norm: str = DEFAULT_TOKEN_NORM  # none | standardize (per-position z-score of image tokens; projector.py)
    token_merge: int = 1  # k: concatenate each k×k block of neighbouring tokens (Qwen2-VL merger, k=2); 1 = off
    feature_layer: int | None = None  # None: the encoder's output tokens; e.g. -2: LLaVA's penultimate block
    stage1_epochs: float = 1.0  # LLaVA-1.5: 1 epoch of projector alignment
    epochs: float = 3.0  # stage 2 (the paper: 3)
    max_steps: int | None = None  # cap on optimizer steps per stage
    batch_size: int = 16  # per process
    grad_accum: int = 1
    lr_stage1: float = 1e-3
    lr_stage2: float | None = None  # None: 2e-4 with LoRA, 1e-3 for `tiny` (trained from scratch), else 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    max_grad_norm: float = 1.0
    lora_r: int = 128
    lora_alpha: int = 256
    lora_dropout: float = 0.05
    max_target_tokens: int = 256
    use_chat_template: bool = True
    eval_every: int = 0  # optimizer steps between validation passes; 0 = once per epoch (and at each stage end)
    log_every: int = 10
    max_val: int = 512  # validation samples used for the loss curve
    train_split: str = "train"
    val_split: str = "val"
    gpus: int = 0
    procs: int = 0
    device: str = "auto"  # auto | cpu | cuda
    gradient_checkpointing: str = "auto"  # auto (LMs > 1B parameters) | on | off
    encoder_batch_size: int = 32
    # Levers against "the LM ignores the image" (issue 14); off until measured to win (see `radjepa diagnose-report`).
    aux_label_loss: float = 0.0  # weight of a BCE loss of a linear label head on the mean projector token; 0 = off
    keep_best: bool = False  # end each stage with the weights of its lowest validation loss (use with --eval-every)
    seed: int = 0
    trust_remote_code: bool = False
    tiny: TinyLMConfig = dataclasses.field(default_factory=TinyLMConfig)

    def validate(self) -> None:
        if not self.shards or not self.encoder or not self.out:
            raise ValueError("train-report needs SHARDS, --encoder and --out")
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be 1, 2 or both, not {self.stage!r}")
        if self.lora and self.stage == "1":
            raise ValueError("--lora applies to stage 2; it has no effect with --stage 1")
        if self.gpus and self.procs:
            raise ValueError("give --gpus N or --procs N, not both")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("--batch-size and --grad-accum must be >= 1")
        if self.token_norm not in TOKEN_NORMS:
            raise ValueError(f"--token-norm must be one of {', '.join(TOKEN_NORMS)}, not {self.token_norm!r}")
        if self.token_merge < 1:
            raise ValueError(f"--token-merge must be >= 1, not {self.token_merge}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.aux_label_loss < 0:
            raise ValueError(f"--aux-label-loss is a loss weight and must be >= 0, not {self.aux_label_loss}")

    def resolved_lr_stage2(self) -> float:
        if self.lr_stage2 is not None:
            return self.lr_stage2
        if self.lora:
            return 2e-4
        # 2e-5 is a fine-tuning rate; the tiny LM starts from random weights and must learn the language itself.
        return 1e-3 if self.llm == "tiny" else 2e-5


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def _device(cfg: ReportTrainConfig) -> str:
    if cfg.gpus or cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--gpus / --device cuda asked for, but torch sees no CUDA device")
        return "cuda"
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def train_report(cfg: ReportTrainConfig, *, encoder=None, show_progress: bool = True) -> Path:
    """Cache encoder tokens, train, and write a self-contained report model dir at cfg.out. Returns its path.

    `encoder` (a FrozenEncoder) overrides loading cfg.encoder through the zoo (tests, notebooks)."""
    from radjepa_cli.report.bundle import MANIFEST, encoder_reference
    from radjepa_cli.report.features import cache_split
    from radjepa_cli.data.loader import iter_records, shard_paths
    from radjepa_cli.models.features import shards_fingerprint

    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a rerun is incomplete until it finishes again
    cfg.lr_stage2 = cfg.resolved_lr_stage2()
    config_mod.save(cfg, out)
    if not shard_paths(cfg.shards, cfg.train_split):
        raise ValueError(f"{cfg.shards}: no '{cfg.train_split}' shards to train on")

    device = _device(cfg)
    if encoder is None:
        from radjepa_cli.models.zoo import load_encoder
        encoder = load_encoder(cfg.encoder, device=device, trust_remote_code=cfg.trust_remote_code)
    encoder = encoder.to(device)
    with _progress(show_progress) as progress:
        for split in (cfg.train_split, cfg.val_split):
            has = bool(shard_paths(cfg.shards, split))
            records = iter_records(cfg.shards, split, with_masks=False) if has else iter(())
            # Reused only for the same encoder weights+preprocessing and the same shard contents.
            identity = {"encoder": encoder.fingerprint, "split": split,
                        "shards": shards_fingerprint(cfg.shards, split) if has else None}
            cache_split(encoder, records, out / "cache" / split, identity=identity,
                        image_size=encoder.image_size, feature_layer=cfg.feature_layer,
                        batch_size=cfg.encoder_batch_size, device=device, progress=progress,
                        description=f"encoding {split} images")
    enc_ref = encoder_reference(encoder, cfg.encoder, out, feature_layer=cfg.feature_layer)
    del encoder
    world = cfg.gpus or cfg.procs or 1
    if world > 1:
        import torch.multiprocessing as mp
        port = str(29500 + os.getpid() % 2000)
        mp.spawn(_worker, args=(world, cfg, enc_ref, port, show_progress), nprocs=world, join=True)
    else:
        _worker(0, 1, cfg, enc_ref, None, show_progress)
    return out


def _worker(rank: int, world: int, cfg: ReportTrainConfig, enc_ref: dict, port: str | None, show_progress: bool):
    device = _device(cfg)
    if world > 1:
        import torch.distributed as dist
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        backend = "nccl" if device == "cuda" else "gloo"
        if device == "cuda":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, rank=rank, world_size=world)
    d = Dist(rank, world, torch.device(f"cuda:{rank}" if device == "cuda" else "cpu"))
    try:
        _train(cfg, d, enc_ref, show_progress)
    finally:
        if world > 1:
            import torch.distributed as dist
            dist.destroy_process_group()


def _train(cfg: ReportTrainConfig, d: Dist, enc_ref: dict, show_progress: bool) -> None:
    from radjepa_cli.report.bundle import save_report_model
    from radjepa_cli.report.features import load_cached_split
    from radjepa_cli.report.probe import label_matrix, probe_label_names

    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    train = load_cached_split(out / "cache" / cfg.train_split)
    val = load_cached_split(out / "cache" / cfg.val_split)
    if len(train) == 0:
        raise ValueError(f"{cfg.shards}: no '{cfg.train_split}' sample has Findings text to train on")
    stages = STAGES[cfg.stage]
    # Frozen weights can live in bf16 on GPU; weights that train stay fp32 (autocast does the bf16 math).
    lm_frozen_only = cfg.lora or stages == (1,)
    lm_dtype = torch.bfloat16 if d.device.type == "cuda" and lm_frozen_only and cfg.llm != "tiny" else torch.float32
    lm = load_language_model(cfg.llm, texts=train.findings, extra_texts=[PAPER_PROMPT], tiny=cfg.tiny,
                             dtype=lm_dtype, trust_remote_code=cfg.trust_remote_code)
    prompt = build_prompt(lm.tokenizer, use_chat_template=cfg.use_chat_template)
    n_img = int(merge_tokens(torch.zeros(1, *train.tokens.shape[1:]), cfg.token_merge).shape[1])
    max_pos = getattr(lm.model.config, "max_position_embeddings", None)
    needed = len(prompt.ids) - 1 + n_img + cfg.max_target_tokens
    if max_pos is not None and needed > max_pos:
        raise ValueError(f"{n_img} image tokens + {len(prompt.ids) - 1} prompt tokens + {cfg.max_target_tokens} report "
                         f"tokens exceed the LM's {max_pos} positions; lower --max-target-tokens or use fewer tokens")
    projector = build_image_adapter(cfg.projector, int(train.tokens.shape[2]), lm.hidden_size,
                                    token_norm=cfg.token_norm, token_merge=cfg.token_merge,
                                    stats=token_statistics(train.tokens) if cfg.token_norm != "none" else None)
    model = ReportModel(projector, lm.model).to(d.device)
    if cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto"
                                              and lm.num_parameters > LARGE_LM_PARAMS):
        lm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm.model.enable_input_require_grads()
    log = _Log(out / "train_log.jsonl", d.main)
    log.write({"event": "start", "llm": lm.name, "lm_parameters": lm.num_parameters, "image_tokens": n_img,
               "train_samples": len(train), "val_samples": len(val), "world_size": d.world, "device": str(d.device)})
    base_saved = False
    if cfg.lora and d.main and cfg.llm == "tiny" and 2 in stages:
        lm.model.save_pretrained(out / "lm")  # the tiny base is random: keep it, the adapter needs it
        base_saved = True
    aux = None
    if cfg.aux_label_loss > 0:
        from radjepa_cli.data.labels import CHEXPERT_14
        names = probe_label_names(train.labels, CHEXPERT_14)
        if not names:
            raise ValueError("--aux-label-loss needs training labels with both outcomes for some CheXpert-14 finding")
        y, known = label_matrix(train.labels, names)
        # Training-only head (not saved): it pushes the finding into the projector's tokens, where the LM reads it.
        aux = AuxLabelHead(lm.hidden_size, torch.from_numpy(y).float(), torch.from_numpy(known).float(),
                           cfg.aux_label_loss).to(d.device)
        log.write({"event": "aux_label_loss", "weight": cfg.aux_label_loss, "labels": names})
    curves: dict[str, dict[str, list]] = {}
    for stage in stages:
        if stage == 1:
            model.lm.requires_grad_(False)
            model.projector.requires_grad_(True)
            lr, epochs = cfg.lr_stage1, cfg.stage1_epochs
        else:
            if cfg.lora:
                model.lm = _add_lora(model.lm, cfg)
            else:
                model.lm.requires_grad_(True)
            model.projector.requires_grad_(True)
            lr, epochs = cfg.resolved_lr_stage2(), cfg.epochs
        curves[f"stage{stage}"] = _run_stage(cfg, d, model, prompt, lm.tokenizer, train, val, stage, lr, epochs,
                                             log, show_progress, aux)
    if d.main:
        save_report_model(out, cfg=cfg, model=model, lm=lm, prompt=prompt, encoder_ref=enc_ref, curves=curves,
                          base_saved=base_saved, n_train=len(train), n_val=len(val), stages=stages)
    log.write({"event": "done"})


def _add_lora(lm, cfg: ReportTrainConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(lm, lora)


def _run_stage(cfg, d: Dist, model: ReportModel, prompt: Prompt, tokenizer, train, val, stage: int, lr: float,
               epochs: float, log, show_progress: bool, aux: "AuxLabelHead | None" = None) -> dict[str, list]:
    from transformers import get_cosine_schedule_with_warmup

    per_rank = len(train) // d.world if d.world > 1 else len(train)
    if per_rank == 0:
        raise ValueError(f"{len(train)} training samples cannot be split over {d.world} processes")
    batches_per_epoch = math.ceil(per_rank / cfg.batch_size)
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total = max(1, math.ceil(epochs * steps_per_epoch))
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad] + (list(aux.parameters()) if aux is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * total), total)
    net = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda"
                                                        else None)
    log.write({"event": "stage", "stage": stage, "lr": lr, "steps": total, "trainable_parameters":
               num_trainable(model), "steps_per_epoch": steps_per_epoch})
    curves: dict[str, list] = {"train": [], "val": []}
    eval_every = cfg.eval_every or steps_per_epoch
    step, window, t0, tokens = 0, [], time.time(), 0
    best: tuple[float, dict] | None = None  # (val loss, trainable weights) for --keep-best
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with _progress(show_progress and d.main) as progress:
        task = progress.add_task(f"stage {stage}", total=total) if progress is not None else None
        epoch = 0
        while step < total:
            order = np.random.default_rng((cfg.seed, stage, epoch)).permutation(len(train))
            mine = order[d.rank * per_rank:(d.rank + 1) * per_rank] if d.world > 1 else order
            batches = [mine[i:i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]
            for i in range(0, len(batches) - cfg.grad_accum + 1, cfg.grad_accum):
                net.train()
                for idx in batches[i:i + cfg.grad_accum]:
                    batch = build_batch(prompt, [train.findings[j] for j in idx], tokenizer, cfg.max_target_tokens)
                    batch = {k: v.to(d.device) for k, v in batch.items()}
                    image = train.batch(idx).to(d.device)
                    with amp:
                        loss = net(image, **batch).loss
                        if aux is not None:
                            loss = loss + aux(model.projector(image), idx)
                    (loss / cfg.grad_accum).backward()
                    window.append(float(loss.detach()))
                    tokens += int((batch["labels"] != -100).sum())
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if task is not None:
                    progress.update(task, advance=1, description=f"stage {stage} loss {window[-1]:.3f}")
                if step % cfg.log_every == 0 or step == total:
                    mean = float(np.mean(window))
                    curves["train"].append([step, mean])
                    log.write({"event": "train", "stage": stage, "step": step, "epoch": round(step / steps_per_epoch, 3),
                               "loss": round(mean, 5), "lr": sched.get_last_lr()[0],
                               "target_tokens_per_s": round(tokens / max(time.time() - t0, 1e-9), 1)})
                    window = []
                if step % eval_every == 0 or step == total:
                    vl = validation_loss(model, prompt, tokenizer, val, cfg, d)
                    if vl is not None:
                        curves["val"].append([step, vl])
                        log.write({"event": "val", "stage": stage, "step": step, "val_loss": round(vl, 5)})
                        if cfg.keep_best and (best is None or vl < best[0]):
                            best = (vl, {k: v.detach().clone() for k, v in model.named_parameters()
                                         if v.requires_grad})
                if step >= total:
                    break
            epoch += 1
    if best is not None and curves["val"] and best[0] < curves["val"][-1][1]:
        with torch.no_grad():
            named = dict(model.named_parameters())
            for k, v in best[1].items():
                named[k].copy_(v)
        log.write({"event": "keep_best", "stage": stage, "val_loss": round(best[0], 5)})
        curves["val"].append([step, best[0]])  # the stage ends on the weights it keeps
    curves["image_gap"] = image_gap(model, prompt, tokenizer, val, cfg, d)
    if curves["image_gap"]:
        log.write({"event": "image_gap", "stage": stage, **curves["image_gap"]})
    return curves


def image_gap(model: ReportModel, prompt: Prompt, tokenizer, val, cfg, d: Dist) -> dict:
    """Validation loss with each report's own image vs with another report's image. A model that reads the image
    has real < shuffled; equal losses say the LM writes from its text prior alone (issue 14)."""
    from radjepa_cli.report.features import ShuffledImages

    real = validation_loss(model, prompt, tokenizer, val, cfg, d)
    if real is None or min(len(val), cfg.max_val) < 2:
        return {}
    shuffled = validation_loss(model, prompt, tokenizer, ShuffledImages(val, cfg.max_val, cfg.seed), cfg, d)
    return {"val_loss_real": round(real, 5), "val_loss_shuffled": round(shuffled, 5),
            "gap": round(shuffled - real, 5)}


class AuxLabelHead(torch.nn.Module):
    """weight × masked BCE of Linear(mean projector token) against the sample's labels (unknown labels masked)."""

    def __init__(self, width: int, y: torch.Tensor, known: torch.Tensor, weight: float):
        super().__init__()
        self.head = torch.nn.Linear(width, y.shape[1])
        self.register_buffer("y", y)
        self.register_buffer("known", known)
        self.weight = weight

    def forward(self, projected: torch.Tensor, idx) -> torch.Tensor:
        i = torch.as_tensor(np.asarray(idx), device=self.y.device)
        logits = self.head(projected.float().mean(1))
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, self.y[i], reduction="none")
        return self.weight * (bce * self.known[i]).sum() / self.known[i].sum().clamp_min(1.0)


@torch.no_grad()
def validation_loss(model: ReportModel, prompt: Prompt, tokenizer, val, cfg, d: Dist) -> float | None:
    """Token-weighted mean NLL of the Findings text over (up to cfg.max_val) validation samples, all ranks."""
    n = min(len(val), cfg.max_val)
    if n == 0:
        return None
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for start in range(d.rank * cfg.batch_size, n, cfg.batch_size * d.world):
        idx = np.arange(start, min(start + cfg.batch_size, n))
        batch = build_batch(prompt, [val.findings[j] for j in idx], tokenizer, cfg.max_target_tokens)
        batch = {k: v.to(d.device) for k, v in batch.items()}
        with amp:
            out = model(val.batch(idx).to(d.device), **batch)
        k = int((batch["labels"][:, 1:] != -100).sum())  # HF shifts labels by one inside the loss
        total += float(out.loss) * k
        count += k
    if d.world > 1:
        import torch.distributed as dist
        t = torch.stack([total, count]).to(d.device)
        dist.all_reduce(t)
        total, count = t[0].cpu(), t[1].cpu()
    return float(total / count) if count > 0 else None


class _Log:
    """Append-only JSONL training log (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled, self.t0 = path, enabled, time.time()
        if enabled:
            path.write_text("")

    def write(self, row: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps({"time_s": round(time.time() - self.t0, 2), **row}) + "\n")
