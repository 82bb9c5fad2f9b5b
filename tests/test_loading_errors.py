"""Broken, hostile or mismatched checkpoints give a CheckpointError/TokenizerError naming the
file and what is wrong with it; never a crash, never code execution."""

from __future__ import annotations

import os
import shlex
import shutil
import struct

import huggingface_hub
import pytest
import torch

from checkpoint_fixtures import (  # noqa: F401 (pytest fixtures)
    copy_checkpoint,
    edit_json,
    edit_safetensors,
    make_checkpoint,
    references,
    tiny_meta_checkpoint,
)
from llama_core.errors import CheckpointError, ParameterError, TokenizerError
from llama_core.formats.llama2c import MAGIC
from llama_core.loading import load_checkpoint


@pytest.fixture
def hf_copy(make_checkpoint, tmp_path):
    return copy_checkpoint(make_checkpoint("gqa", "safetensors"), tmp_path / "hf")


@pytest.fixture
def meta_copy(make_checkpoint, tmp_path):
    return copy_checkpoint(make_checkpoint("gqa", "meta-2"), tmp_path / "meta")


@pytest.fixture
def llama2c_copy(make_checkpoint, tmp_path):
    return copy_checkpoint(make_checkpoint("gqa", "llama2c-v0"), tmp_path / "llama2c")


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


class RunsShellCommand:
    """Unpickling this calls os.system — what a hostile checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_and_never_executed(make_checkpoint, tmp_path):
    directory = copy_checkpoint(make_checkpoint("gqa", "bin"), tmp_path / "evil")
    marker = tmp_path / "executed"
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    state["payload"] = RunsShellCommand(f"touch {shlex.quote(str(marker))}")
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: unsupported or unsafe checkpoint.*system"):
        load_checkpoint(directory)
    assert not marker.exists()


def test_truncated_safetensors(hf_copy):
    truncate(hf_copy / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file is truncated/corrupt"):
        load_checkpoint(hf_copy)


def test_safetensors_with_a_huge_header_length(hf_copy):
    path = hf_copy / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + path.read_bytes()[8:])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file is truncated/corrupt.*header claims"):
        load_checkpoint(hf_copy)


def test_truncated_zip_pth(meta_copy):
    truncate(meta_copy / "consolidated.01.pth")
    with pytest.raises(CheckpointError, match=r"consolidated\.01\.pth: truncated or corrupt zip"):
        load_checkpoint(meta_copy)


def test_truncated_llama2c_file(llama2c_copy):
    truncate(llama2c_copy, keep=0.9)
    size = llama2c_copy.stat().st_size
    with pytest.raises(CheckpointError, match=rf"model\.bin: header says \d+ bytes, file has {size} \(truncated"):
        load_checkpoint(llama2c_copy)


def test_llama2c_header_that_makes_no_sense(llama2c_copy):
    data = llama2c_copy.read_bytes()
    llama2c_copy.write_bytes(struct.pack("<7i", 32, 48, 2, 5, 5, 96, 64) + data[28:])  # 32 % 5 != 0
    with pytest.raises(CheckpointError, match=r"model\.bin: not a valid llama2.c header \(dim=32, .*n_heads=5"):
        load_checkpoint(llama2c_copy)


def test_llama2c_version_2_is_refused_clearly(tmp_path):
    path = tmp_path / "q80.bin"
    path.write_bytes(struct.pack("<Ii", MAGIC, 2) + bytes(248))
    with pytest.raises(CheckpointError, match=r"q80\.bin: llama2.c version 2 \(Q8_0 int8\) files are not supported"):
        load_checkpoint(path)


def test_pytorch_zip_passed_as_llama2c(make_checkpoint):
    with pytest.raises(CheckpointError, match=r"consolidated\.00\.pth: this is a PyTorch \(zip\) file, not a llama2.c"):
        load_checkpoint(make_checkpoint("gqa", "meta-1") / "consolidated.00.pth")


def test_meta_dir_without_params_json(meta_copy):
    (meta_copy / "params.json").unlink()
    with pytest.raises(CheckpointError, match=r"params\.json: file not found"):
        load_checkpoint(meta_copy)


def test_meta_params_json_is_not_json(meta_copy):
    (meta_copy / "params.json").write_text('{"dim": 32,')
    with pytest.raises(CheckpointError, match=r"params\.json: invalid JSON"):
        load_checkpoint(meta_copy)


def test_meta_params_json_missing_a_key(meta_copy):
    edit_json(meta_copy / "params.json", lambda params: params.pop("n_heads"))
    with pytest.raises(CheckpointError, match=r"params\.json: missing required key 'n_heads'"):
        load_checkpoint(meta_copy)


def test_meta_params_json_with_an_invalid_value(meta_copy):
    edit_json(meta_copy / "params.json", lambda params: params.update(n_heads=5))
    with pytest.raises(CheckpointError, match=r"params\.json: config: dim \(32\) must be divisible by n_heads \(5\)"):
        load_checkpoint(meta_copy)


def test_meta_last_shard_missing(meta_copy):
    (meta_copy / "consolidated.01.pth").unlink()
    message = r"split into 2 model-parallel shards but only 1 found; missing: consolidated\.01"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(meta_copy)


def test_meta_first_shard_missing(meta_copy):
    (meta_copy / "consolidated.00.pth").unlink()
    with pytest.raises(CheckpointError, match=r"model-parallel shard\(s\) missing: consolidated\.00\.pth"):
        load_checkpoint(meta_copy)


def test_shape_mismatch_names_file_tensor_and_shapes(hf_copy):
    edit_json(hf_copy / "config.json", lambda config: config.update(num_key_value_heads=1))
    message = (
        r"model\.safetensors: tensor 'layers\.0\.attention\.wk\.weight' has wrong shape: "
        r"expected \(8, 32\) from config, got \(16, 32\) in file"
    )
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(hf_copy)


def test_unexpected_tensors_are_listed(hf_copy):
    bias = "model.layers.0.self_attn.q_proj.bias"
    edit_safetensors(hf_copy / "model.safetensors", lambda t: t.update({bias: torch.zeros(32)}))
    with pytest.raises(CheckpointError, match=rf"1 unexpected tensor\(s\): '{bias}' \(in model.safetensors\)"):
        load_checkpoint(hf_copy)


def test_missing_tensors_are_listed(hf_copy):
    edit_safetensors(hf_copy / "model.safetensors", lambda t: [t.pop("model.norm.weight"), t.pop("lm_head.weight")])
    with pytest.raises(CheckpointError, match=r"2 tensor\(s\) missing: 'norm\.weight', 'output\.weight'"):
        load_checkpoint(hf_copy)


def test_nan_in_weights_is_refused(hf_copy):
    norm = "model.layers.1.input_layernorm.weight"
    edit_safetensors(hf_copy / "model.safetensors", lambda t: t[norm].fill_(float("nan")))
    message = r"model.safetensors: tensor 'layers.1.attention_norm.weight' contains NaN"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(hf_copy)


def test_corrupt_tokenizer_model(hf_copy):
    (hf_copy / "tokenizer.model").write_bytes(os.urandom(2048))
    with pytest.raises(TokenizerError, match=r"tokenizer\.model"):
        load_checkpoint(hf_copy)


def test_tokenizer_vocab_differs_from_model_vocab(hf_copy, tokenizer_path, tokenizer):
    shutil.copy(tokenizer_path, hf_copy / "tokenizer.model")
    message = rf"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is 96"
    with pytest.raises(TokenizerError, match=message):
        load_checkpoint(hf_copy)


def test_meta_vocab_minus_one_without_tokenizer(tmp_path):
    model_dir = tiny_meta_checkpoint(tmp_path / "meta", vocab_size=96)
    edit_json(model_dir / "params.json", lambda params: params.update(vocab_size=-1))
    with pytest.raises(CheckpointError, match=r"vocab_size is -1.*no tokenizer\.model was found"):
        load_checkpoint(model_dir)


def test_directory_without_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"no recognisable checkpoint.*found: notes\.txt"):
        load_checkpoint(tmp_path)


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_checkpoint(tmp_path / "missing.bin")


def test_hf_config_with_scaled_rope_is_refused(hf_copy):
    edit_json(hf_copy / "config.json", lambda c: c.update(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5}))
    with pytest.raises(CheckpointError, match=r"config\.json: rope_type 'llama3'"):
        load_checkpoint(hf_copy)


def test_unknown_dtype_is_a_parameter_error(hf_copy):
    with pytest.raises(ParameterError, match="dtype must be"):
        load_checkpoint(hf_copy, dtype="int8")


def test_disk_offload_needs_an_offload_dir(hf_copy):
    with pytest.raises(ParameterError, match="offload_dir"):
        load_checkpoint(hf_copy, device_map={"": "disk"})


def test_uncached_hub_id_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = r"'nobody/no-such-model' is not \(completely\) in the Hugging Face cache.*HF_HUB_OFFLINE is set"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint("nobody/no-such-model")


def test_B12_weights_larger_than_free_memory_are_refused_from_the_headers(make_checkpoint, monkeypatch):
    import psutil
    from types import SimpleNamespace

    from llama_core.cli import main

    path = make_checkpoint("gqa", "safetensors")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=1000))
    with pytest.raises(CheckpointError, match="iB of memory.*device_map='auto'"):
        load_checkpoint(path)
    assert main(["info", "--model", str(path)]) == 2  # the CLI says so and exits, no traceback
    monkeypatch.undo()
    assert load_checkpoint(path).n_params > 0  # with the memory back, the same checkpoint loads
