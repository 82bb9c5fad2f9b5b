"""Figures of one run, as pure functions of a `RunRecord` (plotly figures and an HTML string)."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .run_record import RunRecord

MAX_HEATMAP_TOKENS = 160  # beyond this a heatmap is unreadable and heavy; the last positions are shown
CHOSEN, KEPT, REMOVED, RAW = "#d62728", "#1f77b4", "#c7c7c7", "#9ecae1"


def visible_piece(piece: str) -> str:
    """Whitespace a reader can see: '␣' for a leading space, '↵' for a newline."""
    return piece.replace("\n", "↵").replace(" ", "␣") if piece.strip() == "" or piece.startswith(" ") else piece


def probability_colour(prob: float) -> str:
    """Red (unlikely) through yellow to green (likely), with the hue linear in probability."""
    hue = 120 * max(0.0, min(1.0, prob))
    return f"hsl({hue:.0f}, 75%, 82%)"


def token_html(record: RunRecord, selected: int | None = None) -> str:
    """The run's text, each generated token coloured by its probability, with a hover title.

    Each generated token carries `data-index` so a click handler can say which step was chosen.
    """
    prompt = "".join(html.escape(p) for p in record.prompt_pieces[1:] if p != "<s>")  # no BOS marker
    spans = []
    for i, step in enumerate(record.steps):
        title = f"p = {step.prob:.3f} · after filters {step.prob_filtered:.3f} · entropy {step.entropy:.2f} nats"
        text = html.escape(step.piece).replace("\n", "↵<br>")
        outline = "outline:2px solid #333;" if i == selected else ""
        spans.append(
            f'<span class="tok" data-index="{i}" title="{title}" '
            f'style="background:{probability_colour(step.prob)};{outline}">{text}</span>'
        )
    return (
        '<div class="run-text" style="white-space:pre-wrap;line-height:1.9;font-family:ui-monospace,monospace">'
        f'<span class="prompt" style="color:#666">{prompt}</span>{"".join(spans)}</div>'
    )


def alternatives_figure(record: RunRecord, step_index: int) -> go.Figure:
    """What the model considered at one step: raw vs filtered probability of the top alternatives."""
    step = record.steps[step_index]
    alternatives = sorted(step.top, key=lambda a: a.prob)  # largest at the top of a horizontal chart
    labels = [f"{visible_piece(a.piece)!s}  #{a.token_id}" for a in alternatives]
    kept_colours = [CHOSEN if a.token_id == step.token_id else (KEPT if a.prob_filtered > 0 else REMOVED)
                    for a in alternatives]
    hover = [f"raw p = {a.prob:.4f}<br>after filters = {a.prob_filtered:.4f}"
             + (f"<br>removed by {a.removed_by}" if a.removed_by else "") for a in alternatives]
    figure = go.Figure([
        go.Bar(y=labels, x=[a.prob for a in alternatives], orientation="h", name="raw model probability",
               marker_color=RAW, hovertext=hover, hoverinfo="text"),
        go.Bar(y=labels, x=[a.prob_filtered for a in alternatives], orientation="h",
               name="after penalties, temperature and filters", marker_color=kept_colours,
               text=[("chosen" if a.token_id == step.token_id else (f"cut: {a.removed_by}" if a.removed_by else ""))
                     for a in alternatives], textposition="outside", hovertext=hover, hoverinfo="text"),
    ])
    figure.update_layout(
        barmode="group", template="plotly_white", height=120 + 34 * len(alternatives),
        title=f"Step {step_index}: chose {visible_piece(step.piece)!r} (p = {step.prob:.3f})",
        xaxis_title="probability", xaxis_range=[0, 1.15], legend=dict(orientation="h", y=-0.15),
        margin=dict(l=10, r=10, t=50, b=10),
    )
    return figure


def probability_entropy_figure(record: RunRecord) -> go.Figure:
    """Chosen-token probability and the distribution's entropy across the run."""
    steps = list(range(len(record.steps)))
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=steps, y=[s.prob for s in record.steps], name="p(chosen)", mode="lines+markers",
                                text=[visible_piece(s.piece) for s in record.steps]), secondary_y=False)
    figure.add_trace(go.Scatter(x=steps, y=[s.entropy for s in record.steps], name="entropy (nats)",
                                mode="lines", line=dict(dash="dot")), secondary_y=True)
    figure.update_layout(template="plotly_white", height=300, margin=dict(l=10, r=10, t=40, b=10),
                         title="Confidence over the run", legend=dict(orientation="h", y=-0.25))
    figure.update_xaxes(title_text="generated token")
    figure.update_yaxes(title_text="probability", range=[0, 1.05], secondary_y=False)
    figure.update_yaxes(title_text="entropy (nats)", secondary_y=True)
    return figure


def _window(n: int) -> slice:
    return slice(max(0, n - MAX_HEATMAP_TOKENS), n)


def attention_figure(matrix: np.ndarray, pieces: list[str], layer: int, head: int | None) -> go.Figure:
    """Heatmap of one head (or the mean over heads when `head` is None): queries × keys."""
    n = matrix.shape[-1]
    window = _window(n)
    weights = matrix[layer].astype(np.float32)
    grid = weights.mean(axis=0) if head is None else weights[head]
    grid = grid[window, window]
    positions = list(range(n))[window]
    labels = [f"{visible_piece(pieces[p])}" for p in positions]
    # Most heads park much of their weight on the first token (an "attention sink"); clipping the
    # colour scale at the 99th percentile keeps the rest of the pattern visible.
    zmax = float(np.quantile(grid[grid > 0], 0.99)) if (grid > 0).any() else 1.0
    figure = go.Figure(go.Heatmap(
        z=grid, x=positions, y=positions, colorscale="Blues", zmin=0, zmax=zmax,
        customdata=np.array([[f"{labels[q]} → {labels[k]}" for k in range(len(positions))]
                             for q in range(len(positions))]),
        hovertemplate="query %{y} attends to key %{x}<br>%{customdata}<br>weight %{z:.3f}<extra></extra>",
    ))
    ticks = dict(tickmode="array", tickvals=positions, ticktext=labels, tickfont=dict(size=10))
    which = "mean over heads" if head is None else f"head {head}"
    figure.update_layout(
        template="plotly_white", title=f"Attention, layer {layer}, {which}", height=max(420, 14 * len(positions) + 160),
        xaxis=dict(title="key (attended-to) token", side="top", **ticks),
        yaxis=dict(title="query token", autorange="reversed", **ticks), margin=dict(l=10, r=10, t=90, b=10),
    )
    return figure


def heads_figure(matrix: np.ndarray, layer: int, n_kv_heads: int) -> go.Figure:
    """Small multiples of every head of one layer; heads sharing keys/values are labelled by group."""
    n_heads, n = matrix.shape[1], matrix.shape[-1]
    window = _window(n)
    group = n_heads // n_kv_heads
    columns = min(n_heads, 4)
    rows = -(-n_heads // columns)
    titles = [f"head {h}" + (f" · kv group {h // group}" if group > 1 else "") for h in range(n_heads)]
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.03,
                           vertical_spacing=0.08)
    for h in range(n_heads):
        figure.add_trace(go.Heatmap(z=matrix[layer, h].astype(np.float32)[window, window], colorscale="Blues",
                                    showscale=False, zmin=0, hovertemplate="q %{y} → k %{x}: %{z:.3f}<extra></extra>"),
                         row=h // columns + 1, col=h % columns + 1)
    figure.update_yaxes(autorange="reversed", showticklabels=False)
    figure.update_xaxes(showticklabels=False)
    note = f" ({group} query heads share each key/value head)" if group > 1 else ""
    figure.update_layout(template="plotly_white", height=230 * rows + 60, title=f"All heads of layer {layer}{note}",
                         margin=dict(l=10, r=10, t=70, b=10))
    return figure
