"""A finished (or stopped) generation as plain data: what the UI draws and the API returns."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..generation import StepRecord, StopReason
from ..sampling import SamplingParams
from ..token_display import display_tokens
from ..tokenizer import Tokenizer


def sampler_of(settings: dict, seed: int | None, max_new_tokens: int) -> SamplingParams:
    """The sampler of a recorded run (its settings, as `RunRecord.settings` or a report holds them)
    with the seed it actually used, for `max_new_tokens` more tokens: to replay or branch it."""
    fields = {f.name for f in dataclasses.fields(SamplingParams)}
    chosen = {k: v for k, v in settings.items() if k in fields}
    return SamplingParams(**{**chosen, "stop": tuple(chosen.get("stop") or ()), "seed": seed,
                             "max_new_tokens": max_new_tokens})


@dataclass
class RunRecord:
    """Everything a run produced, accumulated one `StepRecord` at a time.

    Attention rows arrive as the prompt's square (L, H, P, P) and then one row per decode step;
    `attention_matrix` stitches them into one lower-triangular (L, H, Q, Q) array over the
    Q positions that were processed as queries (the prompt and all generated tokens but the last).
    """

    model_name: str
    prompt: str
    prompt_ids: list[int]
    prompt_pieces: list[str]
    settings: dict
    steps: list[StepRecord] = field(default_factory=list)
    stop_reason: StopReason | None = None
    error: str | None = None
    _attention_rows: list[np.ndarray] = field(default_factory=list, repr=False)
    # Display strings need the whole sequence (a character may span tokens), so the record keeps its tokenizer.
    tokenizer: Tokenizer | None = field(default=None, repr=False, compare=False)
    # Where the run ran: None for the local engine; for a remote server (llama_core.backends.RemoteModel.source)
    # {"kind": "remote", "server": url, "model": id, "fingerprint": ..., "top_n": n}.
    source: dict | None = None

    @classmethod
    def start(cls, model_name: str, tokenizer: Tokenizer, prompt: str, prompt_ids: list[int], settings: dict,
              source: dict | None = None):
        return cls(model_name, prompt, prompt_ids, [tokenizer.piece(i) for i in prompt_ids], settings,
                   tokenizer=tokenizer, source=source)

    @property
    def is_remote(self) -> bool:
        """Made by a remote server: probabilities are its top-n, and nothing that needs the weights exists."""
        return bool(self.source) and self.source.get("kind") == "remote"

    def add(self, step: StepRecord) -> None:
        if step.attention is not None:
            self._attention_rows.append(step.attention.float().numpy().astype(np.float16))
        # The record keeps the step without its attention tensor: the rows live here, once.
        self.steps.append(dataclasses.replace(step, attention=None))
        if step.stop_reason is not None:
            self.stop_reason = step.stop_reason

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)

    @property
    def seed(self) -> int | None:
        return self.steps[0].seed if self.steps else None

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)

    def timing(self) -> dict:
        """Time to first token, decode rate (excluding the prefill) and totals."""
        if not self.steps:
            return {"tokens": 0}
        first, last = self.steps[0].elapsed_s, self.steps[-1].elapsed_s
        decode = (len(self.steps) - 1) / (last - first) if len(self.steps) > 1 and last > first else None
        return {"tokens": len(self.steps), "ttft_s": first, "total_s": last, "decode_tokens_per_s": decode}

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + [s.token_id for s in self.steps]

    def all_pieces(self) -> list[str]:
        """The display string of every position, prompt then generated (see llama_core.token_display)."""
        return display_tokens(self.tokenizer, self.token_ids, self.prompt_pieces + [s.piece for s in self.steps])

    def generated_pieces(self) -> list[str]:
        """The display strings of the generated tokens, read in context (a character split over tokens whole)."""
        return self.all_pieces()[self.n_prompt :]

    @property
    def attention_shape(self) -> tuple[int, int, int] | None:
        """(layers, heads, query positions) of the attention captured, or None."""
        if not self._attention_rows:
            return None
        layers, heads, n_queries = self._attention_rows[0].shape[:3]
        return layers, heads, n_queries + len(self._attention_rows) - 1

    def attention_layer(self, layer: int) -> np.ndarray | None:
        """(H, Q, Q) fp16 attention of one layer: what one view draws, an L-th of the whole matrix."""
        if not self._attention_rows:
            return None
        first = self._attention_rows[0][layer]
        heads, n_queries = first.shape[:2]
        size = n_queries + len(self._attention_rows) - 1
        weights = np.zeros((heads, size, size), dtype=np.float16)
        weights[:, :n_queries, :n_queries] = first
        for i, row in enumerate(self._attention_rows[1:]):
            weights[:, n_queries + i, : row.shape[-1]] = row[layer, :, 0, :]
        return weights

    def attention_matrix(self) -> np.ndarray | None:
        """(L, H, Q, Q) fp16 attention over the positions captured, or None if nothing was."""
        if not self._attention_rows:
            return None
        first = self._attention_rows[0]
        layers, heads, n_queries = first.shape[:3]
        size = n_queries + len(self._attention_rows) - 1
        matrix = np.zeros((layers, heads, size, size), dtype=np.float16)
        matrix[:, :, :n_queries, :n_queries] = first
        for i, row in enumerate(self._attention_rows[1:]):
            q = n_queries + i
            matrix[:, :, q, : row.shape[-1]] = row[:, :, 0, :]
        return matrix

    def branch_prompt(self, step_index: int, token_id: int) -> list[int]:
        """Token ids to continue from if step `step_index` had chosen `token_id` instead: the
        prompt, the tokens generated before that step, then the forced token."""
        if not 0 <= step_index < len(self.steps):
            raise IndexError(f"step {step_index} is not in this run of {len(self.steps)} tokens")
        return self.prompt_ids + [s.token_id for s in self.steps[:step_index]] + [token_id]

    def to_dict(self) -> dict:
        """JSON-ready summary: settings, timings and each token with its alternatives."""
        return {
            "model": self.model_name,
            "source": self.source,
            "prompt": self.prompt,
            "prompt_tokens": [{"token_id": i, "piece": p} for i, p in zip(self.prompt_ids, self.prompt_pieces)],
            "settings": self.settings,
            "seed": self.seed,
            "text": self.text,
            "stop_reason": self.stop_reason.value if self.stop_reason else ("error" if self.error else None),
            "error": self.error,
            "timing": self.timing(),
            "tokens": [
                {"token_id": s.token_id, "piece": s.piece, "text": s.text, "prob": _json_number(s.prob),
                 "prob_filtered": _json_number(s.prob_filtered), "logprob": _json_number(s.logprob),
                 "entropy": _json_number(s.entropy),
                 "elapsed_s": s.elapsed_s,
                 "top": [[a.token_id, a.piece, a.prob, a.prob_filtered] for a in s.top],
                 "stages": [[name, list(values)] for name, values in s.stages]}
                for s in self.steps
            ],
        }


def _json_number(value: float) -> float | None:
    """A probability as JSON has it: a server that sends no log-probabilities leaves NaN, which JSON cannot carry."""
    return value if math.isfinite(value) else None
