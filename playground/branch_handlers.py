"""Handlers of branching and run reports: continue the latest run from a step with another token,
show a branch beside its run, export the run (with its branches) and replay an exported one.

A branch is {"label", "step", "token_id", "text", "record"} in the session's branch list; the list
is emptied by every new run, so a branch always belongs to the run in the session state.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr

from llama_core import generate_stream
from llama_core.errors import CheckpointError, TokenizerError
from llama_core.report_page import Branch
from llama_core.run_figures import branch_figure
from llama_core.run_record import RunRecord, sampler_of
from llama_core.run_report import build_report, replay, report_html
from llama_core.token_display import plain_label

from .registry import ModelRegistry

MAX_REPORT_BYTES = 1_000_000  # the app's upload cap; a report of a full-context run is ~200 kB


def _loaded(registry: ModelRegistry, label: str):
    try:
        return registry.load(label)
    except (CheckpointError, TokenizerError, KeyError) as error:
        raise gr.Error(f"Could not load {label}: {error}") from None


def generated_text(tokenizer, record: RunRecord, child: RunRecord) -> str:
    """A branch's text after the main run's prompt: the run before the fork, the forced token, what followed.
    Decoded whole and cut after the prompt's own text, so a character split over the fork stays whole."""
    ids = child.token_ids
    return tokenizer.decode(ids)[len(tokenizer.decode(record.prompt_ids)):]


def make_branch_handlers(registry: ModelRegistry):
    def branch(record: RunRecord | None, step_index, token_id, branches: list | None):
        """Continue the run from `step_index` with `token_id` forced there, same sampler and seed:
        (branch list, branch menu, the run's text, the branch's text, the branch beside the run)."""
        if record is None or not record.steps or token_id is None:
            raise gr.Error("Generate first, click a token, then pick an alternative to branch from")
        loaded = _loaded(registry, record.model_name)
        step_index, token_id = int(step_index), int(token_id)
        prompt_ids = record.branch_prompt(step_index, token_id)
        budget = max(1, int(record.settings.get("max_new_tokens", 32)) - step_index - 1)
        budget = min(budget, loaded.args.max_seq_len - len(prompt_ids))
        if budget < 1:
            raise gr.Error("the context window is full at that point: nothing left to generate")
        child = RunRecord.start(record.model_name, loaded.tokenizer, record.prompt, prompt_ids, record.settings)
        for step in generate_stream(loaded.model, loaded.tokenizer, prompt_ids,
                                    sampler_of(record.settings, record.seed, budget), eos_ids=loaded.eos_ids):
            child.add(step)
        forced = child.all_pieces()[child.n_prompt - 1]
        branches = list(branches or [])
        label = f"branch {len(branches) + 1}: step {step_index} → {plain_label(forced)!r}"
        entry = {"label": label, "step": step_index, "token_id": token_id, "record": child,
                 "text": generated_text(loaded.tokenizer, record, child)}
        branches.append(entry)
        return (branches, gr.update(choices=[b["label"] for b in branches], value=label), record.text, entry["text"],
                branch_figure(record, child, step_index))

    def show_branch(label: str, branches: list | None, record: RunRecord | None):
        chosen = next((b for b in branches or [] if b["label"] == label), None)
        if chosen is None or record is None:
            return gr.skip(), gr.skip(), gr.skip()
        return record.text, chosen["text"], branch_figure(record, chosen["record"], chosen["step"])

    def export_report(record: RunRecord | None, selected_step, branches: list | None):
        """The run as JSON and as one HTML page (its branches and the selected step's attention in both)."""
        if record is None or not record.steps:
            raise gr.Error("Generate first: there is no run to export")
        loaded = _loaded(registry, record.model_name)
        kept = [Branch(b["step"], b["token_id"], b["record"]) for b in branches or []]
        report = build_report(record, loaded, kept)
        folder = Path(tempfile.mkdtemp(prefix="run-report-"))
        json_path, html_path = folder / "run.json", folder / "run.html"
        json_path.write_text(json.dumps(report, ensure_ascii=False))
        html_path.write_text(report_html(report, record, int(selected_step or 0), kept), encoding="utf-8")
        return [str(json_path), str(html_path)]

    def import_report(path: str | None):
        if not path:
            raise gr.Error("choose a run JSON exported from this app")
        data = Path(path).read_bytes()
        if len(data) > MAX_REPORT_BYTES:
            raise gr.Error(f"report must be at most {MAX_REPORT_BYTES:,} bytes, got {len(data):,}")
        try:
            report = json.loads(data)
            label = report["model"]
            if not isinstance(label, str) or label not in registry.choices:
                raise ValueError(f"its model {label!r} is not offered here")
            result = replay(report, _loaded(registry, label))
        except (ValueError, KeyError, TypeError) as error:
            raise gr.Error(f"not a run report of this app: {error}") from None
        verdict = ("✅ replayed: the same tokens" if result["tokens_match"]
                   else f"❌ tokens differ from token {result['first_difference']}")
        weights = "the same weights" if result["same_weights"] else "different weights than the report's"
        return f"{verdict} ({len(result['expected'])} tokens, {label}, {weights})"

    return {"branch": branch, "show_branch": show_branch, "export_report": export_report,
            "import_report": import_report}
