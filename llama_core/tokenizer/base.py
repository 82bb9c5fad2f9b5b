"""The one Tokenizer interface every backend implements, and the readable per-token display they share.

A backend describes each id once — its raw text, the bytes it stands for (None for a special token) and whether
it is special or a byte piece — and implements `_encode_text`. Decoding and everything a reader sees (`piece`,
`display_pieces`) is derived here from those bytes, so `Ġ`/`Ċ` (byte-level BPE) and `▁` (SentencePiece) read the
same way: as the space or newline they stand for.
"""

from __future__ import annotations

import operator
from pathlib import Path
from collections.abc import Iterable, Sequence

from ..errors import ParameterError


def utf8_state(data: bytes) -> str:
    """'complete' if `data` is whole UTF-8, 'incomplete' if it is whole UTF-8 cut inside its last character,
    'invalid' otherwise."""
    try:
        data.decode("utf-8")
        return "complete"
    except UnicodeDecodeError as error:
        # Only a cut in the last character is worth waiting for; anything else never becomes text.
        return "incomplete" if error.reason == "unexpected end of data" and error.end == len(data) else "invalid"


def _char_length(data: bytes | bytearray, i: int) -> int:
    """Length of the whole UTF-8 character starting at data[i]; 0 if none does (a lone or stray byte)."""
    lead = data[i]
    n = 1 if lead < 0x80 else 2 if 0xC2 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if lead < 0xF5 else 0
    if n and i + n <= len(data):
        try:
            bytes(data[i : i + n]).decode("utf-8")
            return n
        except UnicodeDecodeError:
            pass
    return 0


def readable_spans(data: bytes | bytearray) -> list[tuple[int, str]]:
    """(byte offset, text) for each character of `data`, and <0xNN> (as SentencePiece names byte pieces) for
    each byte that begins none."""
    spans, i = [], 0
    while i < len(data):
        n = _char_length(data, i)
        spans.append((i, bytes(data[i : i + n]).decode("utf-8") if n else f"<0x{data[i]:02X}>"))
        i += n or 1
    return spans


class Tokenizer:
    """Text <-> token ids for one model, whatever file the vocabulary came from.

    Attributes: `kind` ("sentencepiece" | "hf-json" | "tiktoken" | "llama2c"), `path`, `vocab_size` (highest id + 1,
    added tokens included), `bos_id`/`eos_id` (None if the tokenizer has none), `eos_ids` (every end-of-sequence id
    the tokenizer's own files name), `add_bos` (whether `encode` prepends BOS by default), `chat_template`.
    """

    kind: str = ""

    def __init__(self, *, path: Path | None, tokens: Sequence[str], token_bytes: Sequence[bytes | None],
                 special_ids: Iterable[int], byte_ids: Iterable[int], bos_id: int | None, eos_id: int | None,
                 eos_ids: Iterable[int] = (), add_bos: bool = True, strip_first_space: bool = False,
                 chat_template: str | dict[str, str] | None = None):
        self.path = path
        self._tokens = list(tokens)  # raw token text; a special token's is what it is called in text
        self._bytes = list(token_bytes)  # what the token decodes to; None for special tokens
        self._special = frozenset(special_ids)
        self._byte_ids = frozenset(byte_ids)
        self._ids = {}
        for token_id, text in enumerate(self._tokens):
            self._ids.setdefault(text, token_id)
        self.vocab_size: int = len(self._tokens)
        self.bos_id, self.eos_id = bos_id, eos_id
        self.eos_ids: tuple[int, ...] = tuple(dict.fromkeys(
            ([eos_id] if eos_id is not None else []) + [i for i in eos_ids if i is not None]))
        self.add_bos = bool(add_bos and bos_id is not None)
        self._strip_first_space = strip_first_space  # SentencePiece's dummy-prefix space, removed on decode
        self.chat_template = chat_template

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load any tokenizer file or folder (see `load_tokenizer`); kept for callers of the one-backend days."""
        from . import load_tokenizer

        return load_tokenizer(path)

    @property
    def bos_token(self) -> str | None:
        return self._tokens[self.bos_id] if self.bos_id is not None else None

    @property
    def eos_token(self) -> str | None:
        return self._tokens[self.eos_id] if self.eos_id is not None else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.vocab_size} tokens from {self.path}>"

    # -- what a backend implements -------------------------------------------------------------------------
    def _encode_text(self, text: str) -> list[int]:
        """Ids of `text` alone: special-token strings matched as the backend's reference does, no BOS/EOS added."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------------------
    def encode(self, text: str, bos: bool | None = None, eos: bool = False) -> list[int]:
        """Ids of `text`; `bos=None` follows the tokenizer's own default (`add_bos`), `eos=True` appends EOS.

        Special-token strings typed in `text` become their ids, as transformers' encode does by default: `<s>`,
        `</s>`, `<unk>` and added tokens (Alpaca's `[PAD]`) for SentencePiece and llama2.c files; every added token
        of a tokenizer.json (`<|eot_id|>`, `<|im_start|>`, …); Llama 3's 256 special tokens for Meta's tiktoken
        file (Meta's own tokenizer.py would encode them as plain text unless told `allowed_special="all"`).
        """
        if not isinstance(text, str):
            raise ParameterError("text", "a string", text)
        ids = self._encode_text(text)
        if (self.add_bos if bos is None else bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        if eos and self.eos_id is not None:
            ids = ids + [self.eos_id]
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """The text of `ids`: the tokens' bytes as UTF-8 (an invalid sequence becomes U+FFFD, as Python's and
        Rust's lossy decoders make it), SentencePiece's dummy-prefix space at the very start removed.

        Special tokens are left out by default: the text a reader sees, as SentencePiece's and llama2.c's decode
        leave out BOS/EOS (transformers' `skip_special_tokens=True`). `skip_special=False` writes them out as
        transformers' default `decode(ids)` does.
        """
        parts: list[str] = []
        run = bytearray()
        for token_id in ids:
            token_id = self._checked(token_id)
            data = self._bytes[token_id]
            if data is not None:
                run += data
            elif not skip_special:
                parts.append(run.decode("utf-8", errors="replace"))
                run.clear()
                parts.append(self._tokens[token_id])
        # Decoding runs of tokens, not token by token, keeps a character split over several tokens whole.
        parts.append(run.decode("utf-8", errors="replace"))
        text = "".join(parts)
        return text[1:] if self._strip_first_space and text.startswith(" ") else text

    def _checked(self, token_id: object) -> int:
        try:
            index = operator.index(token_id)  # ints of numpy and torch too, not floats
        except TypeError:
            index = -1
        if not 0 <= index < self.vocab_size:
            raise ParameterError("token id", f"an integer in [0, {self.vocab_size - 1}]", token_id)
        return index

    def token_to_id(self, text: str) -> int | None:
        return self._ids.get(text)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special

    def is_byte(self, token_id: int) -> bool:
        """A piece that stands for one byte and not for text (SentencePiece's <0xE6>, a lone byte ≥ 0x80)."""
        return token_id in self._byte_ids

    def token_bytes(self, token_id: int) -> bytes | None:
        """The bytes this token adds to the text; None for a special token."""
        return self._bytes[token_id]

    def piece(self, token_id: int) -> str:
        """What one token looks like on its own: its text with spaces and newlines as themselves, a special
        token as its name, bytes that make no character alone as <0xNN>."""
        data = self._bytes[token_id]
        if data is None:
            return self._tokens[token_id]
        return "".join(text for _, text in readable_spans(data))

    def display_pieces(self, ids: Sequence[int]) -> list[str]:
        """One readable string per id. A character spread over several tokens (é, 你 or 🦙 as byte tokens) is
        shown whole on the token holding its first byte; a token holding only the rest of characters shows ""."""
        shown = [""] * len(ids)
        owner: list[int] = []  # for each byte of the current run of non-special tokens: its token's position
        run = bytearray()

        def close_run() -> None:
            for offset, text in readable_spans(run):
                shown[owner[offset]] += text
            owner.clear()
            run.clear()

        for position, token_id in enumerate(ids):
            data = self._bytes[token_id]
            if data is None:  # a special token: its name, and characters never continue across it
                close_run()
                shown[position] = self._tokens[token_id]
            else:
                owner.extend([position] * len(data))
                run.extend(data)
        close_run()
        return shown
