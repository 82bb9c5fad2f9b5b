"""SentencePiece tokenizer with per-token display text and UTF-8-safe incremental decoding."""

from __future__ import annotations

import re
from pathlib import Path

import sentencepiece as spm

from ..errors import TokenizerError

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_SPACE = "\u2581"  # SentencePiece's visible space '▁'


class Tokenizer:
    """A LLaMA `tokenizer.model`: BPE with byte fallback, BOS/EOS ids from the model file."""

    def __init__(self, processor: spm.SentencePieceProcessor, path: Path | None = None):
        self.processor = processor
        self.path = path
        self.vocab_size: int = processor.vocab_size()
        self.bos_id: int = processor.bos_id()
        self.eos_id: int = processor.eos_id()
        self._pieces = [processor.id_to_piece(i) for i in range(self.vocab_size)]

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file not found: {path}")
        processor = spm.SentencePieceProcessor()
        try:
            processor.load(str(path))
        except (OSError, RuntimeError) as error:
            raise TokenizerError(f"{path}: not a valid SentencePiece model ({error})") from None
        if processor.vocab_size() <= 0:
            raise TokenizerError(f"{path}: SentencePiece model has an empty vocabulary")
        return cls(processor, path)

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = self.processor.encode(text)
        return ([self.bos_id] if bos and self.bos_id >= 0 else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(list(ids))

    def piece(self, token_id: int) -> str:
        """What one token looks like on its own: '▁' shown as a space, a printable byte as itself."""
        raw = self._pieces[token_id]
        match = _BYTE_PIECE.match(raw)
        if match:
            value = int(match.group(1), 16)
            # A lone byte of a multi-byte character has no text of its own; show its hex.
            return chr(value) if value < 0x80 else raw
        if self.processor.is_control(token_id):
            return raw  # <s>, </s>: show the marker, they decode to nothing
        return raw.replace(_SPACE, " ")

    def is_byte(self, token_id: int) -> bool:
        return bool(_BYTE_PIECE.match(self._pieces[token_id]))


class StreamDecoder:
    """Turns generated token ids into text deltas whose concatenation equals the full decode.

    Decoding token by token breaks two things: SentencePiece drops the leading space of the
    first token of a sequence, and byte-fallback tokens of one character (emoji, CJK) are
    only valid UTF-8 together. So we decode a short window that starts before the new
    tokens and hold text back while it ends in an incomplete character (U+FFFD).
    """

    def __init__(self, tokenizer: Tokenizer, context_ids: list[int] = ()):
        self.tokenizer = tokenizer
        # A few prompt tokens as context so the first generated token keeps its leading space.
        self.ids: list[int] = list(context_ids)[-4:]
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now final (possibly empty)."""
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Return whatever is held back, incomplete characters included (end of generation)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self.tokenizer.decode
        prefix_text = decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = decode(self.ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or (new_text.endswith("\ufffd") and not final):
            return ""
        # Slide the window: the next decode starts at the old read position.
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return new_text[len(prefix_text) :]
