"""StepRecords from a server's tokens: what can be known of each step from its top-n log-probabilities.

The server sends, per token, the log-probability of the chosen token and of its n most likely alternatives
under the raw distribution — not the other V - n. So, for each step:

- `prob`, `logprob` and each alternative's `prob` are the server's own (exp of its log-probabilities);
- `entropy` is -Σ p log p over the tokens the server named: every term of the true sum is ≥ 0, so this is
  a LOWER BOUND of the true entropy (equal to it only when the named tokens hold all the probability);
- `stages` is the sampler pipeline (`sampling.sampler_stages`) recomputed on a logits vector that holds only
  those tokens: the raw stage shows the server's own probabilities, each later stage's are renormalised over
  the named tokens ("truncated to n"), and `prob_filtered`
  is the chosen token's after the last stage. It is this playground's pipeline, in its order (penalties,
  temperature, top-k, top-p, min-p); the server's own may differ (llama.cpp applies temperature last, and its
  repetition penalty looks at the last 64 tokens, prompt included). The penalties here see the tokens generated
  in this run (the prompt's tokens are the server's, not known here);
- a token the server gave no probability for (a server without logprobs) has NaN probabilities, no
  alternatives and no stages.

`stop_reason` comes from the finish reason: "length" → LENGTH; "stop" → STOP_SEQUENCE when one of the run's
stop strings is in the text the tokens spell (the server cut it there), else EOS.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import torch

from ..generation import Alternative, StepRecord, StopReason
from ..sampling import SamplingParams, sampler_stages
from .piece_vocabulary import PieceVocabulary
from .remote_client import RemoteError
from .remote_events import RemoteToken

LENGTH_REASONS = frozenset({"length", "max_tokens", "limit"})
STOP_STRING_REASONS = frozenset({"stop_sequence", "word"})
FAILED_REASONS = frozenset({"abort", "error", "cancelled"})


def remote_step_records(tokens: Iterable[RemoteToken], vocabulary: PieceVocabulary, params: SamplingParams,
                        top_n: int, start: float, seed: int) -> Iterator[StepRecord]:
    """One StepRecord per server token (see the module docstring); `start` is time.perf_counter() at the request."""
    generated: Counter[int] = Counter()
    pieces: list[str] = []
    for index, token in enumerate(tokens):
        token_id = vocabulary.add(token.text)
        pieces.append(token.text)
        stop_reason = _stop_reason(token.finish_reason, "".join(pieces), params)
        if token.logprob is None:
            nan = float("nan")
            step = StepRecord(index=index, token_id=token_id, piece=token.text, text=token.output, prob=nan,
                              prob_filtered=nan, logprob=nan, entropy=nan, top=(), elapsed_s=time.perf_counter() - start,
                              seed=seed, stop_reason=stop_reason)
        else:
            step = _step(index, token, token_id, vocabulary, params, top_n, generated, start, seed, stop_reason)
        generated[token_id] += 1
        yield step


def _stop_reason(finish: str | None, spelled: str, params: SamplingParams) -> StopReason | None:
    if finish is None:
        return None
    if finish in FAILED_REASONS:
        raise RemoteError(f"the server ended the run itself (finish_reason={finish!r})")
    if finish in LENGTH_REASONS:
        return StopReason.LENGTH
    if finish in STOP_STRING_REASONS or any(stop in spelled for stop in params.stop):
        return StopReason.STOP_SEQUENCE
    return StopReason.EOS  # "stop", "eos_token", "end_turn", "content_filter", "tool_calls"


def _candidates(token: RemoteToken, top_n: int) -> list[tuple[str, float]]:
    """The server's top alternatives (at most top_n, most likely first), the chosen token always among them."""
    candidates = list(token.top[:top_n])
    if not any(piece == token.text for piece, _ in candidates):
        candidates.append((token.text, token.logprob))
    return candidates


def _step(index, token, token_id, vocabulary, params, top_n, generated, start, seed, stop_reason) -> StepRecord:
    candidates = _candidates(token, top_n)
    ids = [vocabulary.add(piece) for piece, _ in candidates]
    logprobs = torch.tensor([lp for _, lp in candidates], dtype=torch.float64)
    probs = logprobs.exp()
    entropy = float(-(probs[probs > 0] * logprobs[probs > 0]).sum())  # over the named tokens: a lower bound
    chosen = next(i for i, (piece, _) in enumerate(candidates) if piece == token.text)

    # The pipeline on the candidates alone: log-probabilities are logits up to a constant, which softmax ignores.
    seen = torch.tensor([generated[i] > 0 for i in ids])
    counts = torch.tensor([float(generated[i]) for i in ids], dtype=torch.float64)
    stages, filtered, removed = [], None, [None] * len(ids)
    for name, stage_logits in sampler_stages(logprobs, params, seen, counts):
        filtered = torch.softmax(stage_logits, dim=-1)
        # The raw stage is the model's own distribution: the server's probabilities, as the alternatives show them
        # (renormalised over the n they would read several times larger); the stages after it are renormalised.
        stages.append((name, tuple((probs if not stages else filtered).tolist())))
        # The first stage that set a candidate's logit to -inf is the one that removed it.
        removed = [gone or (name if out else None) for gone, out in zip(removed, torch.isneginf(stage_logits).tolist())]
    top = tuple(Alternative(i, piece, float(p), float(q), gone)
                for i, (piece, _), p, q, gone in zip(ids, candidates, probs.tolist(), filtered.tolist(), removed))
    return StepRecord(index=index, token_id=token_id, piece=token.text, text=token.output,
                      prob=math.exp(token.logprob), prob_filtered=float(filtered[chosen]), logprob=token.logprob,
                      entropy=entropy, top=top, elapsed_s=time.perf_counter() - start, seed=seed,
                      stop_reason=stop_reason, stages=tuple(stages))
