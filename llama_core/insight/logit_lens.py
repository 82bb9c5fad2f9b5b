"""The logit lens (nostalgebraist 2020): read a prediction out of the residual stream after
every layer, through the model's own final norm and output matrix.

At the last layer this is exactly the model's prediction; earlier layers show how the
answer forms. Returns plain arrays so that figures and the API can use them alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model import Transformer


@dataclass(frozen=True)
class LogitLens:
    """For each read-out point (the embeddings, then after each layer) and each position: the top
    token, its probability, and the probability of the token that actually comes next."""

    top_ids: np.ndarray  # (L + 1, T) int
    top_probs: np.ndarray  # (L + 1, T) float
    next_probs: np.ndarray  # (L + 1, T - 1): at position t, the probability given to token t + 1
    next_ranks: np.ndarray  # (L + 1, T - 1): at position t, the rank of token t + 1 (0 = the top guess)

    @property
    def labels(self) -> list[str]:
        return ["embeddings"] + [f"layer {i}" for i in range(1, self.top_ids.shape[0])]


@torch.no_grad()
def residual_stream(model: Transformer, token_ids: list[int]) -> list[torch.Tensor]:
    """The hidden state (T, C) entering the first layer and leaving each layer."""
    if not token_ids or len(token_ids) > model.args.max_seq_len:
        raise ValueError(f"need 1 to {model.args.max_seq_len} tokens, got {len(token_ids)}")
    tokens = torch.tensor([token_ids], device=model.input_device())
    h = model.embed(tokens)  # in the residual stream's dtype, as the forward pass does
    freqs = model.rope(0, len(token_ids), h.device)
    states = [h[0]]
    for layer in model.layers:
        h, _ = layer(h, freqs, None, 0, False)
        states.append(h[0])
    return states


@torch.no_grad()
def logit_lens(model: Transformer, token_ids: list[int], vocab_size: int | None = None) -> LogitLens:
    """Read each layer's prediction; `vocab_size` (the tokenizer's) leaves padding rows out of it."""
    states = residual_stream(model, token_ids)
    following = torch.tensor(token_ids[1:])
    top_ids, top_probs, next_probs, next_ranks = [], [], [], []
    for h in states:
        # (T, V), read on the CPU wherever the weights are
        probs = torch.softmax(model.output(model.norm(h)).float()[:, :vocab_size], dim=-1).cpu()
        best = probs.max(dim=-1)
        top_ids.append(best.indices.numpy())
        top_probs.append(best.values.numpy())
        following_probs = probs[:-1].gather(1, following[:, None])  # (T - 1, 1)
        next_probs.append(following_probs[:, 0].numpy())
        next_ranks.append((probs[:-1] > following_probs).sum(dim=-1).numpy())
    return LogitLens(np.stack(top_ids), np.stack(top_probs), np.stack(next_probs), np.stack(next_ranks))
