"""Inference-time weight layouts: the same numbers, stored the way CPU decode reads them fastest.

Decoding one token multiplies a single row by every weight matrix, so its speed is the speed of
reading the weights. PyTorch stores an `nn.Linear` weight as (out, in) rows; its matrix-vector
product then runs at about 10 GB/s here for a vocabulary projection, against 25-30 GB/s when the
same matrix is stored input-major ("column-major" as seen from (out, in)), where the kernel walks
memory in order. Measured on this project's 2-core AVX2 CPU: 32000×288 2.6× faster, 32000×768
1.9×, square matrices about the same (README, Speed).

`prepare_for_inference` fuses the query/key/value and gate/up projections into one matrix each,
so a layer does 4 matrix products instead of 7, and re-strides fp32 projections in place. The
original weights stay reachable by their names (`wq.weight` …) as views into the fused storage,
so state dicts, the GGUF exporter and the logit lens see the usual tensors.

Under 16-bit (or quantized) weights the residual stream — the activations between and around the
projections, the norms, the KV cache — stays fp32, as in llama.cpp: only each projection's input is
rounded to the weights' type, where transformers' bf16 rounds every sum of the stream.

Every weight replaced by a copy gives its memory-mapped pages back at once (`page_release.py`), so
loading peaks near the size of the finished model instead of the file plus the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..model import Transformer
from .page_release import converted, copy_releasing, release_file_pages, return_freed_memory


def input_major(weight: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The same (out, in) matrix (in `dtype`), with the input dimension contiguous: `weight.t()` is row-major."""
    dtype = dtype or weight.dtype
    if weight.dtype == dtype and weight.t().is_contiguous():
        return weight  # stored so already
    return copy_releasing(torch.empty(weight.shape[1], weight.shape[0], dtype=dtype).t(), weight)


def _fuse(linears: list[nn.Linear], column_major: bool, dtype: torch.dtype) -> Tensor:
    """One (out_1 + out_2 + …, in) matrix in `dtype`; each linear's weight becomes a view of its rows.
    One allocation, each part converted while it is copied in (no converted copy of the parts first)."""
    rows, columns = sum(linear.weight.shape[0] for linear in linears), linears[0].weight.shape[1]
    fused = torch.empty(columns, rows, dtype=dtype).t() if column_major else torch.empty(rows, columns, dtype=dtype)
    start = 0
    for linear in linears:
        width = linear.weight.shape[0]
        copy_releasing(fused[start : start + width], linear.weight.detach())
        _replace_weight(linear, fused[start : start + width])
        start += width
    return fused


def _replace_weight(module: nn.Module, weight: Tensor) -> None:
    """Point `module.weight` at `weight`, giving back the file pages of the weight it replaces."""
    release_file_pages(module.weight.detach(), weight)
    module.weight = nn.Parameter(weight, requires_grad=False)


@torch.no_grad()
def prepare_for_inference(model: Transformer, fuse: bool = True) -> Transformer:
    """Fuse the projections (one matrix product for q/k/v, one for gate/up) and, for fp32 weights,
    re-stride them input-major; under 16-bit or quantized weights, make the residual stream fp32.
    Returns the model, changed in place.

    The embeddings' dtype is the model's: projections still in another (as stored, left so by the
    loader) are converted in the same copy that fuses or re-strides them, so no weight is copied twice.

    Only fp32 is re-strided: PyTorch's bf16 matrix-vector product on the AVX2 machine runs 10-14× *slower*
    on input-major weights (measured: 32000×288 2.5 ms row-major, 35 ms input-major), and 2-3× slower on
    this AVX-512 one. A later `model.to(dtype)` copies each weight on its own and so un-fuses the model;
    the model notices (the fused matrix no longer shares the weights' memory) and runs unfused, still correct.
    """
    dtype = model.tok_embeddings.weight.dtype
    column_major = dtype == torch.float32

    def relaid(weight: Tensor) -> Tensor:
        return input_major(weight, dtype) if column_major else converted(weight, dtype)

    for layer in model.layers:
        attention, ffn = layer.attention, layer.feed_forward
        if not isinstance(attention.wq, nn.Linear):
            break  # quantized projections (their `.weight` is a dequantized copy): nothing to fuse or re-stride
        if fuse:
            attention.fused_qkv = _fuse([attention.wq, attention.wk, attention.wv], column_major, dtype)
            ffn.fused_gate_up = _fuse([ffn.w1, ffn.w3], column_major, dtype)
        else:
            for linear in (attention.wq, attention.wk, attention.wv, ffn.w1, ffn.w3):
                _replace_weight(linear, relaid(linear.weight))
        for linear in (attention.wo, ffn.w2):
            _replace_weight(linear, relaid(linear.weight))
        return_freed_memory()  # each layer's replaced copies, before the next layer allocates
    if isinstance(model.output, nn.Linear):
        tied = model.output.weight is model.tok_embeddings.weight
        _replace_weight(model.output, relaid(model.output.weight))
        if tied:  # keep one tensor: the embedding lookup reads one (strided) row per token, which costs nothing
            model.tok_embeddings.weight = model.output.weight
    if not column_major:
        model.residual_dtype = torch.float32
    norms = [model.norm, *(n for layer in model.layers for n in (layer.attention_norm, layer.ffn_norm))]
    for norm in norms:
        # fp32 norms under an fp32 stream: one fused kernel; a copy either way, so the file's pages can go.
        norm.weight = nn.Parameter(norm.weight.detach().float().clone(), requires_grad=False)
    return_freed_memory()
    return model
