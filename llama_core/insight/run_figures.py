"""Figures of one run, as pure functions of a `RunRecord` (plotly figures and HTML strings): the
coloured text, the alternatives at a step, confidence over the run and a branch beside its run.

One colour scheme for the sampler in every chart (here, the pipeline and the report): RAW for the
model's own probabilities, KEPT for what is left after penalties, temperature and filters, CHOSEN
for the sampled token and REMOVED (grey, at its height before the filter) for a cut candidate.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..generation import StepRecord
from ..token_display import chart_label, html_token, plain_label
from .attention_figures import attention_figure, heads_figure  # noqa: F401 (their old home; callers import here)
from .run_record import RunRecord

CHOSEN, KEPT, REMOVED, RAW = "#d62728", "#1f77b4", "#c7c7c7", "#9ecae1"
TOKEN_VIEW_STYLE = "white-space:pre-wrap;line-height:1.9;font-family:ui-monospace,monospace"


def visible_piece(piece: str) -> str:
    """A piece as plain text with its whitespace visible (menus and titles; charts use `chart_label`)."""
    return plain_label(piece)


def probability_colour(prob: float) -> str:
    """Red (unlikely) through yellow to green (likely), with the hue linear in probability."""
    hue = 120 * max(0.0, min(1.0, prob))
    return f"hsl({hue:.0f}, 75%, 82%)"


def _step_title(step: StepRecord, shown: str) -> str:
    alternatives = " · ".join(f"{plain_label(a.piece, 16)} {a.prob:.3f}" for a in step.top[:5])
    return (f"p = {step.prob:.3f} · after filters {step.prob_filtered:.3f} · entropy {step.entropy:.2f} nats"
            f" — {plain_label(shown, 24)!s}; top: {alternatives}")


def token_html(record: RunRecord, selected: int | None = None) -> str:
    """The run's text, each generated token coloured by its probability, with a hover title (its
    probability and the top alternatives). Each generated token carries `data-index` (its step) so
    a click handler can say which step was chosen; the prompt is grey, its special tokens shown."""
    pieces = record.all_pieces()
    prompt = "".join(html_token(p) for p in pieces[: record.n_prompt])
    spans = []
    for i, (step, shown) in enumerate(zip(record.steps, pieces[record.n_prompt :])):
        outline = "outline:2px solid #333;" if i == selected else ""
        spans.append(f'<span class="tok" data-index="{i}" title="{html.escape(_step_title(step, shown))}" '
                     f'style="background:{probability_colour(step.prob)};{outline}">{html_token(shown)}</span>')
    return (f'<div class="run-text" style="{TOKEN_VIEW_STYLE}"><span class="prompt" style="color:#666">{prompt}'
            f'</span>{"".join(spans)}</div>')


def height_before_removal(step: StepRecord) -> list[float]:
    """Each candidate's probability at the last stage that still had it (its own, final one if kept)."""
    heights = [a.prob for a in step.top]
    for _, probs in step.stages:
        heights = [p if p > 0 else h for p, h in zip(probs, heights)]
    return heights


def alternatives_figure(record: RunRecord, step_index: int) -> go.Figure:
    """What the model considered at one step: its raw probability and, beside it, the probability after
    penalties, temperature and filters — chosen, kept, or removed (grey, at its height before the cut)."""
    step = record.steps[step_index]
    order = sorted(range(len(step.top)), key=lambda i: step.top[i].prob)  # largest at the top
    alternatives = [step.top[i] for i in order]
    before = height_before_removal(step) if step.stages else [a.prob for a in step.top]
    before = [before[i] for i in order]
    labels = [f"{chart_label(a.piece)}  #{a.token_id}" for a in alternatives]
    hover = [f"raw p = {a.prob:.4f}<br>after filters = {a.prob_filtered:.4f}"
             + (f"<br>removed by {a.removed_by}" if a.removed_by else "") for a in alternatives]
    figure = go.Figure(go.Bar(y=labels, x=[a.prob for a in alternatives], orientation="h", offsetgroup="raw",
                              name="raw model probability", marker_color=RAW, hovertext=hover, hoverinfo="text"))
    kinds = [("chosen" if a.token_id == step.token_id else "removed" if a.removed_by else "kept") for a in alternatives]
    for kind, colour, name in (("kept", KEPT, "after penalties, temperature and filters"),
                               ("chosen", CHOSEN, "the sampled token"),
                               ("removed", REMOVED, "removed by a filter (height before removal)")):
        xs = [(b if kind == "removed" else a.prob_filtered) if k == kind else None
              for a, b, k in zip(alternatives, before, kinds)]
        text = [("chosen" if kind == "chosen" else f"cut: {a.removed_by}" if kind == "removed" else "")
                if k == kind else "" for a, k in zip(alternatives, kinds)]
        figure.add_trace(go.Bar(y=labels, x=xs, orientation="h", offsetgroup="after", name=name, marker_color=colour,
                                text=text, textposition="outside", hovertext=hover, hoverinfo="text",
                                showlegend=kind in kinds or kind == "kept"))
    top = max([a.prob for a in alternatives] + [a.prob_filtered for a in alternatives] + before)
    figure.update_layout(
        barmode="group", template="plotly_white", height=150 + 34 * len(alternatives),
        title=f"Step {step_index}: chose {plain_label(step.piece)!r} (p = {step.prob:.3f})",
        xaxis_title="probability", xaxis_range=[0, min(1.3, top * 1.3)],
        legend={"orientation": "h", "y": -0.12}, margin={"l": 150, "r": 10, "t": 50, "b": 10},
    )
    return figure


def probability_entropy_figure(record: RunRecord, first_step: int = 0, name: str = "p(chosen)") -> go.Figure:
    """Chosen-token probability and the distribution's entropy across the run (steps numbered from `first_step`)."""
    steps = list(range(first_step, first_step + len(record.steps)))
    pieces = record.generated_pieces()
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=steps, y=[s.prob for s in record.steps], name=name, mode="lines+markers",
                                text=[chart_label(p) for p in pieces],
                                hovertemplate="step %{x}: %{text}<br>p = %{y:.3f}<extra></extra>"), secondary_y=False)
    figure.add_trace(go.Scatter(x=steps, y=[s.entropy for s in record.steps], name="entropy (nats)",
                                mode="lines", line={"dash": "dot"}), secondary_y=True)
    figure.update_layout(template="plotly_white", height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         title="Confidence over the run", legend={"orientation": "h", "y": -0.25})
    figure.update_xaxes(title_text="generated token")
    figure.update_yaxes(title_text="probability", range=[0, 1.05], secondary_y=False)
    figure.update_yaxes(title_text="entropy (nats)", secondary_y=True)
    return figure


def branch_figure(main: RunRecord, branch: RunRecord, fork_step: int) -> go.Figure:
    """A branch beside the run it forks from, on the run's own step numbers: the run's p(chosen) in grey, the
    branch's from the step after the fork, and a marker at the fork with the token forced there."""
    figure = go.Figure()
    main_pieces = main.generated_pieces()
    figure.add_scatter(x=list(range(len(main.steps))), y=[s.prob for s in main.steps], mode="lines+markers",
                       name="the run", line={"color": "#999"}, marker={"size": 5},
                       text=[chart_label(p) for p in main_pieces],
                       hovertemplate="run, step %{x}: %{text}<br>p = %{y:.3f}<extra></extra>")
    start = fork_step + 1  # the forced token takes the fork's step; the branch samples from the next one
    figure.add_scatter(x=list(range(start, start + len(branch.steps))), y=[s.prob for s in branch.steps],
                       mode="lines+markers", name="the branch", line={"color": KEPT},
                       text=[chart_label(p) for p in branch.generated_pieces()],
                       hovertemplate="branch, step %{x}: %{text}<br>p = %{y:.3f}<extra></extra>")
    forced_id = branch.prompt_ids[-1]  # a branch's prompt is the run up to the fork, then the forced token
    forced_piece = branch.all_pieces()[branch.n_prompt - 1]
    forced = next((a for a in main.steps[fork_step].top if a.token_id == forced_id), None)
    figure.add_scatter(x=[fork_step], y=[forced.prob if forced else 0], mode="markers", name="forced token",
                       marker={"symbol": "diamond", "size": 13, "color": CHOSEN},
                       hovertemplate=f"forced {chart_label(forced_piece)}<br>its raw p = %{{y:.3f}}<extra></extra>")
    figure.add_vline(x=fork_step, line_dash="dash", line_color=CHOSEN)
    figure.add_annotation(x=fork_step, y=1.04, yref="y", text=f"fork: {chart_label(forced_piece)}", showarrow=False,
                          xanchor="left", font={"color": CHOSEN})
    figure.update_layout(template="plotly_white", height=320, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         title=f"Probability of each chosen token: the run and the branch from step {fork_step}",
                         xaxis_title="generated token (the run's step numbers)", yaxis_title="probability",
                         yaxis_range=[0, 1.1], legend={"orientation": "h", "y": -0.3})
    return figure
