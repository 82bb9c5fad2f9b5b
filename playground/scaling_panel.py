"""Our own measured scaling experiment and bundled models, as figures for the Scaling tab."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.graph_objects as go

from llama_core.scaling import fit_isoflops
from llama_core.scaling_figures import frontier_figure, isoflop_profiles_figure, our_models_figure

from .registry import BUNDLED_DIR

RESULTS = Path(__file__).resolve().parents[1] / "data" / "isoflop_results.json"


def bundled_model_points() -> list[dict]:
    """Parameters and validation loss of every bundled model, from its model card."""
    points = []
    for card_path in sorted(BUNDLED_DIR.glob("*/model_card.json")):
        card = json.loads(card_path.read_text())
        points.append({"name": card["name"], "params": card["parameters"], "val_loss": card["val_loss"],
                       "tokens": card.get("tokens_seen")})
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
