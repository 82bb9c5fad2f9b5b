"""GGUF files the loader refuses, each with a message naming the file and what was expected and found."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from gguf import GGUFValueType
from gguf_fixtures import write_llamacpp_gguf
from transformers import LlamaConfig, LlamaForCausalLM

from llama_core import load_checkpoint
from llama_core.errors import CheckpointError, TokenizerError
from llama_core.tokenizer import load_tokenizer

SMALL = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()


@pytest.mark.parametrize("extra, skip, message", [
    ({"llama.expert_count": (8, GGUFValueType.UINT32)}, (),
     r"m\.gguf: a mixture-of-experts model \(8 experts, e\.g\. Mixtral\); only dense LLaMA models are supported"),
    ({"llama.rope.dimension_count": (8, GGUFValueType.UINT32)}, (),
     r"m\.gguf: RoPE rotates 8 of 16 head dimensions \(partial rotary\); LLaMA rotates whole heads"),
    ({"llama.attention.key_length": (16, GGUFValueType.UINT32), "llama.attention.value_length": (8, GGUFValueType.UINT32)},
     (), r"m\.gguf: key length 16 ≠ value length 8; LLaMA uses one head size"),
    ({}, ("llama.feed_forward_length",), r"m\.gguf: missing required key 'llama\.feed_forward_length'"),
    ({"llama.attention.head_count_kv": ([2, 4], GGUFValueType.ARRAY)}, (),
     r"m\.gguf: 'llama\.attention\.head_count_kv' differs between layers \(\[2, 4\]\); LLaMA has one value"),
    ({"llama.rope.scaling.type": ("longrope", GGUFValueType.STRING)}, (),
     r"m\.gguf: RoPE scaling type 'longrope' is not supported; supported: none, linear, yarn"),
    ({"llama.rope.scaling.type": ("yarn", GGUFValueType.STRING), "llama.rope.scaling.factor": (4.0, GGUFValueType.FLOAT32)},
     (), r"m\.gguf: YaRN scaling needs llama\.rope\.scaling\.factor and llama\.rope\.scaling\.original_context_length"),
    ({}, ("token_embd.weight",), r"m\.gguf: no token_embd\.weight tensor"),
], ids=["moe", "partial-rotary", "key-value-length", "missing-key", "per-layer-kv", "longrope", "yarn-no-length",
        "no-embeddings"])  # fmt: skip
def test_what_llama_cannot_be_is_refused_by_name(tmp_path, model, extra, skip, message):
    (path,) = write_llamacpp_gguf(model, tmp_path / "m.gguf", extra=extra, skip=skip)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_tensor_llama_has_no_place_for_is_named(tmp_path, model):
    # A q bias (Qwen2-style weights under the llama name) is not something to drop silently.
    (path,) = write_llamacpp_gguf(model, tmp_path / "bias.gguf",
                                  extra_tensors={"blk.0.attn_q.bias": np.zeros(64, dtype=np.float32)})
    with pytest.raises(CheckpointError, match=r"bias\.gguf: tensor 'blk\.0\.attn_q\.bias' has no place in a LLaMA "
                                              r"model"):
        load_checkpoint(path)


def test_wrong_shapes_name_the_tensor_and_both_shapes(tmp_path):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    (path,) = write_llamacpp_gguf(model, tmp_path / "m.gguf",
                                  extra={"llama.feed_forward_length": (64, GGUFValueType.UINT32)})
    with pytest.raises(CheckpointError, match=r"m\.gguf: tensor 'layers\.0\.feed_forward\.w1\.weight' has wrong "
                                              r"shape: expected \(64, 64\) from config, got \(96, 64\) in file"):
        load_checkpoint(path)


def test_unsupported_versions_and_byte_orders_are_named(tmp_path, model):
    (path,) = write_llamacpp_gguf(model, tmp_path / "m.gguf")
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 4, 1)
    (tmp_path / "v1.gguf").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"v1\.gguf: unsupported GGUF file: version 1; supported versions: 2, 3"):
        load_checkpoint(tmp_path / "v1.gguf")
    struct.pack_into(">I", data, 4, 3)
    (tmp_path / "be.gguf").write_bytes(data)
    with pytest.raises(CheckpointError, match=r"be\.gguf: unsupported GGUF file: a big-endian file \(version 3\)"):
        load_checkpoint(tmp_path / "be.gguf")
    struct.pack_into("<I", data, 4, 3)
    (tmp_path / "short.gguf").write_bytes(bytes(data[:40]))  # cut inside the first key
    with pytest.raises(CheckpointError, match=r"short\.gguf: truncated or corrupt GGUF file: needs \d+ bytes at byte"):
        load_checkpoint(tmp_path / "short.gguf")


def test_a_weights_only_gguf_takes_the_tokenizer_beside_it(tmp_path, tokenizer_path, tokenizer):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**SMALL, "vocab_size": tokenizer.vocab_size})).eval()
    (path,) = write_llamacpp_gguf(model, tmp_path / "m.gguf")
    assert load_checkpoint(path).tokenizer is None
    with pytest.raises(TokenizerError, match=r"m\.gguf: this GGUF file holds no vocabulary \(no tokenizer\.ggml\."
                                             r"model key\); pass the model's tokenizer files"):
        load_tokenizer(path)
    (tmp_path / "tokenizer.model").write_bytes(tokenizer_path.read_bytes())
    loaded = load_checkpoint(path)
    assert loaded.tokenizer.kind == "sentencepiece" and loaded.tokenizer.vocab_size == tokenizer.vocab_size
