"""Attention of one run, drawn light enough for a browser at any context length: the map of one head
(or the mean), every head of a layer as small images, a head view of one token (lines to what it
attends to, one colour per head, as in bertviz), and the text coloured by one token's attention.

Pure functions of numpy arrays: `weights` is one layer's (H, Q, Q) attention (queries × keys) and
`pieces` the display string of every position (llama_core.token_display). What makes them light:
the map is one float32 array (plotly ships it as a base64 typed array) over category axes whose
names ("12 ·the") give the hover its token and position, so there is no per-cell string; its tick
labels are thinned by Plotly to what fits, and come back as one zooms; the small multiples are PNG
images, a few kilobytes each, instead of one heatmap per head.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import qualitative, sample_colorscale
from plotly.subplots import make_subplots

from ..token_display import chart_label, html_token, plain_label, positioned_labels

MAX_TICKS = 40  # tick labels an axis shows at once (about 25 px each on the map), more as one zooms in
THUMBNAIL_PIXELS = 192  # a head's image in the grid is at most this many pixels a side (max-pooled)
HEAD_COLOURS = qualitative.Plotly + qualitative.Dark24
# Markdown (the page) and plain text alike: the backticks keep `<s>` from being read as a tag.
SINK_NOTE = ("Most heads give much of their weight to the first token, `<s>`: an \"attention sink\" (softmax must put "
             "its weight somewhere, and the first token is the one every query can see); the map's colour scale "
             "stops at the 99th percentile so the rest of the pattern stays visible.")


def _grid(weights: np.ndarray, head: int | None) -> np.ndarray:
    """One head's (Q, Q) weights, or the mean over heads, as a new float32 array (the caller may write into it)."""
    return np.array(weights[head] if head is not None else weights.astype(np.float32).mean(axis=0), dtype=np.float32)


def _colour_limit(grid: np.ndarray) -> float:
    # The sink column would take the whole colour scale: clip at the 99th percentile of the weights.
    positive = grid[grid > 0]
    return float(np.quantile(positive, 0.99)) if positive.size else 1.0


def attention_figure(matrix: np.ndarray, pieces: list[str], layer: int, head: int | None) -> go.Figure:
    """Heatmap of one head (or the mean over heads when `head` is None): queries × keys. `matrix` is
    one layer's (H, Q, Q) weights, or every layer's (L, H, Q, Q)."""
    weights = matrix[layer] if matrix.ndim == 4 else matrix
    grid = _grid(weights, head)
    n = grid.shape[-1]
    grid[np.triu_indices(n, 1)] = np.nan  # a query never sees later keys: blank, and no hover there
    labels = positioned_labels(pieces[:n])
    figure = go.Figure(go.Heatmap(
        z=grid, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=_colour_limit(grid[~np.isnan(grid)]),
        hoverongaps=False, colorbar={"title": "weight", "thickness": 12},
        hovertemplate="query %{y}<br>attends to key %{x}<br>weight %{z:.3f}<extra></extra>",
    ))
    height = int(min(900, max(440, 14 * n + 180)))
    # Category axes thin their own labels (every k-th position, k from nticks) and add them back on zoom. The
    # margins hold the labels already: Gradio turns Plotly's margin auto-expansion on, and a margin it must grow
    # costs a second layout pass, after measuring every label.
    ticks = {"type": "category", "tickfont": {"size": 11}, "showgrid": False}
    which = "mean over heads" if head is None else f"head {head}"
    figure.update_layout(
        template="plotly_white", title=f"Attention, layer {layer}, {which}", height=height,
        xaxis={"title": "key (attended-to) token", "side": "top", "tickangle": -60,
               "nticks": max(4, min(n, MAX_TICKS)), **ticks},
        yaxis={"title": "query token", "autorange": "reversed",
               "nticks": max(4, min(n, MAX_TICKS, (height - 200) // 15)), **ticks},
        margin={"l": 130, "r": 10, "t": 150, "b": 10},
    )
    if n > 40:  # a tall map: the key labels at its foot too, on an axis that zooms with the top one
        # An invisible trace carries that axis; on a y axis of its own, so the map's y ticks stay where they are.
        figure.add_trace(go.Scatter(x=[labels[0], labels[-1]], y=[0, 0], xaxis="x2", yaxis="y2", mode="markers",
                                    marker={"opacity": 0}, hoverinfo="skip", showlegend=False))
        figure.update_layout(xaxis2={"overlaying": "x", "matches": "x", "side": "bottom", "tickangle": -60,
                                     "nticks": max(4, min(n, MAX_TICKS)), **ticks},
                             yaxis2={"overlaying": "y", "visible": False}, margin={"b": 120})
    return figure


def _lookup_table(colorscale: str = "Blues") -> np.ndarray:
    """(256, 3) uint8 colours of a plotly colour scale, for colouring images with numpy."""
    colours = sample_colorscale(colorscale, np.linspace(0, 1, 256).tolist())
    return np.array([[int(float(c)) for c in colour[colour.index("(") + 1 : -1].split(",")] for colour in colours],
                    dtype=np.uint8)


def _png_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pooled(grid: np.ndarray, factor: int) -> np.ndarray:
    """Max over factor × factor blocks: a thin diagonal or one sink column survives the shrinking."""
    if factor == 1:
        return grid
    n = grid.shape[0]
    size = -(-n // factor) * factor
    padded = np.zeros((size, size), dtype=grid.dtype)
    padded[:n, :n] = grid
    return padded.reshape(size // factor, factor, size // factor, factor).max(axis=(1, 3))


def heads_figure(matrix: np.ndarray, layer: int, n_kv_heads: int) -> go.Figure:
    """Small multiples of every head of one layer as images; heads sharing keys/values are labelled by group."""
    weights = matrix[layer] if matrix.ndim == 4 else matrix
    n_heads, n = weights.shape[0], weights.shape[-1]
    group = max(1, n_heads // max(1, n_kv_heads))
    columns = min(n_heads, 4)
    rows = -(-n_heads // columns)
    factor = max(1, math.ceil(n / THUMBNAIL_PIXELS))
    titles = [f"head {h}" + (f" · kv group {h // group}" if group > 1 else "") for h in range(n_heads)]
    figure = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.03,
                           vertical_spacing=0.3 / rows)
    table = _lookup_table()
    for h in range(n_heads):
        grid = _pooled(np.asarray(weights[h], dtype=np.float32), factor)
        scaled = np.clip(grid / _colour_limit(grid), 0, 1)
        figure.add_trace(go.Image(source=_png_uri(table[(scaled * 255).astype(np.uint8)]), x0=0, dx=factor, y0=0,
                                  dy=factor, hovertemplate=f"head {h}: query %{{y}} → key %{{x}}<extra></extra>"),
                         row=h // columns + 1, col=h % columns + 1)
    figure.update_xaxes(showticklabels=False, showgrid=False)
    figure.update_yaxes(showticklabels=False, showgrid=False)
    notes = [f"{group} query heads share each key/value head" if group > 1 else "",
             f"1 pixel = {factor}×{factor} positions (their maximum)" if factor > 1 else ""]
    note = "; ".join(n for n in notes if n)
    figure.update_layout(template="plotly_white", height=260 * rows + 70, margin={"l": 10, "r": 10, "t": 70, "b": 10},
                         title=f"All heads of layer {layer}" + (f" ({note})" if note else ""))
    return figure


def _head_lines(rows: np.ndarray, min_weight: float, per_head: int = 3) -> np.ndarray:
    """(H, keys) bool: the lines to draw, a head's weights ≥ min_weight and its `per_head` strongest keys in any case
    (so a head that spreads its attention thin still shows where it looks most)."""
    strongest = np.zeros_like(rows, dtype=bool)
    top = np.argsort(-rows, axis=1)[:, :per_head]
    np.put_along_axis(strongest, top, True, axis=1)
    return strongest | (rows >= min_weight)


def _attended_keys(rows: np.ndarray, lines: np.ndarray, max_keys: int) -> list[int]:
    """The keys listed: those with a line, the heaviest first up to max_keys, the first token always."""
    best = np.where(lines, rows, -1.0).max(axis=0)
    candidates = [int(k) for k in np.argsort(-best) if best[k] >= 0][:max_keys]
    return sorted(set(candidates) | {0})


def head_view_figure(weights: np.ndarray, pieces: list[str], layer: int, query: int, n_kv_heads: int,
                     max_keys: int = 24, min_weight: float = 0.02) -> go.Figure:
    """The selected token (left) and the tokens it attends to (right), a line per head in that head's colour,
    as thick and opaque as its weight. Keys are listed in text order with their positions; only keys some head
    gives ≥ `min_weight`, and each head's three strongest, are listed (the first token always), so the view reads
    the same at any length."""
    rows = np.asarray(weights[:, query, : query + 1], dtype=np.float32)  # (H, query + 1)
    lines = _head_lines(rows, min_weight)
    keys = _attended_keys(rows, lines, max_keys)
    n_heads = rows.shape[0]
    ys = {k: i for i, k in enumerate(keys)}
    middle = (len(keys) - 1) / 2
    figure = go.Figure()
    for h in range(n_heads):
        colour = HEAD_COLOURS[h % len(HEAD_COLOURS)]
        # Lines bucketed by weight (4 widths/opacities a head) instead of one trace a line.
        for bucket, (low, high) in enumerate(((0.0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.01))):
            chosen = [k for k in keys if low <= rows[h, k] < high and lines[h, k]]
            xs, ys_line = [], []
            for k in chosen:
                xs += [0, 1, None]
                ys_line += [middle, ys[k], None]
            figure.add_trace(go.Scatter(
                x=xs or [None], y=ys_line or [None], mode="lines", name=f"head {h}", legendgroup=f"head {h}",
                showlegend=bucket == 0, opacity=0.25 + 0.25 * bucket,
                line={"color": colour, "width": 1 + 2 * bucket}, hoverinfo="skip"))
    key_hover = ["<br>".join([f"key {k} {chart_label(pieces[k], None)}"] +
                             [f"head {h}: {rows[h, k]:.3f}" for h in range(n_heads)]) for k in keys]
    figure.add_trace(go.Scatter(x=[1.02] * len(keys), y=[ys[k] for k in keys], mode="text", textposition="middle right",
                                text=[f"{k} {chart_label(pieces[k])}" for k in keys], hovertext=key_hover,
                                hoverinfo="text", showlegend=False, textfont={"size": 13}))
    figure.add_trace(go.Scatter(x=[-0.02], y=[middle], mode="text", textposition="middle left", showlegend=False,
                                text=[f"<b>{query} {chart_label(pieces[query])}</b>"], hoverinfo="skip",
                                textfont={"size": 14}))
    figure.update_xaxes(visible=False, range=[-0.45, 1.45])
    figure.update_yaxes(visible=False, autorange="reversed")
    group = max(1, n_heads // max(1, n_kv_heads))
    shared = f"; heads {group} at a time share keys/values" if group > 1 else ""
    figure.update_layout(
        template="plotly_white", height=max(320, 26 * len(keys) + 120), margin={"l": 10, "r": 10, "t": 70, "b": 10},
        legend={"title": "click a head to hide it"},
        title={"text": f"Head view: what token {query} ({plain_label(pieces[query], 20)}) attends to, layer {layer}",
               "subtitle": {"text": f"one colour per head; thicker = more weight; keys with ≥ {min_weight:.0%} from "
                                    f"some head, and each head's 3 strongest{shared}"}},
    )
    return figure


def attention_text_html(weights: np.ndarray, pieces: list[str], query: int, head: int | None) -> str:
    """The run's text with each token shaded by how much `query` attends to it (one head or the mean).

    Every query position carries `data-index` for a click handler; later tokens are greyed (a query
    never sees them), and the last token, never fed back through the model, is not clickable."""
    rows = np.asarray(weights[:, query, : query + 1], dtype=np.float32)  # (H, query + 1)
    row = rows.mean(axis=0) if head is None else rows[head]
    n_queries = weights.shape[-1]
    # Shade against the largest weight after the first token: the sink would make the rest invisible.
    scale = float(row[1:].max()) if query > 0 and row[1:].max() > 0 else 1.0
    spans = []
    for position, piece in enumerate(pieces):
        text = html_token(piece)
        if position <= query:
            weight = float(row[position])
            alpha = min(1.0, weight / scale)
            outline = "outline:2px solid #d62728;" if position == query else ""
            title = f"position {position}: weight {weight:.3f}" + (" (the selected query)" if position == query else "")
            spans.append(f'<span class="tok att" data-index="{position}" title="{html.escape(title)}" '
                         f'style="background:rgba(31,119,180,{alpha:.3f});{outline}">{text}</span>')
        elif position < n_queries:
            spans.append(f'<span class="tok att later" data-index="{position}" title="position {position}: after '
                         f'the query" style="color:#aaa">{text}</span>')
        else:
            spans.append(f'<span class="att last" title="position {position}: the last token, never read back as '
                         f'a query" style="color:#aaa">{text}</span>')
    which = "the mean over heads" if head is None else f"head {head}"
    return (f'<div class="attention-text" style="white-space:pre-wrap;line-height:1.9;font-family:ui-monospace,'
            f'monospace">{"".join(spans)}</div><p class="attention-text-note">Shaded by the attention of token '
            f'{query} ({html.escape(plain_label(pieces[query], 20))}), {which}: darkest = its largest weight after '
            f'the first token (the sink, here {float(row[0]):.0%} of its attention; shades are capped at the darkest). '
            'Hover a token for its weight; click one to make it the query.</p>')
