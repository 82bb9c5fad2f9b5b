"""The Chinchilla calculator: from any of parameters N, tokens D or compute C (or N and D
together), the compute-optimal split and the loss predicted by Hoffmann et al.'s fitted law
L(N, D) = E + A/N^α + B/D^β (constants from their App. D.2, in `data/published_results.json`).

The law is fitted on Chinchilla's data and tokenizer, so its losses are in their nats/token and
do not transfer to our corpus; the split (how to share C between N and D) is the lesson.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ParameterError
from .published import ChinchillaLaw, chinchilla_law, chinchilla_loss, compute_optimal


@dataclass(frozen=True)
class ChinchillaPlan:
    n_params: float
    tokens: float
    flops: float  # 6·N·D
    loss: float  # the fitted law's prediction for (N, D)
    n_opt: float  # the compute-optimal split of the same compute
    d_opt: float
    loss_opt: float

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.n_params

    @property
    def loss_above_optimal(self) -> float:
        return self.loss - self.loss_opt


def _positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ParameterError(name, "a finite number > 0", value)
    return float(value)


def _budget_for(target: float, index: int, law: ChinchillaLaw) -> float:
    """The compute whose optimal N (index 0) or D (index 1) equals `target`: both grow as a power of C."""
    a, b = compute_optimal(1e20, law)[index], compute_optimal(1e22, law)[index]
    exponent = math.log10(b / a) / 2  # N_opt, D_opt ∝ C^exponent
    return 1e20 * (target / a) ** (1 / exponent)


def plan(n_params: float | None = None, tokens: float | None = None, flops: float | None = None,
         law: ChinchillaLaw | None = None) -> ChinchillaPlan:
    """Fill in the rest from what is given: C alone → the optimal (N, D); N or D alone → the compute
    for which it is optimal; N and D → C = 6ND and how far from optimal that is."""
    law = law or chinchilla_law()
    n, d, c = _positive("n_params", n_params), _positive("tokens", tokens), _positive("flops", flops)
    given = sum(x is not None for x in (n, d, c))
    if given == 0 or given == 3 or (c is not None and given == 2):
        raise ParameterError("inputs", "compute alone, parameters and/or tokens", f"{given} of N, D, C")
    if c is None and n is not None and d is not None:
        c = 6 * n * d
    elif c is None:
        c = _budget_for(n, 0, law) if n is not None else _budget_for(d, 1, law)
    n_opt, d_opt = compute_optimal(c, law)
    n = n if n is not None else (n_opt if d is None else c / (6 * d))
    d = d if d is not None else c / (6 * n)
    return ChinchillaPlan(n, d, c, chinchilla_loss(n, d, law), n_opt, d_opt, chinchilla_loss(n_opt, d_opt, law))
