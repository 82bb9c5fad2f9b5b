"""Where a model's steps run: the one interface the local engine and a remote server both offer.

The playground asks a `Backend` for a stream of `StepRecord`s and for a text's scores, and asks its
`capabilities` before drawing a view: what needs the weights (attention, the logit lens, the full distribution)
exists only locally; a remote server gives its top-n log-probabilities and, on some engines, the prompt's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..generation import DEFAULT_ATTENTION_BUDGET, StepRecord
from ..insight.scoring import TextScore
from ..sampling import SamplingParams
from ..tokenizer import Tokenizer


@dataclass(frozen=True)
class Capabilities:
    """What a backend can show."""

    attention: bool  # attention weights of each step
    logit_lens: bool  # the next-token guesses of every layer
    prompt_logprobs: bool  # a text's per-token probabilities (Score text)
    full_distribution: bool  # every token's probability, not only the top n (exact entropy, exact sampler stages)
    top_n_max: int  # the most alternatives per step it can return


@runtime_checkable
class Backend(Protocol):
    """A model that generates and scores, wherever it runs."""

    label: str  # as the model menu shows it
    origin: str  # where it runs: a checkpoint path, or the server's URL

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, or for a remote model the vocabulary of token strings seen so far."""
        ...

    def generate(self, prompt: str | list[int], params: SamplingParams, *, top_n: int = 10,
                 capture_attention: bool = False, attention_budget: int = DEFAULT_ATTENTION_BUDGET,
                 messages: list[dict] | None = None) -> Iterator[StepRecord]:
        """Yield one StepRecord per generated token; closing the generator stops the run (and its request).

        `messages`: a conversation to reply to (its chat template applied where the model runs); `prompt` is
        then ignored."""
        ...

    def score(self, text: str) -> TextScore | None:
        """Each token's probability given the ones before it; None where the backend cannot tell."""
        ...

    def describe(self) -> dict:
        """Who made a run, for reports: the weights' fingerprint locally, the server, model id and its
        fingerprint remotely. Never holds a secret."""
        ...
