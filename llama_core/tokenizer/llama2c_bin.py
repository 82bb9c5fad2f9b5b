"""llama2.c's `tokenizer.bin` / `tok512.bin`: the pieces and scores of a SentencePiece BPE model.

llama2.c's tokenizer.py `export()` writes: uint32 max token length, then per id a float32 score, a uint32 length
and the piece's UTF-8 bytes, with '▁' written as ' ' and BOS/EOS as '\\n<s>\\n' / '\\n</s>\\n'. The vocabulary size
is not stored: it is however many records the file holds. We rebuild the SentencePiece model from those pieces
(BPE, byte fallback, dummy prefix, no whitespace clean-up — what llama2.c's run.c does with them), so encoding
is SentencePiece's own and ids equal the model the file was exported from.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path

from ..errors import TokenizerError
from .sentencepiece import SentencePieceTokenizer

_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")
_MAX_PIECE = 1 << 16  # llama2.c pieces are a few dozen bytes; a larger header is not this format
# SentencePiece piece types (sentencepiece_model.proto)
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def read_llama2c_pieces(path: Path) -> list[tuple[str, float]]:
    """(piece, score) per id, as SentencePiece spells pieces ('▁', '<s>'); errors say what was expected."""
    data = path.read_bytes()
    if len(data) < 4:
        raise TokenizerError(f"{path}: expected a llama2.c tokenizer (uint32 max token length, then score/length/"
                             f"bytes records), found {len(data)} bytes")
    (max_length,) = struct.unpack_from("<I", data, 0)
    if not 0 < max_length <= _MAX_PIECE:
        raise TokenizerError(f"{path}: expected a llama2.c tokenizer whose header is the longest piece's length "
                             f"(1..{_MAX_PIECE}), found {max_length}")
    pieces, offset = [], 4
    while offset < len(data):
        if offset + 8 > len(data):
            raise TokenizerError(f"{path}: record {len(pieces)} is cut short at byte {offset} (expected a float32 "
                                 f"score and a uint32 length); the file may be truncated")
        score, length = struct.unpack_from("<fI", data, offset)
        offset += 8
        if length > max_length or offset + length > len(data) or not math.isfinite(score):
            raise TokenizerError(f"{path}: record {len(pieces)} at byte {offset - 8}: expected a finite score and a "
                                 f"length ≤ {max_length} within the file, found score {score}, length {length}; the "
                                 "file may be truncated or not a llama2.c tokenizer")
        try:
            text = data[offset : offset + length].decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerError(f"{path}: record {len(pieces)}: expected a UTF-8 piece, found "
                                 f"{data[offset:offset + length]!r}") from None
        offset += length
        pieces.append((text, score))
    texts = [text for text, _ in pieces]
    for marker in ("\n<s>\n", "\n</s>\n"):
        if marker not in texts:
            raise TokenizerError(f"{path}: expected llama2.c's BOS/EOS pieces ({marker!r}), found none among "
                                 f"{len(pieces)} pieces; this is not a llama2.c tokenizer export")
    return [({"\n<s>\n": "<s>", "\n</s>\n": "</s>"}.get(t, t.replace(" ", "\u2581")), s) for t, s in pieces]


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 fields are written as 64-bit two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | float) -> bytes:
    if isinstance(payload, bytes):
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload
    if isinstance(payload, float):
        return _varint(number << 3 | 5) + struct.pack("<f", payload)
    return _varint(number << 3) + _varint(payload)


def sentencepiece_proto(pieces: list[tuple[str, float]]) -> bytes:
    """A serialized SentencePiece ModelProto for these BPE pieces (field numbers of sentencepiece_model.proto)."""
    ids = {piece: i for i, (piece, _) in enumerate(pieces)}
    unk = ids.get("<unk>", 0)
    has_bytes = all(f"<0x{b:02X}>" in ids for b in range(256))
    body = b""
    for i, (piece, score) in enumerate(pieces):
        kind = (_UNKNOWN if i == unk else _CONTROL if piece in ("<s>", "</s>")
                else _BYTE if has_bytes and _BYTE_PIECE.match(piece) else _NORMAL)
        body += _field(1, _field(1, piece.encode("utf-8")) + _field(2, float(score)) + _field(3, kind))
    trainer = (_field(3, 2) + _field(4, len(pieces)) + _field(35, int(has_bytes))  # model_type BPE, byte_fallback
               + _field(40, unk) + _field(41, ids["<s>"]) + _field(42, ids["</s>"]) + _field(43, -1))
    normalizer = _field(1, b"identity") + _field(3, 1) + _field(4, 0) + _field(5, 1)
    return body + _field(2, trainer) + _field(3, normalizer)


def load_llama2c_tokenizer(path: Path) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(sentencepiece_proto(read_llama2c_pieces(path)), path, kind="llama2c")


def looks_like_llama2c(head: bytes) -> bool:
    """Whether a file starts like a llama2.c tokenizer: a small header, then a finite score and a short piece."""
    if len(head) < 12:
        return False
    max_length, score, length = struct.unpack_from("<IfI", head, 0)
    return 0 < max_length <= _MAX_PIECE and math.isfinite(score) and length <= max_length
