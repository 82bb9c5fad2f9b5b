"""Tiny checkpoints in every supported format, all written from seeded transformers models.

transformers is the independent reference: each format must reproduce its logits. Import the
fixtures by name from a test module (`from checkpoint_fixtures import make_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import LlamaConfig, LlamaForCausalLM

from llama_core.config import ModelArgs
from llama_core.formats.llama2c import save_llama2c
from llama_core.loading import load_checkpoint
from llama_core.formats.meta import save_meta_checkpoint
from llama_core.model import Transformer

VOCAB = 96
# llama2.c files store no norm_eps: use the 1e-5 its readers assume.
TINY = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=64, rms_norm_eps=1e-5,
)  # fmt: skip
REFERENCE_CONFIGS = {
    "mha": dict(num_key_value_heads=4),
    "gqa": {},
    "tied": dict(tie_word_embeddings=True),
    "deep": dict(num_hidden_layers=6),  # enough blocks for accelerate to split between RAM and disk
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Reference:
    model: LlamaForCausalLM
    tokens: Tensor  # (B, T)
    logits: Tensor  # transformers' logits for `tokens`, (B, T, V)


def tiny_reference(name: str, seed: int = 0) -> Reference:
    config = LlamaConfig(**{**TINY, **REFERENCE_CONFIGS[name]})
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = model(tokens).logits
    return Reference(model, tokens, logits)


def save_pickled_hf(model: LlamaForCausalLM, out_dir: Path, n_shards: int) -> None:
    """pytorch_model.bin (or shards + index) as older transformers wrote them; 5.x only writes safetensors."""
    model.config.save_pretrained(out_dir)
    state = {name: t.clone() for name, t in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        del state["lm_head.weight"]
    if n_shards == 1:
        torch.save(state, out_dir / "pytorch_model.bin")
        return
    names = sorted(state)
    weight_map = {}
    for i in range(n_shards):
        file = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = names[i::n_shards]
        torch.save({n: state[n] for n in part}, out_dir / file)
        weight_map.update(dict.fromkeys(part, file))
    (out_dir / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))


def write_checkpoint(reference: Reference, layout: str, out: Path) -> Path:
    """Write `reference`'s weights in `layout` and return what to pass to load_checkpoint.

    Layouts: "safetensors", "sharded" (several safetensors + index), "bin", "sharded-bin",
    "meta-1", "meta-2" (model-parallel shards), "llama2c-v0", "llama2c-v1".
    """
    out.mkdir(parents=True)
    if layout == "safetensors":
        reference.model.save_pretrained(out)
    elif layout == "sharded":
        reference.model.save_pretrained(out, max_shard_size="20KB")
    elif layout in ("bin", "sharded-bin"):
        save_pickled_hf(reference.model, out, n_shards=1 if layout == "bin" else 2)
    else:  # Meta and llama2.c files are written from our own load of the HF files
        hf_dir = out / "hf"
        reference.model.save_pretrained(hf_dir)
        loaded = load_checkpoint(hf_dir)
        if layout.startswith("meta"):
            return save_meta_checkpoint(loaded.model.state_dict(), loaded.args, out / "meta", int(layout[-1]))
        return save_llama2c(loaded.model.state_dict(), loaded.args, out / "model.bin", version=int(layout[-1]))
    return out


def tiny_meta_checkpoint(out_dir: Path, vocab_size: int) -> Path:
    """A random Meta-format model of a given vocab size, to pair with a tokenizer."""
    torch.manual_seed(0)
    args = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab_size, hidden_dim=48, max_seq_len=64)
    return save_meta_checkpoint(Transformer(args).state_dict(), args, out_dir)


@pytest.fixture(scope="session")
def references() -> dict[str, Reference]:
    return {name: tiny_reference(name) for name in REFERENCE_CONFIGS}


@pytest.fixture(scope="session")
def make_checkpoint(references, tmp_path_factory):
    """`make_checkpoint(reference_name, layout) -> Path`, written once per session; copy before editing."""
    root = tmp_path_factory.mktemp("checkpoints")
    written: dict[tuple[str, str], Path] = {}

    def make(name: str, layout: str) -> Path:
        if (name, layout) not in written:
            written[name, layout] = write_checkpoint(references[name], layout, root / f"{name}-{layout}")
        return written[name, layout]

    return make


def copy_checkpoint(source: Path, dest: Path) -> Path:
    """A private copy of a directory checkpoint (or of the directory holding a file one)."""
    if source.is_dir():
        return Path(shutil.copytree(source, dest))
    dest.mkdir(parents=True)
    return Path(shutil.copy(source, dest / source.name))


def edit_safetensors(path: Path, edit) -> None:
    """Rewrite a safetensors file after `edit(tensors)` changed its dict in place."""
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def write_hub_cache(cache: Path, repo_id: str, files: Path) -> Path:
    """Lay out `files` as huggingface_hub's cache does: blobs by hash, a snapshot of symlinks, refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in files.iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def is_file_backed(tensor: Tensor, path: Path) -> bool:
    """Whether `tensor`'s memory is a mapping of `path` (Linux /proc/self/maps), i.e. not a copy in RAM."""
    address, target = tensor.data_ptr(), os.path.realpath(path)
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return len(fields) == 6 and fields[5].strip() == target
    return False
