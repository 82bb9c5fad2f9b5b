"""Turn a finished training run into a shipped checkpoint with a model card."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from .config import parameter_count
from .generation import generate_stream
from .formats.hf import save_hf_checkpoint
from .model import Transformer
from .same_compute import MEMBERS, card_fields
from .sampling import SamplingParams
from .tokenizer import Tokenizer
from .train import STATE_FILE, TrainConfig, evaluate, load_tokens, read_log

SAMPLE_PROMPTS = ("In the beginning", "The Python interpreter")


def greedy_sample(model: Transformer, tokenizer: Tokenizer, prompt: str, max_new_tokens: int = 40) -> str:
    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    return prompt + "".join(step.text for step in generate_stream(model, tokenizer, prompt, params))


def export_run(run_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path, name: str,
               dtype: torch.dtype = torch.bfloat16) -> dict:
    """Write `out_dir` (HF safetensors in `dtype`, config.json, tokenizer.model, model_card.json,
    README.md) from the final state of the run in `run_dir`; return the card."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    state = torch.load(run_dir / STATE_FILE, weights_only=True, map_location="cpu")
    log = read_log(run_dir)
    trained_on = log[-1].get("device", "cpu") if log else "cpu"  # logs from before GPU support name none
    config = TrainConfig.from_dict(state["config"])
    model = Transformer(config.model)
    model.load_state_dict(state["model"])
    model.eval().requires_grad_(False)
    # Measured afresh on the final weights (the log's last evaluation may predate them), in fp32
    # and again as shipped after rounding to `dtype`; the samples come from the shipped weights.
    val_tokens = load_tokens(Path(config.data_dir) / "val.bin")
    val_loss = evaluate(model, val_tokens, config)
    shipped = model.to(dtype)
    shipped_loss = evaluate(shipped, val_tokens, config)
    tokenizer = Tokenizer.from_file(tokenizer_path)
    n_params = parameter_count(config.model)
    tokens = state["step"] * config.tokens_per_step
    card = {
        "name": name,
        "architecture": "LLaMA (RMSNorm, RoPE, SwiGLU), trained from scratch by this project",
        "config": config.model.to_dict(),
        "parameters": n_params,
        "tokens_seen": tokens,
        "training_flops": 6 * n_params * tokens,
        "tokens_per_parameter": float(f"{tokens / n_params:.3g}"),
        "training_steps": state["step"],
        "training_complete": state["step"] >= config.total_steps,
        "planned_tokens": config.total_steps * config.tokens_per_step,
        "wall_time_s": round(state["elapsed_s"], 1),
        "trained_on": trained_on,
        "val_loss": round(val_loss, 4),
        "val_perplexity": round(math.exp(val_loss), 2),
        "val_loss_as_shipped": round(shipped_loss, 4),
        "dtype": str(dtype).removeprefix("torch."),
        "corpus": "Python 3.11 documentation (PSF License) + King James Bible (public domain); see README",
        "training": {k: v for k, v in config.to_dict().items() if k not in ("model", "data_dir", "out_dir")},
        "greedy_samples": [greedy_sample(shipped, tokenizer, p) for p in SAMPLE_PROMPTS],
    }
    if name in {m.name for m in MEMBERS}:  # a compute-matched model: its budget and the grid run it repeats
        card["same_compute"] = card_fields(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_hf_checkpoint(shipped.state_dict(), config.model, out_dir)
    shutil.copy(tokenizer_path, out_dir / "tokenizer.model")
    (out_dir / "model_card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "README.md").write_text(_card_markdown(card))
    return card


def _card_markdown(card: dict) -> str:
    c = card["config"]
    samples = "\n".join(f"    {s!r}" for s in card["greedy_samples"])
    progress = "" if card["training_complete"] else f" of {card['planned_tokens']:,} planned (training continues)"
    return (
        f"# {card['name']}\n\n{card['architecture']}.\n\n"
        f"| | |\n|---|---|\n"
        f"| parameters | {card['parameters']:,} |\n"
        f"| shape | dim {c['dim']}, {c['n_layers']} layers, {c['n_heads']} heads"
        f"{f' ({kv} key/value)' if (kv := c['n_kv_heads']) and kv != c['n_heads'] else ''}, vocab {c['vocab_size']}, "
        f"context {c['max_seq_len']} |\n"
        f"| tokens seen | {card['tokens_seen']:,}{progress} |\n"
        f"| training FLOPs (6·N·D) | {card['training_flops']:.2e} |\n"
        f"| wall time | {card['wall_time_s'] / 60:.1f} min on {card.get('trained_on', 'cpu').upper()} |\n"
        f"| validation loss / perplexity | {card['val_loss']} / {card['val_perplexity']} "
        f"({card['val_loss_as_shipped']} as shipped in {card['dtype']}) |\n"
        f"| stored as | {card['dtype']} safetensors |\n"
        f"{_same_compute_rows(card)}\n"
        f"Corpus: {card['corpus']}.\n\nGreedy samples:\n\n{samples}\n"
    )


def _same_compute_rows(card: dict) -> str:
    if "same_compute" not in card:
        return ""
    same, grid = card["same_compute"], card["same_compute"].get("grid_run")
    rows = (f"| FLOP budget | {same['budget_flops']:.0e}, shared with {', '.join(same['partners'])} |\n"
            f"| tokens per parameter | {card['tokens_per_parameter']} |\n| role in the trio | {same['role']} |\n")
    if grid:
        rows += (f"| the IsoFLOP grid's run of {same['grid_size']} at this budget | val loss {grid['val_loss']} "
                 f"({grid['tokens']:,} tokens on {grid['device'].upper()}, {grid['source']}) |\n")
    return rows
