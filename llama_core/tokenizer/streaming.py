"""Token ids -> text deltas while generating, exact for every tokenizer backend."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Tokenizer


class StreamDecoder:
    """Turns generated token ids into text deltas whose concatenation equals the full decode.

    Decoding token by token breaks two things: a token's text can depend on its neighbours (SentencePiece drops
    the leading space of the first token decoded, byte-level BPE and byte-fallback split a character over several
    tokens, which are only valid UTF-8 together). So we decode a short window that starts before the new tokens
    and hold text back while it ends in an incomplete character (U+FFFD).

    Special tokens (BOS, EOS, `<|eot_id|>`, …) add no text to the stream: it is what a reader sees; the token
    view shows them (`Tokenizer.piece`).
    """

    def __init__(self, tokenizer: Tokenizer, context_ids: Sequence[int] = (), skip_special: bool = True):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
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
        def decode(ids: list[int]) -> str:
            return self.tokenizer.decode(ids, skip_special=self.skip_special)

        prefix_text = decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = decode(self.ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or (new_text.endswith("\ufffd") and not final):
            return ""
        # Slide the window: the next decode starts at the old read position.
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return new_text[len(prefix_text) :]
