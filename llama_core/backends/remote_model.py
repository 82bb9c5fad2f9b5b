"""A model served by a remote OpenAI-compatible server, behind the same Backend interface as the local engine.

What the server's answers allow carries over (see `remote_steps`): the tokens, their probabilities and top-n
alternatives, a lower bound of the entropy, the sampler pipeline recomputed on the top-n, the prompt's scores
where the server echoes them. What needs the weights (attention, logit lens, the full distribution) does not.

Token ids are the `PieceVocabulary`'s: the server's tokenizer is not here, so a prompt is held as one piece
(`prompt_ids`) and a token-id prompt (a branch: prompt + generated tokens + a forced one) goes back to the
server as the text those pieces spell.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterator

from ..chat import check_messages
from ..errors import ParameterError
from ..generation import DEFAULT_ATTENTION_BUDGET, MAX_PROMPT_CHARS, StepRecord
from ..insight.scoring import ScoredToken, TextScore
from ..sampling import SamplingParams
from .base import Capabilities
from .piece_vocabulary import PieceVocabulary
from .remote_client import RemoteModelInfo, RemoteServer
from .remote_config import RemoteConfig
from .remote_events import RemoteToken
from .remote_steps import remote_step_records

REMOTE_TOP_N_MAX = 20  # vLLM's limit for logprobs; llama.cpp and OpenAI's API cap top_logprobs at 20 too
SCORE_TOP_N = 5  # alternatives per position in Score text, as the local scorer shows


class RemoteModel:
    """One model of one server (see the module docstring)."""

    def __init__(self, server: RemoteServer, info: RemoteModelInfo):
        self.server, self.info = server, info
        self.model_id = info.id
        self.label = f"{info.id} (remote: {server.config.host})"
        self.origin = server.url
        self.context_length = info.context_length
        self.vocabulary = PieceVocabulary(f"{info.id} at {server.url}")
        self.fingerprint: str | None = None  # the server's system_fingerprint, once one has been seen
        self.score_note: str | None = None  # why score() returned None, when it did
        self._prompt_logprobs: bool | None = None  # None until a score() has asked the server

    def __repr__(self) -> str:
        return f"RemoteModel({self.model_id!r} at {self.server.url})"

    @property
    def capabilities(self) -> Capabilities:
        """Prompt log-probabilities count as available until a score() finds the server has none."""
        return Capabilities(attention=False, logit_lens=False, prompt_logprobs=self._prompt_logprobs is not False,
                            full_distribution=False, top_n_max=REMOTE_TOP_N_MAX)

    @property
    def tokenizer(self) -> PieceVocabulary:
        return self.vocabulary

    def prompt_ids(self, text: str) -> list[int]:
        """A prompt as ids of this model's vocabulary: one piece, since only the server can tokenize it."""
        return [self.vocabulary.add(_checked_text("prompt", text))]

    def generate(self, prompt: str | list[int], params: SamplingParams, *, top_n: int = 10,
                 capture_attention: bool = False, attention_budget: int = DEFAULT_ATTENTION_BUDGET,
                 messages: list[dict] | None = None) -> Iterator[StepRecord]:
        """Stream StepRecords from the server; `messages` → /v1/chat/completions, else /v1/completions.

        Checked before any request. A random run (params.seed None) draws its seed here and sends it, so the
        record holds a seed that replays it. No attention is captured remotely (`capture_attention` is ignored).
        Closing the generator closes the connection, which ends the run on the server.
        """
        if not isinstance(params, SamplingParams):
            raise ParameterError("params", "a SamplingParams", params)
        if isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= REMOTE_TOP_N_MAX:
            raise ParameterError("top_n", f"an integer in [0, {REMOTE_TOP_N_MAX}] for a remote model", top_n)
        seed = params.seed if params.seed is not None else secrets.randbelow(2**32 - 1)  # llama.cpp: 2^32-1 = random
        if messages is not None:
            stream = self.server.chat_stream(self.model_id, check_messages(messages), params, top_n, seed)
        else:
            if isinstance(prompt, (list, tuple)):
                for token_id in prompt:  # the vocabulary's own check names a bad id
                    self.vocabulary._checked(token_id)
                prompt = self.vocabulary.decode(list(prompt))
            stream = self.server.complete_stream(self.model_id, _checked_text("prompt", prompt), params, top_n, seed)
        return self._records(stream, params, top_n, seed)

    def _records(self, stream: Iterator[RemoteToken], params: SamplingParams, top_n: int,
                 seed: int) -> Iterator[StepRecord]:
        try:
            yield from remote_step_records(self._noting_fingerprint(stream), self.vocabulary, params, top_n,
                                           time.perf_counter(), seed)
        finally:
            stream.close()  # a run closed early (Stop) hangs up on the server now, not when collected

    def _noting_fingerprint(self, stream: Iterator[RemoteToken]) -> Iterator[RemoteToken]:
        for token in stream:
            if token.fingerprint:
                self.fingerprint = token.fingerprint
            yield token

    def score(self, text: str) -> TextScore | None:
        """Each prompt token's probability as the server reports it (echo), or None with `score_note` saying why.

        The server's first token has no probability (nothing precedes it in what the server reports), so the
        scores start at the second token, as the local scorer's start after <s>.
        """
        found = self.server.prompt_logprobs_or_reason(self.model_id, _checked_text("text", text), SCORE_TOP_N)
        if isinstance(found, str):
            self._prompt_logprobs, self.score_note = False, found
            return None
        self._prompt_logprobs, self.score_note = True, None
        scored = []
        for index, token in enumerate(found):
            if index == 0 or token.logprob is None:
                continue
            top = tuple((piece, math.exp(lp)) for piece, lp in token.top[:SCORE_TOP_N])
            scored.append(ScoredToken(index, self.vocabulary.add(token.text), token.text, math.exp(token.logprob),
                                      -token.logprob / math.log(2), top))
        if not scored:
            raise ParameterError("text", "a text of at least two tokens", text)
        return TextScore(tuple(scored), -sum(math.log(t.prob) if t.prob > 0 else -math.inf
                                             for t in scored) / len(scored))

    def describe(self) -> dict:
        """The run's origin for reports: server, model id and the server's fingerprint (never a key)."""
        return {"kind": "remote", "server": self.server.url, "model": self.model_id, "fingerprint": self.fingerprint,
                "context_length": self.context_length}

    def source(self, top_n: int) -> dict:
        """What `RunRecord.source` holds for a run of this model with `top_n` alternatives per step."""
        return {"kind": "remote", "server": self.server.url, "model": self.model_id, "fingerprint": self.fingerprint,
                "top_n": top_n}


def remote_models(config: RemoteConfig | RemoteServer) -> list[RemoteModel]:
    """Every model a server lists, as RemoteModels (RemoteError when it cannot be reached)."""
    server = config if isinstance(config, RemoteServer) else RemoteServer(config)
    return [RemoteModel(server, info) for info in server.list_models()]


def _checked_text(name: str, text: object) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ParameterError(name, "a non-empty text", text)
    if len(text) > MAX_PROMPT_CHARS:
        raise ParameterError(name, f"at most {MAX_PROMPT_CHARS} characters", f"{len(text)} characters")
    return text
