"""Rotary position embeddings: the plain ones and the scaled variants long-context checkpoints ask for.

Each variant changes only the per-pair inverse frequencies θ_j (and, for YaRN, the magnitude of
the rotation). They follow transformers' `modeling_rope_utils` formula by formula and in the same
operation order, so that our rotations equal theirs to the last bit where possible:

- linear (Position Interpolation, kaiokendev): θ_j / factor.
- dynamic (NTK-aware, /u/bloc97 and /u/emozilla): the base grows with the sequence once it is
  longer than the trained length, recomputed for every forward pass beyond it.
- llama3 (Llama 3.1): low frequencies divided by factor, high ones kept, a smooth ramp between.
- yarn (Peng et al. 2023, arXiv:2309.00071): per-pair blend of interpolation and extrapolation,
  and an attention factor that scales q and k (so the scores by its square).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

# rope_type → keys it cannot do without (after `normalise_rope_scaling` filled the defaults).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "linear": ("factor",),
    "dynamic": ("factor", "original_max_position_embeddings"),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
}
SUPPORTED_TYPES = ("default", *REQUIRED_KEYS)
NUMERIC_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings",
                "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim")
USES_ORIGINAL_LENGTH = ("dynamic", "llama3", "yarn")


def normalise_rope_scaling(rope: dict | None, max_seq_len: int) -> dict | None:
    """A checked copy of a config's RoPE dict: None for plain RoPE, `rope_type` always set (older configs
    say `type`), and the trained length filled in where transformers fills it (from max_position_embeddings).

    Raises ValueError naming what was expected and what was found.
    """
    if rope is None:
        return None
    if not isinstance(rope, dict):
        raise ValueError(f"rope_scaling must be a dict like {{'rope_type': 'linear', 'factor': 2.0}}, got {rope!r}")
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    # rope_theta is a field of its own; `type` is the older spelling of rope_type.
    rope = {**{k: v for k, v in rope.items() if k not in ("type", "rope_theta")}, "rope_type": rope_type}
    if rope_type not in SUPPORTED_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_TYPES)}")
    if rope_type == "default":
        return None
    if rope.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"partial_rotary_factor {rope['partial_rotary_factor']} (rotating part of each head) is "
                         "not supported; LLaMA rotates whole heads (1.0)")
    if rope_type in USES_ORIGINAL_LENGTH:
        rope.setdefault("original_max_position_embeddings", max_seq_len)
    missing = [key for key in REQUIRED_KEYS[rope_type] if rope.get(key) is None]
    if missing:
        raise ValueError(f"rope_type {rope_type!r} needs {', '.join(missing)}; found keys {sorted(rope)}")
    for key in NUMERIC_KEYS:
        value = rope.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0):
            raise ValueError(f"rope_scaling {key} must be a positive number, got {value!r}")
    if rope_type == "llama3" and rope["high_freq_factor"] <= rope["low_freq_factor"]:
        raise ValueError(f"rope_scaling high_freq_factor ({rope['high_freq_factor']}) must exceed low_freq_factor "
                         f"({rope['low_freq_factor']})")
    return rope


def _pair_exponents(head_dim: int) -> Tensor:
    return torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim  # 2j / D for each pair j


def inverse_frequencies(head_dim: int, theta: float, rope: dict | None, seq_len: int | None = None
                        ) -> tuple[Tensor, float]:
    """θ_j for each of the head_dim/2 pairs, and the factor the rotation is scaled by (1 except YaRN).

    `seq_len` matters only for dynamic scaling: the length of the sequence so far, once it is beyond
    the trained length.
    """
    rope_type = rope["rope_type"] if rope else "default"
    if rope_type == "dynamic":
        return _dynamic_ntk(head_dim, theta, rope, seq_len), 1.0
    if rope_type == "yarn":
        return _yarn(head_dim, theta, rope)
    inv_freq = 1.0 / (theta ** _pair_exponents(head_dim))
    if rope_type == "linear":
        inv_freq /= rope["factor"]  # dividing θ_j by s is dividing every position by s
    elif rope_type == "llama3":
        inv_freq = _llama3(inv_freq, rope)
    return inv_freq, 1.0


def _dynamic_ntk(head_dim: int, theta: float, rope: dict, seq_len: int | None) -> Tensor:
    factor, trained = rope["factor"], rope["original_max_position_embeddings"]
    if seq_len is None or seq_len <= trained:
        length = trained  # the formula below then gives back θ itself
    else:
        # transformers computes this branch from the position tensor, i.e. in fp32 tensor arithmetic;
        # doing the same keeps the recomputed base equal to theirs bit for bit.
        length = torch.tensor(seq_len)
    base = theta * ((factor * length / trained) - (factor - 1)) ** (head_dim / (head_dim - 2))
    return 1.0 / (base ** _pair_exponents(head_dim))


def _llama3(inv_freq: Tensor, rope: dict) -> Tensor:
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    trained = rope["original_max_position_embeddings"]
    wavelength = 2 * math.pi / inv_freq
    long_wavelength, short_wavelength = trained / low, trained / high
    # Wavelengths longer than the trained context were never seen whole: interpolate them by `factor`.
    scaled = torch.where(wavelength > long_wavelength, inv_freq / factor, inv_freq)
    # Between the two thresholds, blend linearly in (trained / wavelength).
    smooth = (trained / wavelength - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    in_between = ~(wavelength < short_wavelength) * ~(wavelength > long_wavelength)
    return torch.where(in_between, blended, scaled)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(head_dim: int, theta: float, rope: dict) -> tuple[Tensor, float]:
    factor, trained = rope["factor"], rope["original_max_position_embeddings"]
    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
        if mscale and mscale_all_dim:  # DeepSeek's variant of the paper's 0.1·ln(s) + 1
            attention_factor = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
        else:
            attention_factor = _yarn_mscale(factor)
    beta_fast, beta_slow = rope.get("beta_fast") or 32, rope.get("beta_slow") or 1

    def pair_index(rotations: float) -> float:
        # The pair j that turns `rotations` times over the trained context (inverse of 2π·r = L·θ_j).
        return (head_dim * math.log(trained / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = pair_index(beta_fast), pair_index(beta_slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero in the ramp
    ramp = torch.clamp((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    position_freqs = theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    extrapolated, interpolated = 1.0 / position_freqs, 1.0 / (factor * position_freqs)
    keep = 1 - ramp  # 1: pairs that turn often enough to extrapolate, 0: pairs to interpolate
    return interpolated * (1 - keep) + extrapolated * keep, attention_factor


def rotations(head_dim: int, theta: float, rope: dict | None, start: int, end: int,
              seq_len: int | None = None, device=None) -> Tensor:
    """Complex rotations a·e^{i·pos·θ_j} for positions start..end-1, shape (end - start, head_dim/2), fp32."""
    inv_freq, magnitude = inverse_frequencies(head_dim, theta, rope, seq_len)
    angles = torch.outer(torch.arange(start, end, device=device).float(), inv_freq.to(device))
    return torch.polar(torch.full_like(angles, magnitude), angles)


def rope_frequencies(head_dim: int, max_seq_len: int, theta: float, device=None) -> Tensor:
    """Plain RoPE's table e^{i·pos·θ_j}, shape (max_seq_len, head_dim/2), as Meta's code precomputes it."""
    return rotations(head_dim, theta, None, 0, max_seq_len, device=device)
