"""The sampler pipeline at one step: one bar chart per stage over the same candidate tokens.

Colours are the run figures' (llama_core.insight.run_figures): the raw panel in RAW, what a stage keeps in
KEPT, the sampled token in CHOSEN, and a candidate a stage removed in grey at its height just before
the removal, so one sees what was cut and how much it weighed. A button switches every panel to a
log axis, where the small probabilities the filters act on become visible.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..token_display import chart_label, plain_label
from .run_figures import CHOSEN, KEPT, RAW, REMOVED
from .run_record import RunRecord

STAGE_TITLES = {"raw": "probabilities of the raw logits", "penalties": "after repetition / presence / frequency "
                "penalties", "temperature": "after temperature", "top_k": "after top-k", "top_p": "after top-p",
                "min_p": "after min-p", "greedy": "greedy (argmax)"}
LEGEND = {"raw": "the model's own probability", "kept": "kept by this stage", "chosen": "the sampled token",
          "removed": "removed (grey, at its height before removal)"}
COLOURS = {"raw": RAW, "kept": KEPT, "chosen": CHOSEN, "removed": REMOVED}


def _kind(first: bool, chosen: bool, p: float) -> str:
    if p <= 0:
        return "removed"
    return "chosen" if chosen else ("raw" if first else "kept")


def pipeline_figure(record: RunRecord, step_index: int) -> go.Figure:
    """One panel per sampler stage, aligned over the same candidates: which stage removed a token and
    which boosted or damped it (hover: the change from the stage before)."""
    step = record.steps[step_index]
    labels = [f"{chart_label(a.piece)} #{a.token_id}" for a in step.top]
    titles = [STAGE_TITLES.get(name, name) for name, _ in step.stages]
    if titles:
        titles[-1] += " — sampled from"
    fig = make_subplots(rows=1, cols=len(step.stages), shared_yaxes=True, horizontal_spacing=0.015,
                        subplot_titles=titles)
    heights, previous, shown = [a.prob for a in step.top], None, set()
    for col, (name, probs) in enumerate(step.stages, start=1):
        heights = [p if p > 0 else h for p, h in zip(probs, heights)]  # a removed token keeps its last height
        kinds = [_kind(col == 1, a.token_id == step.token_id, p) for a, p in zip(step.top, probs)]
        change = ["" if previous is None else (f"{p / q:.2f}× the stage before" if q > 0 and p > 0
                                               else ("removed here" if q > 0 else "removed earlier"))
                  for p, q in zip(probs, previous or probs)]
        for kind in ("raw", "kept", "chosen", "removed"):
            if kind not in kinds:
                continue
            xs = [(h if kind == "removed" else p) if k == kind else None for p, h, k in zip(probs, heights, kinds)]
            text = [("removed" if kind == "removed" else f"{p:.3f}") if k == kind else None
                    for p, k in zip(probs, kinds)]
            fig.add_bar(y=labels, x=xs, orientation="h", marker_color=COLOURS[kind], name=LEGEND[kind],
                        legendgroup=kind, showlegend=kind not in shown, text=text, textposition="outside",
                        customdata=[[p, c] for p, c in zip(probs, change)], cliponaxis=False,
                        hovertemplate="%{y}<br>p = %{customdata[0]:.4f}<br>%{customdata[1]}<extra>" + name + "</extra>",
                        row=1, col=col)
            shown.add(kind)
        previous = list(probs)
    values = [p for _, probs in step.stages for p in probs if p > 0] or [1.0]
    top, low = max(values), min(values)
    linear = {"type": "linear", "range": [0, min(1.0, top) * 1.35]}
    log = {"type": "log", "range": [math.log10(low) - 0.3, math.log10(top) + 0.6]}
    axes = [f"xaxis{'' if i == 1 else i}" for i in range(1, len(step.stages) + 1)]
    fig.update_xaxes(showticklabels=False, **linear)
    fig.update_yaxes(autorange="reversed")
    fig.update_annotations(font_size=11)
    buttons = [{"label": label, "method": "relayout",
                "args": [{f"{axis}.{key}": value for axis in axes for key, value in scale.items()}]}
               for label, scale in (("linear", linear), ("log scale", log))]
    fig.update_layout(
        template="plotly_white", barmode="overlay", height=170 + 30 * len(labels),
        margin={"l": 150, "r": 10, "t": 90, "b": 10}, legend={"orientation": "h", "y": -0.04, "yanchor": "top"},
        title=f"Sampler pipeline at step {step_index}: chose {plain_label(step.piece)!r}",
        updatemenus=[{"type": "buttons", "direction": "right", "buttons": buttons, "x": 1, "xanchor": "right",
                      "y": 1.18, "yanchor": "bottom", "showactive": True, "active": 0}],
    )
    return fig
