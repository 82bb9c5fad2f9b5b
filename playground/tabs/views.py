"""Charts drawn when their tab shows, not at the end of every run.

A browser draws a Plotly chart on its main thread; drawing every tab's charts when a run ends froze
the page for seconds (and a chart drawn in a hidden tab came out 700 px wide). So each inspecting
tab draws its charts when it is opened with a run newer than the one it shows, or right after a
run when it is the tab showing. `TabViews` holds, per session, which tab shows and which run (or
other value, by key) each tab last drew.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from llama_core.insight.run_record import RunRecord

QUIET = {"show_progress": "hidden", "api_visibility": "private"}  # no spinner over charts being drawn


@dataclass
class TabViews:
    visible: gr.State  # the name of the tab showing
    drawn: gr.State  # {tab name: key of what its charts show}


def create_views(first_tab: str) -> TabViews:
    return TabViews(gr.State(first_tab), gr.State({}))


def run_key(record: RunRecord | None) -> tuple | None:
    """What identifies a run's drawing: the record, its length and how it ended (Stop changes both)."""
    if record is None:
        return None
    return id(record), len(record.steps), record.stop_reason, record.error


def track(views: TabViews, tab: gr.Tab, name: str) -> None:
    """Keep `views.visible` on `name` while `tab` shows (for tabs that draw nothing lazily)."""
    tab.select(lambda: name, None, views.visible, **QUIET)


def lazy(views: TabViews, name: str, tab: gr.Tab, stages: list[tuple[Callable, list, list]],
         key: Callable = run_key) -> Callable:
    """Draw the tab's charts when `tab` is opened and `key(first input)` differs from what they show. Each
    stage (draw(*input values) -> outputs (one value for one output), inputs, outputs) is its own event, chained after the one before,
    so the browser draws one stage's charts at a time. Returns `after(event)`, which chains the same stages
    after `event` when `tab` is the one showing."""

    def stage_handler(index: int, draw: Callable, n_outputs: int, on_select: bool):
        label = f"{name}:{index}"

        def handler(visible: str, drawn: dict | None, *values):
            current = key(values[0])
            if (not on_select and visible != name) or current is None or (drawn or {}).get(label) == current:
                return (gr.skip(),) * (n_outputs + 1)
            drawing = draw(*values)
            return ({**(drawn or {}), label: current}, *(drawing if n_outputs > 1 else (drawing,)))

        return handler

    def chain(event, on_select: bool):
        for index, (draw, inputs, outputs) in enumerate(stages):
            event = event.then(stage_handler(index, draw, len(outputs), on_select),
                               [views.visible, views.drawn, *inputs], [views.drawn, *outputs], **QUIET)

    chain(tab.select(lambda: name, None, views.visible, **QUIET), on_select=True)
    return lambda event: chain(event, on_select=False)
