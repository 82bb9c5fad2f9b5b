"""Hugging Face checkpoint directories: `config.json` plus safetensors or `pytorch_model*.bin` weights.

Weights are renamed to Meta's names and the q/k rotary permutation is undone once, here, so
the model never knows where its weights came from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import Tensor

from ..config import ModelArgs
from ..errors import CheckpointError
from .hf_config import config_eos_ids, read_config
from .tensor_files import CheckpointTensors, load_tensor_file, read_json

# Weight files in order of preference: a single file, then a sharded index of the same kind.
WEIGHT_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)

TOP_LEVEL_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER_NAMES = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
LAYER_PATTERN = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


def weight_files(directory: Path) -> list[Path]:
    """The weight files to read: one file, or every shard an index names."""
    for single, index in WEIGHT_LAYOUTS:
        if (directory / single).exists():
            return [directory / single]
        if (directory / index).exists():
            weight_map = read_json(directory / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index}: no 'weight_map' object")
            return [directory / name for name in sorted(set(weight_map.values()))]
    expected = ", ".join(name for layout in WEIGHT_LAYOUTS for name in layout)
    found = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
    raise CheckpointError(f"{directory}: no weights found; expected one of {expected} (found: {found})")


def meta_name(hf_name: str) -> str | None:
    """Meta's name for a Hugging Face tensor; None for buffers to drop; unknown names pass
    through unchanged so that the key check reports them."""
    if hf_name.endswith("rotary_emb.inv_freq"):  # a buffer older transformers versions saved
        return None
    if hf_name in TOP_LEVEL_NAMES:
        return TOP_LEVEL_NAMES[hf_name]
    match = LAYER_PATTERN.fullmatch(hf_name)
    if match and match.group(2) in LAYER_NAMES:
        return f"layers.{match.group(1)}.{LAYER_NAMES[match.group(2)]}.weight"
    return hf_name


def unpermute_rotary(w: Tensor, n_heads: int) -> Tensor:
    """Undo the permutation HF's conversion script applies to wq/wk.

    HF rotates the two halves of each head (x[:D/2], x[D/2:]); Meta rotates interleaved pairs
    (x0, x1), (x2, x3). Per head, HF's row order is Meta's with even rows first, then odd rows.
    """
    d1, d2 = w.shape
    return w.view(n_heads, 2, d1 // n_heads // 2, d2).transpose(1, 2).reshape(d1, d2)


def load_hf_checkpoint(directory: Path) -> CheckpointTensors:
    """Read a Hugging Face LLaMA directory into Meta's layout."""
    args = read_config(directory)
    tensors: dict[str, Tensor] = {}
    origins: dict[str, str] = {}
    for file in weight_files(directory):
        for hf_name, tensor in load_tensor_file(file).items():
            name = meta_name(hf_name)
            if name is not None:
                tensors[name], origins[name] = tensor, file.name
    for i in range(args.n_layers):
        for proj, n_heads in (("wq", args.n_heads), ("wk", args.kv_heads)):
            name = f"layers.{i}.attention.{proj}.weight"
            w = tensors.get(name)
            # A wrong shape is left for the loader's shape check, which explains it better than a failed view.
            if w is not None and w.shape == (n_heads * args.head_dim, args.dim):
                tensors[name] = unpermute_rotary(w, n_heads)
    return CheckpointTensors(args, tensors, origins, eos_ids=config_eos_ids(directory))


def permute_rotary(w: Tensor, n_heads: int) -> Tensor:
    """Meta's q/k row order → HF's (the inverse of `unpermute_rotary`)."""
    d1, d2 = w.shape
    return w.view(n_heads, d1 // n_heads // 2, 2, d2).transpose(1, 2).reshape(d1, d2)


def hf_config(args: ModelArgs) -> dict:
    """A `config.json` that transformers' LlamaForCausalLM and our loader both read."""
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": args.dim, "num_hidden_layers": args.n_layers, "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.kv_heads, "intermediate_size": args.ffn_hidden_dim,
        "rms_norm_eps": args.norm_eps, "rope_theta": args.rope_theta, "max_position_embeddings": args.max_seq_len,
        "vocab_size": args.vocab_size, "tie_word_embeddings": args.tie_embeddings,
        "bos_token_id": 1, "eos_token_id": 2, "attention_bias": False, "mlp_bias": False,
    }  # fmt: skip
    if not args.derived_head_dim:
        config["head_dim"] = args.head_dim
    if args.rope_scaling:
        config["rope_scaling"] = dict(args.rope_scaling)
    return config


def save_hf_checkpoint(state_dict: dict[str, Tensor], args: ModelArgs, out_dir: Path, dtype=None) -> Path:
    """Write Meta-named weights as a Hugging Face directory (config.json + model.safetensors)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_names = {meta: hf for hf, meta in TOP_LEVEL_NAMES.items()}
    tensors = {}
    for name, tensor in state_dict.items():
        if args.tie_embeddings and name == "output.weight":
            continue  # tied: stored once, as the embeddings
        match = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
        if match:
            layer_names = {meta: hf for hf, meta in LAYER_NAMES.items()}
            hf_name = f"model.layers.{match.group(1)}.{layer_names[match.group(2)]}.weight"
            if match.group(2) in ("attention.wq", "attention.wk"):
                tensor = permute_rotary(tensor, args.n_heads if match.group(2) == "attention.wq" else args.kv_heads)
        else:
            hf_name = hf_names[name]
        tensors[hf_name] = tensor.detach().to(dtype or tensor.dtype).contiguous()
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(hf_config(args), indent=2) + "\n")
    return out_dir
