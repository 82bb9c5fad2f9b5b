"""GGUF files (llama.cpp, Ollama, LM Studio, GPT4All) of the `llama` architecture: config, tensor names, weights.

What is in a llama.cpp GGUF, read from its converter (convert_hf_to_gguf.py, `LlamaModel`):
- q/k projections in Meta's interleaved-pair rotary layout: the converter applies `permute` to Hugging Face's
  q_proj/k_proj, undoing the rotate-half permutation HF's own conversion script applied, and llama.cpp rotates
  LLaMA with its "normal" (interleaved) RoPE. So wq/wk are taken as they are; tests/test_gguf_llamacpp.py checks
  it against llama.cpp's own greedy tokens.
- Llama 3.1's RoPE scaling as a `rope_freqs` tensor (one divisor of θ_j per pair), linear/YaRN as metadata keys.
- A tied model has no `output.weight` (llama.cpp then reuses `token_embd`).
Tensors are memory-mapped (copy-on-write, as the llama2.c reader maps its file); quantized ones stay as blocks
until the loader dequantizes them (see gguf_tensors.py). Split files (gguf-split's `-00001-of-0000N.gguf`) are
read part by part: the first holds the metadata, every part some of the tensors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import MODEL_TENSOR, LlamaFileType
from gguf import GGMLQuantizationType as QType
from torch import Tensor

from ..config import ModelArgs
from ..errors import CheckpointError
from ..gguf_file import GGUF_MAGIC, SPLIT_NAME, GGUFHeader, is_later_split_part, read_gguf_header
from .gguf_rope import rope_scaling_from_gguf
from .gguf_tensors import SUPPORTED_TYPES, QuantizedTensor, tensor_bytes, tensor_from_bytes
from .tensor_files import CheckpointTensors

__all__ = ["GGUF_MAGIC", "GGUFCheckpoint", "QuantizedTensor", "gguf_parts", "is_later_split_part", "read_gguf"]

ARCHITECTURE = "llama"

# Meta's names ↔ GGUF's, built from gguf's own table so a rename upstream cannot slip past us.
GLOBAL_TENSORS = {
    "tok_embeddings": MODEL_TENSOR.TOKEN_EMBD,
    "norm": MODEL_TENSOR.OUTPUT_NORM,
    "output": MODEL_TENSOR.OUTPUT,
}
BLOCK_TENSORS = {
    "attention.wq": MODEL_TENSOR.ATTN_Q,
    "attention.wk": MODEL_TENSOR.ATTN_K,
    "attention.wv": MODEL_TENSOR.ATTN_V,
    "attention.wo": MODEL_TENSOR.ATTN_OUT,
    "feed_forward.w1": MODEL_TENSOR.FFN_GATE,
    "feed_forward.w2": MODEL_TENSOR.FFN_DOWN,
    "feed_forward.w3": MODEL_TENSOR.FFN_UP,
    "attention_norm": MODEL_TENSOR.ATTN_NORM,
    "ffn_norm": MODEL_TENSOR.FFN_NORM,
}
ROPE_FREQS = gguf.TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight"
_GLOBAL_BY_GGUF = {gguf.TENSOR_NAMES[t]: stem for stem, t in GLOBAL_TENSORS.items()}
_BLOCK_BY_GGUF = {gguf.TENSOR_NAMES[t].removeprefix("blk.{bid}."): stem for stem, t in BLOCK_TENSORS.items()}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(.+)")
_FLOAT_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def gguf_tensor_name(name: str) -> str:
    """GGUF's name for one of our parameters: 'layers.3.attention.wq.weight' → 'blk.3.attn_q.weight'."""
    stem = name.removesuffix(".weight")
    if stem in GLOBAL_TENSORS:
        return gguf.TENSOR_NAMES[GLOBAL_TENSORS[stem]] + ".weight"
    _, layer, rest = stem.split(".", 2)  # "layers", "3", "attention.wq"
    return gguf.TENSOR_NAMES[BLOCK_TENSORS[rest]].format(bid=int(layer)) + ".weight"


def meta_tensor_name(name: str) -> str | None:
    """Our name for a GGUF tensor ('blk.3.attn_q.weight' → 'layers.3.attention.wq.weight'); None if LLaMA has none."""
    if not name.endswith(".weight"):
        return None  # biases and the like: no LLaMA tensor has one
    stem = name.removesuffix(".weight")
    if stem in _GLOBAL_BY_GGUF:
        return _GLOBAL_BY_GGUF[stem] + ".weight"
    match = _BLOCK_NAME.fullmatch(stem)
    if match and match.group(2) in _BLOCK_BY_GGUF:
        return f"layers.{int(match.group(1))}.{_BLOCK_BY_GGUF[match.group(2)]}.weight"
    return None


@dataclass(frozen=True)
class GGUFCheckpoint(CheckpointTensors):
    """A GGUF model under Meta's names; `tensors` holds Tensors (F32/F16/BF16) and QuantizedTensors."""

    files: tuple[Path, ...] = ()
    metadata: dict = field(default_factory=dict, repr=False)  # the first part's keys, as read
    tensor_types: dict[str, str] = field(default_factory=dict)  # Meta name → GGML type name as stored
    file_type: str | None = None  # general.file_type's name ("MOSTLY_Q4_0"), when the file says


def gguf_parts(path: Path) -> list[Path]:
    """The files of one GGUF model: [path], all parts of a split model (any part given), or the one model in a
    directory; errors name what is missing or ambiguous."""
    if path.is_dir():
        models = _models_in(path)
        if not models:
            raise CheckpointError(f"{path}: no .gguf file in this directory")
        if len(models) > 1:
            names = ", ".join(parts[0].name for parts in models)
            raise CheckpointError(f"{path}: holds {len(models)} GGUF models ({names}); pass the file to load")
        return models[0]
    match = SPLIT_NAME.fullmatch(path.name)
    if not match:
        return [path]
    count = int(match.group("count"))
    parts = [path.with_name(f"{match.group('stem')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise CheckpointError(f"{path.name}: part of a model split into {count} files; missing: {', '.join(missing)}")
    return parts


def _models_in(folder: Path) -> list[list[Path]]:
    """Each GGUF model in `folder` once: a plain .gguf, or a split model by its first part."""
    models = []
    for file in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".gguf" and p.is_file()):
        match = SPLIT_NAME.fullmatch(file.name)
        if match is None or int(match.group("no")) == 1:
            models.append(gguf_parts(file) if match else [file])
    return models


def _key(meta: dict, name: str, required: bool = True, default: object = None) -> object:
    value = meta.get(f"{ARCHITECTURE}.{name}", default)
    if value is None and required:
        raise CheckpointError(f"missing required key '{ARCHITECTURE}.{name}'")
    return value


def _one_value(value: object, what: str) -> int:
    """A per-layer array (some converters write head counts per layer) must hold one value to fit LLaMA."""
    if isinstance(value, int):
        return value
    values = {int(v) for v in value}
    if len(values) != 1:
        raise CheckpointError(f"'{ARCHITECTURE}.{what}' differs between layers ({sorted(values)}); LLaMA has one "
                              "value for all layers")
    return values.pop()


def check_architecture(header: GGUFHeader) -> None:
    """Refuse, by name, GGUF models that are not plain LLaMA."""
    arch = header.metadata.get("general.architecture")
    if arch != ARCHITECTURE:
        name = header.metadata.get("general.name")
        raise CheckpointError(
            f"{header.path.name}: a GGUF model of architecture {arch!r}" + (f" ({name})" if name else "") +
            f"; only '{ARCHITECTURE}' is supported (LLaMA 1/2/3, TinyLlama, Vicuna, Alpaca, Mistral 7B and other "
            "models llama.cpp loads as 'llama')")
    experts = header.metadata.get(f"{ARCHITECTURE}.expert_count") or 0
    if experts > 0:
        raise CheckpointError(f"{header.path.name}: a mixture-of-experts model ({experts} experts, e.g. Mixtral); "
                              "only dense LLaMA models are supported")


def model_args(meta: dict, embedding_rows: int, rope_divisors: Tensor | None) -> tuple[ModelArgs, int]:
    """ModelArgs from the `llama.*` keys, and the context length the model was trained on."""
    n_heads = _one_value(_key(meta, "attention.head_count"), "attention.head_count")
    dim = _key(meta, "embedding_length")
    key_length = _key(meta, "attention.key_length", required=False)
    value_length = _key(meta, "attention.value_length", required=False, default=key_length)
    if key_length != value_length:
        raise CheckpointError(f"key length {key_length} ≠ value length {value_length}; LLaMA uses one head size")
    head_dim = key_length or dim // n_heads
    rotated = _key(meta, "rope.dimension_count", required=False, default=head_dim)
    if rotated != head_dim:
        raise CheckpointError(f"RoPE rotates {rotated} of {head_dim} head dimensions (partial rotary); LLaMA "
                              "rotates whole heads")
    context = _key(meta, "context_length")
    theta = _decimal(_key(meta, "rope.freq_base", required=False, default=10000.0))
    try:
        args = ModelArgs(
            dim=dim, n_layers=_key(meta, "block_count"), n_heads=n_heads,
            n_kv_heads=_one_value(_key(meta, "attention.head_count_kv", required=False, default=n_heads),
                                  "attention.head_count_kv"),
            vocab_size=embedding_rows, hidden_dim=_one_value(_key(meta, "feed_forward_length"), "feed_forward_length"),
            norm_eps=_decimal(_key(meta, "attention.layer_norm_rms_epsilon")), rope_theta=theta, max_seq_len=context,
            head_dim=head_dim if head_dim * n_heads != dim else None,
            rope_scaling=rope_scaling_from_gguf(meta, head_dim, theta, rope_divisors),
        )  # fmt: skip
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{e}") from None
    return args, context


def _decimal(value: float) -> float:
    """A float32 key as the decimal it was written from (1e-05, not 9.999999747378752e-06): the shortest decimal
    that rounds to the same float32, which is the value every converter started from."""
    return float(str(np.float32(value)))


def map_tensors(header: GGUFHeader) -> dict[str, Tensor | QuantizedTensor]:
    """Each tensor of one file as a view of its memory mapping, under its GGUF name."""
    path = header.path
    flat = torch.from_file(str(path), shared=False, size=header.file_size, dtype=torch.uint8)
    tensors = {}
    for info in header.tensors:
        if info.ggml_type not in SUPPORTED_TYPES:
            kind = QType(info.ggml_type).name if info.ggml_type in QType._value2member_map_ else info.ggml_type
            supported = ", ".join(t.name for t in SUPPORTED_TYPES)
            raise CheckpointError(f"{path.name}: tensor '{info.name}' is stored as {kind}, which this loader cannot "
                                  f"decode; supported: {supported}")
        if info.shape[-1] % gguf.GGML_QUANT_SIZES[QType(info.ggml_type)][0]:
            raise CheckpointError(f"{path.name}: tensor '{info.name}' of shape {info.shape} is not whole "
                                  f"{QType(info.ggml_type).name} blocks")
        size = tensor_bytes(info.ggml_type, info.shape)
        if info.offset + size > header.file_size:
            raise CheckpointError(f"{path.name}: truncated GGUF file: tensor '{info.name}' lies at bytes "
                                  f"{info.offset}..{info.offset + size}, the file has {header.file_size}")
        tensors[info.name] = tensor_from_bytes(flat[info.offset : info.offset + size], info.ggml_type, info.shape)
    return tensors


def read_gguf(path: str | Path) -> GGUFCheckpoint:
    """Config and memory-mapped tensors (Meta names) of a GGUF model: a file, any part of a split one, or a dir."""
    files = gguf_parts(Path(path))
    headers = [read_gguf_header(f, CheckpointError) for f in files]
    first = headers[0]
    check_architecture(first)
    if len(files) > 1:
        _check_split(headers)
    by_gguf_name, origin = {}, {}
    for header in headers:
        for name, tensor in map_tensors(header).items():
            if name in by_gguf_name:
                raise CheckpointError(f"{header.path.name}: tensor '{name}' is also in {origin[name]}; each part of "
                                      "a split model holds its own tensors")
            by_gguf_name[name], origin[name] = tensor, header.path.name
    divisors = by_gguf_name.pop(ROPE_FREQS, None)
    tensors, origins, types = {}, {}, {}
    for name, tensor in by_gguf_name.items():
        ours = meta_tensor_name(name)
        if ours is None:
            raise CheckpointError(f"{origin[name]}: tensor '{name}' has no place in a LLaMA model (is this a "
                                  "variant llama.cpp loads under 'llama' that this loader does not cover?)")
        tensors[ours], origins[ours] = tensor, origin[name]
        types[ours] = tensor.kind if isinstance(tensor, QuantizedTensor) else _FLOAT_NAMES[tensor.dtype]
    embeddings = tensors.get("tok_embeddings.weight")
    if embeddings is None:
        raise CheckpointError(f"{first.path.name}: no token_embd.weight tensor")
    if isinstance(divisors, QuantizedTensor):
        divisors = divisors.dequantize()
    try:
        args, trained = model_args(first.metadata, embeddings.shape[0], divisors)
    except CheckpointError as e:
        raise CheckpointError(f"{first.path.name}: {e}") from None
    args = args.replace(tie_embeddings="output.weight" not in tensors)
    file_type = first.metadata.get("general.file_type")
    file_type = LlamaFileType(file_type).name if file_type in LlamaFileType._value2member_map_ else None
    eos = tuple(int(first.metadata[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                                "tokenizer.ggml.eom_token_id") if k in first.metadata)
    return GGUFCheckpoint(args, tensors, origins, eos_ids=eos, trained_context=trained, files=tuple(files),
                          metadata=first.metadata, tensor_types=types, file_type=file_type)


def _check_split(headers: list[GGUFHeader]) -> None:
    count = len(headers)
    for number, header in enumerate(headers):
        said = (header.metadata.get("split.no"), header.metadata.get("split.count"))
        if said != (number, count):
            raise CheckpointError(f"{header.path.name}: expected part {number + 1} of {count} (split.no {number}, "
                                  f"split.count {count}), the file says split.no {said[0]}, split.count {said[1]}")


def stored_gguf_bytes(path: Path) -> int:
    """Bytes the weights take once loaded with the default dtype, from the headers: tensors as stored (quantized
    projections stay blocks on the int4/int8 kernels), except quantized token embeddings, which are decoded to
    fp32 rows (4 bytes a value). A float dtype asked for explicitly needs more (2-4 bytes a value)."""
    total = 0
    for file in gguf_parts(path):
        for info in read_gguf_header(file, CheckpointError).tensors:
            decoded = info.name == "token_embd.weight" and info.ggml_type not in (QType.F32, QType.F16, QType.BF16)
            total += 4 * math.prod(info.shape) if decoded else tensor_bytes(info.ggml_type, info.shape)
    return total
