"""GGUF import: a model read from a GGUF file (written the way llama.cpp's converter writes one) gives transformers'
logits on the same weights, and the same logits as our load of the Hugging Face directory they came from.

Tolerances: fp32 against transformers is an independent implementation summing in its own order
(FP32_VS_REFERENCE of the logits' scale, numerics.py); our GGUF load against our HF load runs the same code on the
same fp32 values, so only the layout of the weights in memory can differ (FP32_REORDER). A quantized GGUF is
compared with transformers on the values that type stores (gguf's own dequantization), so the comparison is again
fp32 against fp32: quantization error is not being tested here, the reading of the blocks is.
"""

from __future__ import annotations

import pytest
import torch
from checkpoint_fixtures import make_checkpoint, references  # noqa: F401 (fixtures)
from gguf import GGMLQuantizationType as QType
from gguf_fixtures import bpe_vocabulary, reference_with_stored_weights, write_llamacpp_gguf
from numerics import FP32_REORDER, FP32_VS_REFERENCE, assert_close_to_scale
from tokenizer_fixtures import LLAMA3_TEMPLATE, write_llama3_hf
from transformers import LlamaConfig, LlamaForCausalLM

from llama_core import detect_format, load_checkpoint
from llama_core.errors import CheckpointError
from llama_core.formats.gguf import read_gguf
from llama_core.loading import estimate_checkpoint_bytes

pytestmark = pytest.mark.numerics

SMALL = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)


def logits(loaded, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return loaded.model(tokens).logits.float()


def hf_model(seed: int = 0, **config) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**SMALL, **config})).eval()


def transformers_logits(model: LlamaForCausalLM, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


TOKENS = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", ["mha", "gqa", "tied"])
def test_f32_gguf_equals_transformers_and_our_hf_load(tmp_path, references, make_checkpoint, name):
    ref = references[name]
    (path,) = write_llamacpp_gguf(ref.model, tmp_path / "model-f32.gguf")
    loaded = load_checkpoint(path, dtype="fp32")
    assert loaded.format == "gguf" and loaded.path == path and loaded.tokenizer is None
    assert_close_to_scale(logits(loaded, ref.tokens), ref.logits, FP32_VS_REFERENCE, f"gguf {name} vs transformers")
    from_hf = load_checkpoint(make_checkpoint(name, "safetensors"), dtype="fp32")
    assert_close_to_scale(logits(loaded, ref.tokens), logits(from_hf, ref.tokens), FP32_REORDER, f"gguf {name} vs hf")
    assert loaded.args == from_hf.args  # heads, kv heads, eps, theta, context, FFN width, tying
    assert loaded.n_params == from_hf.n_params


@pytest.mark.parametrize("qtype", [QType.F16, QType.BF16, QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0],
                         ids=lambda t: t.name)
def test_each_stored_type_gives_the_logits_of_the_values_it_stores(tmp_path, qtype):
    model = hf_model()  # rows of 64 and 96 columns: whole 32-value blocks everywhere
    (path,) = write_llamacpp_gguf(model, tmp_path / f"model-{qtype.name}.gguf", qtype)
    checkpoint = read_gguf(path)
    assert checkpoint.tensor_types["layers.0.attention.wq.weight"] == qtype.name
    assert checkpoint.tensor_types["layers.0.attention_norm.weight"] == "F32"  # norms stay f32, as llama.cpp keeps them
    loaded = load_checkpoint(path, dtype="fp32")
    expected = transformers_logits(reference_with_stored_weights(model, qtype), TOKENS)
    assert_close_to_scale(logits(loaded, TOKENS), expected, FP32_VS_REFERENCE, f"gguf {qtype.name}")


def test_16_bit_dtype_keeps_float_tensors_mapped_and_decodes_blocks_to_it(tmp_path):
    (path,) = write_llamacpp_gguf(hf_model(), tmp_path / "model-q8.gguf", QType.Q8_0)
    loaded = load_checkpoint(path, dtype="bf16")
    assert loaded.dtype == torch.bfloat16
    assert {p.dtype for name, p in loaded.model.named_parameters() if "norm" not in name} == {torch.bfloat16}


def test_explicit_head_dim_comes_from_the_key_length(tmp_path):
    model = hf_model(hidden_size=32, head_dim=16)  # 4 heads of 16: head_dim · n_heads ≠ dim
    (path,) = write_llamacpp_gguf(model, tmp_path / "m.gguf")
    loaded = load_checkpoint(path, dtype="fp32")
    assert (loaded.args.dim, loaded.args.head_dim) == (32, 16)
    assert_close_to_scale(logits(loaded, TOKENS), transformers_logits(model, TOKENS), FP32_VS_REFERENCE, "head_dim")


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 16},
], ids=lambda r: r["rope_type"])
def test_rope_scaling_comes_back_from_keys_and_rope_freqs(tmp_path, rope):
    # 24 positions over an original context of 16: the scaled frequencies decide the logits.
    model = hf_model(rope_parameters={"rope_theta": 10000.0, **rope})
    (path,) = write_llamacpp_gguf(model, tmp_path / "m.gguf")
    loaded = load_checkpoint(path, dtype="fp32")
    assert loaded.args.rope_type == rope["rope_type"] and loaded.args.rope_scaling["factor"] == rope["factor"]
    assert_close_to_scale(logits(loaded, TOKENS), transformers_logits(model, TOKENS), FP32_VS_REFERENCE,
                          f"rope {rope['rope_type']}")


def test_split_parts_load_as_one_model_from_any_part_or_their_folder(tmp_path):
    model = hf_model()
    folder = tmp_path / "split"
    folder.mkdir()
    files = write_llamacpp_gguf(model, folder / "tiny-q8_0.gguf", QType.Q8_0, parts=3)
    assert [f.name for f in files] == [f"tiny-q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    expected = transformers_logits(reference_with_stored_weights(model, QType.Q8_0), TOKENS)
    for source in (files[0], files[2], folder):
        loaded = load_checkpoint(source, dtype="fp32")
        assert_close_to_scale(logits(loaded, TOKENS), expected, FP32_VS_REFERENCE, f"split via {source.name}")
    assert read_gguf(files[1]).files == tuple(files)
    assert detect_format(folder) == "gguf"
    files[1].unlink()
    with pytest.raises(CheckpointError, match=r"tiny-q8_0-00001-of-00003\.gguf: part of a model split into 3 "
                                              r"files; missing: tiny-q8_0-00002-of-00003\.gguf"):
        load_checkpoint(files[0])


def test_a_folder_with_one_model_loads_and_with_two_names_both(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (first,) = write_llamacpp_gguf(hf_model(), folder / "a-f16.gguf", QType.F16)
    assert detect_format(folder) == "gguf" and load_checkpoint(folder).path == folder
    # Tensors as stored (F16 matrices, F32 norms); a quantized file's blocks likewise, its token embeddings as the
    # fp32 rows they are decoded to.
    assert estimate_checkpoint_bytes(folder) == sum(2 * p.numel() if p.dim() == 2 else 4 * p.numel()
                                                    for p in hf_model().parameters())
    (second,) = write_llamacpp_gguf(hf_model(), folder / "b-q8_0.gguf", QType.Q8_0)
    assert estimate_checkpoint_bytes(second) == sum(
        4 * p.numel() if p.dim() == 1 or name == "model.embed_tokens.weight" else p.numel() // 32 * 34
        for name, p in hf_model().named_parameters())
    with pytest.raises(CheckpointError, match=r"holds 2 GGUF models \(a-f16\.gguf, b-q8_0\.gguf\); pass the file"):
        load_checkpoint(folder)
    assert load_checkpoint(first).format == "gguf"


def test_vocabulary_chat_template_and_stop_ids_come_from_the_file(tmp_path):
    info = write_llama3_hf(tmp_path / "llama3")
    vocabulary = bpe_vocabulary(tmp_path / "llama3" / "tokenizer.json", "llama-bpe", bos="<|begin_of_text|>",
                                eos="<|eot_id|>", eot="<|eot_id|>", chat_template=LLAMA3_TEMPLATE)
    (path,) = write_llamacpp_gguf(hf_model(vocab_size=info["vocab_size"]), tmp_path / "m.gguf",
                                  vocabulary=vocabulary)
    loaded = load_checkpoint(path)
    assert (loaded.tokenizer.kind, loaded.tokenizer.path, loaded.chat_template) == ("gguf", path, LLAMA3_TEMPLATE)
    end_of_text = loaded.tokenizer.token_to_id("<|end_of_text|>")
    assert set(loaded.eos_ids) == {info["eot_id"], info["eom_id"], end_of_text}  # llama.cpp's stop set
    assert loaded.tokenizer.encode("Hi")[0] == info["bos_id"]
    assert (loaded.context_length, loaded.trained_context_length) == (64, 64)
