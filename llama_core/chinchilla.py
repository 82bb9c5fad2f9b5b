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


# --- Inference-aware optimum (Sardana & Frankle 2023, "Beyond Chinchilla-Optimal", arXiv:2401.00448) ---
# Training costs 6·N·D FLOPs once; generating D_inf tokens over the model's life costs 2·N·D_inf more
# (a forward pass is ~2 FLOPs per parameter per token). For a target loss the law fixes D as a function
# of N, so the cheapest model to train *and run* is a 1-D minimisation over N: the more it will be
# used, the smaller and longer-trained it should be. LLaMA's 7B on 1T tokens is that choice.

@dataclass(frozen=True)
class InferenceAwarePlan:
    target_loss: float
    inference_tokens: float  # tokens generated over the model's life
    n_params: float
    tokens: float  # training tokens
    training_flops: float  # 6·N·D
    inference_flops: float  # 2·N·D_inf

    @property
    def total_flops(self) -> float:
        return self.training_flops + self.inference_flops

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.n_params


def smallest_params_for(target_loss: float, law: ChinchillaLaw) -> float:
    """The N below which no amount of data reaches `target_loss` (A/N^α alone would exceed L − E)."""
    return (law.A / (target_loss - law.E)) ** (1 / law.alpha)


def tokens_for_loss(n_params: float, target_loss: float, law: ChinchillaLaw) -> float:
    """The training tokens D with L(N, D) = target_loss: D = (B / (L − E − A/N^α))^(1/β); inf if N is too small."""
    room = target_loss - law.E - law.A / n_params**law.alpha
    return math.inf if room <= 0 else (law.B / room) ** (1 / law.beta)


def _total_flops(log_n: float, target_loss: float, inference_tokens: float, law: ChinchillaLaw) -> float:
    n = math.exp(log_n)
    return 6 * n * tokens_for_loss(n, target_loss, law) + 2 * n * inference_tokens


def _golden_section(f, lo: float, hi: float, tolerance: float = 1e-10) -> float:
    """The minimiser of a unimodal f on [lo, hi] (golden-section search: each step keeps 61.8% of the bracket)."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tolerance:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def _plan_at(n: float, target_loss: float, inference_tokens: float, law: ChinchillaLaw) -> InferenceAwarePlan:
    d = tokens_for_loss(n, target_loss, law)
    return InferenceAwarePlan(target_loss, inference_tokens, n, d, 6 * n * d, 2 * n * inference_tokens)


def inference_aware_optimum(target_loss: float, inference_tokens: float = 0.0,
                            law: ChinchillaLaw | None = None) -> InferenceAwarePlan:
    """The (N, D) reaching `target_loss` that minimises 6·N·D + 2·N·D_inf; D_inf = 0 is the compute-optimal model."""
    law = law or chinchilla_law()
    target = _positive("target_loss", target_loss)
    if target <= law.E:
        raise ParameterError("target_loss", f"a loss above the law's irreducible E = {law.E}", target_loss)
    if isinstance(inference_tokens, bool) or not isinstance(inference_tokens, (int, float)) \
            or not math.isfinite(inference_tokens) or inference_tokens < 0:
        raise ParameterError("inference_tokens", "a finite number ≥ 0", inference_tokens)
    # Total compute is unimodal in log N on (N_min, ∞): training compute alone falls then rises, and
    # the inference term only rises with N, so the optimum lies at or below the training-only optimum.
    # The bracket: just above N_min (where D → ∞) up to where A/N^α is a millionth of L − E (D ≈ its floor).
    lo = math.log(smallest_params_for(target, law)) + 1e-9
    hi = lo + math.log(1e6) / law.alpha
    best = _golden_section(lambda x: _total_flops(x, target, float(inference_tokens), law), lo, hi)
    return _plan_at(math.exp(best), target, float(inference_tokens), law)


def inference_demand_sweep(target_loss: float, inference_tokens: list[float],
                           law: ChinchillaLaw | None = None) -> list[InferenceAwarePlan]:
    """The optimum at each lifetime inference demand, for the plot of how it moves with demand."""
    return [inference_aware_optimum(target_loss, d, law) for d in inference_tokens]


def implied_inference_tokens(n_params: float, tokens: float, law: ChinchillaLaw | None = None) -> float:
    """The lifetime inference demand for which (N, D) is the optimum at its own loss (negative: D is
    below even the training-only optimum, so no inference demand makes it the cheapest)."""
    law = law or chinchilla_law()
    n, d = _positive("n_params", n_params), _positive("tokens", tokens)
    # At fixed loss, dD/dN = −(α·A/N^α)/(β·B/D^β)·D/N; setting d/dN of 6ND + 2N·D_inf to zero gives
    # D_inf = 3·D·(ratio − 1), with ratio = (α·A/N^α)/(β·B/D^β) (1 exactly at the compute optimum).
    ratio = (law.alpha * law.A / n**law.alpha) / (law.beta * law.B / d**law.beta)
    return 3 * d * (ratio - 1)
