"""Hub ids with a quantization selector (`org/name:Q4_K_M`, as llama.cpp's `-hf` takes them), from an offline cache
laid out as huggingface_hub lays it out."""

from __future__ import annotations

import pytest
import torch
from checkpoint_fixtures import write_hub_cache
from gguf import GGMLQuantizationType as QType
from gguf_fixtures import write_llamacpp_gguf
from test_loading import offline_hub  # noqa: F401 (fixture)
from transformers import LlamaConfig, LlamaForCausalLM

from llama_core import load_checkpoint
from llama_core.errors import CheckpointError
from llama_core.formats.hub import is_hub_id

SMALL = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False)


@pytest.fixture
def gguf_repo(tmp_path, offline_hub):  # noqa: F811 (the fixture imported above)
    """A repo of GGUF files as llama.cpp users publish them: one per quantization, Q4_0 split in two parts."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    files = tmp_path / "files"
    files.mkdir()
    write_llamacpp_gguf(model, files / "tiny-F16.gguf", QType.F16)
    write_llamacpp_gguf(model, files / "tiny-Q8_0.gguf", QType.Q8_0)
    write_llamacpp_gguf(model, files / "tiny-Q4_0.gguf", QType.Q4_0, parts=2)
    (files / "README.md").write_text("tiny GGUF files\n")
    return write_hub_cache(offline_hub, "tiny-org/tiny-GGUF", files)


@pytest.mark.parametrize("source, file, stored", [
    ("tiny-org/tiny-GGUF:Q8_0", "tiny-Q8_0.gguf", "Q8_0"),
    ("tiny-org/tiny-GGUF:q8_0", "tiny-Q8_0.gguf", "Q8_0"),  # case-insensitive, as the Hub's names vary
    ("tiny-org/tiny-GGUF:f16", "tiny-F16.gguf", "F16"),
    ("tiny-org/tiny-GGUF:Q4_0", "tiny-Q4_0-00001-of-00002.gguf", "Q4_0"),  # split: the first part, then all
])  # fmt: skip
def test_the_tag_picks_the_file_that_carries_it(gguf_repo, source, file, stored):
    loaded = load_checkpoint(source)
    assert (loaded.format, loaded.source, loaded.path.name, loaded.path.parent) == ("gguf", source, file, gguf_repo)
    assert loaded.args.n_layers == 2


def test_a_tag_no_file_carries_lists_the_repos_gguf_files(gguf_repo):
    with pytest.raises(CheckpointError, match=r"'tiny-org/tiny-GGUF:Q4_K_M': no GGUF file of tiny-org/tiny-GGUF "
                                              r"carries the tag 'Q4_K_M' in its name \(case-insensitive\); its GGUF "
                                              r"files in the cache: tiny-F16\.gguf, tiny-Q4_0-00001-of-00002\.gguf"):
        load_checkpoint("tiny-org/tiny-GGUF:Q4_K_M")
    with pytest.raises(CheckpointError, match=r"no GGUF file .* carries the tag 'Q4'"):
        load_checkpoint("tiny-org/tiny-GGUF:Q4")  # a tag is a whole word of the name, not any substring


def test_two_files_carrying_the_tag_are_named(tmp_path, offline_hub):  # noqa: F811
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    files = tmp_path / "files"
    files.mkdir()
    write_llamacpp_gguf(model, files / "tiny-Q8_0.gguf", QType.Q8_0)
    write_llamacpp_gguf(model, files / "tiny-chat-Q8_0.gguf", QType.Q8_0)
    write_hub_cache(offline_hub, "tiny-org/two", files)
    with pytest.raises(CheckpointError, match=r"several GGUF files carry 'Q8_0' \(tiny-Q8_0\.gguf, "
                                              r"tiny-chat-Q8_0\.gguf\); pass one of them as a path"):
        load_checkpoint("tiny-org/two:Q8_0")


def test_an_uncached_repo_says_how_to_get_it(offline_hub):  # noqa: F811
    with pytest.raises(CheckpointError, match=r"'nobody/nothing:Q4_K_M' is not \(completely\) in the Hugging Face "
                                              r"cache .*\(`hf download nobody/nothing`\)"):
        load_checkpoint("nobody/nothing:Q4_K_M")


@pytest.mark.parametrize("source, expected", [
    ("bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", True), ("org/name:q8_0", True), ("org/name:", False),
    ("org/name:Q4:K", False), ("./org/name:Q4_0", False),
])  # fmt: skip
def test_hub_ids_take_a_quantization_tag(source, expected):
    assert is_hub_id(source) == expected
