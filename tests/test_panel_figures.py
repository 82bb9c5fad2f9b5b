"""The figures behind the inspecting panels (issue 14), as pure functions: one token display for every view,
attention drawn light (one numeric array, heads as images), the head view, the shaded text, branches."""

from __future__ import annotations

import base64
import html
import io
import re

import numpy as np
import pytest
from PIL import Image

from llama_core.insight.attention_figures import attention_figure, attention_text_html, head_view_figure, heads_figure
from llama_core.generation import encode_prompt, generate_stream
from llama_core.insight.run_figures import KEPT, branch_figure, token_html
from llama_core.insight.run_record import RunRecord
from llama_core.sampling import SamplingParams
from llama_core.token_display import chart_label, display_tokens, html_token, plain_label, positioned_labels

TEXT = "café 你好 🦙 and"


def run(tiny_model, tokenizer, prompt: str = "Alice was", tokens: int = 12, **kwargs) -> RunRecord:
    ids = encode_prompt(tokenizer, prompt)
    record = RunRecord.start("tiny", tokenizer, prompt, ids, {})
    for step in generate_stream(tiny_model, tokenizer, ids, SamplingParams(temperature=0, max_new_tokens=tokens),
                                **kwargs):
        record.add(step)
    return record


def test_one_display_merges_characters_and_escapes_specials(tokenizer):
    ids = tokenizer.encode(TEXT)
    raw = [tokenizer.piece(i) for i in ids]
    assert any(p.startswith("<0x") for p in raw)  # the fixture's vocabulary spells these characters in bytes
    shown = display_tokens(tokenizer, ids)
    assert shown[0] == "<s>" and "".join(shown[1:]).replace(" ", "") == TEXT.replace(" ", "")
    assert not any("<0x" in p for p in shown)  # each character whole on its first byte's token, "" on the rest
    assert chart_label("<s>") == "&lt;s&gt;" and "<s>" not in html_token("</s>")  # never read as a tag
    assert plain_label(" the") == "·the" and plain_label("a\nb") == "a↵b" and plain_label("") == "⋯"
    assert chart_label(" the").startswith('<span style="color:#999">·</span>')  # whitespace quiet, not gone
    assert plain_label("x" * 30, 14) == "x" * 13 + "…"
    assert positioned_labels(["<s>", " a"]) == ["0 &lt;s&gt;", "1 ·a"]  # plain: tick labels by the dozen


def test_token_view_shows_characters_whole(tiny_model, tokenizer):
    record = run(tiny_model, tokenizer, TEXT, 4)
    text = html.unescape(re.sub(r"<[^>]+>", "", token_html(record)))  # as the page reads
    assert "café 你好 🦙" in text and text.startswith("<s>") and "<0x" not in text


def test_attention_map_is_one_array_over_every_position(tiny_model, tokenizer):
    record = run(tiny_model, tokenizer, "Alice was beginning to get very tired of sitting", 60, capture_attention=True)
    weights, pieces = record.attention_layer(1), record.all_pieces()
    n = weights.shape[-1]
    figure = attention_figure(weights, pieces, 1, 2)
    heatmap = figure.data[0]
    assert heatmap.z.shape == (n, n) and heatmap.z.dtype == np.float32  # sent as one typed array
    assert np.isnan(heatmap.z[0, 1]) and np.isclose(heatmap.z[3, 2], float(weights[2, 3, 2]), rtol=1e-3)
    assert list(heatmap.x) == list(heatmap.y) == positioned_labels(pieces[:n])  # every position, no window
    assert heatmap.customdata is None and heatmap.text is None  # no string per cell; the hover reads the axes
    assert "%{y}" in heatmap.hovertemplate and "%{x}" in heatmap.hovertemplate and "%{z" in heatmap.hovertemplate
    assert figure.layout.xaxis.nticks <= 40 and figure.layout.xaxis2.matches == "x"  # thinned; keys at both ends
    assert figure.layout.height <= 900


def test_heads_are_images_and_keep_a_one_position_diagonal(tiny_model, tokenizer):
    record = run(tiny_model, tokenizer, tokens=8, capture_attention=True)
    weights = record.attention_layer(0).astype(np.float32)
    weights[:] = 0
    n = weights.shape[-1]
    weights[1, np.arange(n), np.arange(n)] = 1.0  # head 1 attends only to itself
    figure = heads_figure(weights, 0, n_kv_heads=2)
    assert [trace.type for trace in figure.data] == ["image"] * weights.shape[0]
    png = base64.b64decode(figure.data[1].source.split(",", 1)[1])
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert pixels.shape == (n, n)
    assert (np.diag(pixels) < pixels[np.triu_indices(n, 1)].min()).all()  # the diagonal drawn dark, the rest light


def test_head_view_lists_what_the_token_attends_to_and_the_sink(tiny_model, tokenizer):
    record = run(tiny_model, tokenizer, tokens=10, capture_attention=True)
    weights, pieces = record.attention_layer(1), record.all_pieces()
    query = weights.shape[-1] - 1
    figure = head_view_figure(weights, pieces, 1, query, n_kv_heads=2)
    listed = figure.data[-2]  # the key column
    keys = [int(label.split(" ")[0]) for label in listed.text]
    assert keys[0] == 0 and keys == sorted(keys)  # the first token always, in text order
    rows = weights[:, query, : query + 1].astype(np.float32)
    for h in range(rows.shape[0]):  # each head's strongest key is listed and has a line in that head's colour
        strongest = int(rows[h].argmax())
        assert strongest in keys
    assert {t.name for t in figure.data if t.showlegend} == {f"head {h}" for h in range(rows.shape[0])}
    assert f"token {query}" in figure.layout.title.text


def test_attention_text_shades_by_the_query_row(tiny_model, tokenizer):
    record = run(tiny_model, tokenizer, tokens=10, capture_attention=True)
    weights, pieces = record.attention_layer(0), record.all_pieces()
    page = attention_text_html(weights, pieces, 4, head=1)
    assert page.count('class="tok att"') == 5 and "outline:2px solid" in page  # keys 0..4, the query outlined
    assert page.count("tok att later") == weights.shape[-1] - 5 and 'class="att last"' in page
    assert f"weight {float(weights[1, 4, 2]):.3f}" in page


def test_branch_is_drawn_beside_its_run_on_the_run_s_step_numbers(tiny_model, tokenizer):
    record = run(tiny_model, tokenizer, tokens=12)
    fork, other = 5, next(a.token_id for a in record.steps[5].top if a.token_id != record.steps[5].token_id)
    child = RunRecord.start("tiny", tokenizer, record.prompt, record.branch_prompt(fork, other), {})
    for step in generate_stream(tiny_model, tokenizer, child.prompt_ids, SamplingParams(temperature=0,
                                                                                        max_new_tokens=6)):
        child.add(step)
    figure = branch_figure(record, child, fork)
    main, branch, forced = figure.data
    assert list(main.x) == list(range(12)) and list(branch.x) == list(range(fork + 1, fork + 7))
    assert branch.line.color == KEPT and list(forced.x) == [fork]
    assert forced.y[0] == pytest.approx(next(a.prob for a in record.steps[fork].top if a.token_id == other))
    assert figure.layout.shapes[0].x0 == fork  # the fork marker
