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


# Meta's params.json states no context length; each generation was trained on its own:
# LLaMA-1 2048 (arXiv:2302.13971), Llama 2 4096 (arXiv:2307.09288), Code Llama 16384 (arXiv:2308.12950),
# Llama 3 8192 (Meta's Llama 3 model card); Llama 3.1+ (use_scaled_rope) were trained on to 128K.
LLAMA1_CONTEXT, LLAMA2_CONTEXT, CODE_LLAMA_CONTEXT, LLAMA3_CONTEXT, LLAMA31_CONTEXT = 2048, 4096, 16384, 8192, 131072
# Meta's reference `apply_scaling` (llama-models, models/llama3/model.py) hard-codes these for use_scaled_rope.
META_SCALED_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": LLAMA3_CONTEXT}


def trained_context(params: dict) -> tuple[int, int]:
    """(context to run with by default, context the model was trained on) for a params.json.

    Told apart by what each generation's files differ in: Llama 3 by its 128K vocabulary or rope_theta
    5e5, Code Llama by rope_theta 1e6, Llama 2 from LLaMA-1 by norm_eps (1e-5 against 1e-6).
    """
    if isinstance(params.get("max_seq_len"), int):  # our own writer (and some conversions) say it
        return params["max_seq_len"], params["max_seq_len"]
    theta, vocab = params.get("rope_theta", 10000.0), params.get("vocab_size", -1)
    if params.get("use_scaled_rope"):
        return LLAMA3_CONTEXT, LLAMA31_CONTEXT
    if vocab >= 128000 or theta == 500000:
        return LLAMA3_CONTEXT, LLAMA3_CONTEXT
    if theta == 1000000:
        return CODE_LLAMA_CONTEXT, CODE_LLAMA_CONTEXT
    context = LLAMA2_CONTEXT if params.get("norm_eps", 1e-6) >= 1e-5 else LLAMA1_CONTEXT
    return context, context


def read_params(directory: Path, vocab_rows: int | None = None) -> tuple[ModelArgs, int]:
    """ModelArgs from `params.json` and the context the model was trained on.

    `vocab_size: -1` means the tokenizer's size in Meta's code; the embedding has exactly that many
    rows, so `vocab_rows` (read from the weights) stands in for it until the tokenizer is read.
    """
    params = read_json(directory / "params.json")
    for key in REQUIRED_PARAMS:
        if key not in params:
            raise CheckpointError(f"params.json: missing required key '{key}' in {directory}")
    try:
        context, trained = trained_context(params)
    except TypeError as e:
        raise CheckpointError(f"params.json: a value has the wrong type ({e})") from None
    params = {**params, "max_seq_len": context}
    if params.get("use_scaled_rope") and not params.get("rope_scaling"):  # our writer states other scalings whole
        rope = dict(META_SCALED_ROPE)
        if params.get("rope_scaling_factor"):  # newer llama-models params may state the factor
            rope["factor"] = float(params["rope_scaling_factor"])
        params["rope_scaling"] = rope
    if params["vocab_size"] == -1:
        if vocab_rows is None:
            raise CheckpointError(f"params.json: vocab_size is -1 and {directory} has no tok_embeddings.weight "
                                  "to take the size from")
        params["vocab_size"] = vocab_rows
    try:
        return ModelArgs.from_dict(params), trained
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"params.json: {e}") from None


def vocab_from_tokenizer(directory: Path) -> bool:
    """Whether params.json leaves the vocabulary size to the tokenizer (`vocab_size: -1`)."""
    return read_json(directory / "params.json").get("vocab_size") == -1


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


def load_meta_checkpoint(directory: Path) -> CheckpointTensors:
    """Read a Meta directory, merging model-parallel shards."""
    read_params(directory, vocab_rows=1)  # the config's own errors first, before any weights are read
    files = shard_files(directory)
    tensors, origins = merge_shards(files)
    rows = next((t.shape[0] for n in ("tok_embeddings.weight", "output.weight") if (t := tensors.get(n)) is not None), None)
    args, trained = read_params(directory, rows)
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
    args = args.replace(tie_embeddings="output.weight" not in tensors)
    return CheckpointTensors(args, tensors, origins, trained_context=trained)


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
    if not args.derived_head_dim:
        params["head_dim"] = args.head_dim  # not a key of Meta's, read back by ours
    if args.rope_scaling == META_SCALED_ROPE:
        params["use_scaled_rope"] = True
    elif args.rope_scaling:
        params["rope_scaling"] = args.rope_scaling  # not a key of Meta's, read back by ours
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
