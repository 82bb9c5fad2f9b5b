"""The Attention tab: the latest run's text shaded by a clicked token's attention, a head view of that
token, the map of one head (or the mean) and every head of a layer.

Layout in `create_ui`, wiring in `wire`; its charts are drawn when the tab shows (playground/tabs/views.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from llama_core.insight.attention_figures import SINK_NOTE
from playground.attention_handlers import NO_RUN

from .probabilities import TOKEN_CLICK_JS
from .views import QUIET, TabViews, lazy


@dataclass
class AttentionTab:
    layer: gr.Slider
    head: gr.Dropdown
    query: gr.State  # the position whose attention the text and the head view show
    empty: gr.Markdown
    text: gr.HTML
    head_view: gr.Plot
    map: gr.Plot
    heads: gr.Plot


def create_ui() -> AttentionTab:
    gr.Markdown("Where each token looks when the model reads it. Click a token in the text to make it the query: the "
                "text is shaded by its attention, and the head view draws a line to every token it attends to, one "
                f"colour per head. {SINK_NOTE}")
    empty = gr.Markdown(NO_RUN, elem_id="attention-empty", elem_classes="empty-note")
    with gr.Row():
        layer = gr.Slider(0, 1, value=0, step=1, label="Layer", elem_id="attention-layer")
        head = gr.Dropdown(["mean"], value="mean", label="Head (or the mean over heads)", elem_id="attention-head")
    query = gr.State(0)
    text = gr.HTML(js_on_load=TOKEN_CLICK_JS, elem_id="attention-text", visible=False)
    head_view = gr.Plot(label="Head view", elem_id="head-view", visible=False)
    attention_map = gr.Plot(label="Attention map", elem_id="attention", visible=False)
    heads = gr.Plot(label="All heads of the layer", elem_id="heads", visible=False)
    return AttentionTab(layer, head, query, empty, text, head_view, attention_map, heads)


def wire(tab: AttentionTab, tab_item: gr.Tab, views: TabViews, run_state: gr.State, attention: dict):
    """Events of the tab; returns `after_run(event)`, which draws it after a run when it shows."""
    view = [run_state, tab.layer, tab.head, tab.query]
    # .input, not .change: setting the controls for a new run must not redraw a second time. Each redraw
    # is a chain of events, one view each and the map first, so the browser draws one chart per task.
    tab.layer.input(attention["map_of"], view[:3], tab.map, trigger_mode="always_last", **QUIET).then(
        attention["text_of"], view, tab.text, **QUIET).then(
        attention["head_view_of"], [run_state, tab.layer, tab.query], tab.head_view, **QUIET).then(
        attention["heads_of"], view[:2], tab.heads, **QUIET)
    tab.head.input(attention["map_of"], view[:3], tab.map, trigger_mode="always_last", **QUIET).then(
        attention["text_of"], view, tab.text, **QUIET)
    tab.text.click(attention["select_query"], [run_state, tab.layer, tab.head], [tab.query, tab.text, tab.head_view],
                   **QUIET)
    first = [tab.layer, tab.head, tab.query, tab.empty, tab.text]
    return lazy(views, "attention", tab_item, [
        (attention["controls_and_text"], [run_state], first),
        (attention["map_of"], [run_state, tab.layer, tab.head], [tab.map]),
        (attention["head_view_of"], [run_state, tab.layer, tab.query], [tab.head_view]),
        (attention["heads_of"], [run_state, tab.layer], [tab.heads])])
