"""Our own measured scaling experiment and bundled models, as figures for the Scaling tab."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go

from llama_core.same_compute import PAIR
from llama_core.scaling import fit_isoflops
from llama_core.scaling_figures import frontier_figure, isoflop_profiles_figure, our_models_figure

from .registry import BUNDLED_DIR

RESULTS = Path(__file__).resolve().parents[1] / "data" / "isoflop_results.json"


def bundled_model_points() -> list[dict]:
    """Parameters and validation loss of every bundled model, from its model card."""
    points = []
    for card_path in sorted(BUNDLED_DIR.glob("*/model_card.json")):
        card = json.loads(card_path.read_text())
        # The compute-matched models answer another question than the main ones (same FLOPs, not
        # the same tokens), so the charts draw them as their own series.
        group = (f"same compute ({card['same_compute']['budget_flops']:.0e} FLOPs)" if "same_compute" in card
                 else f"same training tokens ({card['tokens_seen'] / 1e6:.0f}M)")
        points.append({"name": card["name"], "params": card["parameters"], "val_loss": card["val_loss"],
                       "tokens": card.get("tokens_seen"), "group": group})
    return points


def our_model_points(speeds: dict[str, dict] | None = None) -> list[dict]:
    """The bundled models (validation loss from their cards) and every model run in this session,
    with the decode speed measured by its latest run; `speeds` maps a model's name to
    {"params", "tokens_per_s"}. A user checkpoint has no validation loss: it shows in speed only."""
    points = {p["name"]: p for p in bundled_model_points()}
    for name, measured in (speeds or {}).items():
        point = points.setdefault(name, {"name": name, "params": measured["params"], "val_loss": None})
        point["tokens_per_s"] = measured["tokens_per_s"]
    return list(points.values())


def our_models_plot(speeds: dict[str, dict] | None = None) -> go.Figure:
    return our_models_figure(our_model_points(speeds))


def our_experiment_figures() -> list[go.Figure]:
    """IsoFLOP profiles and the measured frontier, when the results file exists."""
    figures = []
    if RESULTS.exists():
        results = json.loads(RESULTS.read_text())
        fits = fit_isoflops(results["runs"])
        figures.append(isoflop_profiles_figure(results, fits))
        if len(fits) >= 2:
            figures.append(frontier_figure(fits))
    return figures


def _grid_sentence() -> str:
    if not RESULTS.exists():
        return "the IsoFLOP grid's results file is missing (`bash scripts/train_bundled.sh` measures it)"
    runs = json.loads(RESULTS.read_text())["runs"]
    budgets = sorted({r["budget_flops"] for r in runs})
    not_largest = sum(min((r for r in runs if r["budget_flops"] == b), key=lambda r: r["val_loss"])["n_params"]
                      < max(r["n_params"] for r in runs if r["budget_flops"] == b) for b in budgets)
    return (f"our IsoFLOP grid trained {len(runs)} small LLaMAs at {len(budgets)} compute budgets; at {not_largest} of "
            f"{len(budgets)} budgets the best size is smaller than the largest tried")


def scaling_story_markdown() -> str:
    """Grid → pair → calculator in a few lines, with the numbers measured here (from the files that hold them)."""
    cards = {p["name"]: json.loads((BUNDLED_DIR / p["name"] / "model_card.json").read_text())
             for p in bundled_model_points() if p["group"].startswith("same compute")}
    small, large = (cards.get(name) for name in PAIR)
    if small is None or large is None:
        pair = "The compute-matched pair is not in models/ (`bash scripts/train_same_compute.sh` builds it)."
    else:
        pair = (f"At {small['same_compute']['budget_flops']:.0e} FLOPs the grid's best size, bundled as "
                f"**{small['name']}** ({small['parameters'] / 1e6:.2f}M parameters × {small['tokens_seen'] / 1e6:.1f}M "
                f"tokens), reaches loss **{small['val_loss_as_shipped']:.2f}**; **{large['name']}**, "
                f"{large['parameters'] / small['parameters']:.0f}× larger on {large['tokens_seen'] / 1e6:.2f}M tokens, "
                f"only **{large['val_loss_as_shipped']:.2f}**. Side by side → **Same compute** runs both on one prompt: "
                "read the texts, compare the speeds.")
    return (
        "### The story in a minute\n"
        "1. **Published:** LLaMA-13B beats GPT-3 175B on most benchmarks — a smaller model trained on more tokens "
        "(first chart).\n"
        f"2. **Measured here:** {_grid_sentence()} (IsoFLOP charts).\n"
        f"3. **Felt here:** {pair}\n"
        "4. **Why LLaMA went past ~20 tokens/parameter:** a model is trained once and run many times; the calculator "
        "at the bottom adds the compute of the tokens it will generate and finds the cheapest model for a loss.\n"
    )
