"""Report generation speed: new tokens per second with and without the KV cache (greedy, the paper's decoding).

    python benchmarks/generate.py [--model REPORT_MODEL_DIR] [--batch-sizes 1,8] [--new-tokens 150]
                                  [--image-tokens 256] [--device cpu|cuda] [--out benchmarks/results/generate.json]

Without --model it times a randomly initialised report model of the `tiny` LM's default shape (Llama, 256 wide,
4 layers) fed `--image-tokens` patch tokens (256 = a ViT-B/14 at 224 px): the cost of decoding does not depend on
what the weights learned. Every run is forced to produce exactly --new-tokens tokens (EOS is ignored via
min_new_tokens), so both settings do the same work; the greedy outputs with and without the cache must be equal.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch


def _random_model(image_tokens: int, vision_dim: int):
    from radjepa_cli.report.lm import TinyLMConfig, load_language_model
    from radjepa_cli.report.model import ReportModel
    from radjepa_cli.report.projector import build_projector
    from radjepa_cli.report.prompt import PAPER_PROMPT, build_prompt

    corpus = ["The heart size is normal. The lungs are clear. No pleural effusion or pneumothorax."] * 50
    lm = load_language_model("tiny", texts=corpus, extra_texts=[PAPER_PROMPT], tiny=TinyLMConfig())
    model = ReportModel(build_projector("mlp2x_gelu", vision_dim, lm.hidden_size), lm.model).eval()
    return model, lm.tokenizer, build_prompt(lm.tokenizer), "random tiny (256 wide, 4 layers)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="A report model dir (default: a random tiny model).")
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--new-tokens", type=int, default=150)
    ap.add_argument("--image-tokens", type=int, default=256)
    ap.add_argument("--vision-dim", type=int, default=768)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/generate.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.model:
        from radjepa_cli.report.bundle import load_report_model
        b = load_report_model(args.model, device=args.device)
        model, tok, prompt, what = b.model, b.tokenizer, b.prompt, f"report model {args.model}"
        vision_dim = b.manifest["projector"]["in_dim"]
        n_img = args.image_tokens
    else:
        model, tok, prompt, what = _random_model(args.image_tokens, args.vision_dim)
        vision_dim, n_img = args.vision_dim, args.image_tokens
    model = model.to(args.device).eval()
    rows = []
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        img = torch.randn(bs, n_img, vision_dim, device=args.device)
        outs = {}
        for cache in (True, False):
            kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, use_cache=cache,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            model.generate(img[:, :, :], prompt, **{**kw, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            ids = model.generate(img, prompt, **kw)
            if args.device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            outs[cache] = ids
            rows.append({"batch_size": bs, "kv_cache": cache, "new_tokens": int(ids.shape[1]), "seconds": round(dt, 3),
                         "tokens_per_s": round(bs * ids.shape[1] / dt, 1)})
            print(f"batch {bs:3d}  kv_cache={str(cache):5s}  {rows[-1]['tokens_per_s']:9.1f} tokens/s  "
                  f"({dt:.2f} s for {bs}×{ids.shape[1]} tokens)", flush=True)
        same = torch.equal(outs[True], outs[False])
        rows[-1]["same_output_as_cached"] = rows[-2]["same_output_as_cached"] = same
        if not same:
            raise SystemExit("greedy outputs differ with and without the KV cache")
    speedups = {r["batch_size"]: None for r in rows}
    for bs in speedups:
        c = next(r for r in rows if r["batch_size"] == bs and r["kv_cache"])
        n = next(r for r in rows if r["batch_size"] == bs and not r["kv_cache"])
        speedups[bs] = round(c["tokens_per_s"] / n["tokens_per_s"], 2)
        print(f"batch {bs}: KV cache speed-up ×{speedups[bs]}")
    result = {
        "benchmark": "report generation tokens/s", "model": what, "image_tokens": n_img,
        "prompt_tokens": len(prompt.ids) - 1, "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        "threads": args.threads, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "rows": rows, "kv_cache_speedup": speedups,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"→ {out}")


if __name__ == "__main__":
    main()
