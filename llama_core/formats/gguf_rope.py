"""RoPE scaling as a GGUF file states it, back into the `rope_scaling` dict ModelArgs takes (transformers' names).

llama.cpp's converter writes linear and YaRN scaling as `llama.rope.scaling.*` keys, and Llama 3.1's scaling as a
`rope_freqs` tensor: one divisor of θ_j per rotary pair (1 for high frequencies, `factor` for low ones, a smooth
blend between), without the parameters it came from. We recover those parameters — any (low, high, original
length) giving the same divisors gives the same model — and check that they reproduce every divisor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import CheckpointError
from ..rope import inverse_frequencies

ARCH = "llama"
LLAMA3_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
DIVISOR_RTOL = 1e-4  # the table is float32 and llama.cpp's converter computes it in float64 first


def rope_scaling_from_gguf(meta: dict, head_dim: int, theta: float, divisors: Tensor | None) -> dict | None:
    """The rope_scaling dict for ModelArgs (None: plain RoPE); CheckpointError for what LLaMA cannot do."""
    kind = str(meta.get(f"{ARCH}.rope.scaling.type", "none")).lower()
    factor = meta.get(f"{ARCH}.rope.scaling.factor")
    original = meta.get(f"{ARCH}.rope.scaling.original_context_length")
    if divisors is not None:
        if kind not in ("none", "linear") or (kind == "linear" and factor not in (None, 1.0)):
            raise CheckpointError(f"rope_freqs divisors together with '{kind}' scaling (factor {factor}); expected "
                                  "one or the other")
        return llama3_from_divisors(divisors.float(), head_dim, theta, original)
    if kind == "none" and meta.get(f"{ARCH}.rope.scale_linear") not in (None, 1.0):
        kind, factor = "linear", meta[f"{ARCH}.rope.scale_linear"]  # the key older converters wrote
    if kind == "none" or (kind == "linear" and factor in (None, 1.0)):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(factor)}
    if kind == "yarn":
        if factor is None or original is None:
            raise CheckpointError("YaRN scaling needs llama.rope.scaling.factor and "
                                  "llama.rope.scaling.original_context_length; the file lacks one")
        extrapolation = meta.get(f"{ARCH}.rope.scaling.yarn_ext_factor")
        if extrapolation is not None and extrapolation >= 0 and extrapolation != 1.0:
            raise CheckpointError(f"YaRN with extrapolation factor {extrapolation}; only the paper's 1.0 is supported")
        rope = {"rope_type": "yarn", "factor": float(factor), "original_max_position_embeddings": int(original)}
        for key, ours in (("yarn_attn_factor", "attention_factor"), ("yarn_beta_fast", "beta_fast"),
                          ("yarn_beta_slow", "beta_slow")):
            if (value := meta.get(f"{ARCH}.rope.scaling.{key}")) is not None:
                rope[ours] = float(value)
        return rope
    raise CheckpointError(f"RoPE scaling type '{kind}' is not supported; supported: none, linear, yarn and Llama "
                          "3.1's rope_freqs divisors")


def llama3_from_divisors(divisors: Tensor, head_dim: int, theta: float, original: int | None) -> dict | None:
    """Llama 3.1 scaling parameters that reproduce `divisors` (θ_j / scaled θ_j per pair)."""
    if divisors.shape != (head_dim // 2,):
        raise CheckpointError(f"rope_freqs has shape {tuple(divisors.shape)}, expected ({head_dim // 2},): one "
                              "divisor per rotary pair")
    if not torch.isfinite(divisors).all() or (divisors <= 0).any():
        raise CheckpointError("rope_freqs holds non-positive or non-finite divisors")
    factor = float(divisors.max())
    if math.isclose(factor, 1.0, rel_tol=DIVISOR_RTOL) and math.isclose(float(divisors.min()), 1.0,
                                                                        rel_tol=DIVISOR_RTOL):
        return None  # all ones: plain RoPE
    original = int(original or LLAMA3_DEFAULTS["original_max_position_embeddings"])
    plain, _ = inverse_frequencies(head_dim, theta, None)
    wavelength = (2 * math.pi / plain).double()
    for candidate in (_with_defaults(factor, original), _fitted(divisors, wavelength, factor, original)):
        if candidate is not None and _reproduces(candidate, divisors, plain, head_dim, theta):
            return candidate
    raise CheckpointError(f"rope_freqs divisors {divisors.tolist()} are not Llama 3.1's scaling (factor {factor}, a "
                          "smooth blend between a high- and a low-frequency band); this loader cannot reproduce them")


def _with_defaults(factor: float, original: int) -> dict:
    return {"rope_type": "llama3", "factor": factor, **LLAMA3_DEFAULTS, "original_max_position_embeddings": original}


def _fitted(divisors: Tensor, wavelength: Tensor, factor: float, original: int) -> dict | None:
    """Thresholds from the pairs the ramp blends (smooth = original/λ·1/(h−l) − l/(h−l), a line in 1/λ), or placed
    between the neighbouring pairs when too few pairs lie on the ramp to fit it."""
    d = divisors.double()
    kept = d <= 1 + DIVISOR_RTOL  # high frequencies: unscaled
    scaled = d >= factor * (1 - DIVISOR_RTOL)
    ramp = ~kept & ~scaled
    short_end = float(wavelength[kept].max()) if kept.any() else float(wavelength.min()) / 2
    long_end = float(wavelength[scaled].min()) if scaled.any() else float(wavelength.max()) * 2
    if int(ramp.sum()) >= 2:
        smooth = (1 / d[ramp] - 1 / factor) / (1 - 1 / factor)
        x = 1 / wavelength[ramp]
        slope, intercept = torch.linalg.lstsq(torch.stack([x, torch.ones_like(x)], 1), smooth[:, None]).solution[:, 0]
        width = original / float(slope)  # high - low
        low = -float(intercept) * width
        high = low + width
    elif int(ramp.sum()) == 1:
        # Put the short threshold halfway (geometrically) to the ramp pair, then solve its blend for the long one.
        mid = float(wavelength[ramp][0])
        smooth = float((1 / d[ramp][0] - 1 / factor) / (1 - 1 / factor))
        high = original / math.sqrt(short_end * mid)
        low = (original / mid - smooth * high) / (1 - smooth)
    else:
        # No pair on the ramp: any thresholds between the two bands say the same; take thirds of the gap.
        high = original / (short_end * (long_end / short_end) ** (1 / 3))
        low = original / (short_end * (long_end / short_end) ** (2 / 3))
    if not (0 < low < high):
        return None
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": original}


def _reproduces(rope: dict, divisors: Tensor, plain: Tensor, head_dim: int, theta: float) -> bool:
    scaled, _ = inverse_frequencies(head_dim, theta, rope)
    return torch.allclose(plain / scaled, divisors, rtol=DIVISOR_RTOL, atol=0)
