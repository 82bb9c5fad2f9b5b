"""Hugging Face `config.json` and `generation_config.json`: what they say about the model and its defaults.

Read before any weight or tokenizer, so that a model of another architecture is refused for what it
is, with what was found and what is supported.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..config import ModelArgs
from ..errors import CheckpointError, ParameterError
from ..sampling import SamplingParams
from .tensor_files import read_json

# config.json key → ModelArgs field.
CONFIG_FIELDS = {
    "hidden_size": "dim",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "hidden_dim",
    "rms_norm_eps": "norm_eps",
    "max_position_embeddings": "max_seq_len",
    "vocab_size": "vocab_size",
    "tie_word_embeddings": "tie_embeddings",
    "head_dim": "head_dim",
}
REQUIRED_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
SUPPORTED = "LLaMA-architecture models (LlamaForCausalLM, model_type 'llama'; MistralForCausalLM without a sliding window)"

# What sets the architectures people most often try apart from LLaMA's, to say why they are refused.
DIFFERENCES = {
    "mistral": "sliding-window attention",
    "mixtral": "a mixture-of-experts feed-forward",
    "qwen2": "biases on the q/k/v projections",
    "qwen2_moe": "a mixture-of-experts feed-forward and q/k/v biases",
    "qwen3": "RMSNorm on queries and keys",
    "gemma": "a GeLU-gated MLP, RMSNorm weights offset by 1 and scaled embeddings",
    "gemma2": "a GeLU-gated MLP, soft-capped logits, extra norms and sliding-window layers",
    "gemma3": "a GeLU-gated MLP, query/key norms and sliding-window layers",
    "phi3": "fused qkv and gate/up projections and LongRoPE",
    "gpt2": "learned position embeddings, LayerNorm and a GeLU MLP",
}
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")


def _architecture(config: dict) -> str:
    names = config.get("architectures") or []
    return f"{names[0]} (model_type {config.get('model_type')!r})" if names else f"model_type {config.get('model_type')!r}"


def check_architecture(config: dict) -> None:
    """Refuse what this engine cannot run, saying what was found and what is supported."""
    model_type = config.get("model_type", "llama")
    found = _architecture(config)
    experts = next((config[k] for k in EXPERT_KEYS if config.get(k)), None)
    if experts:
        raise CheckpointError(f"config.json: {found} is a mixture of experts ({experts} experts per layer); "
                              f"supported: {SUPPORTED}")
    if model_type == "mistral" and config.get("sliding_window") is not None:
        raise CheckpointError(f"config.json: {found} uses sliding-window attention (window "
                              f"{config['sliding_window']}), which this engine does not implement; supported: {SUPPORTED}")
    if model_type not in ("llama", "mistral"):
        why = f", which differs from LLaMA by {DIFFERENCES[model_type]}" if model_type in DIFFERENCES else ""
        raise CheckpointError(f"config.json: {found} is not supported{why}; supported: {SUPPORTED}")
    if config.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"config.json: hidden_act is {config['hidden_act']!r}, only 'silu' is supported")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise CheckpointError(f"config.json: {key} is true (projections with biases); LLaMA has none and "
                                  "this engine implements none")


def read_config(directory: Path) -> ModelArgs:
    """Translate `config.json` into ModelArgs, refusing variants this model does not implement."""
    config = read_json(directory / "config.json")
    check_architecture(config)
    for key in REQUIRED_KEYS:
        if key not in config:
            raise CheckpointError(f"config.json: missing required key '{key}'")
    values = {field: config[key] for key, field in CONFIG_FIELDS.items() if config.get(key) is not None}
    values.setdefault("tie_embeddings", False)  # LlamaConfig's default
    # transformers 5 nests RoPE settings (theta included) in "rope_parameters"; 4.x kept rope_theta at the
    # top level next to a "rope_scaling" dict.
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = rope.get("rope_theta", config.get("rope_theta"))
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if "original_max_position_embeddings" in config and rope_type in ("llama3", "yarn"):
        rope["original_max_position_embeddings"] = config["original_max_position_embeddings"]  # as transformers
    if rope_type == "dynamic":
        # transformers stretches dynamic NTK from max_position_embeddings, whatever else the dict says.
        rope["original_max_position_embeddings"] = config.get("max_position_embeddings", 2048)
    values["rope_scaling"] = rope or None
    try:
        if theta is not None:
            values["rope_theta"] = float(theta)
        return ModelArgs(**values)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"config.json: {e}") from None


def token_ids(value: object, where: str) -> tuple[int, ...]:
    """An `eos_token_id` entry (one id, a list of ids, or null) as a tuple."""
    ids = [] if value is None else value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise CheckpointError(f"{where}: eos_token_id must be a token id or a list of them, got {value!r}")
    return tuple(ids)


def config_eos_ids(directory: Path) -> tuple[int, ...]:
    return token_ids(read_json(directory / "config.json").get("eos_token_id"), "config.json")


def read_generation_config(folder: Path) -> tuple[tuple[int, ...], dict]:
    """The eos ids and sampling defaults of `generation_config.json` (none when the file is absent).

    Defaults use SamplingParams' names and only the keys the file sets. As in transformers, sampling
    happens only with `do_sample: true`: a file that sets sampling values (or do_sample) without it
    means greedy decoding, with its repetition penalty still applied.
    """
    path = folder / "generation_config.json"
    if not path.is_file():
        return (), {}
    config = read_json(path)
    eos_ids = token_ids(config.get("eos_token_id"), path.name)
    defaults = {key: config[key] for key in SAMPLING_KEYS if config.get(key) is not None}
    if (defaults or "do_sample" in config) and config.get("do_sample") is not True:
        defaults = {"temperature": 0.0, **({"repetition_penalty": defaults["repetition_penalty"]}
                                          if "repetition_penalty" in defaults else {})}
    for key, value in list(defaults.items()):
        try:
            SamplingParams(**{key: value})
        except ParameterError as e:
            warnings.warn(f"{path}: ignoring {key}: {e}", stacklevel=3)
            del defaults[key]
    return eos_ids, defaults
