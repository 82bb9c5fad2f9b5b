"""What floating-point arithmetic can promise, as the comparisons the tests share.

Two computations of the same function in fp32 that sum in another order — a fused or re-strided
weight, a cached decode against a full forward, another SIMD width (AVX-512 against AVX2) — agree
only up to rounding, and the rounding of a dot product scales with the magnitude of its terms, not
of its result. So a logit near zero may carry the absolute error of the large terms that cancelled
in it, and the tolerance is relative to the tensor's scale (its largest magnitude), not elementwise.

fp32's unit roundoff is 2**-24 ≈ 6e-8; a reordered length-K dot product typically moves by about
sqrt(K)·u of its terms' size, and the tiny test models (K ≤ 300, two to six layers) stay well inside
`FP32_REORDER` = 1e-5 of the scale (≈ 170 u). The worst cases measured on AVX-512, AVX2 and the plain
kernels are logged when `NUMERICS_LOG` names a file (see the closing notes of issue 11).
"""

from __future__ import annotations

import json
import os

import torch
from torch import Tensor

FP32_REORDER = 1e-5  # of the tensor's scale: the same function summed in another order, in fp32
FP32_VS_REFERENCE = 1e-4  # of the scale: an independent implementation (transformers) with its own op order


def _log(name: str, worst_abs: float, scale: float, allowed: float) -> None:
    if path := os.environ.get("NUMERICS_LOG"):
        capability = os.environ.get("ATEN_CPU_CAPABILITY") or torch.backends.cpu.get_cpu_capability()
        with open(path, "a") as log:
            log.write(json.dumps({"check": name, "capability": capability, "worst_abs": worst_abs,
                                  "scale": scale, "relative": worst_abs / scale if scale else 0.0,
                                  "allowed": allowed}) + "\n")


def assert_close_to_scale(actual: Tensor, expected: Tensor, relative: float, name: str) -> None:
    """`actual` equals `expected` within `relative` × max|expected| everywhere."""
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}"
    scale = expected.abs().max().item()
    worst = (actual - expected).abs().max().item()
    _log(name, worst, scale, relative)
    assert worst <= relative * scale, (
        f"{name}: greatest difference {worst:.3g} exceeds {relative:g} of the scale {scale:.3g} "
        f"(relative {worst / scale:.3g})"
    )


def top2_margin(logits: Tensor) -> float:
    """The smallest gap between the two largest logits over the positions of `logits` (..., V)."""
    top = logits.double().topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1]).min().item()


def assert_greedy_is_robust(logits: Tensor, relative: float, name: str) -> None:
    """A greedy-token comparison across kernel paths holds only where no top-2 gap is within rounding.

    `logits` are the reference's logits at the positions whose argmax is compared; the rounding is
    bounded by `relative` × their scale on either side, so the gap must exceed twice that.
    """
    scale = logits.abs().max().item()
    margin = top2_margin(logits)
    _log(f"{name} (top-2 margin)", margin, scale, 2 * relative)
    assert margin > 2 * relative * scale, (
        f"{name}: a top-2 logit gap of {margin:.3g} is within rounding ({2 * relative * scale:.3g}); "
        "pick another seed or prompt for a token-level comparison"
    )
