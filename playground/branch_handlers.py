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

from llama_core.backends import RemoteError
from llama_core.errors import CheckpointError, TokenizerError
from llama_core.insight.report_page import Branch
from llama_core.insight.run_figures import branch_figure
from llama_core.insight.run_record import RunRecord, sampler_of
from llama_core.insight.run_report import build_report, replay, replay_remote, report_html, server_chat_messages
from llama_core.token_display import plain_label

from .registry import ModelRegistry
from .remote_runs import start_record
from .zerogpu import gpu_stream

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


def _budget(record: RunRecord, step_index: int, context: int | None, prompt_length: int) -> int:
    """The tokens a branch may add: what the run had left after the fork, within the context window."""
    budget = max(1, int(record.settings.get("max_new_tokens", 32)) - step_index - 1)
    if context is not None:
        budget = min(budget, context - prompt_length)
    if budget < 1:
        raise gr.Error("the context window is full at that point: nothing left to generate")
    return budget


def local_branch(registry: ModelRegistry, record: RunRecord, step_index: int, token_id: int) -> RunRecord:
    loaded = _loaded(registry, record.model_name)
    prompt_ids = record.branch_prompt(step_index, token_id)
    budget = _budget(record, step_index, loaded.args.max_seq_len, len(prompt_ids))
    child = RunRecord.start(record.model_name, loaded.tokenizer, record.prompt, prompt_ids, record.settings)
    for step in gpu_stream(loaded.model, loaded.tokenizer, prompt_ids, sampler_of(record.settings, record.seed, budget),
                           eos_ids=loaded.eos_ids):
        child.add(step)
    return child


def remote_branch(registry: ModelRegistry, record: RunRecord, step_index: int, token_id: int) -> RunRecord:
    """A new request to the run's server: the prompt text, the run's text before the fork and the forced token.
    The branch's record holds those generated tokens and the forced one as its prompt (the run's own prompt has
    no tokens here), so it reads as a local branch does."""
    if server_chat_messages(record.settings) is not None:
        raise gr.Error("a reply rendered by the server's own chat template cannot be branched: the chat endpoint "
                       "starts every reply afresh. Choose a built-in chat template (rendered here, sent as text) "
                       "or use the Generate tab to branch.")
    if record.model_name not in registry.choices or not registry.is_remote(record.model_name):
        raise gr.Error(f"{record.model_name} is not offered by this app any more: nothing to branch with")
    remote = registry.remote(record.model_name)
    vocabulary = remote.tokenizer
    prefix_ids = record.branch_prompt(step_index, token_id)[record.n_prompt:]
    budget = _budget(record, step_index, None, 0)  # the server knows its window, and says when it is full
    child = start_record(record.model_name, remote, record.prompt, record.settings, record.source["top_n"])
    child.prompt_ids, child.prompt_pieces = prefix_ids, [vocabulary.piece(i) for i in prefix_ids]
    stream = remote.generate(record.prompt + vocabulary.decode(prefix_ids), sampler_of(record.settings, record.seed,
                                                                                       budget),
                             top_n=record.source["top_n"])
    try:
        for step in stream:
            child.add(step)
    except RemoteError as error:
        if not child.steps:
            raise gr.Error(str(error)) from None
        child.error = str(error)  # what came before the fault is kept, as in a run
        gr.Warning(child.error)
    finally:
        stream.close()
    return child


def make_branch_handlers(registry: ModelRegistry):
    def branch(record: RunRecord | None, step_index, token_id, branches: list | None):
        """Continue the run from `step_index` with `token_id` forced there, same sampler and seed:
        (branch list, branch menu, the run's text, the branch's text, the branch beside the run)."""
        if record is None or not record.steps or token_id is None:
            raise gr.Error("Generate first, click a token, then pick an alternative to branch from")
        step_index, token_id = int(step_index), int(token_id)
        if record.is_remote:
            child = remote_branch(registry, record, step_index, token_id)
        else:
            child = local_branch(registry, record, step_index, token_id)
        forced = child.all_pieces()[child.n_prompt - 1]
        branches = list(branches or [])
        label = f"branch {len(branches) + 1}: step {step_index} → {plain_label(forced)!r}"
        entry = {"label": label, "step": step_index, "token_id": token_id, "record": child,
                 "text": generated_text(child.tokenizer, record, child)}
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
        loaded = None if record.is_remote else _loaded(registry, record.model_name)  # a remote run names its server
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
            remote = report["model_identity"].get("kind") == "remote"
            if remote != registry.is_remote(label):
                raise ValueError(f"it was made by a {'remote' if remote else 'local'} model, and {label} here is not")
            if remote:
                result = replay_remote(report, registry.remote(label))
            else:
                result = replay(report, _loaded(registry, label))
        except RemoteError as error:
            raise gr.Error(f"the replay failed: {error}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise gr.Error(f"not a run report of this app: {error}") from None
        verdict = ("✅ replayed: the same tokens" if result["tokens_match"]
                   else f"❌ tokens differ from token {result['first_difference']}")
        if remote:
            same = result["same_fingerprint"]
            weights = ("the server reports no fingerprint" if same is None else
                       "the same server fingerprint" if same else "a different server fingerprint than the report's")
        else:
            weights = "the same weights" if result["same_weights"] else "different weights than the report's"
        return f"{verdict} ({len(result['expected'])} tokens, {label}, {weights})"

    return {"branch": branch, "show_branch": show_branch, "export_report": export_report,
            "import_report": import_report}
