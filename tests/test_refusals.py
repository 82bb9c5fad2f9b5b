"""What the loader refuses and what it accepts at the edges: other architectures, GGUF files, vocabularies that do
not fit, padded embedding rows, the order in which problems are reported, the Hub allow-list, generation_config."""

from __future__ import annotations

import json
import shutil
import warnings

import gguf
import pytest
import torch
from huggingface_hub.utils import filter_repo_objects
from tokenizer_fixtures import SP_VOCAB, write_llama2_sentencepiece
from transformers import (
    GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, MixtralConfig,
    MixtralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
)

from llama_core import CheckpointError, SamplingParams, TokenizerError, generate_stream, load_checkpoint
from llama_core.formats.hf_config import read_generation_config
from llama_core.formats.hub import COMMON_PATTERNS, PICKLE_PATTERNS, SAFETENSORS_PATTERNS
from llama_core.generation import encode_prompt
from llama_core.insight.logit_lens import logit_lens
from llama_core.insight.scoring import score_text

SMALL = dict(vocab_size=SP_VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
SUPPORTED = r"supported: LLaMA-architecture models"


def _save(model, path):
    torch.manual_seed(0)
    model.save_pretrained(path)
    write_llama2_sentencepiece(path)
    return path


@pytest.mark.parametrize("model_class, config, found", [
    (MistralForCausalLM, MistralConfig(**SMALL, sliding_window=16),
     r"MistralForCausalLM \(model_type 'mistral'\) uses sliding-window attention \(window 16\)"),
    (Qwen2ForCausalLM, Qwen2Config(**SMALL), (r"Qwen2ForCausalLM \(model_type 'qwen2'\) is not supported, which "
                                              r"differs from LLaMA by biases on the q/k/v projections")),
    (GemmaForCausalLM, GemmaConfig(**SMALL, head_dim=8), r"GemmaForCausalLM \(model_type 'gemma'\) is not supported"),
    (MixtralForCausalLM, MixtralConfig(**SMALL, num_local_experts=4),
     r"MixtralForCausalLM \(model_type 'mixtral'\) is a mixture of experts \(4 experts per layer\)"),
])
def test_other_architectures_are_refused_naming_what_was_found_and_what_is_supported(model_class, config, found,
                                                                                     tmp_path):
    path = _save(model_class(config), tmp_path / "model")
    with pytest.raises(CheckpointError, match=rf"config\.json: {found}.*{SUPPORTED}"):
        load_checkpoint(path)


def test_mistral_without_a_sliding_window_is_llama_and_loads_with_equal_logits(tmp_path):
    torch.manual_seed(0)
    reference = MistralForCausalLM(MistralConfig(**SMALL, sliding_window=None, head_dim=16)).eval()
    path = _save(reference, tmp_path / "mistral")
    loaded = load_checkpoint(path)
    tokens = torch.randint(0, SP_VOCAB, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # fp32 on both sides; differences are summation order only (see test_rope_scaling for the bound).
        torch.testing.assert_close(loaded.model(tokens).logits, reference(tokens).logits, atol=1e-4, rtol=0)
    assert loaded.args.head_dim == 16 and loaded.args.dim == 32  # head_dim · n_heads ≠ dim: explicit head_dim


def test_projection_biases_are_refused(tmp_path):
    path = _save(LlamaForCausalLM(LlamaConfig(**SMALL, attention_bias=True)), tmp_path / "biased")
    with pytest.raises(CheckpointError, match=r"config\.json: attention_bias is true"):
        load_checkpoint(path)


def _gguf_file(path, architecture="llama"):
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_name("tiny")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_tensor("token_embd.weight", torch.zeros(4, 32).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_file_of_another_architecture_is_refused_by_name_not_misread_as_llama2c(tmp_path):
    path = _gguf_file(tmp_path / "model-q8_0.gguf", "qwen2")
    with pytest.raises(CheckpointError, match=r"model-q8_0\.gguf: a GGUF model of architecture 'qwen2' \(tiny\); "
                                              r"only 'llama' is supported"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"model-q8_0\.gguf: a GGUF model of architecture 'qwen2'"):
        load_checkpoint(tmp_path)  # a folder holding only GGUF files: the same answer


def test_a_config_error_is_reported_before_a_foreign_tokenizer(tmp_path):
    """An unreadable tokenizer.model beside a config we refuse: the config is the real problem."""
    path = _save(LlamaForCausalLM(LlamaConfig(**SMALL)), tmp_path / "model")
    (path / "tokenizer.model").write_text("not a tokenizer of any kind\n")
    config = json.loads((path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 10000.0}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="rope_type 'longrope' is not supported"):
        load_checkpoint(path)


def test_a_tensor_shape_error_is_reported_before_a_foreign_tokenizer(tmp_path):
    path = _save(LlamaForCausalLM(LlamaConfig(**SMALL)), tmp_path / "model")
    (path / "tokenizer.model").write_text("garbage")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'layers\.0\.feed_forward\.w1\.weight' has "
                                              r"wrong shape: expected \(64, 32\)"):
        load_checkpoint(path)


def test_a_tokenizer_larger_than_the_model_is_an_error_naming_the_file_and_both_counts(tmp_path):
    path = _save(LlamaForCausalLM(LlamaConfig(**{**SMALL, "vocab_size": SP_VOCAB - 12})), tmp_path / "model")
    with pytest.raises(TokenizerError, match=rf"tokenizer\.model: tokenizer has {SP_VOCAB} tokens but the model's "
                                             rf"vocab_size is {SP_VOCAB - 12} \(embedding rows in model\.safetensors\)"):
        load_checkpoint(path)


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    """512 pieces + Alpaca's [PAD] = 513 tokens in 576 rows (a multiple of 64); the padding rows' logits are made
    the largest by far, so any leak of them into sampling, alternatives or scores would show."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**SMALL, "vocab_size": 576})).eval()
    with torch.no_grad():  # a large constant in dimension 0 of every hidden state, read by the padding rows only
        model.model.embed_tokens.weight[:, 0] = 10.0
        model.lm_head.weight[SP_VOCAB + 1:] = 0.0
        model.lm_head.weight[SP_VOCAB + 1:, 0] = 50.0
    path = tmp_path_factory.mktemp("padded")
    model.save_pretrained(path)
    write_llama2_sentencepiece(path, added_pad=True)
    return load_checkpoint(path)


def test_padded_embedding_rows_load_and_are_never_sampled_or_shown(padded):
    assert (padded.args.vocab_size, padded.tokenizer.vocab_size) == (576, SP_VOCAB + 1)
    with torch.no_grad():
        raw = padded.model(torch.tensor([encode_prompt(padded.tokenizer, "Alice was")])).logits[0, -1]
    assert int(raw.argmax()) > SP_VOCAB  # the premise: unmasked, a padding row would win
    for params in (SamplingParams(temperature=0, max_new_tokens=6), SamplingParams(temperature=1.5, seed=3,
                                                                                   max_new_tokens=6)):
        for step in generate_stream(padded.model, padded.tokenizer, "Alice was", params, top_n=20):
            assert step.token_id <= SP_VOCAB and all(a.token_id <= SP_VOCAB for a in step.top)


def test_padded_rows_take_no_probability_in_scores_or_the_logit_lens(padded):
    score = score_text(padded.model, padded.tokenizer, "Alice was beginning")
    assert all(p > 1e-6 for p in [t.prob for t in score.tokens])  # with padding in the softmax they would be ~0
    ids = encode_prompt(padded.tokenizer, "Alice was")
    lens = logit_lens(padded.model, ids, vocab_size=padded.tokenizer.vocab_size)
    assert lens.top_ids.max() <= SP_VOCAB


def test_hub_downloads_the_tokenizer_and_generation_files_and_never_code():
    """The allow-lists applied by huggingface_hub's own filter to a real Llama 3.2 repository listing."""
    listing = ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
               "tokenizer.json", "tokenizer_config.json", "LICENSE.txt", "README.md", "USE_POLICY.md",
               "original/consolidated.00.pth", "original/params.json", "original/tokenizer.model",
               "modeling_custom.py", ".gitattributes", "added_tokens.json"]
    fetched = set(filter_repo_objects(listing, allow_patterns=COMMON_PATTERNS + SAFETENSORS_PATTERNS))
    assert fetched == {"config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
                       "tokenizer.json", "tokenizer_config.json", "added_tokens.json"}
    pickles = set(filter_repo_objects(["pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json",
                                       "training_args.bin", "tokenizer.model"], allow_patterns=COMMON_PATTERNS +
                                      PICKLE_PATTERNS))
    assert pickles == {"pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json", "tokenizer.model"}


@pytest.mark.parametrize("config, eos, defaults", [
    ({"do_sample": True, "temperature": 0.6, "top_p": 0.9, "eos_token_id": [128001, 128009]}, (128001, 128009),
     {"temperature": 0.6, "top_p": 0.9}),
    ({"do_sample": False, "temperature": 0.6, "repetition_penalty": 1.2, "eos_token_id": 2}, (2,),
     {"temperature": 0.0, "repetition_penalty": 1.2}),  # transformers decodes greedily without do_sample
    ({"temperature": 0.6}, (), {"temperature": 0.0}),
    ({"bos_token_id": 1, "eos_token_id": 2, "max_length": 2048}, (2,), {}),  # says nothing about sampling
])
def test_generation_config_defaults_follow_transformers(config, eos, defaults, tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps(config))
    assert read_generation_config(tmp_path) == (eos, defaults)


def test_generation_config_values_out_of_range_are_dropped_with_a_warning(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 5.0, "top_k": 20}))
    with pytest.warns(UserWarning, match=r"generation_config\.json: ignoring temperature: temperature must be"):
        assert read_generation_config(tmp_path) == ((), {"top_k": 20})


def test_eos_token_id_of_the_wrong_type_names_the_file(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": ["</s>"]}))
    with pytest.raises(CheckpointError, match=r"generation_config\.json: eos_token_id must be a token id or a list"):
        read_generation_config(tmp_path)


def test_context_length_override_keeps_weights_and_changes_only_the_window(tmp_path):
    path = _save(LlamaForCausalLM(LlamaConfig(**SMALL)), tmp_path / "model")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short = load_checkpoint(path, context_length=32)
    with pytest.warns(UserWarning):
        long = load_checkpoint(path, context_length=256)
    ids = torch.tensor([list(range(3, 30))])
    with torch.no_grad():
        torch.testing.assert_close(short.model(ids).logits, long.model(ids).logits)
    assert (short.context_length, long.context_length, long.trained_context_length) == (32, 256, 64)
    shutil.rmtree(path)
