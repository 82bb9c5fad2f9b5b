"""Score a given text without generating: each token's probability under a model, the
alternatives it preferred, and the text's perplexity; and where two models part on it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ParameterError
from ..generation import encode_prompt
from ..model import Transformer
from ..tokenizer import Tokenizer


@dataclass(frozen=True)
class ScoredToken:
    index: int  # position in the token sequence (≥ 1: the first token has no prediction)
    token_id: int
    piece: str
    prob: float
    surprisal_bits: float
    top: tuple[tuple[str, float], ...]  # the model's most likely tokens at this position, with probabilities


@dataclass(frozen=True)
class TextScore:
    tokens: tuple[ScoredToken, ...]
    mean_nll: float  # nats per token

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)


@torch.no_grad()
def next_token_log_probs(model: Transformer, token_ids: list[int], vocab_size: int | None = None) -> torch.Tensor:
    """(T - 1, V) log-probabilities of the token at each position 1..T-1 given those before it.

    `vocab_size`: the tokenizer's; embedding rows beyond it are padding that names no token, so they
    take no probability (V is then the tokenizer's size).
    """
    if len(token_ids) < 2:
        raise ParameterError("text", "at least one token after <s>", f"{len(token_ids)} token(s)")
    if len(token_ids) > model.args.max_seq_len:
        raise ParameterError("text", f"at most {model.args.max_seq_len} tokens for this model", f"{len(token_ids)} tokens")
    logits = model(torch.tensor([token_ids], device=model.input_device())).logits[0, :-1, :vocab_size]
    return torch.log_softmax(logits.float(), dim=-1).cpu()  # read on the CPU, wherever the weights are


def score_text(model: Transformer, tokenizer: Tokenizer, text: str | list[int], top_n: int = 5) -> TextScore:
    token_ids = encode_prompt(tokenizer, text)
    log_probs = next_token_log_probs(model, token_ids, tokenizer.vocab_size)
    targets = torch.tensor(token_ids[1:])
    chosen = log_probs.gather(1, targets[:, None])[:, 0]
    top = torch.topk(log_probs, min(top_n, log_probs.shape[1]), dim=-1)
    scored = tuple(
        ScoredToken(i + 1, token_ids[i + 1], tokenizer.piece(token_ids[i + 1]), math.exp(lp),
                    -lp / math.log(2), tuple((tokenizer.piece(t), math.exp(v)) for t, v in zip(ids, values)))
        for i, (lp, ids, values) in enumerate(zip(chosen.tolist(), top.indices.tolist(), top.values.tolist()))
    )
    return TextScore(scored, float(-chosen.mean()))


@dataclass(frozen=True)
class Divergence:
    """Two models on one token sequence, position by position (index i: the token at i + 1)."""

    prob_a: list[float]  # probability model A gives the actual next token
    prob_b: list[float]
    kl_ab: list[float]  # KL(A ‖ B) of the two next-token distributions, in nats
    argmax_agree: list[bool]


def compare_on_tokens(model_a: Transformer, model_b: Transformer, token_ids: list[int],
                      vocab_size: int | None = None) -> Divergence:
    """Where two models (same tokenizer, of `vocab_size` tokens) part on a shared token sequence."""
    if model_a.args.vocab_size != model_b.args.vocab_size:
        raise ParameterError("models", "two models with the same vocabulary",
                             f"{model_a.args.vocab_size} and {model_b.args.vocab_size} tokens")
    a, b = next_token_log_probs(model_a, token_ids, vocab_size), next_token_log_probs(model_b, token_ids, vocab_size)
    targets = torch.tensor(token_ids[1:])[:, None]
    kl = (a.exp() * (a - b)).sum(-1)
    return Divergence(a.gather(1, targets)[:, 0].exp().tolist(), b.gather(1, targets)[:, 0].exp().tolist(),
                      kl.clamp(min=0).tolist(), (a.argmax(-1) == b.argmax(-1)).tolist())
