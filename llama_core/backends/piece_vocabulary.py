"""A stand-in tokenizer for a remote model: the token strings its server sends, numbered as they arrive.

A server names each token by its text (`" the"`, `","`), not by an id we could look up, and its tokenizer is
not here to encode with. The run record, the token view and the figures only need ids that stay stable and
a `piece`/`decode` for each, so this vocabulary gives every distinct string the next free id the first time
it is seen. Two tokens the server spells alike (llama.cpp's byte tokens all decode to "" in a stream) share
an id: the view can only tell apart what the server told apart.
"""

from __future__ import annotations

import threading

from ..errors import TokenizerError
from ..tokenizer.base import Tokenizer

MAX_PIECES = 1 << 20  # a real vocabulary has at most a few 100k tokens; more means a server sending garbage
MAX_CHARS = 1 << 26  # all pieces together (prompts held as one piece each included): 64M characters


class PieceVocabulary(Tokenizer):
    """Ids for the token strings of one remote model (see the module docstring); shared by its runs."""

    kind = "remote"

    def __init__(self, origin: str):
        super().__init__(path=None, tokens=[], token_bytes=[], special_ids=(), byte_ids=(), bos_id=None,
                         eos_id=None, add_bos=False)
        self.origin = origin  # "model id at server", for messages
        self._chars = 0
        # Gradio runs handlers on several threads: two runs may meet a new piece at once.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<PieceVocabulary {self.vocab_size} pieces seen from {self.origin}>"

    def add(self, piece: str) -> int:
        """The id of `piece`, given the next free one the first time it is seen."""
        if not isinstance(piece, str):
            raise TokenizerError(f"{self.origin}: a token must be a string, got {type(piece).__name__}")
        token_id = self._ids.get(piece)
        if token_id is not None:
            return token_id
        with self._lock:
            token_id = self._ids.get(piece)  # another thread may have added it while this one waited
            if token_id is not None:
                return token_id
            if len(self._tokens) >= MAX_PIECES or self._chars + len(piece) > MAX_CHARS:
                raise TokenizerError(f"{self.origin}: more than {MAX_PIECES} distinct tokens or {MAX_CHARS} "
                                     "characters of them seen; restart the app to start a new vocabulary")
            token_id = len(self._tokens)
            # Bytes before the list that counts them: a reader on another thread never sees an id without bytes.
            self._bytes.append(piece.encode("utf-8"))
            self._tokens.append(piece)
            self._ids[piece] = token_id
            self._chars += len(piece)
            self.vocab_size = len(self._tokens)
            return token_id

    def add_all(self, pieces: list[str]) -> list[int]:
        return [self.add(piece) for piece in pieces]

    def _encode_text(self, text: str) -> list[int]:
        raise TokenizerError(f"{self.origin}: the remote model's tokenizer is not available here, so text cannot "
                             "be split into its tokens; the server tokenizes the prompt itself")
