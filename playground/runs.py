"""The pieces of one run the handlers share: its prompt, where it streams (`PreparedRun`), the status line
under the output and the message a failed run shows."""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from llama_core import GenerationError, LoadedModel, SamplingParams, apply_template
from llama_core.backends import Backend, RemoteError
from llama_core.chat import chat_prompt, default_chat_template, with_system_prompt
from llama_core.generation import StepRecord, encode_prompt
from llama_core.insight.run_record import RunRecord

from .zerogpu import gpu_stream

# Attention kept for the Attention tab lives in each session's state: 2^24 fp16 elements (32 MiB)
# hold the bundled 16M model's whole 512-token window; bigger models keep what fits.
ATTENTION_BUDGET = 2**24

log = logging.getLogger(__name__)


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "allocate memory" in text))


def log_failure(record: RunRecord) -> None:
    # The traceback as text: a logged exception object would keep the run's frames, KV cache included.
    log.warning("generation failed after %d tokens\n%s", len(record.steps), traceback.format_exc())


def failure_message(error: BaseException) -> str:
    """What the user reads when a run fails part-way."""
    if is_out_of_memory(error):
        return "out of memory: reduce max_new_tokens or the prompt length, or pick a smaller model"
    if isinstance(error, (GenerationError, RemoteError)):
        return str(error)
    return f"generation failed ({type(error).__name__}: {error})"


def status_line(record: RunRecord, running: bool) -> str:
    running = running and record.stop_reason is None and record.error is None  # Stop may have ended it already
    timing = record.timing()
    if not timing["tokens"]:
        return f"⚠️ {record.error}" if record.error else "⏳ prefill…"
    rate = timing["decode_tokens_per_s"]
    parts = [f"**{timing['tokens']}** tokens", f"time to first token **{timing['ttft_s'] * 1000:.0f} ms**",
             f"**{rate:.1f}** tokens/s" if rate else "", f"seed {record.seed}"]
    if running:
        parts.append("generating…")
    elif record.error:
        parts.append(f"⚠️ stopped by an error: {record.error}")
    else:
        parts.append(f"stop: **{record.stop_reason.value if record.stop_reason else 'cancelled'}**")
    return " · ".join(p for p in parts if p)


def fitted_stream(loaded: LoadedModel, text: str, params: SamplingParams,
                  **options) -> tuple[list[int], Iterator[StepRecord]]:
    """`text`'s token ids and a local run on them, its max_new_tokens cut to what the model's context leaves:
    side by side runs two models on one setting, and the smaller window shortens its own side only."""
    ids = encode_prompt(loaded.tokenizer, text)
    budget = min(params.max_new_tokens, loaded.args.max_seq_len - len(ids))
    fitted = dataclasses.replace(params, max_new_tokens=max(1, budget))
    return ids, gpu_stream(loaded.model, loaded.tokenizer, ids, fitted, eos_ids=loaded.eos_ids, **options)


def build_prompt(tokenizer, values: dict) -> tuple[str, list[int]]:
    """The prompt text and its token ids of a checked request: a chat or a single prompt."""
    if "messages" in values:
        messages = with_system_prompt(values["messages"], values.get("system", ""))
        return chat_prompt(tokenizer, messages, values["chat_template"] or default_chat_template(tokenizer))
    full_prompt = apply_template(values["template"], values["prompt"], values["system"])
    return full_prompt, encode_prompt(tokenizer, full_prompt)


@dataclass(frozen=True)
class PreparedRun:
    """A checked request, ready to stream: where it runs, what it sends and the record it fills."""

    backend: Backend
    params: SamplingParams
    record: RunRecord
    values: dict  # the checked fields
    prompt: str | list[int]  # token ids for the local engine, text for a server (which tokenizes)
    messages: list[dict] | None  # a conversation the server renders with its own chat template
    top_n: int  # alternatives recorded per token

    def stream(self, capture_attention: bool = False) -> Iterator[StepRecord]:
        return self.backend.generate(self.prompt, self.params, top_n=self.top_n, messages=self.messages,
                                     capture_attention=capture_attention, attention_budget=ATTENTION_BUDGET)

    def finish(self) -> None:
        """After the stream: a remote record takes the fingerprint the server reported meanwhile."""
        if self.record.is_remote:
            self.record.source["fingerprint"] = self.backend.fingerprint
