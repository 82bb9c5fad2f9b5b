import json

import numpy as np
import pytest
import torch

from conftest import CORPUS
from llama_core.config import ModelArgs
from llama_core.train import TrainConfig, batch_at, learning_rate, load_tokens, read_log, train

pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tokenizer):
    """The tiny corpus tokenized like llama_core.corpus does: BOS + tokens + EOS per line."""
    out = tmp_path_factory.mktemp("data")
    lines = [line for line in CORPUS.read_text().splitlines() if line.strip()]
    for split, chunk in (("train", lines), ("val", lines[-6:])):
        ids = [i for line in chunk for i in tokenizer.encode(line, eos=True)]
        np.array(ids * 4, dtype=np.uint16).tofile(out / f"{split}.bin")
    return out


def _config(data_dir, out_dir, **changes) -> TrainConfig:
    model = ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=512, multiple_of=32, max_seq_len=64)
    values = dict(model=model, data_dir=str(data_dir), out_dir=str(out_dir), tokens=40 * 8 * 64, batch_size=8,
                  seq_len=64, lr=3e-3, warmup_steps=5, eval_every=10, eval_batches=2, checkpoint_every=5)
    return TrainConfig(**{**values, **changes})


def test_schedule_warms_up_then_decays_to_ten_percent():
    config = TrainConfig(model=ModelArgs(dim=8, n_layers=1, n_heads=2, vocab_size=10), data_dir="", out_dir="",
                         tokens=100 * 16 * 256, lr=1e-3, warmup_steps=10)
    rates = [learning_rate(s, config) for s in range(config.total_steps)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert rates[10:] == sorted(rates[10:], reverse=True)
    assert learning_rate(config.total_steps, config) == pytest.approx(1e-4)


def test_loss_falls_well_below_its_start(data_dir, tmp_path):
    summary = train(_config(data_dir, tmp_path), progress=False)
    log = read_log(tmp_path)
    assert summary["done"] and len(log) == 40
    assert log[-1]["loss"] < 0.8 * log[0]["loss"]
    assert log[-1]["val_loss"] < 0.8 * log[0]["loss"]
    assert log[-1]["flops"] == 6 * summary["n_params"] * log[-1]["tokens"]


def test_a_killed_run_resumes_where_it_stopped(data_dir, tmp_path):
    whole = tmp_path / "whole"
    train(_config(data_dir, whole), progress=False)
    parts = tmp_path / "parts"
    first = train(_config(data_dir, parts), progress=False, stop_after_steps=13)  # killed at 13; checkpoint at 10
    assert first["step"] == 13 and not first["done"]
    second = train(_config(data_dir, parts), progress=False)
    assert second["done"] and second["step"] == 40
    a, b = read_log(whole), read_log(parts)
    assert [e["step"] for e in b] == list(range(1, 41))  # steps 11-13 were redone once, logged once
    # Same data, same order, same optimiser state: the resumed curve continues the original one.
    assert [e["loss"] for e in b] == pytest.approx([e["loss"] for e in a], rel=1e-4)
    for name, tensor in first["model"].state_dict().items():
        assert tensor.shape == second["model"].state_dict()[name].shape


def test_batches_depend_only_on_seed_and_step(data_dir, tmp_path):
    config = _config(data_dir, tmp_path)
    tokens = load_tokens(data_dir / "train.bin")
    x1, y1 = batch_at(tokens, 7, config)
    x2, y2 = batch_at(tokens, 7, config)
    assert torch.equal(x1, x2) and torch.equal(x1[:, 1:], y1[:, :-1])
    assert not torch.equal(batch_at(tokens, 8, config)[0], x1)


def test_resume_refuses_a_different_configuration(data_dir, tmp_path):
    train(_config(data_dir, tmp_path), progress=False, stop_after_steps=5)
    with pytest.raises(ValueError, match="different configuration"):
        train(_config(data_dir, tmp_path, lr=1e-2), progress=False)
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["step"] == 5


def test_a_finished_run_exports_as_a_loadable_checkpoint_with_a_card(data_dir, tmp_path, tokenizer_path):
    from llama_core.loading import load_checkpoint
    from llama_core.model_card import SAMPLE_PROMPTS, export_run

    config = _config(data_dir, tmp_path / "run", tokens=10 * 8 * 64)
    train(config, progress=False)
    card = export_run(tmp_path / "run", tokenizer_path, tmp_path / "shipped", "tiny")
    from safetensors import safe_open

    with safe_open(tmp_path / "shipped" / "model.safetensors", framework="pt") as stored:
        assert {stored.get_slice(k).get_dtype() for k in stored.keys()} == {"BF16"}
    loaded = load_checkpoint(tmp_path / "shipped")
    assert loaded.model_card == card and card["dtype"] == "bfloat16"
    assert card["tokens_seen"] == 10 * 8 * 64 and card["training_flops"] == 6 * card["parameters"] * 10 * 8 * 64
    assert card["val_loss"] == pytest.approx(read_log(tmp_path / "run")[-1]["val_loss"], abs=1e-4)
    assert abs(card["val_loss_as_shipped"] - card["val_loss"]) < 0.05  # bf16 rounding costs little
    assert [s[: len(p)] for s, p in zip(card["greedy_samples"], SAMPLE_PROMPTS)] == list(SAMPLE_PROMPTS)
    assert (tmp_path / "shipped" / "README.md").read_text().startswith("# tiny")
