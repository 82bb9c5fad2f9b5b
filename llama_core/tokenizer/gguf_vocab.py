"""The vocabulary inside a GGUF file (`tokenizer.ggml.*`), as llama.cpp's llama-vocab.cpp reads it.

Two tokenizer models cover the LLaMA family:
- "llama" (SentencePiece BPE: LLaMA 1/2, TinyLlama, Vicuna, Alpaca): pieces, scores and token types are rebuilt
  into a SentencePiece model — BPE, byte fallback when the vocabulary has byte pieces, the dummy-prefix space
  unless `tokenizer.ggml.add_space_prefix` is false, no whitespace clean-up unless
  `tokenizer.ggml.remove_extra_whitespaces` — so SentencePiece itself encodes, and SentencePiece's score-ordered
  merges are what llama.cpp's SPM tokenizer does.
- "gpt2" (byte-level BPE: Llama 3, SmolLM): tokens and merges into a `tokenizers` BPE, with the pre-tokenizer that
  `tokenizer.ggml.pre` names — llama.cpp applies each of its regexes in turn, keeping matches and the text between
  them as separate pieces, which is a sequence of "isolated" splits here.
Control and user-defined tokens are matched in text as their ids, as the other backends match special tokens.
Token types are llama.cpp's (and SentencePiece's) numbering: 1 normal, 2 unknown, 3 control, 4 user-defined,
5 unused, 6 byte.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken as HFAddedToken
from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ..errors import TokenizerError
from ..gguf_file import read_gguf_header
from .base import Tokenizer
from .hf_json import HFJsonTokenizer, byte_level_table
from .llama2c_bin import _field as proto_field
from .sentencepiece import SentencePieceTokenizer
from .special_files import SpecialConfig
from .tiktoken_bpe import LLAMA3_PATTERN

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# tokenizer.ggml.pre → (regexes applied in turn, whether a pre-token that is itself a token skips the merges,
# whether BOS is added when the file does not say), from llama-vocab.cpp's tables.
PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    "llama-bpe": ((LLAMA3_PATTERN,), True, True),
    "smollm": ((r"\p{N}", GPT2_PATTERN), False, False),
    "default": ((r"[\p{P}\$\+<=>\^~\|]+", GPT2_PATTERN, r"\p{N}+", "[0-9][0-9][0-9]"), False, False),
}
PRE_ALIASES = {"llama3": "llama-bpe", "llama-v3": "llama-bpe"}
# Tokens llama.cpp ends generation on by their text (llama-vocab.cpp's end-of-generation list, LLaMA-family part).
END_OF_GENERATION = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "<|end|>",
                     "<end_of_turn>", "<EOT>")


def load_gguf_vocabulary(path: Path) -> Tokenizer:
    """The tokenizer a GGUF file carries; TokenizerError naming the file and key for what is missing or unknown."""
    meta = read_gguf_header(path, TokenizerError).metadata
    model = meta.get("tokenizer.ggml.model")
    if model is None:
        raise TokenizerError(f"{path.name}: this GGUF file holds no vocabulary (no tokenizer.ggml.model key); pass "
                             "the model's tokenizer files")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise TokenizerError(f"{path.name}: tokenizer.ggml.tokens must be a non-empty array of strings")
    types = [int(t) for t in meta.get("tokenizer.ggml.token_type", [NORMAL] * len(tokens))]
    if len(types) < len(tokens):
        raise TokenizerError(f"{path.name}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} "
                             "tokens")
    ids = {}
    for key in ("bos", "eos", "unknown", "padding", "eot", "eom"):
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None and not 0 <= int(value) < len(tokens):
            raise TokenizerError(f"{path.name}: tokenizer.ggml.{key}_token_id is {value}, outside the "
                                 f"{len(tokens)} tokens")
        ids[key] = None if value is None else int(value)
    eos_ids = [ids["eos"], ids["eot"], ids["eom"], *(i for i, t in enumerate(tokens) if t in END_OF_GENERATION)]
    eos_ids = [i for i in dict.fromkeys(eos_ids) if i is not None]
    config = SpecialConfig(
        bos_token=_text(tokens, ids["bos"]), eos_token=_text(tokens, ids["eos"]),
        unk_token=_text(tokens, ids["unknown"]), pad_token=_text(tokens, ids["padding"]),
        add_bos_token=meta.get("tokenizer.ggml.add_bos_token"), chat_template=meta.get("tokenizer.chat_template"),
        files=[path],
    )  # fmt: skip
    if model == "llama":
        tokenizer = _sentencepiece(path, meta, tokens, types, ids, config)
        tokenizer.eos_ids = tuple(eos_ids)  # SentencePiece knows one eos; a GGUF may name eot/eom too
        return tokenizer
    if model == "gpt2":
        return _byte_level_bpe(path, meta, tokens, types, config, eos_ids)
    raise TokenizerError(f"{path.name}: tokenizer.ggml.model is {model!r}; supported: 'llama' (SentencePiece) and "
                         "'gpt2' (byte-level BPE)")


def has_vocabulary(path: Path) -> bool:
    """Whether a GGUF file carries a vocabulary (weights-only files and later split parts do not)."""
    try:
        return "tokenizer.ggml.model" in read_gguf_header(path, TokenizerError).metadata
    except TokenizerError:
        return False  # a damaged file is reported by whoever loads its weights


def _text(tokens: list[str], token_id: int | None) -> str | None:
    return None if token_id is None else tokens[token_id]


def _sentencepiece(path: Path, meta: dict, tokens: list[str], types: list[int], ids: dict,
                   config: SpecialConfig) -> SentencePieceTokenizer:
    scores = meta.get("tokenizer.ggml.scores")
    scores = [0.0] * len(tokens) if scores is None else [float(s) for s in scores]
    if len(scores) < len(tokens):
        raise TokenizerError(f"{path.name}: tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    byte_fallback = any(t == BYTE for t in types[: len(tokens)])
    # A serialized ModelProto (field numbers of sentencepiece_model.proto), encoded as llama2c_bin writes its own.
    body = b"".join(proto_field(1, proto_field(1, piece.encode("utf-8")) + proto_field(2, score)
                                + proto_field(3, kind if kind in (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED,
                                                                  BYTE) else NORMAL))
                    for piece, score, kind in zip(tokens, scores, types))
    # TrainerSpec: model_type BPE, vocab size, byte_fallback, then each special id and its piece (-1: none).
    trainer = proto_field(3, 2) + proto_field(4, len(tokens)) + proto_field(35, int(byte_fallback))
    for (number, piece_number), key in zip(((40, 45), (41, 46), (42, 47), (43, 48)),
                                           ("unknown", "bos", "eos", "padding")):
        token_id = ids[key]
        trainer += proto_field(number, -1 if token_id is None else token_id)
        if token_id is not None:
            trainer += proto_field(piece_number, tokens[token_id].encode("utf-8"))
    normalizer = (proto_field(1, b"identity")
                  + proto_field(3, int(bool(meta.get("tokenizer.ggml.add_space_prefix", True))))
                  + proto_field(4, int(bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False))))
                  + proto_field(5, 1))  # escape_whitespaces: spaces as '▁'
    if config.add_bos_token is None:
        config.add_bos_token = True  # llama.cpp's default for SentencePiece vocabularies
    # llama.cpp puts the dummy-prefix space before every stretch of text after a special token too
    # (llama-vocab.cpp: `add_space_prefix && is_prev_special`), which is transformers' legacy behaviour.
    config.legacy = True
    return SentencePieceTokenizer(body + proto_field(2, trainer) + proto_field(3, normalizer), path, config,
                                  kind="gguf")


def _byte_level_bpe(path: Path, meta: dict, tokens: list[str], types: list[int], config: SpecialConfig,
                    eos_ids: list[int]) -> HFJsonTokenizer:
    pre = str(meta.get("tokenizer.ggml.pre") or "default")
    pre = PRE_ALIASES.get(pre, pre)
    if pre not in PRE_TOKENIZERS:
        raise TokenizerError(f"{path.name}: tokenizer.ggml.pre is {pre!r}, a pre-tokenizer this loader does not "
                             f"know; supported: {', '.join(PRE_TOKENIZERS)} (LLaMA 3 and SmolLM)")
    patterns, ignore_merges, add_bos = PRE_TOKENIZERS[pre]
    merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges, list) or not all(isinstance(m, str) and " " in m for m in merges):
        raise TokenizerError(f"{path.name}: a 'gpt2' vocabulary needs tokenizer.ggml.merges as strings 'left right'")
    vocab = {token: i for i, token in enumerate(tokens)}
    alphabet = set(byte_level_table())
    missing = sorted(alphabet - vocab.keys())
    if missing:
        raise TokenizerError(f"{path.name}: a byte-level vocabulary must hold all 256 byte symbols; "
                             f"{len(missing)} are missing (first: {missing[0]!r})")
    bpe = models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges], fuse_unk=False, ignore_merges=ignore_merges)
    tokenizer = HFTokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated", invert=False) for p in patterns]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    added = [HFAddedToken(token, normalized=False, special=kind == CONTROL)
             for token, kind in zip(tokens, types) if kind in (CONTROL, USER_DEFINED)]
    tokenizer.add_tokens(added)  # existing tokens: matched in text as their ids, no new ids
    if config.add_bos_token is None:
        config.add_bos_token = add_bos and config.bos_token is not None
    return HFJsonTokenizer(tokenizer, path, config, kind="gguf", eos_ids=eos_ids)
