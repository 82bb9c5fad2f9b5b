"""Weight-only int4 for CPU decode, on PyTorch's own kernel `aten._weight_int4pack_mm_for_cpu`.

Each run of `group_size` consecutive inputs of one output row (a group) keeps a scale s and a
zero point z, and every weight in it a 4-bit code q in 0..15:  w ≈ (q − 8)·s + z.  That is the
kernel's formula (tinygemm's convention: the zero point is a float offset, not an integer code),
so llama.cpp's Q4_0 (w = (q − 8)·d) is the case z = 0, and Q4_1 (w = q·d + m) is z = m + 8d.

The kernel takes its scales and zero points in the activations' dtype, and on this project's
AVX-512 machine only bf16 activations run fast: group 32, 5632×2048, one thread, 0.65 ms with bf16
against 41 ms (fp32) and 84 ms (fp16), which take a scalar reference path. So s and z are bf16, a
projection's input is rounded to bf16 and its output comes back in the caller's dtype, as for int8.

Quantizing a float matrix: z is the ideal zero point rounded to bf16 first, then s the smallest
bf16 that still reaches both ends of the group from that z. Every weight then lies within s/2 of
its code's value (`max_error`), with no clamping, whatever the rounding of s and z did.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ParameterError
from ..model import Transformer
from .int8 import PROJECTIONS, _bf16_at_least, quantize_output_int8, row_chunks
from .page_release import release_file_pages

GROUP_SIZES = (32, 64, 128)  # the kernel also takes 256; the issue asks for these
DEFAULT_GROUP_SIZE = 32  # llama.cpp's Q4_0 block: the most accurate, and as fast here as 128
_INNER_K_TILES = 2  # tinygemm's tiling argument; the CPU packing accepts it and ignores it
_READBACK_ROWS = 512  # identity rows per kernel call when codes are read back (bounds the temporary)
# From this many input rows on (a prefill), a dequantized bf16 copy of the matrix and PyTorch's bf16 matrix
# product (oneDNN, AMX here) beat the kernel, which handles rows four at a time: 5632×2048 with 512 rows,
# one thread, 144 ms in the kernel against 55 ms unpacking and dequantizing plus 15 ms multiplying.
PREFILL_ROWS = 256


def quantize_groups(weight: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Codes uint8 (N, K) in 0..15 and bf16 scales and zero points (N, K / group_size) of a float
    (N, K) matrix, such that every weight lies within half its group's scale of (q − 8)·s + z."""
    rows, columns = weight.shape
    codes = torch.empty(rows, columns, dtype=torch.uint8)
    scale = torch.empty(rows, columns // group_size, dtype=torch.bfloat16)
    zero = torch.empty_like(scale)
    for part in row_chunks(rows, columns):  # a few rows at a time: no full-size fp32 temporaries
        source = weight[part]  # read once: a GGUF tensor decodes its blocks on each read
        codes[part], scale[part], zero[part] = _quantize_rows(source.detach().float(), group_size)
        release_file_pages(source)  # a memory-mapped source's pages, read: not needed resident
    return codes, scale, zero


def _quantize_rows(weight: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    rows, columns = weight.shape
    groups = weight.reshape(rows, columns // group_size, group_size)
    low, high = groups.amin(-1), groups.amax(-1)
    # Codes reach 8 steps below z and 7 above, so with 15 steps spanning the group z sits 8 steps above its low end.
    zero = (low + (high - low) * (8 / 15)).to(torch.bfloat16)
    z = zero.float()
    # Reach `high` within 7 steps and `low` within 8 from the rounded z; a constant group needs no steps
    # but a positive scale (the smallest normal bf16).
    needed = torch.maximum((high - z) / 7, (z - low) / 8).clamp(min=torch.finfo(torch.bfloat16).tiny)
    scale = _bf16_at_least(needed)
    codes = torch.round((groups - z[..., None]) / scale.float()[..., None]) + 8
    # The clamp changes nothing but a quotient that fp32 division rounded just past 7.5 or below -8.5.
    return codes.clamp_(0, 15).to(torch.uint8).reshape(rows, columns), scale, zero


def dequantize_groups(codes: Tensor, scale: Tensor, zero: Tensor, group_size: int) -> Tensor:
    """(q − 8)·s + z in fp32, the values the kernel multiplies by."""
    rows, columns = codes.shape
    groups = codes.float().reshape(rows, -1, group_size) - 8
    return (groups * scale.float()[..., None] + zero.float()[..., None]).reshape(rows, columns)


def check_group_size(group_size: object, in_features: int | None = None, name: str = "group_size") -> int:
    """The group size, or a ParameterError saying what is allowed (and why, for a matrix it does not divide)."""
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        raise ParameterError(name, f"one of {', '.join(map(str, GROUP_SIZES))}", group_size)
    if in_features is not None and in_features % group_size:
        fitting = [g for g in GROUP_SIZES if in_features % g == 0]
        raise ParameterError(
            name, f"a group size that divides every projection's input width ({in_features} here): "
            f"{', '.join(map(str, fitting)) or 'none of ' + ', '.join(map(str, GROUP_SIZES))}", group_size)
    return group_size


class Int4Linear(nn.Module):
    """y = x @ Wᵀ with W held as packed 4-bit codes plus a bf16 scale and zero point per group."""

    def __init__(self, codes: Tensor, scale: Tensor, zero: Tensor, group_size: int):
        super().__init__()
        out_features, in_features = codes.shape
        check_group_size(group_size, in_features)
        if codes.dtype != torch.uint8 or scale.shape != (out_features, in_features // group_size) != zero.shape:
            raise ValueError(f"Int4Linear: codes must be uint8 (N, K) with scale and zero (N, K/{group_size}); got "
                             f"{codes.dtype} {tuple(codes.shape)}, {tuple(scale.shape)}, {tuple(zero.shape)}")
        if out_features % 16:
            raise ValueError(f"Int4Linear: output width {out_features} is not a multiple of 16, which the kernel's "
                             "packing needs")
        if int(codes.max()) > 15:
            raise ValueError(f"Int4Linear: codes must lie in 0..15, found {int(codes.max())}")
        # Packed a block of rows at a time (the packing is blocked by 64 rows, so the parts concatenate):
        # the kernel's packing takes int32 codes, 8× the packed size if converted whole.
        pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu
        packed = torch.cat([pack(codes[part].to(torch.int32), _INNER_K_TILES)
                            for part in row_chunks(out_features, in_features, multiple=64)])
        self.register_buffer("packed", packed)
        # (K / group, N, 2): the kernel reads each group's pair (scale, zero) for all N outputs together.
        pairs = torch.stack([scale.to(torch.bfloat16).t(), zero.to(torch.bfloat16).t()], dim=-1)
        self.register_buffer("scales_and_zeros", pairs.contiguous())
        self.group_size, self.in_features, self.out_features = group_size, in_features, out_features

    @classmethod
    def from_float(cls, weight: Tensor, group_size: int = DEFAULT_GROUP_SIZE) -> Int4Linear:
        """Quantize an (out, in) float matrix group by group (see `quantize_groups`)."""
        check_group_size(group_size, weight.shape[1])
        return cls(*quantize_groups(weight, group_size), group_size)

    @property
    def scale(self) -> Tensor:
        return self.scales_and_zeros[..., 0].t()  # (N, K / group)

    @property
    def zero(self) -> Tensor:
        return self.scales_and_zeros[..., 1].t()

    def codes(self) -> Tensor:
        """The 4-bit codes (N, K), unpacked (`_packing_block`) or else read back through the kernel
        itself: with unit scales and zero points 0, the product of the identity with the packed matrix
        is q − 8 exactly (small integers are exact in bf16)."""
        block = _packing_block()
        if block is not None:
            return _unpack(self.packed, self.out_features, self.in_features, block)
        unit = torch.zeros_like(self.scales_and_zeros)
        unit[..., 0] = 1
        out = []
        for start in range(0, self.in_features, _READBACK_ROWS):
            rows = min(_READBACK_ROWS, self.in_features - start)
            eye = torch.zeros(rows, self.in_features, dtype=torch.bfloat16)
            eye[:, start : start + rows] = torch.eye(rows, dtype=torch.bfloat16)
            out.append(torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.packed, self.group_size, unit))
        return (torch.cat(out).t() + 8).to(torch.uint8)  # (N, K)

    @property
    def weight(self) -> Tensor:
        """The dequantized matrix (a copy in fp32), for readers of `.weight` such as exporters."""
        return dequantize_groups(self.codes(), self.scale, self.zero, self.group_size)

    def dequantized(self) -> Tensor:
        """(q − 8)·s + z as a bf16 matrix (each value rounded twice, product then sum): for prefills."""
        groups = self.codes().view(self.out_features, -1, self.group_size).to(torch.bfloat16) - 8
        return (groups * self.scale[..., None] + self.zero[..., None]).view(self.out_features, self.in_features)

    def max_error(self) -> Tensor:
        """The largest distance of a quantized weight from the value it stands for, per group: s/2."""
        return self.scale.float() / 2

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        if rows.shape[0] >= PREFILL_ROWS and _packing_block() is not None:
            out = F.linear(rows, self.dequantized())
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size,
                                                             self.scales_and_zeros)
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def _unpack(packed: Tensor, rows: int, columns: int, block: int) -> Tensor:
    """Codes (rows, columns) from PyTorch's CPU int4 packing with `block`-row blocks: for each block and
    input column, byte j holds row j in its low nibble and row j + block/2 in its high one; the rows after
    the last whole block go in pairs (row n low, row n + 1 high)."""
    flat, whole = packed.reshape(-1), rows // block * block
    head = flat[: whole * columns // 2].view(rows // block, columns, block // 2)
    codes = torch.cat([head & 15, head >> 4], dim=-1).transpose(1, 2).reshape(whole, columns)
    if whole == rows:
        return codes
    tail = flat[whole * columns // 2 :].view(columns, (rows - whole) // 2)
    return torch.cat([codes, torch.stack([tail & 15, tail >> 4], dim=-1).reshape(columns, -1).t()])


@functools.cache
def _packing_block() -> int | None:
    """Rows per block of the packing this process's kernels use (64 under AVX-512, 32 under AVX2), found
    by packing known codes: it follows `ATEN_CPU_CAPABILITY` and PyTorch's version, so it is checked, not
    assumed. None: no known layout matches (codes are then read back through the kernel, prefills use it)."""
    codes = torch.randint(0, 16, (112, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32), _INNER_K_TILES)
    return next((block for block in (64, 32) if torch.equal(_unpack(packed, 112, 64, block), codes)), None)


@torch.no_grad()
def quantize_int4(model: Transformer, group_size: int = DEFAULT_GROUP_SIZE) -> Transformer:
    """Replace every projection of every layer with an Int4Linear, in place; the output head becomes int8.

    The head stays at 8 bits, as llama.cpp keeps it at 6 (Q6_K) in its 4-bit files: it alone decides
    the next token's logits, a 4-bit head costs the most perplexity for the fewest bytes (measured in
    the README's quantization table), and a tied embedding keeps its own full-precision copy.
    """
    args = model.args
    for width in {args.dim, args.n_heads * args.head_dim, args.ffn_hidden_dim}:
        check_group_size(group_size, width)
    outputs = {args.dim, args.n_heads * args.head_dim, args.kv_heads * args.head_dim, args.ffn_hidden_dim}
    if odd := sorted(width for width in outputs if width % 16):
        raise ParameterError("quantize", f"int8 for this model: int4's kernel needs output widths that are "
                             f"multiples of 16, and this model has {', '.join(map(str, odd))}", f"int4-g{group_size}")
    for layer in model.layers:
        layer.attention.fused_qkv = layer.feed_forward.fused_gate_up = None  # quantized one by one
        for path in PROJECTIONS:
            parent_name, name = path.split(".")
            parent = getattr(layer, parent_name)
            setattr(parent, name, Int4Linear.from_float(getattr(parent, name).weight, group_size))
    quantize_output_int8(model)
    return model
