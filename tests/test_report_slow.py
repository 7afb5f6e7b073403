"""Slow report-generation paths: the real pretrained SmolLM2 (GGUF → transformers) and data-parallel training."""
import json

import pytest

from radjepa_cli.data.embedded import rg1_dicom
from radjepa_cli.report.bundle import MANIFEST
from radjepa_cli.report.generate import GenerateConfig, generate_reports
from radjepa_cli.report.lm import TinyLMConfig, load_language_model
from radjepa_cli.report.prompt import build_prompt
from radjepa_cli.report.train import ReportTrainConfig, train_report

from test_report_pipeline import ENCODER, make_shards

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("shards"), counts=(("train", 8), ("val", 2), ("test", 2)))


def test_smollm2_loads_with_chat_template_and_answers():
    lm = load_language_model("smollm2")
    assert lm.model.config.model_type == "llama" and lm.hidden_size == 576
    assert not hasattr(lm.model.config, "quantization_config")  # dequantised: safe to save_pretrained
    p = build_prompt(lm.tokenizer)
    assert p.chat_template and "<|im_start|>user" in p.text and p.text.rstrip().endswith("assistant")


def test_smollm2_stage2_steps_save_reload_generate(shards, tmp_path):
    out = tmp_path / "smol"
    cfg = ReportTrainConfig(shards=str(shards), encoder=ENCODER, llm="smollm2", out=str(out), stage="2",
                            max_steps=2, batch_size=4, max_target_tokens=48)
    train_report(cfg, show_progress=False)
    m = json.loads((out / MANIFEST).read_text())
    assert m["llm"]["name"] == "smollm2" and m["llm"]["weights"] == "lm" and m["projector"]["out_dim"] == 576
    assert json.loads((out / "config.json").read_text())["lr_stage2"] == 2e-5  # the paper's full fine-tune LR
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "train"]
    assert losses and all(0 < x < 20 for x in losses)
    rows = generate_reports(GenerateConfig(inputs=[str(rg1_dicom())], model=str(out), max_new_tokens=8),
                            show_progress=False).rows
    assert rows[0]["generated"].strip() and rows[0]["llm"] == "smollm2"


def test_two_process_data_parallel_matches_contract(shards, tmp_path):
    out = tmp_path / "ddp"
    cfg = ReportTrainConfig(shards=str(shards), encoder=ENCODER, llm="tiny", out=str(out), stage="both", procs=2,
                            max_steps=2, batch_size=2, tiny=TinyLMConfig(hidden_size=32, num_layers=1, num_heads=2,
                                                                          intermediate_size=64, vocab_size=300))
    train_report(cfg, show_progress=False)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2 and log[-1]["event"] == "done"
    assert (out / MANIFEST).is_file()
