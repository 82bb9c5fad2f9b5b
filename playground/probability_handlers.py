"""Handlers of the Token probabilities tab's charts: the alternatives at the selected step, confidence over
the run and the sampler pipeline, with the branch menu of the selected step. Plain functions of the
session's latest run and the selected step.

A remote run's numbers are the server's top-n log-probabilities (llama_core.backends.remote_steps): its
charts say so where it matters, the entropy being a lower bound (the tail beyond the n is missing) and the
sampler pipeline recomputed over those n candidates only.
"""

from __future__ import annotations

import gradio as gr

from llama_core.insight.pipeline_figure import pipeline_figure
from llama_core.insight.report_page import confidence_figure
from llama_core.insight.run_figures import alternatives_figure
from llama_core.insight.run_record import RunRecord
from llama_core.token_display import plain_label

from .remote_runs import run_token_html


def alternative_choices(record: RunRecord | None, step_index: int) -> list[tuple[str, int]]:
    """The branch menu of a step: each alternative the model considered, as (label, token id)."""
    if record is None or not 0 <= step_index < len(record.steps):
        return []
    step = record.steps[step_index]
    return [(f"{plain_label(a.piece)!r}  p={a.prob:.3f}" + ("  (chosen)" if a.token_id == step.token_id else ""),
             a.token_id) for a in step.top]


def top_n(record: RunRecord) -> int:
    return record.source.get("top_n") or max((len(s.top) for s in record.steps), default=0)


def marked_pipeline(record: RunRecord, step_index: int):
    """The sampler pipeline; for a remote run titled as recomputed on the server's top-n candidates."""
    figure = pipeline_figure(record, step_index)
    if record.is_remote:
        figure.update_layout(title=f"{figure.layout.title.text} — recomputed on the server's top-{top_n(record)} "
                                   "(truncated to n: the rest of the vocabulary is missing)")
    return figure


def marked_alternatives(record: RunRecord, step_index: int):
    figure = alternatives_figure(record, step_index)
    if record.is_remote:
        figure.update_layout(title=f"{figure.layout.title.text} — the server's top-{top_n(record)}")
    return figure


def _step(record: RunRecord, step_index) -> int:
    return min(max(0, int(step_index or 0)), len(record.steps) - 1)


def pipeline(record: RunRecord | None, step_index):
    """(the sampler pipeline of the step, the branch menu of the step)."""
    if record is None or not record.steps:
        return gr.update(value=None, visible=False), gr.update(choices=[], value=None)
    step_index = _step(record, step_index)
    choices = alternative_choices(record, step_index)
    if not record.steps[step_index].stages:  # a server that sent no log-probabilities: nothing to recompute
        return gr.update(value=None, visible=False), gr.update(choices=choices, value=None)
    return (gr.update(value=marked_pipeline(record, step_index), visible=True),
            gr.update(choices=choices, value=choices[0][1] if choices else None))


def alternatives_and_confidence(record: RunRecord | None, step_index) -> tuple:
    """(alternatives at the step, confidence over the run), shown; hidden before any run."""
    if record is None or not record.steps:
        hidden = gr.update(value=None, visible=False)
        return hidden, hidden
    step_index = _step(record, step_index)
    return (gr.update(value=marked_alternatives(record, step_index), visible=True),
            gr.update(value=confidence_figure(record), visible=True))


def select_token(record: RunRecord | None, evt: gr.EventData):
    """A clicked token becomes the selected step: (token view, alternatives, selected step)."""
    index = getattr(evt, "index", None)
    if record is None or not isinstance(index, int) or not 0 <= index < len(record.steps):
        return gr.skip(), gr.skip(), gr.skip()
    return run_token_html(record, index), gr.update(value=marked_alternatives(record, index), visible=True), index
