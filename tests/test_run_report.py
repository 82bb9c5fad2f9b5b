import base64
import gzip
import json
from pathlib import Path

import plotly
import pytest
import torch

from llama_core.generation import encode_prompt, generate_stream
from llama_core.loading import LoadedModel
from llama_core.insight.report_page import MAX_PAGE_BYTES, Branch
from llama_core.insight.run_record import RunRecord
from llama_core.insight.run_report import build_report, replay, report_html, weights_fingerprint
from llama_core.sampling import SamplingParams


@pytest.fixture
def loaded(tiny_model, tokenizer):
    return LoadedModel(tiny_model, tokenizer, "hf", "tiny", None, tiny_model.args, torch.float32,
                       sum(p.numel() for p in tiny_model.parameters()), 0, None)


def make_run(loaded, attention: bool = False, **settings) -> RunRecord:
    params = SamplingParams(**{"max_new_tokens": 10, **settings})
    ids = encode_prompt(loaded.tokenizer, "Alice was")
    record = RunRecord.start("tiny", loaded.tokenizer, "Alice was", ids, {"template": "plain", "system": "",
                                                                          **params.__dict__})
    for step in generate_stream(loaded.model, loaded.tokenizer, ids, params, capture_attention=attention, top_n=10):
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
    record = make_run(loaded, temperature=0.0, attention=True)
    child = RunRecord.start("tiny", loaded.tokenizer, record.prompt, record.branch_prompt(3, record.steps[3].top[1].token_id),
                            record.settings)
    for step in generate_stream(loaded.model, loaded.tokenizer, child.prompt_ids, SamplingParams(max_new_tokens=4)):
        child.add(step)
    branches = [Branch(3, child.prompt_ids[-1], child)]
    report = build_report(record, loaded, branches)
    page = report_html(report, record, selected_step=4, branches=branches)
    assert "src=\"http" not in page and "src='http" not in page  # no CDN
    embedded = page.split("id='run-report'>")[1].split("</script>")[0]
    assert json.loads(embedded)["tokens"] == report["tokens"]
    assert json.loads(embedded)["branches"][0]["fork_step"] == 3
    # The coloured tokens with their alternatives, the selected step's attention and the branch are in the page.
    assert page.count('class="tok"') == len(record.steps) and "top: " in page
    assert "Attention at step 4" in page and page.count('class="tok att') == record.attention_shape[2]
    assert "Branch 1: step 3" in page
    # plotly.js once, gzip-compressed: it inflates to the very file plotly ships.
    packed = page.split("id='plotly-js'>")[1].split("</script>")[0]
    shipped = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    assert gzip.decompress(base64.b64decode(packed)) == shipped and page.count("id='plotly-js'") == 1
    assert page.count('class="figure"') == 2  # confidence, and the branch beside its run


def test_a_long_run_with_branches_stays_under_the_report_budget(loaded):
    record = make_run(loaded, max_new_tokens=100, temperature=1.0, top_k=40, top_p=0.9, min_p=0.02,
                      repetition_penalty=1.1, attention=True)
    children = []
    for fork in (10, 40, 80):
        child = RunRecord.start("tiny", loaded.tokenizer, record.prompt,
                                record.branch_prompt(fork, record.steps[fork].top[1].token_id), record.settings)
        for step in generate_stream(loaded.model, loaded.tokenizer, child.prompt_ids, SamplingParams(max_new_tokens=20)):
            child.add(step)
        children.append(Branch(fork, child.prompt_ids[-1], child))
    report = build_report(record, loaded, children)
    page = report_html(report, record, selected_step=50, branches=children)
    # plotly.js is ~1.96 MB of it (gzip + base64); the budget is 5 MB for the whole page.
    assert len(page.encode()) <= MAX_PAGE_BYTES
