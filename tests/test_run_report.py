import json

import pytest
import torch

from llama_core.generation import encode_prompt, generate_stream
from llama_core.loading import LoadedModel
from llama_core.run_figures import probability_entropy_figure
from llama_core.run_record import RunRecord
from llama_core.run_report import build_report, replay, report_html, weights_fingerprint
from llama_core.sampling import SamplingParams


@pytest.fixture
def loaded(tiny_model, tokenizer):
    return LoadedModel(tiny_model, tokenizer, "hf", "tiny", None, tiny_model.args, torch.float32,
                       sum(p.numel() for p in tiny_model.parameters()), 0, None)


def make_run(loaded, **settings) -> RunRecord:
    params = SamplingParams(max_new_tokens=10, **settings)
    ids = encode_prompt(loaded.tokenizer, "Alice was")
    record = RunRecord.start("tiny", loaded.tokenizer, "Alice was", ids, {"template": "plain", "system": "",
                                                                          **params.__dict__})
    for step in generate_stream(loaded.model, loaded.tokenizer, ids, params):
        record.add(step)
    return record


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {"temperature": 0.9, "top_k": 20, "seed": 11}])
def test_an_exported_run_replays_to_the_same_tokens(loaded, settings):
    report = json.loads(json.dumps(build_report(make_run(loaded, **settings), loaded)))  # through JSON and back
    result = replay(report, loaded)
    assert result["tokens_match"] and result["same_weights"] and result["first_difference"] is None


def test_a_random_seed_run_records_the_seed_it_used_and_replays(loaded):
    report = build_report(make_run(loaded, temperature=1.0), loaded)
    assert isinstance(report["seed"], int) and replay(report, loaded)["tokens_match"]


def test_replay_on_other_weights_says_so(loaded, tiny_model):
    report = build_report(make_run(loaded, temperature=0.0), loaded)
    other = type(tiny_model)(tiny_model.args).eval().requires_grad_(False)
    changed = LoadedModel(other, loaded.tokenizer, "hf", "other", None, other.args, torch.float32, 0, 0, None)
    result = replay(report, changed)
    assert not result["same_weights"]
    assert weights_fingerprint(other) != weights_fingerprint(tiny_model)


def test_html_report_is_self_contained_and_embeds_the_json(loaded):
    record = make_run(loaded, temperature=0.0)
    report = build_report(record, loaded)
    page = report_html(report, [probability_entropy_figure(record)])
    assert "<script type='application/json' id='run-report'>" in page and "plotly" in page.lower()
    assert "src=\"http" not in page  # no CDN: plotly.js is inlined
    embedded = page.split("id='run-report'>")[1].split("</script>")[0]
    assert json.loads(embedded)["tokens"] == report["tokens"]
