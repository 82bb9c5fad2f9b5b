"""GGUF files written from transformers models the way llama.cpp's converter writes them, for the import tests.

Independent of our loader: names come from gguf-py's own tensor map, q/k are permuted as convert_hf_to_gguf.py's
`LlamaModel.permute` does (HF's rotate-half rows back to interleaved pairs), matrices are quantized with
`gguf.quants.quantize`, and Llama 3.1's `rope_freqs` divisors are computed with the converter's formula.
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QType
from transformers import LlamaForCausalLM


def permute(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's q/k rows → Meta's interleaved rotary pairs (per head: rows [0..D/2) and [D/2..D) interleaved)."""
    rows, columns = weight.shape
    return weight.reshape(n_head, 2, rows // n_head // 2, columns).swapaxes(1, 2).reshape(rows, columns)


def matrix_type_for(weight: np.ndarray, matrix_type: QType) -> QType:
    """llama.cpp's fallback: a matrix whose rows are not whole blocks of the type is written as F16."""
    if weight.ndim == 1:
        return QType.F32
    block = GGML_QUANT_SIZES[matrix_type][0]
    return matrix_type if weight.shape[-1] % block == 0 else QType.F16


def encode(weight: np.ndarray, qtype: QType) -> np.ndarray:
    return gguf.quants.quantize(weight.astype(np.float32), qtype)


def round_trip(weight: torch.Tensor, qtype: QType) -> torch.Tensor:
    """The values a reader gets back for `weight` stored as `qtype` (gguf's own dequantization)."""
    qtype = matrix_type_for(weight.numpy(), qtype)
    data = gguf.quants.dequantize(encode(weight.float().numpy(), qtype), qtype)
    return torch.from_numpy(np.ascontiguousarray(data)).reshape(weight.shape)


def reference_with_stored_weights(model: LlamaForCausalLM, qtype: QType) -> LlamaForCausalLM:
    """A copy of `model` holding what a GGUF of `qtype` stores (quantizing rows commutes with permuting them)."""
    copy = LlamaForCausalLM(model.config).eval()
    copy.load_state_dict({name: round_trip(t, qtype) for name, t in model.state_dict().items()})
    return copy


def llama3_divisors(head_dim: int, theta: float, rope: dict) -> np.ndarray:
    """convert_hf_to_gguf.py's rope_freqs for Llama 3.1 scaling: 1, factor, or the smooth blend, per pair."""
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    original = rope["original_max_position_embeddings"]
    out = []
    for j in range(head_dim // 2):
        wavelength = 2 * math.pi * theta ** (2 * j / head_dim)
        if wavelength < original / high:
            out.append(1.0)
        elif wavelength > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_llamacpp_gguf(model: LlamaForCausalLM, path: Path, matrix_type: QType = QType.F32, *,
                        extra: dict | None = None, skip: tuple[str, ...] = (), parts: int = 1,
                        vocabulary=None, extra_tensors: dict[str, np.ndarray] | None = None) -> list[Path]:
    """Write `model` as llama.cpp's converter would; `extra` adds keys ({key: (value, GGUFValueType)}), `skip`
    leaves out GGUF keys or tensors, `extra_tensors` adds F32 ones, `parts` > 1 splits the tensors over files named
    as gguf-split names them, `vocabulary(writer)` adds tokenizer keys. Returns the files."""
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = dict(config.rope_parameters or {})
    theta = rope.get("rope_theta", 10000.0)
    keys = {
        "llama.context_length": (config.max_position_embeddings, gguf.GGUFValueType.UINT32),
        "llama.embedding_length": (config.hidden_size, gguf.GGUFValueType.UINT32),
        "llama.block_count": (config.num_hidden_layers, gguf.GGUFValueType.UINT32),
        "llama.feed_forward_length": (config.intermediate_size, gguf.GGUFValueType.UINT32),
        "llama.attention.head_count": (config.num_attention_heads, gguf.GGUFValueType.UINT32),
        "llama.attention.head_count_kv": (config.num_key_value_heads, gguf.GGUFValueType.UINT32),
        "llama.attention.layer_norm_rms_epsilon": (config.rms_norm_eps, gguf.GGUFValueType.FLOAT32),
        "llama.rope.freq_base": (theta, gguf.GGUFValueType.FLOAT32),
        "llama.rope.dimension_count": (head_dim, gguf.GGUFValueType.UINT32),
    }
    if head_dim * config.num_attention_heads != config.hidden_size:
        keys["llama.attention.key_length"] = keys["llama.attention.value_length"] = (head_dim,
                                                                                     gguf.GGUFValueType.UINT32)
    kind = rope.get("rope_type", "default")
    if kind in ("linear", "yarn"):
        keys["llama.rope.scaling.type"] = (kind, gguf.GGUFValueType.STRING)
        keys["llama.rope.scaling.factor"] = (rope["factor"], gguf.GGUFValueType.FLOAT32)
    if kind == "yarn":
        keys["llama.rope.scaling.original_context_length"] = (rope["original_max_position_embeddings"],
                                                               gguf.GGUFValueType.UINT32)
    keys.update(extra or {})
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tensors = []
    if kind == "llama3":
        tensors.append(("rope_freqs.weight", llama3_divisors(head_dim, theta, rope), QType.F32))
    for name, weight in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        if name.endswith("q_proj.weight"):
            weight = permute(weight, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            weight = permute(weight, config.num_key_value_heads)
        data = weight.float().numpy()
        qtype = matrix_type_for(data, matrix_type)
        tensors.append((names.get_name(name, try_suffixes=(".weight",)), encode(data, qtype), qtype))
    tensors = [t for t in tensors if t[0] not in skip]
    tensors += [(name, data, QType.F32) for name, data in (extra_tensors or {}).items()]
    files = [path] if parts == 1 else [path.with_name(f"{path.stem}-{i:05d}-of-{parts:05d}.gguf")
                                       for i in range(1, parts + 1)]
    for number, file in enumerate(files):
        writer = gguf.GGUFWriter(file, "llama")
        if number == 0:
            for key, (value, value_type) in keys.items():
                if key not in skip:
                    writer.add_key_value(key, value, value_type)
            if vocabulary is not None:
                vocabulary(writer)
        if parts > 1:
            writer.add_uint16("split.no", number)
            writer.add_uint16("split.count", parts)
            writer.add_int32("split.tensors.count", len(tensors))
        for name, data, qtype in tensors[number::parts]:
            writer.add_tensor(name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return files


def bpe_vocabulary(tokenizer_json: Path, pre: str, *, bos: str | None, eos: str | None, eot: str | None = None,
                   add_bos: bool | None = None, chat_template: str | None = None):
    """`vocabulary(writer)` for a byte-level tokenizer.json, as convert_hf_to_gguf.py's `_set_vocab_gpt2` writes it:
    tokens by id, special added tokens CONTROL, other added tokens USER_DEFINED, merges as 'left right'."""
    import json

    spec = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    vocab = dict(spec["model"]["vocab"])
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    vocab.update({t["content"]: i for i, t in added.items()})
    tokens = [None] * (max(vocab.values()) + 1)
    for text, token_id in vocab.items():
        tokens[token_id] = text
    types = [gguf.TokenType.CONTROL if added.get(i, {}).get("special") else
             gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL for i in range(len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]

    def write(writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list([t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)])
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        for add, text in ((writer.add_bos_token_id, bos), (writer.add_eos_token_id, eos),
                          (writer.add_eot_token_id, eot)):
            if text is not None:
                add(vocab[text])
        if add_bos is not None:
            writer.add_add_bos_token(add_bos)
        if chat_template is not None:
            writer.add_chat_template(chat_template)

    return write


def vocabulary_only_gguf(path: Path, vocabulary) -> Path:
    """A GGUF holding only a vocabulary and llama hyper-parameters, as llama.cpp's models/ggml-vocab-*.gguf are."""
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in (("llama.block_count", 1), ("llama.context_length", 64), ("llama.embedding_length", 64),
                       ("llama.feed_forward_length", 64), ("llama.attention.head_count", 4)):
        writer.add_uint32(key, value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    vocabulary(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
