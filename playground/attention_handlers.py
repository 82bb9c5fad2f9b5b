"""Handlers of the Attention tab: plain functions of the session's latest run and the tab's controls.

Each draws only what its control changes, one view an event so the browser draws one at a time: a
new run or layer everything, a head the map and the shaded text, a clicked token (the query) the shaded
text and the head view. A layer's weights are assembled from the run's rows on demand (an L-th of the
whole matrix).
"""

from __future__ import annotations

import gradio as gr

from llama_core.insight.attention_figures import attention_figure, attention_text_html, head_view_figure, heads_figure
from llama_core.insight.run_record import RunRecord

from .registry import ModelRegistry

NO_RUN = "Generate something first: this tab shows the attention of the latest run (Generate or Chat)."
REMOTE_RUN = ("**Attention needs a local model.** The latest run came from {model} on the server {server}, which sends "
              "back tokens and their top-n probabilities only, never the attention weights. Choose a local model on "
              "the Generate tab and generate again to see where each token looks.")
NOT_RECORDED = ("The latest run kept no attention: tick **Record attention** on the Generate tab and generate again. "
                "(A run whose prompt alone is too long for the attention memory budget keeps none either.)")


def _head_index(head) -> int | None:
    return None if head in (None, "", "mean") else int(head)


def _clamp(value, top: int) -> int:
    return int(min(max(int(value or 0), 0), top))


def remote_note(record: RunRecord) -> str | None:
    """The tab's message for a run made on a remote server (None for a local run)."""
    if not record.is_remote:
        return None
    return REMOTE_RUN.format(model=record.source["model"], server=record.source["server"])


def make_attention_handlers(registry: ModelRegistry):
    def kv_heads(record: RunRecord) -> int:
        try:
            return registry.load(record.model_name).args.kv_heads
        except Exception:  # noqa: BLE001 — the model was swapped out or broke since: draw without groups
            return record.attention_shape[1]

    def controls_and_text(record: RunRecord | None):
        """A new run's first stage: layer 0, the mean over heads, the last query position, and what is drawn
        fastest: (layer slider, head menu, query, empty-tab note, shaded text)."""
        shape = None if record is None or not record.steps else record.attention_shape
        if shape is None:
            note = NO_RUN if record is None or not record.steps else remote_note(record) or NOT_RECORDED
            return (gr.update(value=0, maximum=1), gr.update(choices=["mean"], value="mean"), 0,
                    gr.update(value=note, visible=True), gr.update(value="", visible=False))
        layers, heads, n_queries = shape
        query = n_queries - 1
        weights, pieces = record.attention_layer(0), record.all_pieces()  # a new run opens on layer 0
        return (gr.update(value=0, maximum=max(1, layers - 1)),  # a slider needs minimum < maximum
                gr.update(choices=["mean"] + [str(h) for h in range(heads)], value="mean"), query,
                gr.update(value="", visible=False),
                gr.update(value=attention_text_html(weights, pieces, query, None), visible=True))

    def map_of(record: RunRecord | None, layer, head):
        """The map of the layer's head (or mean), shown; hidden when the run kept no attention."""
        if record is None or record.attention_shape is None:
            return gr.update(value=None, visible=False)
        layer = _clamp(layer, record.attention_shape[0] - 1)
        figure = attention_figure(record.attention_layer(layer), record.all_pieces(), layer, _head_index(head))
        return gr.update(value=figure, visible=True)

    def head_view_of(record: RunRecord | None, layer, query):
        """The head view of the query token, shown; hidden when the run kept no attention."""
        if record is None or record.attention_shape is None:
            return gr.update(value=None, visible=False)
        layers, _, n_queries = record.attention_shape
        layer, query = _clamp(layer, layers - 1), _clamp(query, n_queries - 1)
        figure = head_view_figure(record.attention_layer(layer), record.all_pieces(), layer, query, kv_heads(record))
        return gr.update(value=figure, visible=True)

    def heads_of(record: RunRecord | None, layer):
        """Every head of the layer, shown; hidden when the run kept no attention."""
        if record is None or record.attention_shape is None:
            return gr.update(value=None, visible=False)
        layer = _clamp(layer, record.attention_shape[0] - 1)
        return gr.update(value=heads_figure(record.attention_layer(layer), layer, kv_heads(record)), visible=True)

    def text_of(record: RunRecord | None, layer, head, query):
        """After a layer or head change: the shaded text."""
        if record is None or record.attention_shape is None:
            return gr.skip()
        layers, _, n_queries = record.attention_shape
        layer, query = _clamp(layer, layers - 1), _clamp(query, n_queries - 1)
        return attention_text_html(record.attention_layer(layer), record.all_pieces(), query, _head_index(head))

    def select_query(record: RunRecord | None, layer, head, evt: gr.EventData):
        """A token clicked in the shaded text becomes the query: (query, shaded text, head view)."""
        index = getattr(evt, "index", None)
        if record is None or record.attention_shape is None or not isinstance(index, int):
            return gr.skip(), gr.skip(), gr.skip()
        layers, _, n_queries = record.attention_shape
        if not 0 <= index < n_queries:
            return gr.skip(), gr.skip(), gr.skip()
        layer = _clamp(layer, layers - 1)
        weights, pieces = record.attention_layer(layer), record.all_pieces()
        return (index, attention_text_html(weights, pieces, index, _head_index(head)),
                head_view_figure(weights, pieces, layer, index, kv_heads(record)))

    return {"controls_and_text": controls_and_text, "map_of": map_of, "head_view_of": head_view_of,
            "heads_of": heads_of, "text_of": text_of, "select_query": select_query}
