"""Meta's original checkpoint directories: `params.json` plus `consolidated.NN.pth` shards.

Large models were trained model-parallel and saved one shard per GPU; each weight is split
along the dimension its parallel layer splits, and the norms are replicated in every shard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from ..config import ModelArgs
from ..errors import CheckpointError
from .tensor_files import CheckpointTensors, load_tensor_file, read_json

SHARD_PATTERN = re.compile(r"consolidated\.(\d+)\.pth")
REQUIRED_PARAMS = ("dim", "n_layers", "n_heads", "vocab_size")
PARAMS_WRITTEN = (
    "dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
    "ffn_dim_multiplier", "norm_eps", "rope_theta", "max_seq_len",
)  # fmt: skip

# Column-parallel layers (and the output head) split their output rows, row-parallel layers
# (wo, w2) their input columns; the embedding is split along the model dim. Absent: replicated.
SHARD_DIMS = {"tok_embeddings": 1, "wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": 1, "w2": 1}


def shard_dim(name: str) -> int | None:
    """The dimension model-parallel shards split `name` along, or None when it is replicated."""
    return SHARD_DIMS.get(name.split(".")[-2])  # "layers.0.attention.wq.weight" → "wq"


def read_params(directory: Path, tokenizer_vocab_size: int | None) -> ModelArgs:
    """ModelArgs from `params.json`; `vocab_size: -1` means the tokenizer's size, as in Meta's code."""
    params = read_json(directory / "params.json")
    for key in REQUIRED_PARAMS:
        if key not in params:
            raise CheckpointError(f"params.json: missing required key '{key}' in {directory}")
    if params.get("use_scaled_rope"):
        raise CheckpointError("params.json: use_scaled_rope (Llama 3.1 RoPE scaling) is not supported by this model")
    if params["vocab_size"] == -1:
        if tokenizer_vocab_size is None:
            raise CheckpointError(
                f"params.json: vocab_size is -1, which means 'take it from the tokenizer', but no tokenizer.model "
                f"was found in {directory} or its parent"
            )
        params = {**params, "vocab_size": tokenizer_vocab_size}
    try:
        return ModelArgs.from_dict(params)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"params.json: {e}") from None


def shard_files(directory: Path) -> list[Path]:
    """The `consolidated.NN.pth` files in shard order, refusing gaps in the numbering."""
    by_number = {int(m.group(1)): p for p in directory.iterdir() if (m := SHARD_PATTERN.fullmatch(p.name))}
    if not by_number:
        raise CheckpointError(f"{directory}: no consolidated.NN.pth weight files next to params.json")
    missing = sorted(set(range(max(by_number) + 1)) - set(by_number))
    if missing:
        names = ", ".join(f"consolidated.{n:02d}.pth" for n in missing)
        raise CheckpointError(f"{directory}: model-parallel shard(s) missing: {names}")
    return [by_number[n] for n in sorted(by_number)]


def merge_shards(files: list[Path]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Concatenate model-parallel shards back into whole tensors (one shard: no copy)."""
    shards = [load_tensor_file(f) for f in files]
    for file, shard in zip(files[1:], shards[1:]):
        if shard.keys() != shards[0].keys():
            odd = sorted(shard.keys() ^ shards[0].keys())[0]
            raise CheckpointError(f"{file.name}: holds different tensors than {files[0].name} (e.g. '{odd}')")
    merged_origin = files[0].name if len(files) == 1 else f"{files[0].name}..{files[-1].name}"
    tensors, origins = {}, {}
    for name, first in shards[0].items():
        if name == "rope.freqs":  # Meta's rotary table; the model recomputes it
            continue
        dim = shard_dim(name)
        if dim is None or len(shards) == 1:
            tensors[name], origins[name] = first, files[0].name
            continue
        try:
            tensors[name] = torch.cat([shard[name] for shard in shards], dim=dim)
        except RuntimeError:
            shapes = ", ".join(f"{f.name}: {tuple(s[name].shape)}" for f, s in zip(files, shards))
            raise CheckpointError(f"tensor '{name}' cannot be merged across shards ({shapes})") from None
        origins[name] = merged_origin
    return tensors, origins


def load_meta_checkpoint(directory: Path, tokenizer_vocab_size: int | None) -> CheckpointTensors:
    """Read a Meta directory, merging model-parallel shards."""
    args = read_params(directory, tokenizer_vocab_size)
    files = shard_files(directory)
    tensors, origins = merge_shards(files)
    # Missing trailing shards leave no gap in the numbering, but the embedding comes up narrow.
    emb = tensors.get("tok_embeddings.weight")
    if emb is not None and emb.dim() == 2 and emb.shape[1] < args.dim and args.dim % emb.shape[1] == 0:
        expected = args.dim * len(files) // emb.shape[1]
        names = ", ".join(f"consolidated.{n:02d}.pth" for n in range(len(files), expected))
        raise CheckpointError(
            f"{directory}: tok_embeddings.weight has {emb.shape[1]} of dim={args.dim} columns, so the checkpoint "
            f"was split into {expected} model-parallel shards but only {len(files)} found; missing: {names}"
        )
    # params.json cannot say whether embeddings are tied; a missing output head says it for it.
    return CheckpointTensors(args.replace(tie_embeddings="output.weight" not in tensors), tensors, origins)


def _owning(t: Tensor) -> Tensor:
    # torch.save writes a view's whole storage; give views (chunks, memory-mapped files) their own.
    return t if t.untyped_storage().nbytes() == t.nbytes else t.clone(memory_format=torch.contiguous_format)


def save_meta_checkpoint(
    state_dict: dict[str, Tensor], args: ModelArgs, out_dir: str | Path, n_shards: int = 1
) -> Path:
    """Write `state_dict` (Meta names) as params.json + `n_shards` consolidated.NN.pth files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {k: v for k, v in args.to_dict().items() if k in PARAMS_WRITTEN and v is not None}
    # Meta derives the FFN width from multiple_of; keep an explicit width that the rule would not give.
    if args.hidden_dim is not None and args.replace(hidden_dim=None).ffn_hidden_dim != args.hidden_dim:
        params["hidden_dim"] = args.hidden_dim
    (out / "params.json").write_text(json.dumps(params, indent=2))
    tensors = {k: v for k, v in state_dict.items() if not (args.tie_embeddings and k == "output.weight")}
    for name, t in tensors.items():
        dim = shard_dim(name)
        if dim is not None and t.shape[dim] % n_shards:
            raise ValueError(f"tensor '{name}' of shape {tuple(t.shape)} does not split into {n_shards} shards")
    for i in range(n_shards):
        shard = {
            name: _owning(t if shard_dim(name) is None else t.chunk(n_shards, shard_dim(name))[i])
            for name, t in tensors.items()
        }
        torch.save(shard, out / f"consolidated.{i:02d}.pth")
    return out
