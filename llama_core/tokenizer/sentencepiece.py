"""SentencePiece `tokenizer.model` (LLaMA 1 and 2, their fine-tunes, llama2.c's own vocabularies).

Encoding is SentencePiece's own BPE, with what transformers' LlamaTokenizer adds around it: added and special
tokens (bos/eos/unk, added_tokens.json, `added_tokens_decoder`) typed in the text are matched first and become
their ids; the text before the first of them gets SentencePiece's dummy-prefix space, the text after them does not
(transformers' `legacy=False`, its default) or does too (`"legacy": true` in tokenizer_config.json).

One deliberate difference from transformers 5: its LlamaTokenizer drops a leading space of the text (" Hello"
encodes as "Hello"; huggingface/transformers PR #47700). We keep SentencePiece's ids there, which Meta's reference
code and llama.cpp's test vectors (tests/data/third_party) give too.
"""

from __future__ import annotations

import re
from pathlib import Path

import sentencepiece as spm

from ..errors import TokenizerError
from .base import Tokenizer
from .special_files import AddedToken, SpecialConfig, added_token_pattern, encode_around_added

_SPACE = "\u2581"  # SentencePiece's visible space '▁'
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
# Appended to a serialized ModelProto, this sets normalizer_spec.add_dummy_prefix = false: protobuf merges a
# repeated embedded message field into the first one (field 3 = normalizer_spec, its field 3 = add_dummy_prefix).
_NO_DUMMY_PREFIX = b"\x1a\x02\x18\x00"


def load_processor(model_proto: bytes, path: Path | None) -> spm.SentencePieceProcessor:
    processor = spm.SentencePieceProcessor()
    try:
        processor.load_from_serialized_proto(model_proto)
    except (OSError, RuntimeError, TypeError) as error:
        raise TokenizerError(f"{path}: not a valid SentencePiece model ({error})") from None
    if processor.vocab_size() <= 0:
        raise TokenizerError(f"{path}: SentencePiece model has an empty vocabulary")
    return processor


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model plus the Hugging Face side files beside it (when there are any)."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, path: Path | None = None, config: SpecialConfig | None = None,
                 kind: str = "sentencepiece"):
        self.kind = kind
        config = config or SpecialConfig()
        self.processor = load_processor(model_proto, path)
        sp = self.processor
        # The same model without the dummy prefix, for text that follows a special token.
        self._bare = load_processor(model_proto + _NO_DUMMY_PREFIX, path)

        tokens, data, special, byte_ids = [], [], set(), set()
        for i in range(sp.vocab_size()):
            piece = sp.id_to_piece(i)
            tokens.append(piece)
            if sp.is_control(i) or sp.is_unknown(i):
                data.append(None)
                special.add(i)
            elif sp.is_byte(i):
                data.append(bytes([int(_BYTE_PIECE.match(piece).group(1), 16)]))
                byte_ids.add(i)
            else:
                data.append(piece.replace(_SPACE, " ").encode("utf-8"))

        added = dict(config.added)
        for token_id in sorted(i for i in added if i >= len(tokens)):
            if token_id != len(tokens):  # ids past the model must follow it without a gap
                raise TokenizerError(f"{config.where(f'id {token_id}') or path}: added token "
                                     f"{added[token_id].content!r} has id {token_id}, expected {len(tokens)} "
                                     f"(the SentencePiece model has {sp.vocab_size()} pieces)")
            token = added[token_id]
            tokens.append(token.content)
            data.append(None if token.special else token.content.encode("utf-8"))
            if token.special:
                special.add(token_id)

        def named(key: str, default_id: int) -> int | None:
            text = getattr(config, key)
            if text is None:
                return default_id if default_id >= 0 else None
            token_id = next((i for i, t in enumerate(tokens) if t == text), None)
            if token_id is None and key in ("bos_token", "eos_token"):
                raise TokenizerError(f"{config.where(key) or path}: {key} {text!r} is not a token "
                                     f"of {path}")
            return token_id

        bos_id, eos_id = named("bos_token", sp.bos_id()), named("eos_token", sp.eos_id())
        unk_id, pad_id = named("unk_token", sp.unk_id()), named("pad_token", sp.pad_id())
        matchable = {i: added[i] for i in added if i < len(tokens)}
        extra = [tokens.index(t) for t in config.additional_special if t in tokens]  # additional_special_tokens
        for token_id in (bos_id, eos_id, unk_id, pad_id, *extra):
            if token_id is not None:
                special.add(token_id)
                data[token_id] = None
                matchable.setdefault(token_id, AddedToken(tokens[token_id]))
        self._matcher = added_token_pattern(matchable)

        # Without an explicit add_prefix_space, the model's own add_dummy_prefix decides (its bare twin differs).
        model_prefix = sp.encode("a", out_type=str) != self._bare.encode("a", out_type=str)
        prefix = config.add_prefix_space if config.add_prefix_space is not None else model_prefix
        self._prefix_first = prefix
        self._prefix_after_special = prefix and bool(config.legacy)
        super().__init__(path=path, tokens=tokens, token_bytes=data, special_ids=special, byte_ids=byte_ids,
                         bos_id=bos_id, eos_id=eos_id,
                         add_bos=config.add_bos_token if config.add_bos_token is not None else True,
                         strip_first_space=prefix, chat_template=config.chat_template)

    @classmethod
    def from_model_file(cls, path: Path, config: SpecialConfig | None = None) -> SentencePieceTokenizer:
        return cls(path.read_bytes(), path, config)

    def _encode_text(self, text: str) -> list[int]:
        return encode_around_added(text, self._matcher, self._encode_segment)

    def _encode_segment(self, segment: str, first: bool) -> list[int]:
        with_prefix = self._prefix_first if first else self._prefix_after_special
        return (self.processor if with_prefix else self._bare).encode(segment)
