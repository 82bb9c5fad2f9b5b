"""GGUF tensor data as torch tensors: float types as memory-mapped views, block-quantized types kept as their blocks.

ggml's block formats (ggml-common.h, `dequantize_row_*` in ggml-quants.c) for the three we decode ourselves, each
a block of 32 consecutive values of one row:

| type | bytes | layout | value j of the block |
|------|-------|--------|----------------------|
| Q8_0 | 34 | fp16 d, 32 int8 q | d·q[j] |
| Q4_0 | 18 | fp16 d, 16 bytes: value j in the low nibble of byte j, value j+16 in its high nibble | d·(q[j] − 8) |
| Q4_1 | 20 | fp16 d, fp16 m, 16 bytes as Q4_0 | d·q[j] + m |

These are the types the int4/int8 kernels can take without a float round trip, so their codes and scales are
exposed as they are (`codes()`, `scales()`, `mins()`). The K-quants (256-value super-blocks with 6-bit sub-scales)
and the others are dequantized by the `gguf` package's own `gguf.quants.dequantize`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QType
from gguf.quants import dequantize as gguf_dequantize
from torch import Tensor

from ..kernels.page_release import release_file_pages

FLOAT_TYPES = {QType.F32: torch.float32, QType.F16: torch.float16, QType.BF16: torch.bfloat16}
RAW_TYPES = (QType.Q8_0, QType.Q4_0, QType.Q4_1)  # decoded here; their codes and scales are exposed
GGUF_PACKAGE_TYPES = (QType.Q5_0, QType.Q5_1, QType.Q2_K, QType.Q3_K, QType.Q4_K, QType.Q5_K, QType.Q6_K,
                      QType.IQ4_NL, QType.IQ4_XS)  # decoded by gguf.quants
SUPPORTED_TYPES = (*FLOAT_TYPES, *RAW_TYPES, *GGUF_PACKAGE_TYPES)
_ROWS_PER_CHUNK = 1024  # dequantize this many rows at a time: one fp32 chunk in flight, not a whole fp32 matrix


class QuantizedTensor:
    """A block-quantized GGUF tensor: its blocks (a memory-mapped uint8 view) and how to decode them.

    Quacks like a Tensor where the loader needs it to (`shape`, `dtype`, `to(dtype)`), so the generic path
    dequantizes it one tensor at a time; the int4/int8 kernels can take `codes()`/`scales()`/`mins()` instead.
    """

    # What dtype="auto" treats it as: like an F16 file (fp32 on a CPU with room, else fp16). Not a storage type.
    dtype = torch.float16

    def __init__(self, kind: QType, shape: tuple[int, ...], raw: Tensor):
        self.qtype = kind
        self.kind = kind.name  # "Q4_0", "Q6_K", ...
        self.block_size, self.type_size = GGML_QUANT_SIZES[kind]
        self.shape = torch.Size(shape)
        rows = math.prod(shape[:-1])
        expected = (rows, shape[-1] // self.block_size * self.type_size)
        if shape[-1] % self.block_size or tuple(raw.shape) != expected or raw.dtype != torch.uint8:
            raise ValueError(f"{self.kind} tensor of shape {tuple(shape)} needs uint8 blocks of shape {expected}, "
                             f"got {raw.dtype} {tuple(raw.shape)}")
        self.raw = raw

    def __repr__(self) -> str:
        return f"QuantizedTensor({self.kind}, shape={tuple(self.shape)})"

    def numel(self) -> int:
        return self.shape.numel()

    def to(self, dtype: torch.dtype) -> Tensor:
        """The dequantized values in `dtype` (what `Tensor.to` would give, so the loader needs no special case)."""
        return self.dequantize(dtype)

    def detach(self) -> QuantizedTensor:
        return self  # nothing to detach: the blocks are no autograd leaf

    def __getitem__(self, rows: slice) -> Tensor:
        """Rows `rows` of a matrix, dequantized to fp32: the quantizers read a float matrix a few rows at a time
        (kernels/int8.py `row_chunks`), so a re-quantized GGUF matrix never exists whole in fp32."""
        if len(self.shape) != 2 or not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"a {self.kind} tensor is indexed by a slice of rows only, got {rows!r}")
        raw = self.raw[rows]
        values = self._decode(raw)
        release_file_pages(raw)  # read once: its file pages need not stay resident beside the converted copy
        return values

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """Decoded values, computed in fp32 as ggml does and then cast, a chunk of rows at a time."""
        rows = self.raw.shape[0]
        out = torch.empty((rows, self.shape[-1]), dtype=dtype)
        for start in range(0, rows, _ROWS_PER_CHUNK):
            stop = min(start + _ROWS_PER_CHUNK, rows)
            out[start:stop] = self._decode(self.raw[start:stop])
        return out.view(self.shape)

    def _decode(self, raw: Tensor) -> Tensor:
        if self.qtype not in RAW_TYPES:
            return torch.from_numpy(gguf_dequantize(raw.numpy(), self.qtype))
        # numpy rather than torch: its uint8 shifts and masks run several times faster here on these strided views.
        blocks = self._blocks(raw).numpy()
        d = _half(blocks[..., :2])  # (R, B, 1)
        if self.qtype == QType.Q8_0:
            values = blocks[..., 2:].view(np.int8).astype(np.float32)
        elif self.qtype == QType.Q4_0:
            codes = _nibbles(blocks[..., 2:]).view(np.int8)
            codes -= 8
            values = codes.astype(np.float32)
        else:
            values = _nibbles(blocks[..., 4:]).astype(np.float32)
        values *= d  # exact for Q8_0/Q4_0: an 11-bit scale times a code of at most 8 bits fits fp32's 24
        if self.qtype == QType.Q4_1:
            values += _half(blocks[..., 2:4])  # d·q, then + m: ggml's two fp32 operations in its order
        return torch.from_numpy(values.reshape(raw.shape[0], -1))

    def _blocks(self, raw: Tensor) -> Tensor:
        return raw.view(raw.shape[0], -1, self.type_size)  # (R, B, bytes): one block per 32 columns

    def _require_raw(self, what: str) -> np.ndarray:
        if self.qtype not in RAW_TYPES:
            raise ValueError(f"{what}() is defined for Q8_0, Q4_0 and Q4_1 blocks, not {self.kind} (dequantize it)")
        return self._blocks(self.raw).numpy()

    def scales(self) -> Tensor:
        """fp16 (rows, columns // 32): each block's scale d."""
        return torch.from_numpy(self._require_raw("scales")[..., :2].copy().view(np.float16)[..., 0])

    def mins(self) -> Tensor:
        """fp16 (rows, columns // 32): each Q4_1 block's minimum m."""
        blocks = self._require_raw("mins")
        if self.qtype != QType.Q4_1:
            raise ValueError(f"mins() is defined for Q4_1 blocks only, not {self.kind}")
        return torch.from_numpy(blocks[..., 2:4].copy().view(np.float16)[..., 0])

    def codes(self) -> Tensor:
        """The quantized values in column order: int8 for Q8_0, uint8 in 0..15 for Q4_0/Q4_1; (rows, columns)."""
        blocks = self._require_raw("codes")
        if self.qtype == QType.Q8_0:
            codes = blocks[..., 2:].view(np.int8)
        else:
            codes = _nibbles(blocks[..., 2 if self.qtype == QType.Q4_0 else 4 :])
        return torch.from_numpy(np.ascontiguousarray(codes).reshape(self.raw.shape[0], -1))


def _half(field: np.ndarray) -> np.ndarray:
    """(..., 2) bytes of fp16 → (..., 1) float32."""
    return field.copy().view(np.float16).astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """(..., 16) bytes → (..., 32) values: the 16 low nibbles (values 0-15), then the 16 high ones (16-31)."""
    out = np.empty((*packed.shape[:-1], 2 * packed.shape[-1]), dtype=np.uint8)
    np.bitwise_and(packed, 0x0F, out=out[..., : packed.shape[-1]])
    np.right_shift(packed, 4, out=out[..., packed.shape[-1] :])
    return out


def tensor_from_bytes(data: Tensor, kind: int, shape: tuple[int, ...]) -> Tensor | QuantizedTensor:
    """A tensor of `shape` over `data` (a uint8 view of the file, exactly the tensor's bytes): no copy."""
    qtype = QType(kind)
    if qtype in FLOAT_TYPES:
        return data.view(FLOAT_TYPES[qtype]).view(shape)
    rows = math.prod(shape[:-1])
    return QuantizedTensor(qtype, shape, data.view(rows, -1))


def tensor_bytes(kind: int, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of this GGML type and shape occupies in the file."""
    block_size, type_size = GGML_QUANT_SIZES[QType(kind)]
    return math.prod(shape) // block_size * type_size
