"""GGUF export of the newer layouts: padded and added vocabulary rows, explicit head_dim, scaled RoPE as llama.cpp
reads it (linear and YaRN keys, Llama 3.1's per-pair `rope_freqs` divisors), and clear refusals for what GGUF's
`llama` architecture cannot say (another tokenizer kind, dynamic NTK)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFReader, TokenType
from test_gguf_export import field_value
from tokenizer_fixtures import SP_VOCAB, write_llama2_sentencepiece, write_llama3_hf
from transformers import LlamaConfig, LlamaForCausalLM

from llama_core import ParameterError, TokenizerError, load_checkpoint
from llama_core.formats.gguf_export import export_gguf

SMALL = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=64)


def checkpoint(path, vocab_size=SP_VOCAB, rope=None, tokenizer=write_llama2_sentencepiece, **config):
    torch.manual_seed(0)
    rope_parameters = {"rope_theta": 10000.0, **(rope or {"rope_type": "default"})}
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, rope_parameters=rope_parameters, **{**SMALL, **config})
                     ).save_pretrained(path)
    tokenizer(path)
    return path


def test_added_and_padding_rows_get_a_token_each(tmp_path):
    path = checkpoint(tmp_path / "alpaca", vocab_size=576,
                      tokenizer=lambda p: write_llama2_sentencepiece(p, added_pad=True))
    reader = GGUFReader(export_gguf(path, tmp_path / "alpaca.gguf"))
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    types = field_value(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == field_value(reader, "llama.vocab_size") == 576  # llama.cpp wants one token per row
    assert (tokens[SP_VOCAB], types[SP_VOCAB]) == ("[PAD]", TokenType.CONTROL)  # special in tokenizer_config
    assert (tokens[575], types[575]) == ("[PAD575]", TokenType.UNUSED)


def test_explicit_head_dim_is_written_as_key_and_value_length(tmp_path):
    reader = GGUFReader(export_gguf(checkpoint(tmp_path / "m", head_dim=16), tmp_path / "m.gguf"))
    assert field_value(reader, "llama.attention.key_length") == field_value(reader, "llama.attention.value_length") == 16
    assert field_value(reader, "llama.embedding_length") == 32


def test_linear_and_yarn_scaling_are_written_as_llama_cpp_keys(tmp_path):
    linear = GGUFReader(export_gguf(checkpoint(tmp_path / "linear", rope={"rope_type": "linear", "factor": 4.0}),
                                    tmp_path / "linear.gguf"))
    assert field_value(linear, "llama.rope.scaling.type") == "linear"
    assert field_value(linear, "llama.rope.scaling.factor") == 4.0
    yarn = GGUFReader(export_gguf(checkpoint(tmp_path / "yarn", rope={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}), tmp_path / "yarn.gguf"))
    assert field_value(yarn, "llama.rope.scaling.type") == "yarn"
    assert field_value(yarn, "llama.rope.scaling.original_context_length") == 16


def test_llama3_scaling_is_written_as_per_pair_divisors_of_theta(tmp_path):
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}
    path = checkpoint(tmp_path / "llama3", rope=rope, max_position_embeddings=128)
    reader = GGUFReader(export_gguf(path, tmp_path / "llama3.gguf"))
    (freqs,) = [t for t in reader.tensors if t.name == "rope_freqs.weight"]
    divisors = np.asarray(freqs.data, dtype=np.float32)
    # llama.cpp rotates pair j by θ_j / divisor_j; that must be our scaled θ_j.
    model = load_checkpoint(path).model
    plain = 1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8))
    scaled = model.rope(1, 1)[0].angle()  # position 1: the angles are θ_j themselves
    np.testing.assert_allclose(plain.numpy() / divisors, scaled.numpy(), rtol=1e-6)
    # Wavelengths 2π·10000^(j/4) = 6.3, 63, 628, 6283: below 64/4 kept, above 64/1 divided by 8, between blended.
    assert divisors[0] == 1.0 and 1 < divisors[1] < 8 and list(divisors[2:]) == [8.0, 8.0]


def test_what_gguf_llama_cannot_say_is_refused(tmp_path):
    dynamic = checkpoint(tmp_path / "dynamic", rope={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(ParameterError, match="without dynamic NTK RoPE scaling"):
        export_gguf(dynamic, tmp_path / "dynamic.gguf")
    info = {}
    llama3 = checkpoint(tmp_path / "llama3-json", vocab_size=768, tokenizer=lambda p: info.update(write_llama3_hf(p)))
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: GGUF export writes SentencePiece vocabularies .* "
                                             r"this is a hf-json tokenizer"):
        export_gguf(llama3, tmp_path / "llama3.gguf")
