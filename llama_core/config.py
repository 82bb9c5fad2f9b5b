"""Model configuration: one dataclass whose fields mirror the checkpoints' own metadata."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .rope import normalise_rope_scaling


@dataclass(frozen=True)
class ModelArgs:
    """LLaMA hyper-parameters, named as in Meta's `params.json`.

    `hidden_dim` is the explicit FFN width that Hugging Face (`intermediate_size`) and
    llama2.c store; Meta's files instead store `multiple_of` / `ffn_dim_multiplier`
    and derive it (see `ffn_hidden_dim`). `head_dim` is dim / n_heads unless a config sets
    another (HF's `head_dim`); `rope_scaling` mirrors config.json's RoPE dict (None: plain RoPE),
    and `max_seq_len` is the context the model runs with.
    """

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    hidden_dim: int | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    head_dim: int | None = None
    rope_scaling: dict | None = None

    def __post_init__(self) -> None:
        for name in ("dim", "n_layers", "n_heads", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"config field '{name}' must be a positive integer, got {value!r}")
        if self.head_dim is None:
            if self.dim % self.n_heads:
                raise ValueError(f"config: dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        elif isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise ValueError(f"config field 'head_dim' must be a positive integer, got {self.head_dim!r}")
        if self.kv_heads <= 0 or self.n_heads % self.kv_heads:
            raise ValueError(f"config: n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"config: head_dim ({self.head_dim}) must be even for rotary embeddings")
        object.__setattr__(self, "rope_scaling", normalise_rope_scaling(self.rope_scaling, self.max_seq_len))

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def derived_head_dim(self) -> bool:
        """Whether head_dim is the usual dim / n_heads (then it follows dim and n_heads in `replace`)."""
        return self.dim % self.n_heads == 0 and self.head_dim == self.dim // self.n_heads

    @property
    def rope_type(self) -> str:
        return self.rope_scaling["rope_type"] if self.rope_scaling else "default"

    @property
    def ffn_hidden_dim(self) -> int:
        if self.hidden_dim is not None:
            return self.hidden_dim
        # Meta's rule (llama/model.py): 2/3 of 4*dim for SwiGLU, scaled, rounded up to multiple_of.
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def replace(self, **changes) -> "ModelArgs":
        if "head_dim" not in changes and self.derived_head_dim:
            changes["head_dim"] = None  # derived again from the new dim / n_heads
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a dict; head_dim and rope_scaling only when they say something (older files lack them)."""
        values = dataclasses.asdict(self)
        if self.derived_head_dim:
            del values["head_dim"]
        if self.rope_scaling is None:
            del values["rope_scaling"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> "ModelArgs":
        """Build from a dict, ignoring keys this dataclass does not know (e.g. Meta's `use_scaled_rope`)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def parameter_count(args: ModelArgs) -> int:
    """Exact number of weights, norms included, embeddings counted once when tied."""
    d, h = args.dim, args.ffn_hidden_dim
    q_dim, kv_dim = args.n_heads * args.head_dim, args.kv_heads * args.head_dim
    attention = d * q_dim * 2 + d * kv_dim * 2  # wq, wo, wk, wv
    feed_forward = 3 * d * h
    per_layer = attention + feed_forward + 2 * d  # two RMSNorm weights
    embeddings = args.vocab_size * d * (1 if args.tie_embeddings else 2)
    return args.n_layers * per_layer + embeddings + d


# Exact shapes of published models. Sources (also in data/published_figures.json once the UI lands):
# LLaMA-1: Touvron et al. 2023, arXiv:2302.13971, Table 2 (norm_eps 1e-6 from Meta's params.json).
# Llama 2: arXiv:2307.09288 Table 1; 70B params.json (GQA 8, ffn_dim_multiplier 1.3, multiple_of 4096).
# TinyLlama: jzhang38/TinyLlama README / lit_gpt config 'tiny_LLaMA_1b'.
# llama2.c stories*: karpathy/llama2.c README models table, train.py (multiple_of 32, tied classifier).
PRESETS: dict[str, ModelArgs] = {
    "llama-7b": ModelArgs(dim=4096, n_layers=32, n_heads=32, norm_eps=1e-6, max_seq_len=2048),
    "llama-13b": ModelArgs(dim=5120, n_layers=40, n_heads=40, norm_eps=1e-6, max_seq_len=2048),
    "llama-33b": ModelArgs(dim=6656, n_layers=60, n_heads=52, norm_eps=1e-6, max_seq_len=2048),
    "llama-65b": ModelArgs(dim=8192, n_layers=80, n_heads=64, norm_eps=1e-6, max_seq_len=2048),
    "llama-2-7b": ModelArgs(dim=4096, n_layers=32, n_heads=32, max_seq_len=4096),
    "llama-2-13b": ModelArgs(dim=5120, n_layers=40, n_heads=40, max_seq_len=4096),
    "llama-2-70b": ModelArgs(
        dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.3, max_seq_len=4096
    ),
    "tinyllama-1.1b": ModelArgs(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden_dim=5632, max_seq_len=2048),
    "stories15m": ModelArgs(dim=288, n_layers=6, n_heads=6, multiple_of=32, max_seq_len=256, tie_embeddings=True),
    "stories42m": ModelArgs(dim=512, n_layers=8, n_heads=8, multiple_of=32, max_seq_len=1024, tie_embeddings=True),
    "stories110m": ModelArgs(dim=768, n_layers=12, n_heads=12, multiple_of=32, max_seq_len=1024, tie_embeddings=True),
}


def preset(name: str) -> ModelArgs:
    """Look up a preset by its exact name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
