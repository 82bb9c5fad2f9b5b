"""GGUF export: read the file back with gguf's own reader and compare with the model it came from.

That llama.cpp itself generates our greedy tokens from these files is checked by
examples/llamacpp_peer.py, which needs llama-cpp-python (a compile, so not a test dependency).
"""

import shutil

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QType
from gguf import GGUFReader, GGUFValueType, TokenType
from gguf.quants import dequantize

from conftest import tiny_args
from llama_core.cli import main
from llama_core.errors import ParameterError
from llama_core.formats.gguf_export import export_gguf, gguf_tensor_name
from llama_core.formats.hf import save_hf_checkpoint
from llama_core.model import Transformer

MATRIX_TYPES = {"f32": QType.F32, "f16": QType.F16, "q8_0": QType.Q8_0}
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # llama.cpp's LLAMA_FTYPE_ALL_F32, _MOSTLY_F16, _MOSTLY_Q8_0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model, tokenizer_path):
    """The tiny model as a Hugging Face directory, so export goes through the loader's q/k un-permute."""
    out = tmp_path_factory.mktemp("gguf-ckpt")
    save_hf_checkpoint(tiny_model.state_dict(), tiny_model.args, out)
    shutil.copy(tokenizer_path, out / "tokenizer.model")
    return out


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """dtype → GGUFReader of the tiny model exported in that dtype."""
    out = tmp_path_factory.mktemp("gguf")
    return {dtype: GGUFReader(export_gguf(checkpoint, out / f"tiny-{dtype}.gguf", dtype)) for dtype in MATRIX_TYPES}


def field_value(reader: GGUFReader, key: str):
    """A metadata value as Python: a scalar, a str, or a list of either (works across gguf versions)."""
    field = reader.fields[key]
    decode = (lambda part: bytes(part).decode("utf-8")) if field.types[-1] == GGUFValueType.STRING else (
        lambda part: part.tolist()[0])
    values = [decode(field.parts[i]) for i in field.data]
    return values if field.types[0] == GGUFValueType.ARRAY else values[0]


def tensor_values(tensor) -> np.ndarray:
    """A tensor's weights as float32, in our (rows, columns) order."""
    rows_first = tuple(int(n) for n in reversed(tensor.shape))  # GGUF lists ggml's order: columns first
    return dequantize(tensor.data, tensor.tensor_type).reshape(rows_first).astype(np.float32)


def test_tensor_names_follow_gguf():
    assert gguf_tensor_name("tok_embeddings.weight") == "token_embd.weight"
    assert gguf_tensor_name("norm.weight") == "output_norm.weight"
    assert gguf_tensor_name("layers.3.attention.wq.weight") == "blk.3.attn_q.weight"
    assert gguf_tensor_name("layers.0.attention.wo.weight") == "blk.0.attn_output.weight"
    assert gguf_tensor_name("layers.1.feed_forward.w1.weight") == "blk.1.ffn_gate.weight"
    assert gguf_tensor_name("layers.1.feed_forward.w2.weight") == "blk.1.ffn_down.weight"
    assert gguf_tensor_name("layers.1.ffn_norm.weight") == "blk.1.ffn_norm.weight"


@pytest.mark.parametrize("dtype", list(MATRIX_TYPES))
def test_llama_metadata(exported, tiny_model, dtype):
    reader, args = exported[dtype], tiny_model.args
    expected = {
        "general.architecture": "llama",
        "general.file_type": FILE_TYPES[dtype],
        "llama.context_length": args.max_seq_len,
        "llama.embedding_length": args.dim,
        "llama.block_count": args.n_layers,
        "llama.feed_forward_length": args.ffn_hidden_dim,
        "llama.attention.head_count": args.n_heads,
        "llama.attention.head_count_kv": args.kv_heads,
        "llama.rope.dimension_count": args.head_dim,
        "llama.rope.freq_base": args.rope_theta,
        "llama.vocab_size": args.vocab_size,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_space_prefix": True,
    }
    assert {key: field_value(reader, key) for key in expected} == expected
    assert field_value(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(args.norm_eps)
    assert "tokenizer.ggml.padding_token_id" not in reader.fields  # the test tokenizer has no <pad>


@pytest.mark.parametrize("dtype", list(MATRIX_TYPES))
def test_tensors_hold_the_models_weights(exported, tiny_model, dtype):
    tensors = {t.name: t for t in exported[dtype].tensors}
    ours = tiny_model.state_dict()  # Meta layout: wq/wk must come back unpermuted after the HF round trip
    assert sorted(tensors) == sorted(gguf_tensor_name(name) for name in ours)
    for name, weight in ours.items():
        tensor, expected = tensors[gguf_tensor_name(name)], weight.numpy()
        assert tuple(int(n) for n in tensor.shape) == tuple(reversed(expected.shape)), name
        assert tensor.tensor_type == (QType.F32 if expected.ndim == 1 else MATRIX_TYPES[dtype]), name
        got = tensor_values(tensor)
        if dtype == "f32" or expected.ndim == 1:
            np.testing.assert_array_equal(got, expected, err_msg=name)
        elif dtype == "f16":
            np.testing.assert_array_equal(got, expected.astype(np.float16).astype(np.float32), err_msg=name)
        else:  # Q8_0: int8 per value, one fp16 scale per 32 values, so about 1/254 of a block's largest value
            error = np.abs(got - expected).max() / np.abs(expected).max()
            assert error < 0.01, f"{name}: relative error {error:.4f}"


def test_vocabulary_round_trips(exported, tokenizer):
    reader, sp = exported["f32"], tokenizer.processor
    pieces = field_value(reader, "tokenizer.ggml.tokens")
    assert pieces == [sp.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    scores = field_value(reader, "tokenizer.ggml.scores")
    np.testing.assert_allclose(scores, [sp.get_score(i) for i in range(tokenizer.vocab_size)], rtol=1e-6)
    types = field_value(reader, "tokenizer.ggml.token_type")
    assert types[0] == TokenType.UNKNOWN and types[1] == types[2] == TokenType.CONTROL  # <unk>, <s>, </s>
    byte_ids = [i for i in range(tokenizer.vocab_size) if tokenizer.is_byte(i)]
    assert len(byte_ids) == 256 and all(types[i] == TokenType.BYTE for i in byte_ids)
    assert pieces[byte_ids[0x0A]] == "<0x0A>"
    others = set(range(3, tokenizer.vocab_size)) - set(byte_ids)
    assert all(types[i] == TokenType.NORMAL for i in others)


def test_tied_embeddings_leave_out_the_output_head_and_odd_rows_fall_back_to_f16(tmp_path, tokenizer_path, tokenizer):
    # hidden_dim 48: w2's rows are 48 values, not whole 32-value Q8_0 blocks.
    torch.manual_seed(0)
    model = Transformer(tiny_args(tokenizer.vocab_size, tie_embeddings=True, hidden_dim=48))
    save_hf_checkpoint(model.state_dict(), model.args, tmp_path / "ckpt")
    shutil.copy(tokenizer_path, tmp_path / "ckpt" / "tokenizer.model")
    tensors = {t.name: t for t in GGUFReader(export_gguf(tmp_path / "ckpt", tmp_path / "m.gguf", "q8_0")).tensors}
    assert "output.weight" not in tensors  # llama.cpp then reuses token_embd
    assert tensors["blk.0.ffn_down.weight"].tensor_type == QType.F16
    assert tensors["blk.0.ffn_up.weight"].tensor_type == QType.Q8_0


def test_unknown_dtype_is_refused(checkpoint, tmp_path):
    with pytest.raises(ParameterError, match="dtype"):
        export_gguf(checkpoint, tmp_path / "m.gguf", "q4_0")


def test_cli_export_gguf(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert main(["export-gguf", "--model", str(checkpoint), "--out", str(out), "--dtype", "f16"]) == 0
    assert field_value(GGUFReader(out), "general.file_type") == FILE_TYPES["f16"]
    assert str(out) in capsys.readouterr().out
