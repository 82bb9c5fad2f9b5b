"""Export a model to GGUF, the one-file format that llama.cpp, Ollama and LM Studio load.

The file holds llama.cpp's `llama` architecture: its hyper-parameter keys, the SentencePiece
vocabulary as llama.cpp's "llama" tokenizer reads it, and the weights under GGUF's tensor names.
Our weights are already in Meta's layout, which is what llama.cpp expects: its converter
un-permutes Hugging Face's q/k back to Meta's interleaved rotary pairs ("normal" rope, not NeoX),
so wq/wk go in as they are.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch
from gguf import MODEL_TENSOR, LlamaFileType, TokenType
from gguf import GGMLQuantizationType as QType

from ..errors import ParameterError, TokenizerError
from ..loading import LoadedModel, load_checkpoint
from ..rope import inverse_frequencies
from ..tokenizer import Tokenizer
from .gguf import gguf_tensor_name  # the name table is shared with the GGUF reader

# --dtype → (type of the 2-D weight matrices, the file type llama.cpp reports). Norms stay f32 in every
# case, as llama.cpp's own converter keeps them: they are tiny and the RMSNorm scale is precision-sensitive.
EXPORT_DTYPES: dict[str, tuple[QType, LlamaFileType]] = {
    "f32": (QType.F32, LlamaFileType.ALL_F32),
    "f16": (QType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (QType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


def export_gguf(model_dir_or_loaded: str | Path | LoadedModel, out_path: str | Path, dtype: str = "f32") -> Path:
    """Write a checkpoint (any format load_checkpoint reads) or an already loaded model as a GGUF file."""
    if dtype not in EXPORT_DTYPES:
        raise ParameterError("dtype", f"one of {', '.join(EXPORT_DTYPES)}", dtype)
    loaded = model_dir_or_loaded
    if not isinstance(loaded, LoadedModel):
        loaded = load_checkpoint(model_dir_or_loaded, dtype=torch.float32)
    if loaded.tokenizer is None:
        raise TokenizerError(f"no tokenizer found next to {loaded.path}; GGUF files carry their vocabulary")
    if loaded.args.rope_type == "dynamic":
        raise ParameterError("model", "a checkpoint without dynamic NTK RoPE scaling (llama.cpp has no dynamic "
                             "scaling)", loaded.args.rope_scaling)
    matrix_type, file_type = EXPORT_DTYPES[dtype]
    out_path = Path(out_path)
    writer = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_hyperparameters(writer, loaded, file_type)
    _add_vocabulary(writer, loaded.tokenizer, loaded.args.vocab_size)
    if loaded.args.rope_type == "llama3":
        writer.add_tensor(gguf.TENSOR_NAMES[MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_factors(loaded))
    for name, tensor in loaded.model.state_dict().items():
        if name == "output.weight" and loaded.args.tie_embeddings:
            continue  # llama.cpp reuses token_embd when the file has no output head
        data, qtype = _encode(tensor.detach().float().cpu().numpy(), matrix_type)
        writer.add_tensor(gguf_tensor_name(name), data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def _encode(weights: np.ndarray, matrix_type: QType) -> tuple[np.ndarray, QType]:
    """One tensor in the file's type: vectors (norms) stay f32; a matrix whose rows are not whole
    32-value Q8_0 blocks falls back to f16, as llama.cpp's converter does."""
    if weights.ndim == 1 or matrix_type == QType.F32:
        return weights, QType.F32
    if matrix_type == QType.F16:
        return weights.astype(np.float16), QType.F16
    try:
        return gguf.quants.quantize(weights, matrix_type), matrix_type
    except gguf.QuantError:
        return weights.astype(np.float16), QType.F16


def _add_hyperparameters(writer: gguf.GGUFWriter, loaded: LoadedModel, file_type: LlamaFileType) -> None:
    args = loaded.args
    card = loaded.model_card or {}
    writer.add_name(str(card.get("name") or loaded.path.name))
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(args.max_seq_len)
    writer.add_embedding_length(args.dim)
    writer.add_block_count(args.n_layers)
    writer.add_feed_forward_length(args.ffn_hidden_dim)
    writer.add_head_count(args.n_heads)
    writer.add_head_count_kv(args.kv_heads)
    writer.add_rope_dimension_count(args.head_dim)
    if not args.derived_head_dim:
        writer.add_key_length(args.head_dim)
        writer.add_value_length(args.head_dim)
    writer.add_layer_norm_rms_eps(args.norm_eps)
    writer.add_rope_freq_base(args.rope_theta)
    writer.add_vocab_size(args.vocab_size)
    rope = args.rope_scaling or {}
    if args.rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    elif args.rope_type == "yarn":
        if any(rope.get(k) is not None for k in ("attention_factor", "mscale", "mscale_all_dim")):
            raise ParameterError("model", "YaRN with the paper's attention factor (llama.cpp computes it from the "
                                 "factor)", rope)
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(rope["factor"])
        writer.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])


def _llama3_rope_factors(loaded: LoadedModel) -> np.ndarray:
    """Llama 3.1's scaling as llama.cpp takes it: one divisor of θ_j per pair (its `rope_freqs` tensor)."""
    args = loaded.args
    plain, _ = inverse_frequencies(args.head_dim, args.rope_theta, None)
    scaled, _ = inverse_frequencies(args.head_dim, args.rope_theta, args.rope_scaling)
    return (plain / scaled).float().numpy()


def _add_vocabulary(writer: gguf.GGUFWriter, tokenizer: Tokenizer, rows: int) -> None:
    """The SentencePiece model as llama.cpp's "llama" tokenizer reads it: pieces, scores, token types; then, as
    llama.cpp's converter does, an unused [PADn] for each embedding row past the tokenizer (llama.cpp wants a
    token for every row)."""
    sp = getattr(tokenizer, "processor", None)  # SentencePiece and llama2.c tokenizers carry one
    if sp is None:
        raise TokenizerError(f"{tokenizer.path}: GGUF export writes SentencePiece vocabularies (llama.cpp's \"llama\" "
                             f"tokenizer); this is a {tokenizer.kind} tokenizer")
    pieces, scores, types = [], [], []
    for token_id in range(tokenizer.vocab_size):
        if token_id >= sp.vocab_size():  # an added token past the model (Alpaca's [PAD])
            pieces.append(tokenizer.piece(token_id).encode("utf-8"))
            scores.append(0.0)
            types.append(TokenType.CONTROL if tokenizer.is_special(token_id) else TokenType.USER_DEFINED)
            continue
        pieces.append(sp.id_to_piece(token_id).encode("utf-8"))
        scores.append(sp.get_score(token_id))
        types.append(_token_type(sp, token_id))
    for token_id in range(tokenizer.vocab_size, rows):
        pieces.append(f"[PAD{token_id}]".encode("utf-8"))
        scores.append(-1000.0)
        types.append(TokenType.UNUSED)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    for add_id, token_id in ((writer.add_bos_token_id, sp.bos_id()), (writer.add_eos_token_id, sp.eos_id()),
                             (writer.add_unk_token_id, sp.unk_id()), (writer.add_pad_token_id, sp.pad_id())):
        if token_id >= 0:  # SentencePiece says -1 for a special token the model lacks (usually pad)
            add_id(token_id)
    writer.add_add_bos_token(True)  # our encode() prepends <s>, so llama.cpp's tokenizer must too
    writer.add_add_eos_token(False)
    # Whether "hello" becomes "▁hello": llama.cpp must add the same dummy prefix SentencePiece does.
    writer.add_add_space_prefix(sp.encode_as_pieces("a")[0].startswith("\u2581"))


def _token_type(sp, token_id: int) -> TokenType:
    # Same order as llama.cpp's converter: a byte-fallback piece "<0x0A>" is BYTE, <s> and </s> CONTROL.
    if sp.is_unknown(token_id):
        return TokenType.UNKNOWN
    if sp.is_control(token_id):
        return TokenType.CONTROL
    if sp.is_unused(token_id):
        return TokenType.UNUSED
    if sp.is_byte(token_id):
        return TokenType.BYTE
    return TokenType.NORMAL
