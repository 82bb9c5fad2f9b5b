"""Quantized projections for a loaded model: the `quantize` option, and GGUF blocks mapped onto the kernels.

`quantize="int8"` or `"int4"` (`"int4-g32"`, `"int4-g64"`, `"int4-g128"`; plain int4 is g32) quantizes a
float checkpoint's projections at load. A GGUF file's block-quantized projections go onto the same
two kernels directly, tensor by tensor (`gguf_module`):

| GGUF type | kernel | how |
|---|---|---|
| Q4_0 (w = d·(q − 8)) | int4, group 32 | the file's codes as they are; scale d rounded fp16 → bf16 (≤ 2**-8 of d), zero 0 |
| Q4_1 (w = d·q + m) | int4, group 32 | the file's codes; scale d and zero point m + 8d rounded to bf16 |
| Q8_0 (w = d·q, d per 32) | int8, one scale per row | dequantized, re-quantized per row (the kernel has no block scales) |
| K-quants and others of ≤ 4.5 bits (Q4_K, Q3_K, Q2_K, IQ4) | int4, group 32 | dequantized, re-quantized |
| Q5_0, Q5_1, Q5_K, Q6_K | int8 | dequantized, re-quantized per row: more bits than the file, never fewer |

Why bf16 and not exact: the int4 kernel wants its scales in the activations' dtype and runs fast only for
bf16 (`int4.py`); an fp16 d rounded to bf16 moves every weight of its block by the same factor, at most
2**-8 — a twentieth of Q4_0's own rounding (up to half a step, d/2, on weights of size up to 8d). Q4_0 and
Q4_1 under `quantize="int4-g64"`/`"g128"` and every float checkpoint are quantized from their values.
Token embeddings stored quantized are dequantized to fp32 (exact: ggml decodes in fp32), as the lookup
reads one row per token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ParameterError
from ..model import Transformer
from .dtype_choice import NAMES
from .int4 import DEFAULT_GROUP_SIZE, GROUP_SIZES, Int4Linear, quantize_int4
from .int8 import Int8Linear, quantize_int8
from .page_release import release_file_pages, return_freed_memory

QUANTIZE_CHOICES = ("int8", "int4", *(f"int4-g{g}" for g in GROUP_SIZES))
INT4_KINDS = ("Q4_0", "Q4_1", "Q4_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS")  # at most 4.5 bits a weight


def parse_quantize(quantize: object) -> tuple[str, int] | None:
    """("int8", 0) or ("int4", group size) for a `quantize` option; None for None."""
    if quantize is None:
        return None
    if not isinstance(quantize, str) or quantize not in QUANTIZE_CHOICES:
        raise ParameterError("quantize", "None or one of " + ", ".join(map(repr, QUANTIZE_CHOICES)) +
                             " (int4 = int4-g32: 4-bit weights in groups of 32 inputs)", quantize)
    if quantize == "int8":
        return "int8", 0
    return "int4", int(quantize.removeprefix("int4-g")) if "-g" in quantize else DEFAULT_GROUP_SIZE


def quantize_model(model: Transformer, quantization: tuple[str, int]) -> Transformer:
    """Quantize the float projections left in `model` (all of them, for a float checkpoint)."""
    bits, group_size = quantization
    if not isinstance(model.layers[0].attention.wq, nn.Linear):
        return model  # a GGUF file's projections, already mapped
    return quantize_int8(model) if bits == "int8" else quantize_int4(model, group_size)


def gguf_module(tensor, quantization: tuple[str, int] | None) -> nn.Module:
    """The quantized projection for one GGUF `QuantizedTensor` (see the table above).

    `quantization`: None keeps the file's bit width; ("int8", 0) or ("int4", g) asks for that kernel."""
    bits, group_size = quantization or (("int4", 32) if tensor.kind in INT4_KINDS else ("int8", 0))
    if bits == "int8":
        return Int8Linear(tensor)  # dequantized a few rows at a time as it quantizes them
    if group_size == 32 and tensor.kind == "Q4_0":
        scale = tensor.scales()
        return Int4Linear(tensor.codes(), scale, torch.zeros_like(scale), 32)
    if group_size == 32 and tensor.kind == "Q4_1":
        scale = tensor.scales().float()
        return Int4Linear(tensor.codes(), scale, tensor.mins().float() + 8 * scale, 32)
    return Int4Linear.from_float(tensor, group_size)


def weights_label(model: Transformer, gguf_kinds: dict[str, str] | None = None) -> str:
    """'bf16', 'int8', 'int4-g32', or for a GGUF file 'GGUF Q4_0 → int4-g32 (154), Q6_K → int8 (1)'."""
    if gguf_kinds and not isinstance(model.layers[0].attention.wq, nn.Linear):
        counts: dict[str, int] = {}
        for name, kind in gguf_kinds.items():
            key = f"{kind} → {_module_label(model.get_submodule(name.removesuffix('.weight')))}"
            counts[key] = counts.get(key, 0) + 1
        return "GGUF " + ", ".join(f"{key} ({n})" for key, n in counts.items())
    return _module_label(model.layers[0].attention.wq)


def _module_label(module: nn.Module) -> str:
    if isinstance(module, Int4Linear):
        return f"int4-g{module.group_size}"
    if isinstance(module, Int8Linear):
        return "int8"
    return NAMES.get(module.weight.dtype, str(module.weight.dtype).removeprefix("torch."))


def install_gguf_modules(model: Transformer, quantized: dict, quantization: tuple[str, int] | None) -> None:
    """Put the quantized projections in place of the meta-device placeholders they were loaded as."""
    for name, tensor in quantized.items():
        parent_name, _, child = name.removesuffix(".weight").rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wanted = quantization
        if name == "output.weight" and quantization and quantization[0] == "int4" and tensor.kind not in INT4_KINDS:
            wanted = ("int8", 0)  # the head stays at 8 bits, as `quantize_int4` keeps it (it alone makes the logits)
        setattr(parent, child, gguf_module(tensor, wanted))
        release_file_pages(tensor.raw)  # the file's blocks, read: the module holds its own copy
        # The decoding temporaries were freed, but glibc keeps such freed blocks in the heap, where they add up over
        # the layers (a 60M-parameter Q8_0 file peaked at 1.4x its steady size without this).
        return_freed_memory()


def is_projection(name: str) -> bool:
    """Whether a parameter name is a matrix the kernels multiply by (every one but the embedding table)."""
    return name.endswith(".weight") and (name == "output.weight" or ".attention.w" in name or ".feed_forward.w" in name)


def placeholder(tensor) -> Tensor:
    """A meta-device stand-in of the tensor's shape: loaded by name, replaced by its module afterwards."""
    return torch.empty(tensor.shape, device="meta")
