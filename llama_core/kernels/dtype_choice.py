"""Which dtype a checkpoint's weights are kept in on the CPU: the fastest one that changes no weight.

`dtype="auto"` keeps the precision the checkpoint stores and looks, among the dtypes that hold
every stored weight exactly, for the one whose matrix-vector kernel reads the most weights per
second on this machine (`probe.py`):

| stored | exact candidates | not a candidate, and why |
|---|---|---|
| fp32 | fp32 | bf16 and fp16 round every weight |
| bf16 | bf16, fp32 (2× the memory), fp16 *when every weight survives the trip* | — |
| fp16 | fp16, fp32 (2× the memory) | bf16: 3 fewer mantissa bits, rounds most weights |

bf16 → fp16 needs the check: bf16 has fp32's exponent range and fp16 does not (fp16 overflows above
65504 and loses bits below 2**-14), but fp16 has 3 more mantissa bits, so a bf16 weight inside fp16's
normal range is exactly an fp16 number. The check reads every weight once, so it runs only when fp16
would win. Activations are rounded to the weights' 16-bit type at each projection's input (the
residual stream stays fp32, `weight_layout.py`), as llama.cpp does for its f16 files; fp16
activations above 65504 would overflow, which generation reports as non-finite logits.

An explicit dtype is always kept, and its cost is stated: `KernelChoice.reason` says what was chosen
and why, and `describe()` is the line `info`, the app's model line and the benchmark show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .probe import KernelSpeeds

NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
PRECISION = {torch.float32: 24, torch.bfloat16: 8, torch.float16: 11}  # significand bits


@dataclass(frozen=True)
class KernelChoice:
    """How the weights are held and multiplied, and why."""

    weights: str  # "fp32", "bf16", "fp16", "int8", "int4-g32", or a GGUF file's mix ("Q4_0 → int4-g32, …")
    residual: str  # dtype of the residual stream (activations between the layers)
    reason: str
    speeds: KernelSpeeds | None = None

    def describe(self) -> str:
        """'bf16 weights, fp32 residual (auto: …) · probe fp32 25.3, bf16 16.3 … GB/s (2 threads, AVX512)'."""
        line = f"{self.weights} weights, {self.residual} residual ({self.reason})"
        return f"{line} · probe {self.speeds.summary()}" if self.speeds else line


def choose_dtype(stored: torch.dtype, requested: torch.dtype | None, speeds: KernelSpeeds | None,
                 fp32_fits: bool, fits_fp16_exactly: Callable[[], bool]) -> tuple[torch.dtype, str]:
    """The weights' dtype and the reason, for weights stored as `stored`.

    Args:
        requested: the caller's dtype, always kept; None for "auto".
        speeds: the probe's result; None off the CPU (the stored dtype is kept).
        fp32_fits: whether an fp32 copy fits the memory (upcasting doubles a 16-bit model).
        fits_fp16_exactly: reads the weights and says whether bf16 → fp16 changes none of them.
    """
    name = NAMES[stored]
    if requested is not None:
        if requested == stored:
            return requested, f"{name} as asked, the checkpoint's own"
        lossy = PRECISION[requested] < PRECISION[stored] or (stored, requested) == (torch.bfloat16, torch.float16)
        effect = "rounded" if lossy else "exactly converted"
        return requested, f"{NAMES[requested]} as asked; the checkpoint's {name} weights {effect}"
    if stored == torch.float32 or speeds is None or not speeds.reliable:
        why = ("auto never rounds weights" if stored == torch.float32 else "no kernel probe off the CPU"
               if speeds is None else "the kernel probe ran on a busy machine")
        return stored, f"auto: the checkpoint's {name}; {why}"
    candidates = [stored] + ([torch.float32] if fp32_fits else [])
    if stored == torch.bfloat16:
        candidates.append(torch.float16)
    ranked = sorted(candidates, key=lambda d: speeds.weights_per_second(NAMES[d]), reverse=True)
    # A type whose prefill runs at under half another candidate's rate goes last (fp16 on a CPU whose matrix
    # units take bf16 only): decode gains a little, every prompt loses a lot.
    prefill = {d: speeds.prefill_gflops.get(NAMES[d]) for d in candidates}
    fastest = max((rate for rate in prefill.values() if rate), default=None)
    slow = [d for d in ranked if fastest and prefill[d] and prefill[d] < fastest / 2]
    ranked = [d for d in ranked if d not in slow] + slow
    for dtype in ranked:
        if dtype == torch.float16 and stored == torch.bfloat16 and not fits_fp16_exactly():
            continue
        reason = _auto_reason(stored, dtype, ranked, speeds, fp32_fits)
        rate = speeds.weights_per_second
        passed = [f"{NAMES[d]} (prefill {fastest / prefill[d]:.1f}× slower)" for d in slow
                  if rate(NAMES[d]) > rate(NAMES[dtype])]  # only those it decodes faster than
        return dtype, reason + (f"; passed over {', '.join(passed)}" if passed else "")
    return stored, f"auto: the checkpoint's {name}"  # unreachable: `stored` is always a candidate


def _auto_reason(stored: torch.dtype, chosen: torch.dtype, ranked: list[torch.dtype], speeds: KernelSpeeds,
                 fp32_fits: bool) -> str:
    rate = {d: speeds.weights_per_second(NAMES[d]) for d in ranked}
    others = [d for d in ranked if d != chosen]
    versus = ", ".join(f"{rate[chosen] / rate[d]:.2f}× {NAMES[d]}'s weights/s" for d in others)
    kept = "the checkpoint's own" if chosen == stored else f"exact for {NAMES[stored]} weights"
    note = "" if fp32_fits or stored == torch.float32 else "; fp32 would not fit the memory"
    return f"auto: {NAMES[chosen]}, {kept}{', ' + versus if versus else ''}{note}"


def fits_fp16_exactly(tensors: list[Tensor]) -> bool:
    """Whether every bf16 weight is an fp16 number: the round trip bf16 → fp16 → bf16 changes none
    (an overflow to inf, or a tiny weight losing bits as an fp16 subnormal, would)."""
    for t in tensors:
        if t.dtype != torch.bfloat16:
            continue
        for chunk in t.reshape(-1).split(1 << 24):  # bounds the temporary copies
            if not torch.equal(chunk.to(torch.float16).to(torch.bfloat16), chunk):
                return False
    return True
