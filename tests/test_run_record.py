import numpy as np
import pytest
import torch
from numerics import FP32_REORDER, assert_greedy_is_robust

from llama_core.generation import generate_stream
from llama_core.insight.run_figures import alternatives_figure, attention_figure, heads_figure, token_html, visible_piece
from llama_core.insight.run_record import RunRecord
from llama_core.sampling import SamplingParams
from llama_core.token_display import positioned_labels

pytestmark = pytest.mark.numerics


PROMPT = "In the beginning God"


def record_of(model, tokenizer, **kwargs) -> RunRecord:
    ids = tokenizer.encode(PROMPT)
    record = RunRecord.start("tiny", tokenizer, PROMPT, ids, {})
    for step in generate_stream(model, tokenizer, ids, SamplingParams(temperature=0, max_new_tokens=6), **kwargs):
        record.add(step)
    return record


def test_stitched_attention_equals_one_full_forward_of_the_same_tokens(tiny_model, tokenizer):
    record = record_of(tiny_model, tokenizer, capture_attention=True)
    matrix = record.attention_matrix()
    tokens = record.prompt_ids + [s.token_id for s in record.steps[:-1]]  # the last token was never a query
    assert matrix.shape == (2, 4, len(tokens), len(tokens))
    with torch.no_grad():
        full = tiny_model(torch.tensor([tokens]), capture_attention=True).attention
    expected = torch.stack([a[0] for a in full]).numpy()
    np.testing.assert_allclose(matrix.astype(np.float32), expected, atol=2e-3)
    assert all(s.attention is None for s in record.steps)  # rows are kept once, in the record


def test_summary_and_timing(tiny_model, tokenizer):
    record = record_of(tiny_model, tokenizer)
    summary = record.to_dict()
    assert summary["stop_reason"] == "length" and len(summary["tokens"]) == 6
    assert summary["text"] == "".join(t["text"] for t in summary["tokens"])
    assert summary["timing"]["tokens"] == 6 and summary["timing"]["ttft_s"] <= summary["timing"]["total_s"]
    assert record.attention_matrix() is None


def test_figures_show_the_run(tiny_model, tokenizer):
    record = record_of(tiny_model, tokenizer, capture_attention=True)
    page = token_html(record, selected=2)
    assert page.count('class="tok"') == 6 and 'data-index="2"' in page and "outline:2px" in page
    assert "&lt;s&gt;" in page  # the prompt's BOS shown literally, escaped
    bars = alternatives_figure(record, 2)
    chosen = record.steps[2]
    assert "chose" in bars.layout.title.text
    by_name = {trace.name: trace for trace in bars.data}
    sampled = by_name["the sampled token"]
    assert [t for t in sampled.text if t] == ["chosen"]
    assert sampled.y[sampled.text.index("chosen")].endswith(f"#{chosen.token_id}")
    layer = record.attention_layer(1)
    np.testing.assert_array_equal(layer, record.attention_matrix()[1])  # one layer, assembled alone
    heatmap = attention_figure(layer, record.all_pieces(), layer=1, head=None)
    size = layer.shape[-1]
    assert list(heatmap.data[0].y) == positioned_labels(record.all_pieces()[:size])
    assert heatmap.data[0].y[0] == "0 &lt;s&gt;"  # escaped: Plotly would read <s> as a strikethrough tag
    assert visible_piece(" the") == "·the" and visible_piece("\n") == "↵" and visible_piece("x") == "x"
    assert len(heads_figure(record.attention_matrix(), 0, n_kv_heads=2).data) == 4


def test_branching_with_the_greedy_choice_reproduces_the_greedy_run(tiny_model, tokenizer):
    from llama_core.generation import encode_prompt, generate_stream
    from llama_core.sampling import SamplingParams

    ids = encode_prompt(tokenizer, "Alice was")
    record = RunRecord.start("tiny", tokenizer, "Alice was", ids, {})
    for step in generate_stream(tiny_model, tokenizer, ids, SamplingParams(temperature=0, max_new_tokens=12)):
        record.add(step)
    greedy = [s.token_id for s in record.steps]
    branch = record.branch_prompt(4, greedy[4])
    rest = [s.token_id for s in generate_stream(tiny_model, tokenizer, branch,
                                                SamplingParams(temperature=0, max_new_tokens=7))]
    # The branch re-reads its prefix in one prefill where the run decoded it token by token: the same
    # tokens follow where no top-2 gap is within the rounding of the two summation orders.
    with torch.no_grad():
        full = tiny_model(torch.tensor([ids + greedy[:-1]])).logits[0, len(ids) - 1:]
    assert_greedy_is_robust(full, FP32_REORDER, "branch vs greedy run")
    assert branch[len(ids):] + rest == greedy
    other = next(a.token_id for a in record.steps[4].top if a.token_id != greedy[4])
    assert record.branch_prompt(4, other)[-1] == other and len(record.branch_prompt(4, other)) == len(ids) + 5


def test_a_token_without_probabilities_is_null_in_the_json():
    """A server that sends no log-probabilities (older Ollama) leaves NaN in the step: JSON has no NaN, so null."""
    import json
    import math

    from llama_core.backends import PieceVocabulary
    from llama_core.generation import StepRecord
    from llama_core.insight.run_record import RunRecord

    vocabulary = PieceVocabulary("http://server:1")
    record = RunRecord.start("remote", vocabulary, "Hi", [], {})
    nan = math.nan
    record.add(StepRecord(index=0, token_id=vocabulary.add(" there"), piece=" there", text=" there", prob=nan,
                          prob_filtered=nan, logprob=nan, entropy=nan, top=(), elapsed_s=0.1, seed=1))
    token = json.loads(json.dumps(record.to_dict(), allow_nan=False))["tokens"][0]
    assert token["text"] == " there" and token["prob"] is None and token["logprob"] is None
