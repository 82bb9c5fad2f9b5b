"""A run as a shareable report: JSON that identifies the weights and replays to the same tokens
(the self-contained HTML page is llama_core.report_page)."""

from __future__ import annotations

import hashlib

import torch

from .generation import generate_stream
from .loading import LoadedModel
from .report_page import Branch, branch_entries, report_html  # noqa: F401 (report_html: its callers import it here)
from .run_record import RunRecord, sampler_of
from .sampling import SamplingParams

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


def build_report(record: RunRecord, loaded: LoadedModel, branches: list[Branch] = ()) -> dict:
    """The run's own data plus who made it (model identity with a weights fingerprint), and its branches."""
    model = {"name": record.model_name, "source": loaded.source, "format": loaded.format,
             "parameters": loaded.n_params, "dtype": str(loaded.dtype).removeprefix("torch."),
             "weights": weights_fingerprint(loaded.model), "config": loaded.args.to_dict()}
    return {"report_version": REPORT_VERSION, "model_identity": model, **record.to_dict(),
            "branches": branch_entries(list(branches))}


def sampling_params_of(report: dict) -> SamplingParams:
    """The exact sampler of a reported run; a run cut short by Stop replays as far as it went."""
    return sampler_of(report["settings"], report["seed"], max(1, len(report["tokens"])))


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
