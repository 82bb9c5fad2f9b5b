"""The logit lens as a figure: the next-token guess after every layer, at every position of a run.

Every position is in the figure; a long run opens on its last WINDOW positions, where a cell is
wide enough for its guess to be written in it (Plotly sizes cell text to the cell, so text appears
as one zooms in), and one pans or double-clicks for the rest. A ring marks each cell whose guess is
the token that actually comes next; the hover gives the guess, and that token's rank and probability
at that layer.
"""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from ..token_display import chart_label, plain_label, positioned_labels
from .logit_lens import LogitLens

WINDOW = 40  # positions shown when the figure opens: about what 1200 px hold with a word in each cell
HIT = "#d62728"


def logit_lens_figure(lens: LogitLens, pieces: list[str], guess_pieces: list[list[str]]) -> go.Figure:
    """Layers × positions, coloured by the probability of the top guess and labelled with it.

    `pieces`: the display string of each input position; `guess_pieces[l][t]`: of the top guess at layer l,
    position t (both from llama_core.token_display)."""
    n_layers, n = lens.top_ids.shape
    columns = positioned_labels(pieces)
    cells = [[chart_label(g, 8) for g in row] for row in guess_pieces]
    hits = np.zeros((n_layers, n), dtype=bool)
    hits[:, :-1] = lens.next_ranks == 0  # nothing ranks above the token that came: it is the guess
    # One hover string a cell (layers × positions, a few thousand): plain escaped text, no markup.
    plain = [html.escape(plain_label(p)) for p in pieces]
    hover = []
    for layer in range(n_layers):
        row = []
        for t in range(n):
            text = (f"{lens.labels[layer]} at {t} {plain[t]}<br>top guess: {html.escape(plain_label(guess_pieces[layer][t]))}"
                    f" (p = {lens.top_probs[layer, t]:.3f})")
            if t < n - 1:
                text += (f"<br>actual next: {plain[t + 1]}, rank {int(lens.next_ranks[layer, t]) + 1} "
                         f"(p = {lens.next_probs[layer, t]:.3f})" + (" ✓" if hits[layer, t] else ""))
            row.append(text)
        hover.append(row)
    fig = go.Figure(go.Heatmap(
        z=lens.top_probs.astype(np.float32), x=columns, y=lens.labels, colorscale="Viridis", zmin=0, zmax=1,
        text=cells, texttemplate="%{text}", hovertext=hover, hoverinfo="text", colorbar={"title": "p(top)"}))
    layers, positions = np.nonzero(hits)
    fig.add_trace(go.Scatter(
        x=[columns[t] for t in positions], y=[lens.labels[layer] for layer in layers], mode="markers",
        name="guess = the actual next token", hoverinfo="skip",
        marker={"symbol": "circle-open", "size": 9, "color": HIT, "line": {"width": 2}}))
    fig.update_layout(
        template="plotly_white", height=200 + 34 * n_layers, margin={"l": 90, "r": 10, "t": 80, "b": 120},
        legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
        title={"text": "Logit lens: the next-token guess after each layer (the last row is the model's own)",
               "subtitle": {"text": _subtitle(n)}}, dragmode="pan")
    fig.update_xaxes(title="input position: token", type="category", tickangle=-45, nticks=min(n, WINDOW),
                     range=[n - WINDOW - 0.5, n - 0.5] if n > WINDOW else None)
    fig.update_yaxes(type="category", fixedrange=True)
    return fig


def _subtitle(n: int) -> str:
    if n <= WINDOW:
        return f"all {n} positions; ◯ the guess is the token that actually comes next"
    return (f"positions {n - WINDOW}–{n - 1} of 0–{n - 1}: drag sideways for the others, double-click to see all "
            "(the guesses appear as cells grow); ◯ the guess is the token that actually comes next")
