"""A run as a shareable report: JSON that identifies the weights and replays to the same tokens
(the self-contained HTML page is llama_core.insight.report_page).

A run made on a remote server has no weights here to hash: its report names the server, the model's id there
and the fingerprint the server reported (`system_fingerprint`, when it sends one), and its replay asks the
same server again and compares the tokens by their text (the ids of a remote run are numbered as the token
strings arrive, so they mean nothing in another process).
"""

from __future__ import annotations

import hashlib

import torch

from ..chat import MODEL_TEMPLATE, with_system_prompt
from ..generation import generate_stream
from ..loading import LoadedModel
from ..sampling import SamplingParams
from .report_page import Branch, branch_entries, report_html  # noqa: F401 (report_html: its callers import it here)
from .run_record import RunRecord, sampler_of

REPORT_VERSION = 1
FULL_HASH_LIMIT = 2**31  # bytes: above this, hash a strided sample of each tensor (a 65B model is 130 GB)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every tensor's name, shape, dtype and bytes (a fixed sample of the bytes for
    huge models), so two reports can tell whether they ran on the same weights."""
    state = model.state_dict()
    total = sum(t.numel() * t.element_size() for t in state.values())
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        flat = tensor.reshape(-1)
        if total > FULL_HASH_LIMIT:
            flat = flat[:: max(1, flat.numel() // 4096)]
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return ("sha256:" if total <= FULL_HASH_LIMIT else "sha256-sampled:") + digest.hexdigest()


def remote_identity(record: RunRecord) -> dict:
    """Who made a remote run: the server, the model id there, the server's fingerprint and the top-n read."""
    source = record.source
    return {"name": record.model_name, "kind": "remote", "server": source["server"], "model": source["model"],
            "fingerprint": source.get("fingerprint"), "top_n": source.get("top_n")}


def build_report(record: RunRecord, loaded: LoadedModel | None, branches: list[Branch] = ()) -> dict:
    """The run's own data plus who made it (model identity with a weights fingerprint, or for a remote run the
    server, model id and server fingerprint; `loaded` is then None), and its branches."""
    if record.is_remote:
        model = remote_identity(record)
    else:
        model = {"name": record.model_name, "source": loaded.source, "format": loaded.format,
                 "parameters": loaded.n_params, "dtype": str(loaded.dtype).removeprefix("torch."),
                 "weights": weights_fingerprint(loaded.model), "config": loaded.args.to_dict()}
    return {"report_version": REPORT_VERSION, "model_identity": model, **record.to_dict(),
            "branches": branch_entries(list(branches))}


def sampling_params_of(report: dict) -> SamplingParams:
    """The exact sampler of a reported run; a run cut short by Stop replays as far as it went."""
    return sampler_of(report["settings"], report["seed"], max(1, len(report["tokens"])))


def server_chat_messages(settings: dict) -> list[dict] | None:
    """The conversation a remote chat run sends to the server's chat endpoint (the system prompt first), or None
    where the prompt goes as text: a single prompt, or a conversation a built-in template rendered here."""
    if "messages" not in settings or settings.get("chat_template", "") not in ("", MODEL_TEMPLATE):
        return None
    return with_system_prompt([dict(m) for m in settings["messages"]], settings.get("system") or "")


def _first_difference(expected: list, produced: list) -> int | None:
    first = next((i for i, (a, b) in enumerate(zip(expected, produced)) if a != b), None)
    if first is None and len(expected) != len(produced):
        first = min(len(expected), len(produced))  # one run stopped where the other went on
    return first


def replay_remote(report: dict, backend) -> dict:
    """Ask the server the reported request again (`backend`: the RemoteModel of the report's model) and compare
    the tokens by their text; `same_fingerprint` is None when either run's server reported none."""
    if report.get("report_version") != REPORT_VERSION:
        raise ValueError(f"unsupported report version {report.get('report_version')!r} (expected {REPORT_VERSION})")
    identity, settings = report["model_identity"], report["settings"]
    if identity.get("kind") != "remote":
        raise ValueError("this report's run was made by a local model, not on a server")
    messages = server_chat_messages(settings)
    expected = [t["piece"] for t in report["tokens"]]
    stream = backend.generate(report["prompt"], sampling_params_of(report), top_n=int(identity.get("top_n") or 1),
                              messages=messages)
    try:
        produced = [step.piece for step, _ in zip(stream, range(len(expected)))]
    finally:
        stream.close()
    theirs, ours = identity.get("fingerprint"), backend.describe().get("fingerprint")
    return {"tokens_match": produced == expected, "first_difference": _first_difference(expected, produced),
            "expected": expected, "produced": produced, "same_weights": None,
            "same_fingerprint": None if theirs is None or ours is None else theirs == ours}


def replay(report: dict, loaded: LoadedModel) -> dict:
    """Run the reported prompt tokens and sampler again; say whether the same tokens come out."""
    if report.get("report_version") != REPORT_VERSION:
        raise ValueError(f"unsupported report version {report.get('report_version')!r} (expected {REPORT_VERSION})")
    prompt_ids = [t["token_id"] for t in report["prompt_tokens"]]
    expected = [t["token_id"] for t in report["tokens"]]
    produced = [s.token_id for s in generate_stream(loaded.model, loaded.tokenizer, prompt_ids,
                                                    sampling_params_of(report), eos_ids=loaded.eos_ids)][: len(expected)]
    first_difference = next((i for i, (a, b) in enumerate(zip(expected, produced)) if a != b), None)
    same_weights = report["model_identity"]["weights"] == weights_fingerprint(loaded.model)
    return {"tokens_match": produced == expected, "first_difference": first_difference, "expected": expected,
            "produced": produced, "same_weights": same_weights}
