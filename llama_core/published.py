"""Published model sizes, token counts and benchmark scores, and the Chinchilla loss law.

The numbers live in data/published_results.json, each with a source id resolved here to its
citation; nothing in this module is a number of its own except the closed-form optimum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_PATH = Path(__file__).resolve().parents[1] / "data" / "published_results.json"


@cache
def _data() -> dict:
    return json.loads(DATA_PATH.read_text())


# Benchmark id -> display label; the ids are the keys of every model's scores.
BENCHMARKS: dict[str, str] = {key: b["label"] for key, b in _data()["benchmarks"].items()}


@dataclass(frozen=True)
class PublishedModel:
    name: str
    family: str
    params_b: float
    training_tokens: float | None
    scores: dict[str, float | None]  # benchmark id -> score in %, None where the source has none
    source: dict[str, str]  # field or benchmark id -> full citation

    @property
    def tokens_per_param(self) -> float | None:
        return None if self.training_tokens is None else self.training_tokens / (self.params_b * 1e9)


@dataclass(frozen=True)
class ChinchillaLaw:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str


def published_models() -> list[PublishedModel]:
    """Every model of the published-results file, sources resolved to their citations."""
    sources = _data()["sources"]
    return [PublishedModel(m["name"], m["family"], m["params_b"], m["training_tokens"], dict(m["scores"]),
                           {k: sources[v] for k, v in m["source"].items()}) for m in _data()["models"]]


def chinchilla_law() -> ChinchillaLaw:
    """Hoffmann et al.'s fitted L(N, D) constants, rounded as printed in their App. D.2."""
    law = _data()["chinchilla_law"]
    return ChinchillaLaw(law["E"], law["A"], law["B"], law["alpha"], law["beta"], _data()["sources"][law["source"]])


def chinchilla_tokens_per_param() -> float:
    """The ~20 tokens/parameter reading of Chinchilla (Table 3 and 70B on 1.4T), not a fitted constant."""
    return float(_data()["chinchilla_tokens_per_param"]["value"])


def chinchilla_loss(n: float, d: float, law: ChinchillaLaw | None = None) -> float:
    """L(N, D) = E + A/N^alpha + B/D^beta, in nats/token on Chinchilla's data and tokenizer."""
    law = law or chinchilla_law()
    return law.E + law.A / n**law.alpha + law.B / d**law.beta


def compute_optimal(c_flops: float, law: ChinchillaLaw | None = None) -> tuple[float, float]:
    """(N_opt, D_opt) minimising L(N, D) subject to C = 6·N·D (Hoffmann et al. Sec. 3.3 closed form)."""
    law = law or chinchilla_law()
    # Substituting D = C/(6N) and setting dL/dN = 0 gives alpha·A/N^alpha = beta·B/D^beta.
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    n_opt = g * (c_flops / 6) ** (law.beta / (law.alpha + law.beta))
    return n_opt, c_flops / (6 * n_opt)
