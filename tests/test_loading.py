"""Every checkpoint format loads into a model whose logits match transformers' on the same weights."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace
from pathlib import Path

import huggingface_hub
import psutil
import pytest
import torch

from checkpoint_fixtures import (  # noqa: F401 (pytest fixtures)
    copy_checkpoint,
    edit_json,
    edit_safetensors,
    is_file_backed,
    make_checkpoint,
    references,
    tiny_meta_checkpoint,
    tiny_reference,
    write_hub_cache,
)
from llama_core.formats.hub import is_hub_id
from llama_core.loading import detect_format, estimate_checkpoint_bytes, load_checkpoint

pytestmark = pytest.mark.numerics


def logits(loaded, tokens):
    with torch.no_grad():
        return loaded.model(tokens).logits


def assert_matches(loaded, reference, atol=1e-4):
    """Our logits equal transformers' on the same weights."""
    torch.testing.assert_close(logits(loaded, reference.tokens), reference.logits, atol=atol, rtol=0)


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin", "sharded-bin"])
@pytest.mark.parametrize("name", ["mha", "gqa", "tied"])
def test_hf_directory_matches_transformers(make_checkpoint, references, name, layout):
    loaded = load_checkpoint(make_checkpoint(name, layout))
    ref = references[name]
    assert loaded.format == "hf"
    assert loaded.args.kv_heads == ref.model.config.num_key_value_heads
    assert loaded.n_params == sum(p.numel() for p in ref.model.parameters())
    assert_matches(loaded, ref)


def test_rotary_buffers_saved_by_old_transformers_are_ignored(make_checkpoint, references, tmp_path):
    directory = copy_checkpoint(make_checkpoint("gqa", "safetensors"), tmp_path / "old")
    inv_freq = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.ones(4) for i in range(2)}
    edit_safetensors(directory / "model.safetensors", lambda tensors: tensors.update(inv_freq))
    loaded = load_checkpoint(directory)
    assert_matches(loaded, references["gqa"])


def test_sharded_save_really_has_several_shards(make_checkpoint):
    assert len(list(make_checkpoint("gqa", "sharded").glob("model-*.safetensors"))) > 1


@pytest.mark.parametrize(
    "name, layout",
    [
        ("mha", "meta-1"), ("gqa", "meta-1"), ("mha", "meta-2"), ("gqa", "meta-2"), ("tied", "meta-2"),
        ("tied", "llama2c-v0"), ("mha", "llama2c-v0"), ("gqa", "llama2c-v0"),
        ("gqa", "llama2c-v1"), ("tied", "llama2c-v1"),
    ],
)  # fmt: skip
def test_rewritten_formats_match_transformers(make_checkpoint, references, name, layout):
    loaded = load_checkpoint(make_checkpoint(name, layout))
    assert loaded.format == layout.split("-")[0]
    assert loaded.args.tie_embeddings == (name == "tied")
    assert_matches(loaded, references[name])


def test_meta_shards_split_along_the_parallel_dims(make_checkpoint):
    shard = torch.load(make_checkpoint("gqa", "meta-2") / "consolidated.01.pth", weights_only=True)
    assert shard["tok_embeddings.weight"].shape == (96, 16)  # split along the model dim
    assert shard["layers.0.attention.wq.weight"].shape == (16, 32)  # column-parallel: rows
    assert shard["layers.0.attention.wo.weight"].shape == (32, 16)  # row-parallel: columns
    assert shard["norm.weight"].shape == (32,)  # replicated


def test_loaded_model_is_frozen_for_inference(make_checkpoint):
    loaded = load_checkpoint(make_checkpoint("gqa", "safetensors"))
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.n_bytes == 4 * loaded.n_params
    assert loaded.tokenizer is None and loaded.model_card is None


def test_tied_embeddings_are_one_parameter(make_checkpoint):
    for layout in ("safetensors", "meta-1", "llama2c-v0"):
        model = load_checkpoint(make_checkpoint("tied", layout)).model
        assert model.output.weight is model.tok_embeddings.weight


def test_bf16_request_gives_bf16_parameters(make_checkpoint, references):
    loaded = load_checkpoint(make_checkpoint("gqa", "safetensors"), dtype="bf16")
    assert loaded.dtype == torch.bfloat16
    params = dict(loaded.model.named_parameters())
    assert {p.dtype for name, p in params.items() if not name.endswith("norm.weight")} == {torch.bfloat16}
    # The norms stay fp32: under 16-bit weights the residual stream they normalise is fp32 (kernels/weight_layout.py).
    norms = sum(p.numel() for name, p in params.items() if name.endswith("norm.weight"))
    assert {p.dtype for name, p in params.items() if name.endswith("norm.weight")} == {torch.float32}
    assert loaded.n_bytes == 2 * loaded.n_params + 2 * norms
    assert_matches(loaded, references["gqa"], atol=0.1)


def machine(fp32: float, bf16: float, fp16: float, cpu_share: float = 1.0):
    """A kernel probe's result for an imagined machine (GB/s per kernel)."""
    from llama_core.kernels.probe import KernelSpeeds

    return lambda: KernelSpeeds("test CPU", "AVX2", 2, torch.__version__, {"fp32": fp32, "bf16": bf16, "fp16": fp16},
                                cpu_share)


def test_auto_dtype_takes_the_fastest_exact_dtype_by_the_kernel_probe(tmp_path, monkeypatch):
    tiny_reference("gqa").model.to(torch.float16).save_pretrained(tmp_path)
    # The AVX2 machine: fp32 reads 4 bytes a weight at 25 GB/s (6.2 G weights/s), fp16 2 bytes at 4 GB/s.
    monkeypatch.setattr("llama_core.loading.probe_kernels", machine(25, 4, 4))
    loaded = load_checkpoint(tmp_path)
    assert loaded.dtype == torch.float32 and "exact for fp16 weights" in loaded.kernels.reason
    assert load_checkpoint(tmp_path, dtype="fp16").dtype == torch.float16  # an explicit dtype is kept
    # A machine with fast 16-bit kernels keeps the fp16 weights; bf16 would round them, so it is never chosen.
    monkeypatch.setattr("llama_core.loading.probe_kernels", machine(20, 60, 40))
    assert load_checkpoint(tmp_path).dtype == torch.float16
    # A probe taken while other processes held the cores decides nothing: the checkpoint's own dtype.
    monkeypatch.setattr("llama_core.loading.probe_kernels", machine(25, 4, 4, cpu_share=0.3))
    assert load_checkpoint(tmp_path).kernels.reason.endswith("the kernel probe ran on a busy machine")
    # A model whose fp32 copy would not fit in half the free memory stays in its own dtype.
    monkeypatch.setattr("llama_core.loading.probe_kernels", machine(25, 4, 4))
    stored = sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=stored * 3))
    assert load_checkpoint(tmp_path).dtype == torch.float16
    tiny_reference("gqa").model.save_pretrained(tmp_path / "fp32")
    assert load_checkpoint(tmp_path / "fp32").dtype == torch.float32


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "layout, file", [("safetensors", "model.safetensors"), ("llama2c-v1", None), ("meta-1", "consolidated.00.pth")]
)
def test_weights_are_memory_mapped_not_copied(make_checkpoint, layout, file):
    path = make_checkpoint("gqa", layout)
    weights_file = path / file if file else path  # a llama2.c checkpoint is the file itself
    model = load_checkpoint(path, fast_layout=False).model
    assert is_file_backed(model.tok_embeddings.weight, weights_file)
    assert is_file_backed(model.layers[1].feed_forward.w2.weight, weights_file)
    # The fast decode layout stores projections input-major (a copy unless the file already did).
    w2 = load_checkpoint(path).model.layers[1].feed_forward.w2.weight
    assert w2.stride() == (1, w2.shape[0])


def test_tokenizer_and_model_card_beside_the_weights(tokenizer_path, tokenizer, tmp_path):
    tiny_meta_checkpoint(tmp_path, tokenizer.vocab_size)
    shutil.copy(tokenizer_path, tmp_path / "tokenizer.model")
    (tmp_path / "model_card.json").write_text(json.dumps({"name": "tiny"}))
    loaded = load_checkpoint(tmp_path)
    assert loaded.tokenizer.vocab_size == tokenizer.vocab_size
    assert loaded.model_card == {"name": "tiny"}


def test_meta_vocab_size_minus_one_comes_from_tokenizer_one_level_up(tokenizer_path, tokenizer, tmp_path):
    model_dir = tiny_meta_checkpoint(tmp_path / "tiny-7b", tokenizer.vocab_size)
    edit_json(model_dir / "params.json", lambda p: p.update(vocab_size=-1))
    shutil.copy(tokenizer_path, tmp_path / "tokenizer.model")  # Meta's layout: one tokenizer for all sizes
    loaded = load_checkpoint(model_dir)
    assert loaded.args.vocab_size == tokenizer.vocab_size
    assert loaded.tokenizer is not None


def test_offload_to_disk_matches_the_plain_load(make_checkpoint, references, tmp_path):
    path = make_checkpoint("deep", "safetensors")
    plain = load_checkpoint(path)
    # Room for half the weights: accelerate keeps the first blocks in RAM and the rest on disk.
    offloaded = load_checkpoint(
        path, device_map="auto", max_memory={"cpu": plain.n_bytes // 2}, offload_dir=str(tmp_path)
    )
    placement = offloaded.model.hf_device_map
    assert placement["layers.0"] == "cpu" and placement["layers.5"] == "disk", placement
    assert any(tmp_path.rglob("layers.5.*.dat"))
    tokens = references["deep"].tokens
    torch.testing.assert_close(logits(offloaded, tokens), logits(plain, tokens))
    assert_matches(plain, references["deep"])
    # Decoding with a KV cache works through the offload hooks too, token for token.
    with torch.no_grad():
        caches = [m.model.new_cache(max_len=12, batch_size=tokens.shape[0]) for m in (plain, offloaded)]
        for step in range(0, 12, 4):
            chunk = tokens[:, step : step + 4]
            torch.testing.assert_close(offloaded.model(chunk, caches[1]).logits, plain.model(chunk, caches[0]).logits)


def test_explicit_device_map_with_a_disk_layer(make_checkpoint, references, tmp_path):
    device_map = {"tok_embeddings": "cpu", "layers.0": "disk", "layers.1": "cpu", "norm": "cpu", "output": "disk"}
    loaded = load_checkpoint(make_checkpoint("mha", "safetensors"), device_map=device_map, offload_dir=str(tmp_path))
    assert_matches(loaded, references["mha"])


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hub cache in tmp with HF_HUB_OFFLINE on. huggingface_hub reads both settings once,
    at import, so the module constants are patched as well as the environment."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_id_loads_from_the_offline_cache(offline_hub, make_checkpoint, references):
    snapshot = write_hub_cache(offline_hub, "tiny-org/tiny-llama", make_checkpoint("gqa", "safetensors"))
    loaded = load_checkpoint("tiny-org/tiny-llama")
    assert loaded.path == snapshot and loaded.source == "tiny-org/tiny-llama"
    assert_matches(loaded, references["gqa"])


def test_existing_local_path_wins_over_hub_id(offline_hub, make_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy_checkpoint(make_checkpoint("gqa", "safetensors"), tmp_path / "tiny-org" / "tiny-llama")
    assert not is_hub_id("tiny-org/tiny-llama")
    assert load_checkpoint("tiny-org/tiny-llama").format == "hf"


@pytest.mark.parametrize(
    "source, expected",
    [("meta-llama/Llama-2-7b-hf", True), ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", True), ("./a/b", False),
     ("../a/b", False), ("a/b/c", False), ("stories15M.bin", False), ("/abs/org/name", False)],
)  # fmt: skip
def test_is_hub_id(source, expected):
    assert is_hub_id(source) == expected


@pytest.mark.parametrize(
    "layout, fmt", [("safetensors", "hf"), ("bin", "hf"), ("meta-2", "meta"), ("llama2c-v0", "llama2c")]
)
def test_detect_format(make_checkpoint, layout, fmt):
    assert detect_format(make_checkpoint("gqa", layout)) == fmt


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin", "meta-1", "llama2c-v0", "llama2c-v1"])
def test_estimate_from_headers_matches_loaded_size(make_checkpoint, layout):
    path = make_checkpoint("gqa", layout)
    assert estimate_checkpoint_bytes(path) == load_checkpoint(path).n_bytes
