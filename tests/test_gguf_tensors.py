"""GGUF tensor types: our decoded values equal the gguf package's reference bit for bit, for every type we read.

Blocks are random bytes (every nibble and bit pattern occurs) with finite fp16 scales written where each format keeps
them, so no type needs a quantizer; the reference is gguf-py's own reader and `gguf.quants.dequantize`. Decoding is
elementwise (no sums), so equality is exact on every CPU kernel family.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from checkpoint_fixtures import is_file_backed
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QType

from llama_core.errors import CheckpointError
from llama_core.formats.gguf import QuantizedTensor, map_tensors
from llama_core.formats.gguf_tensors import SUPPORTED_TYPES
from llama_core.gguf_file import read_gguf_header

# Byte offsets of the fp16 scale fields inside one block (ggml-common.h's block_* structs).
FP16_FIELDS = {
    QType.Q4_0: (0,), QType.Q4_1: (0, 2), QType.Q5_0: (0,), QType.Q5_1: (0, 2), QType.Q8_0: (0,),
    QType.Q2_K: (80, 82), QType.Q3_K: (108,), QType.Q4_K: (0, 2), QType.Q5_K: (0, 2), QType.Q6_K: (208,),
    QType.IQ4_NL: (0,), QType.IQ4_XS: (0,),
}  # fmt: skip
ROWS, COLUMNS = 5, 512  # not square, so a transposed read cannot pass; two 256-value super-blocks per row


def random_tensor(qtype: QType, rows: int = ROWS, columns: int = COLUMNS, seed: int = 0) -> np.ndarray:
    """A tensor of `qtype` as GGUF stores it: float values for F32/F16, bytes (rows, row bytes) otherwise."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((rows, columns)).astype(np.float32)
    if qtype == QType.F32:
        return values
    if qtype == QType.F16:
        return values.astype(np.float16)
    if qtype == QType.BF16:
        return gguf.quants.quantize(values, QType.BF16)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, columns // block, size), dtype=np.uint8)
    for offset in FP16_FIELDS[qtype]:
        scales = rng.uniform(-0.1, 0.1, (rows, columns // block, 1)).astype(np.float16)
        raw[..., offset : offset + 2] = scales.view(np.uint8)
    return raw.reshape(rows, -1)


def write(path, tensors: dict[str, tuple[np.ndarray, QType]]):
    writer = gguf.GGUFWriter(path, "llama")
    for name, (data, qtype) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def reference_values(path) -> dict[str, np.ndarray]:
    """gguf-py's reading: each tensor dequantized by gguf.quants, in torch's (rows, columns) order."""
    out = {}
    for t in gguf.GGUFReader(path).tensors:
        rows_first = tuple(int(n) for n in reversed(t.shape))
        out[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(rows_first).astype(np.float32)
    return out


def ours(path) -> dict:
    return map_tensors(read_gguf_header(path, CheckpointError))


@pytest.mark.parametrize("qtype", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_every_type_decodes_to_the_gguf_packages_values(tmp_path, qtype):
    path = write(tmp_path / "t.gguf", {"w.weight": (random_tensor(qtype), qtype)})
    tensor = ours(path)["w.weight"]
    assert tuple(tensor.shape) == (ROWS, COLUMNS)
    values = tensor.dequantize() if isinstance(tensor, QuantizedTensor) else tensor.float()
    assert values.dtype == torch.float32
    np.testing.assert_array_equal(values.numpy(), reference_values(path)["w.weight"])
    if isinstance(tensor, QuantizedTensor):  # the 16-bit decode is the fp32 one, rounded once
        assert torch.equal(tensor.to(torch.bfloat16), values.to(torch.bfloat16))
        assert tensor.kind == qtype.name


@pytest.mark.parametrize("qtype", [QType.Q8_0, QType.Q4_0, QType.Q4_1], ids=lambda t: t.name)
def test_codes_and_scales_rebuild_the_values_with_ggmls_formulas(tmp_path, qtype):
    path = write(tmp_path / "t.gguf", {"w.weight": (random_tensor(qtype), qtype)})
    tensor = ours(path)["w.weight"]
    codes, scales = tensor.codes(), tensor.scales()
    assert codes.shape == (ROWS, COLUMNS) and scales.shape == (ROWS, COLUMNS // 32) and scales.dtype == torch.float16
    d = scales.float().repeat_interleave(32, dim=1)
    if qtype == QType.Q8_0:
        assert codes.dtype == torch.int8
        rebuilt = d * codes.float()
    elif qtype == QType.Q4_0:
        assert codes.dtype == torch.uint8 and int(codes.max()) <= 15
        rebuilt = d * (codes.float() - 8)
    else:
        rebuilt = d * codes.float() + tensor.mins().float().repeat_interleave(32, dim=1)
    np.testing.assert_array_equal(rebuilt.numpy(), reference_values(path)["w.weight"])


def test_q4_nibbles_come_out_in_column_order(tmp_path):
    # ggml-quants.c dequantize_row_q4_0: value j is the low nibble of byte j, value j + 16 its high nibble.
    block = np.zeros((1, 18), dtype=np.uint8)
    block[0, :2] = np.array([1.0], dtype=np.float16).view(np.uint8)
    block[0, 2:] = np.arange(16, dtype=np.uint8) | (np.arange(15, -1, -1, dtype=np.uint8) << 4)
    tensor = ours(write(tmp_path / "t.gguf", {"w.weight": (block, QType.Q4_0)}))["w.weight"]
    assert tensor.codes()[0].tolist() == list(range(16)) + list(range(15, -1, -1))
    assert tensor.dequantize()[0].tolist() == [float(v - 8) for v in tensor.codes()[0].tolist()]
    with pytest.raises(ValueError, match="mins\\(\\) is defined for Q4_1 blocks only, not Q4_0"):
        tensor.mins()


def test_decoding_in_chunks_of_rows_matches_one_piece(tmp_path):
    # More rows than one dequantization chunk (1024): the chunk boundary must not shift anything.
    path = write(tmp_path / "t.gguf", {"w.weight": (random_tensor(QType.Q4_1, rows=1030, columns=64), QType.Q4_1)})
    np.testing.assert_array_equal(ours(path)["w.weight"].dequantize().numpy(), reference_values(path)["w.weight"])


def test_tensors_are_views_of_the_file_not_copies(tmp_path):
    path = write(tmp_path / "t.gguf", {"a.weight": (random_tensor(QType.F16), QType.F16),
                                       "b.weight": (random_tensor(QType.Q4_0), QType.Q4_0)})
    tensors = ours(path)
    assert is_file_backed(tensors["a.weight"], path)
    assert is_file_backed(tensors["b.weight"].raw, path)
    with pytest.raises(ValueError, match="codes\\(\\) is defined for Q8_0, Q4_0 and Q4_1 blocks, not Q6_K"):
        QuantizedTensor(QType.Q6_K, (1, 256), torch.zeros(1, 210, dtype=torch.uint8)).codes()


def test_an_unsupported_type_is_refused_by_tensor_and_type(tmp_path):
    raw = np.zeros((2, GGML_QUANT_SIZES[QType.TQ1_0][1]), dtype=np.uint8)
    path = write(tmp_path / "t.gguf", {"w.weight": (raw, QType.TQ1_0)})
    with pytest.raises(CheckpointError, match=r"t\.gguf: tensor 'w\.weight' is stored as TQ1_0, which this loader "
                                              r"cannot decode; supported: F32, F16, BF16, Q8_0"):
        ours(path)


def test_a_truncated_file_names_the_tensor_that_runs_past_its_end(tmp_path):
    path = write(tmp_path / "t.gguf", {"w.weight": (random_tensor(QType.Q8_0), QType.Q8_0)})
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=r"t\.gguf: truncated GGUF file: tensor 'w\.weight' lies at bytes "
                                              rf"\d+\.\.{len(data)}, the file has {len(data) - 100}"):
        ours(path)
