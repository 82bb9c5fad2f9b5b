"""Weight-only int8 quantization for CPU decode, on PyTorch's own int8 matrix kernel.

Each output row of a projection keeps one scale (symmetric, absmax / 127) and int8 values: a
quarter of fp32's bytes for decode to read. The product runs in `aten._weight_int8pack_mm`,
PyTorch's CPU kernel for exactly this layout, which wants bf16 activations; the result is cast
back to the model's dtype, so only the projections' inputs are rounded to bf16. Norms,
embeddings and attention stay in the model's dtype.

Measured on this project's 2-core AVX2 CPU (README, Speed): the kernel reads 1.4-1.5× faster
than an fp32 matrix-vector product, but prefill (many rows at once) is about 2× slower than
fp32, and the validation perplexity change on the bundled models is in the README table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..model import Transformer
from .page_release import release_file_pages

# From this many input rows on (a prefill), a dequantized bf16 copy and PyTorch's bf16 matrix product (oneDNN,
# AMX here) beat the kernel, which is a matrix-vector product per row: 5632×2048 with 64 rows, one thread,
# 17.5 ms in the kernel against 9 ms dequantizing plus 3 ms multiplying (512 rows: 144 against 24 ms).
PREFILL_ROWS = 64
CHUNK_ELEMENTS = 1 << 18  # weights quantized at a time: bounds each fp32 temporary to 1 MiB at load


def row_chunks(rows: int, columns: int, multiple: int = 1) -> list[slice]:
    """Slices of whole rows (a multiple of `multiple` each) of about CHUNK_ELEMENTS weights."""
    step = max(multiple, CHUNK_ELEMENTS // max(columns, 1) // multiple * multiple)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _bf16_at_least(x: Tensor) -> Tensor:
    """The smallest bf16 ≥ x, for x ≥ 0 in fp32: round the fp32 bit pattern up to a multiple of 2**16."""
    bits = (x.float().contiguous().view(torch.int32) + 0xFFFF) & -0x10000
    return bits.view(torch.float32).to(torch.bfloat16)  # exact: the low 16 bits are zero


class Int8Linear(nn.Module):
    """y = x @ (scale · q)ᵀ with q int8 (out, in) and one scale per output row."""

    def __init__(self, weight: Tensor):
        super().__init__()
        weight = weight.detach()
        rows, columns = weight.shape
        qweight, scale = torch.empty(rows, columns, dtype=torch.int8), torch.empty(rows, dtype=torch.bfloat16)
        for part in row_chunks(rows, columns):  # a few rows at a time: no full-size fp32 temporaries
            source = weight[part]  # read once: a GGUF tensor decodes its blocks on each read
            chunk = source.float()
            # The scale is rounded to the kernel's bf16 first (upwards, so that absmax still fits in ±127), and the
            # codes are taken with the rounded scale: every weight then lies within half a step of its value.
            scale[part] = _bf16_at_least(chunk.abs().amax(dim=1).clamp(min=1e-30) / 127)  # a zero row stays zero
            qweight[part] = torch.round(chunk / scale[part].float()[:, None]).clamp_(-127, 127)
            release_file_pages(source)  # a memory-mapped source's pages, read: not needed resident
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.in_features, self.out_features = columns, rows

    @property
    def weight(self) -> Tensor:
        """The dequantized matrix (a copy in fp32), for readers of `.weight` such as exporters."""
        return self.qweight.float() * self.scale.float()[:, None]

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if rows.shape[0] >= PREFILL_ROWS:  # q·s rounded once to bf16, then the bf16 matrix product
            out = F.linear(rows, self.qweight.to(torch.bfloat16) * self.scale[:, None])
        else:
            out = torch.ops.aten._weight_int8pack_mm(rows, self.qweight, self.scale)
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)


PROJECTIONS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
               "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


@torch.no_grad()
def quantize_int8(model: Transformer, include_output: bool = True) -> Transformer:
    """Replace every projection (and the output head, unless told not to) with an Int8Linear, in place."""
    for layer in model.layers:
        layer.attention.fused_qkv = layer.feed_forward.fused_gate_up = None  # quantized one by one
        for path in PROJECTIONS:
            parent_name, name = path.split(".")
            parent = getattr(layer, parent_name)
            setattr(parent, name, Int8Linear(getattr(parent, name).weight))
    if include_output:
        quantize_output_int8(model)
    return model


def quantize_output_int8(model: Transformer) -> None:
    """The output head as an Int8Linear; a tied embedding keeps its own full-precision copy."""
    model.output = Int8Linear(model.output.weight)


def is_quantized(model: Transformer) -> bool:
    """Whether the layers' projections are quantized (int8 or int4) rather than float matrices."""
    return not isinstance(model.layers[0].attention.wq, nn.Linear)
