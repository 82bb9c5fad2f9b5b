"""Sampling: validated parameters and small pure functions over a logits vector (V,)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ParameterError

MAX_TEMPERATURE = 2.0
MIN_POSITIVE_TEMPERATURE = 0.01  # below this, exp(logit / T) overflows fp32 into inf/NaN
MAX_REPETITION_PENALTY = 10.0
MAX_ABS_PENALTY = 2.0  # presence/frequency, as in the OpenAI API
MAX_STOP_SEQUENCES = 4  # TGI's default
MAX_STOP_CHARS = 64
MAX_SEED = 2**63 - 1


def _number(name: str, value: object, lo: float, hi: float, allowed: str, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(name, allowed, value)
    value = float(value)
    if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
        raise ParameterError(name, allowed, value)
    return value


def _integer(name: str, value: object, lo: int, hi: int, allowed: str) -> int:
    # Integral floats (40.0 from a slider) are fine; 5.5 is not.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(name, allowed, value)
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ParameterError(name, allowed, value)
    if not lo <= value <= hi:
        raise ParameterError(name, allowed, value)
    return int(value)


@dataclass(frozen=True)
class SamplingParams:
    """Everything that decides which token comes next. Validated on construction."""

    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_new_tokens: int = 128
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check = {
            "temperature": _number("temperature", self.temperature, 0.0, MAX_TEMPERATURE,
                                   f"a finite number in [0, {MAX_TEMPERATURE:g}] (0 = greedy)"),
            "top_k": _integer("top_k", self.top_k, -1, 2**31 - 1, "an integer ≥ 0 (0 or -1 = off)"),
            "top_p": _number("top_p", self.top_p, 0.0, 1.0, "a number in (0, 1] (1 = off)", lo_open=True),
            "min_p": _number("min_p", self.min_p, 0.0, 1.0, "a number in [0, 1] (0 = off)"),
            "repetition_penalty": _number("repetition_penalty", self.repetition_penalty, 0.0, MAX_REPETITION_PENALTY,
                                          f"a finite number in (0, {MAX_REPETITION_PENALTY:g}] (1 = off)", lo_open=True),
            "presence_penalty": _number("presence_penalty", self.presence_penalty, -MAX_ABS_PENALTY, MAX_ABS_PENALTY,
                                        f"a number in [-{MAX_ABS_PENALTY:g}, {MAX_ABS_PENALTY:g}] (0 = off)"),
            "frequency_penalty": _number("frequency_penalty", self.frequency_penalty, -MAX_ABS_PENALTY, MAX_ABS_PENALTY,
                                         f"a number in [-{MAX_ABS_PENALTY:g}, {MAX_ABS_PENALTY:g}] (0 = off)"),
            "max_new_tokens": _integer("max_new_tokens", self.max_new_tokens, 1, 2**31 - 1, "an integer ≥ 1"),
        }
        if 0 < check["temperature"] < MIN_POSITIVE_TEMPERATURE:
            raise ParameterError("temperature", f"0 (greedy) or in [{MIN_POSITIVE_TEMPERATURE}, {MAX_TEMPERATURE:g}]",
                                 self.temperature)
        if self.seed is not None:
            check["seed"] = _integer("seed", self.seed, 0, MAX_SEED, f"an integer in [0, 2^63 - 1], or None for random")
        check["stop"] = _stop_sequences(self.stop)
        for name, value in check.items():
            object.__setattr__(self, name, value)  # store the normalised value (int, float, tuple)


def _stop_sequences(stop: object) -> tuple[str, ...]:
    allowed = f"a list of at most {MAX_STOP_SEQUENCES} non-empty strings of at most {MAX_STOP_CHARS} characters"
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOP_SEQUENCES:
        raise ParameterError("stop", allowed, stop)
    for item in stop:
        if not isinstance(item, str) or not item or len(item) > MAX_STOP_CHARS:
            raise ParameterError("stop", allowed, stop)
    return tuple(stop)


# --- the stages, in the order they are applied -----------------------------------------


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL-style: make every token already in the context less likely (divide positive logits)."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def apply_presence_frequency(logits: Tensor, counts: Tensor, presence: float, frequency: float) -> Tensor:
    """OpenAI-style: subtract `presence` once and `frequency` per occurrence in the generated text."""
    if presence == 0.0 and frequency == 0.0:
        return logits
    return logits - presence * (counts > 0) - frequency * counts


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    return logits if temperature in (0.0, 1.0) else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits (ties with the k-th kept); k ≤ 0 means off, k > V is clamped."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability mass reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs
    remove_sorted = mass_before >= p  # the top token always has mass_before = 0 < p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: Tensor, min_p: float) -> Tensor:
    """Drop tokens whose probability is below min_p times that of the most likely token."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.max(), float("-inf"))


def sampler_stages(logits: Tensor, params: SamplingParams, seen: Tensor, counts: Tensor) -> Iterator[tuple[str, Tensor]]:
    """Each named stage of the pipeline and the logits after it, raw first, final last."""
    yield "raw", logits
    logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    logits = apply_presence_frequency(logits, counts, params.presence_penalty, params.frequency_penalty)
    yield "penalties", logits
    if params.temperature == 0.0:
        # Greedy: only the argmax survives, so the "filtered" distribution is one-hot.
        yield "greedy", torch.full_like(logits, float("-inf")).scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
        return
    logits = apply_temperature(logits, params.temperature)
    yield "temperature", logits
    logits = top_k_filter(logits, params.top_k)
    yield "top_k", logits
    logits = top_p_filter(logits, params.top_p)
    yield "top_p", logits
    yield "min_p", min_p_filter(logits, params.min_p)


def sample(filtered_logits: Tensor, generator: torch.Generator | None) -> int:
    """Draw one token id from the softmax of the filtered logits."""
    probs = torch.softmax(filtered_logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
