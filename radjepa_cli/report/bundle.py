"""The report model directory: writing it after training, loading it for generation.

Layout (self-contained; report_model.json is written last, so a directory without it is incomplete):
  report_model.json      what generation needs: encoder reference + fingerprint, LM, projector, prompt ids
  config.json            the resolved ReportTrainConfig
  projector.safetensors  projector weights
  tokenizer/             the LM's tokenizer
  lm/                    LM weights (full fine-tune, or the `tiny` base); absent when the base is unchanged
  lm_adapter/            LoRA adapter (peft) when trained with --lora; its base is lm/ or the recorded source
  encoder/               a copy of our own encoder (export layout: encoder_config.json + model.safetensors)
  train_log.jsonl, loss_curves.json, loss_curves.png, cache/ (the encoder tokens; safe to delete)
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from radjepa_cli.io import atomic_write_bytes, read_json, write_json
from radjepa_cli.report.model import ReportModel
from radjepa_cli.report.projector import build_image_adapter
from radjepa_cli.report.prompt import IMAGE_TOKEN_INDEX, Prompt

MANIFEST = "report_model.json"
FORMAT = "radjepa-report-model/1"


class ModelDirError(FileNotFoundError):
    """A report model directory that is missing, incomplete or inconsistent (the message says which file)."""


# ---------------------------------------------------------------------------------------------------- writing

def encoder_reference(encoder, spec: str, out: Path, *, feature_layer: int | None) -> dict:
    """The spec + fingerprint generation will check; for our own ViTs also a local copy under out/encoder."""
    ref = {"spec": spec, "name": encoder.name, "fingerprint": encoder.fingerprint, "embed_dim": encoder.embed_dim,
           "image_size": encoder.image_size, "feature_layer": feature_layer, "local": None}
    from radjepa_cli.models.zoo import OursEncoder, load_encoder, split_spec

    prefix, _ = split_spec(spec)
    if isinstance(encoder, OursEncoder) and prefix == "":  # a run/checkpoint/export of ours: copy its weights
        dst = out / "encoder"
        try:
            _write_encoder_copy(encoder, dst)
            same = load_encoder(str(dst)).fingerprint == encoder.fingerprint
        except Exception:  # noqa: BLE001 - a copy that does not load is simply not used
            same = False
        if same:
            ref["local"] = "encoder"
        else:
            shutil.rmtree(dst, ignore_errors=True)
    return ref


def _write_encoder_copy(encoder, dst: Path) -> None:
    """encoder_config.json + model.safetensors: the `radjepa export` layout the zoo loads."""
    from safetensors.torch import save as st_save
    from radjepa_cli.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, encoder_config

    vit = encoder.backbone
    cfg = {**encoder_config(vit), "mean": float(encoder.preprocessing.mean[0]),
           "std": float(encoder.preprocessing.std[0])}
    write_json(dst / CONFIG_NAME, cfg)
    atomic_write_bytes(dst / WEIGHTS_NAME, st_save({k: v.detach().cpu().contiguous()
                                                    for k, v in vit.state_dict().items()}))


def _save_dir(obj, dst: Path) -> None:
    """save_pretrained into a temporary sibling, then swap it in (never a half-written dir under the real name)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    obj.save_pretrained(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)


def save_report_model(out: Path, *, cfg, model: ReportModel, lm, prompt: Prompt, encoder_ref: dict, curves: dict,
                      base_saved: bool, n_train: int, n_val: int, stages: tuple[int, ...]) -> Path:
    from safetensors.torch import save as st_save

    out = Path(out)
    proj = {k: v.detach().float().cpu().contiguous() for k, v in model.projector.state_dict().items()}
    atomic_write_bytes(out / "projector.safetensors", st_save(proj))
    _save_dir(lm.tokenizer, out / "tokenizer")
    lora = bool(cfg.lora and 2 in stages)
    lm_changed = 2 in stages and not lora
    weights = None
    if lora:
        _save_dir(model.lm, out / "lm_adapter")  # a PeftModel saves the adapter only
        weights = "lm" if base_saved else None
    elif lm_changed or lm.name == "tiny":
        _save_dir(model.lm, out / "lm")
        weights = "lm"
    write_curves(out, curves)
    final_val = [v for c in curves.values() for v in c["val"]]
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "encoder": encoder_ref,
        "llm": {"name": lm.name, "source": lm.source, "weights": weights, "adapter": "lm_adapter" if lora else None,
                "hidden_size": lm.hidden_size, "parameters": lm.num_parameters},
        "projector": {"kind": cfg.projector, "in_dim": model.projector.in_dim, "out_dim": model.projector.out_dim,
                      "file": "projector.safetensors",
                      **({"token_norm": cfg.token_norm} if cfg.token_norm != "none" else {}),
                      **({"token_merge": cfg.token_merge} if cfg.token_merge != 1 else {})},
        "prompt": {"ids": list(prompt.ids), "text": prompt.text, "chat_template": prompt.chat_template},
        "tokenizer": "tokenizer",
        "training": {"shards": cfg.shards, "stages": list(stages), "lora": lora, "train_samples": n_train,
                     "val_samples": n_val, "final_val_loss": final_val[-1][1] if final_val else None},
    }
    write_json(out / MANIFEST, manifest)  # last: marks the directory complete
    return out


def write_curves(out: Path, curves: dict) -> None:
    """loss_curves.json and loss_curves.png: training (windowed mean) and validation loss per stage."""
    write_json(out / "loss_curves.json", curves)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.8), squeeze=False)
    for ax, (name, c) in zip(axes[0], curves.items()):
        for kind, style in (("train", "-"), ("val", "o-")):
            if c[kind]:
                xs, ys = zip(*c[kind])
                ax.plot(xs, ys, style, label=kind, ms=3)
        ax.set(title=name.replace("stage", "stage "), xlabel="optimizer step", ylabel="NLL per report token")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out / "loss_curves.png", buf.getvalue())


# ---------------------------------------------------------------------------------------------------- loading

@dataclasses.dataclass
class ReportBundle:
    """Everything generation needs: the frozen encoder, projector + LM, tokenizer, prompt, manifest."""
    encoder: object
    model: ReportModel
    tokenizer: object
    prompt: Prompt
    manifest: dict
    path: Path

    @property
    def feature_layer(self) -> int | None:
        return self.manifest["encoder"].get("feature_layer")

    @property
    def encoder_name(self) -> str:
        return self.manifest["encoder"]["spec"]

    @property
    def llm_name(self) -> str:
        return self.manifest["llm"]["name"]


def _need(path: Path, what: str, model_dir: Path) -> Path:
    if not path.exists():
        raise ModelDirError(f"report model {model_dir} is incomplete: {path.relative_to(model_dir)} is missing "
                            f"({what}); retrain with `radjepa train-report … --out {model_dir}`")
    return path


def read_manifest(model_dir: str | Path) -> dict:
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelDirError(f"report model directory {d} does not exist (make one with `radjepa train-report SHARDS "
                            f"--encoder ENC --llm tiny --out {d}`)")
    m = read_json(_need(d / MANIFEST, "written when training finishes; training did not finish or this is not a "
                                     "train-report output", d))
    if m.get("format") != FORMAT:
        raise ModelDirError(f"{d / MANIFEST}: unknown format {m.get('format')!r}, expected {FORMAT!r}")
    return m


def load_report_model(model_dir: str | Path, *, device: str | torch.device = "cpu",
                      trust_remote_code: bool = False) -> ReportBundle:
    """Load a report model dir; checks every file, the encoder fingerprint and the widths before using them."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from radjepa_cli.report.lm import quiet_transformers

    quiet_transformers()
    d = Path(model_dir)
    m = read_manifest(d)
    proj_file = _need(d / m["projector"]["file"], "projector weights", d)
    tok_dir = _need(d / m["tokenizer"], "tokenizer", d)
    llm = m["llm"]
    if llm["weights"]:
        _need(d / llm["weights"] / "config.json", "language model", d)
    if llm["adapter"]:
        _need(d / llm["adapter"] / "adapter_config.json", "LoRA adapter", d)
    encoder = _load_encoder(d, m["encoder"], device, trust_remote_code)
    if encoder.embed_dim != m["projector"]["in_dim"]:
        raise ModelDirError(f"encoder/LM mismatch in {d}: the encoder gives {encoder.embed_dim}-dim tokens but the "
                            f"projector takes {m['projector']['in_dim']}")

    kw = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, **kw)
    if llm["weights"]:
        lm = AutoModelForCausalLM.from_pretrained(d / llm["weights"], dtype=torch.float32, **kw)
    else:
        from radjepa_cli.report.lm import load_base_lm
        lm = load_base_lm(llm["source"], trust_remote_code=trust_remote_code).model
    if llm["adapter"]:
        from peft import PeftModel
        lm = PeftModel.from_pretrained(lm, d / llm["adapter"]).merge_and_unload()  # merged: plain fast inference
    hidden = int(lm.get_input_embeddings().weight.shape[1])
    if hidden != m["projector"]["out_dim"]:
        raise ModelDirError(f"encoder/LM mismatch in {d}: the projector outputs {m['projector']['out_dim']} but the "
                            f"language model's width is {hidden}")
    proj_state = load_file(str(proj_file))
    token_norm = m["projector"].get("token_norm", "none")
    stats = None
    if token_norm != "none":  # the statistics' shapes come from the file; load_state_dict fills their values
        if "norm.mean" not in proj_state or "norm.std" not in proj_state:
            raise ModelDirError(f"{proj_file}: token_norm {token_norm!r} but no norm.mean/norm.std tensors")
        stats = (proj_state["norm.mean"], proj_state["norm.std"])
    projector = build_image_adapter(m["projector"]["kind"], m["projector"]["in_dim"], m["projector"]["out_dim"],
                                    token_norm=token_norm, stats=stats,
                                    token_merge=int(m["projector"].get("token_merge", 1)))
    projector.load_state_dict(proj_state, strict=True)
    model = ReportModel(projector, lm).to(device).eval()
    ids = tuple(int(i) for i in m["prompt"]["ids"])
    if ids.count(IMAGE_TOKEN_INDEX) != 1:
        raise ModelDirError(f"{d / MANIFEST}: the stored prompt has no single image placeholder")
    prompt = Prompt(ids, m["prompt"]["text"], bool(m["prompt"]["chat_template"]))
    return ReportBundle(encoder, model, tokenizer, prompt, m, d)


def _load_encoder(d: Path, ref: dict, device, trust_remote_code: bool):
    from radjepa_cli.models.zoo import load_encoder

    source = str(d / ref["local"]) if ref.get("local") else ref["spec"]
    try:
        enc = load_encoder(source, device=device, trust_remote_code=trust_remote_code)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise ModelDirError(f"report model {d}: cannot load its encoder {source!r} ({e})") from None
    if enc.fingerprint != ref["fingerprint"]:
        raise ModelDirError(f"encoder mismatch: {source!r} now has fingerprint {enc.fingerprint[:12]}… but the report "
                            f"model in {d} was trained on {ref['fingerprint'][:12]}… (weights or preprocessing changed)")
    return enc
