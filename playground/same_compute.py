"""The Side by side tab's "Same compute" preset: the bundled compute-matched pair on one prompt and seed.

The compute-optimal small model and the 9x larger one trained on 9x fewer tokens (same FLOPs,
same corpus, tokenizer and recipe: `llama_core/same_compute.py`) run on the Generate tab's prompt,
settings and seed. Next to each other: what each cost to train (from the model cards) and what it
gives (validation loss, decode speed measured in this run, the text), then one sentence with this
run's numbers saying what the LLaMA paper says: the smaller model trained longer wins on both.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from llama_core.config import parameter_count
from llama_core.same_compute import PAIR, member_config

from .insights import PairRun, run_pair
from .registry import ModelRegistry


def button_label() -> str:
    """"Same compute: 1.85M on 5.40M tokens vs 17.31M on 0.58M", from the pair's training configurations."""
    configs = [member_config(name, "", "") for name in PAIR]
    sizes = [(_count(parameter_count(c.model)), _count(c.total_steps * c.tokens_per_step)) for c in configs]
    return f"Same compute: {sizes[0][0]} on {sizes[0][1]} tokens vs {sizes[1][0]} on {sizes[1][1]}"


def pair_labels(registry: ModelRegistry) -> tuple[str, str]:
    """The registry's labels of the pair, or an error saying they are missing from models/."""
    by_dir = {Path(c.source).name: label for label, c in registry.choices.items() if c.kind == "bundled"}
    missing = [name for name in PAIR if name not in by_dir]
    if missing:
        raise gr.Error(f"the same-compute models {missing} are not in models/; rebuild them with "
                       "`bash scripts/train_same_compute.sh`")
    return by_dir[PAIR[0]], by_dir[PAIR[1]]


def pair_cards(registry: ModelRegistry, labels: tuple[str, str]) -> tuple[dict, dict]:
    return tuple(json.loads((Path(registry.get(label).source) / "model_card.json").read_text()) for label in labels)


def _count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,.0f}"


def comparison_table(cards: tuple[dict, dict], rates: tuple[float | None, float | None]) -> str:
    """The pair's cost and result next to each other, as a Markdown table."""
    rows = [
        ("parameters N", [_count(c["parameters"]) for c in cards]),
        ("training tokens D", [_count(c["tokens_seen"]) for c in cards]),
        ("tokens per parameter", [f"{c['tokens_seen'] / c['parameters']:.3g}" for c in cards]),
        ("training FLOPs (6·N·D)", [f"{c['training_flops']:.3e}" for c in cards]),
        ("validation loss (bf16, as shipped)", [f"{c['val_loss_as_shipped']:.3f}" for c in cards]),
        ("decode tokens/s (this run)", [f"{r:.0f}" if r else "n/a" for r in rates]),
    ]
    head = f"| | {cards[0]['name']} | {cards[1]['name']} |\n|---|---|---|\n"
    return head + "".join(f"| {name} | {a} | {b} |\n" for name, (a, b) in rows)


def flops_match(cards: tuple[dict, dict], tolerance: float = 0.01) -> bool:
    """Whether the two were trained on the same compute, to `tolerance` (the grid's step rounding is ~0.3%)."""
    a, b = (c["training_flops"] for c in cards)
    return abs(a - b) <= tolerance * max(a, b)


def verdict(cards: tuple[dict, dict], rates: tuple[float | None, float | None]) -> str:
    """The seed's claim in one sentence, with this run's numbers, and saying so where they disagree with it."""
    small, large = cards
    compute = (f"At the same training compute ({small['training_flops']:.1e} FLOPs)" if flops_match(cards) else
               f"At unequal training compute ({small['training_flops']:.2e} vs {large['training_flops']:.2e} FLOPs)")
    lower_loss = small["val_loss_as_shipped"] < large["val_loss_as_shipped"]
    speedup = rates[0] / rates[1] if all(rates) else None
    speed = (f"decodes {speedup:.1f}× {'faster' if speedup >= 1 else 'slower'} here "
             f"({rates[0]:.0f} vs {rates[1]:.0f} tokens/s)" if speedup
             else "its decode speed was not measured")
    claim = ("The smaller model trained on more tokens wins on both counts, as LLaMA-13B did against GPT-3 175B."
             if lower_loss and speedup and speedup > 1 else "This run does not show the usual result on both counts.")
    return (f"{compute}, **{small['name']}** ({_count(small['parameters'])} parameters, "
            f"{_count(small['tokens_seen'])} tokens) reaches validation loss **{small['val_loss_as_shipped']:.3f}** "
            f"vs **{large['val_loss_as_shipped']:.3f}** for **{large['name']}** ({_count(large['parameters'])} "
            f"parameters, {_count(large['tokens_seen'])} tokens), and {speed}. {claim}")


def make_same_compute_handler(registry: ModelRegistry):
    def same_compute(prompt: str, template: str, temperature, top_k, top_p, min_p, max_new_tokens, seed):
        """Run the pair; return both menus set to it, both texts, the summary, the divergence and the table."""
        labels = pair_labels(registry)
        pair: PairRun = run_pair(registry, labels, prompt, template, temperature, top_k, top_p, min_p,
                                 max_new_tokens, seed)
        cards = pair_cards(registry, labels)
        summary = f"{verdict(cards, pair.rates)}\n\n{pair.summary}"
        return (labels[0], labels[1], pair.texts[0], pair.texts[1], summary, pair.figure,
                comparison_table(cards, pair.rates))

    return same_compute
