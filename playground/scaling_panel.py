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
        points.append({"name": card["name"], "params": card["parameters"], "val_loss": card["val_loss"]})
    return points


def our_experiment_figures() -> list[go.Figure]:
    """IsoFLOP profiles and the measured frontier (when the results file exists) and our models."""
    figures = []
    if RESULTS.exists():
        results = json.loads(RESULTS.read_text())
        fits = fit_isoflops(results["runs"])
        figures.append(isoflop_profiles_figure(results, fits))
        if len(fits) >= 2:
            figures.append(frontier_figure(fits))
    points = bundled_model_points()
    if points:
        figures.append(our_models_figure(points))
    return figures
