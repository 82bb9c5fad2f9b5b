"""Tokenizers: one `Tokenizer` interface, a backend per file format, chosen from the files' content.

| backend         | file                                                   | kind            |
|-----------------|--------------------------------------------------------|-----------------|
| sentencepiece   | SentencePiece `tokenizer.model` (LLaMA 1/2)            | "sentencepiece" |
| hf_json         | Hugging Face `tokenizer.json` (Llama 3, SmolLM, ...)   | "hf-json"       |
| tiktoken_bpe    | Meta's Llama 3 `tokenizer.model` (tiktoken format)     | "tiktoken"      |
| llama2c_bin     | llama2.c `tokenizer.bin` / `tok*.bin`                  | "llama2c"       |
| gguf_vocab      | the vocabulary inside a `.gguf` file (llama.cpp)       | "gguf"          |

In a folder, as transformers chooses: `tokenizer.json` when present — except beside a SentencePiece
`tokenizer.model` that it merely converts (a non-byte-level tokenizer.json): transformers' LlamaTokenizer then
rebuilds SentencePiece's pipeline from the same vocabulary, and we use the SentencePiece model itself (the reference
implementation, and what GGUF export writes). Then `tokenizer.model` (SentencePiece or tiktoken by content), then a
llama2.c `tokenizer.bin` or a single `tok*.bin`, then the vocabulary inside the folder's one GGUF model.
tokenizer_config.json, special_tokens_map.json and added_tokens.json beside the file are read by every backend
except GGUF's, whose file says everything itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TokenizerError
from ..gguf_file import GGUF_MAGIC, is_later_split_part
from .base import Tokenizer
from .gguf_vocab import has_vocabulary, load_gguf_vocabulary
from .hf_json import HFJsonTokenizer, is_byte_level
from .llama2c_bin import load_llama2c_tokenizer, looks_like_llama2c
from .sentencepiece import SentencePieceTokenizer
from .special_files import SIDE_FILES, read_special_config
from .streaming import StreamDecoder
from .tiktoken_bpe import load_tiktoken, looks_like_tiktoken

__all__ = ["HFJsonTokenizer", "SentencePieceTokenizer", "StreamDecoder", "Tokenizer", "find_tokenizer_files",
           "load_tokenizer"]


def _head(path: Path, size: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _json_is_sentencepiece_conversion(path: Path) -> bool:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False  # a broken tokenizer.json beside a good tokenizer.model: the model is what we can read
    return isinstance(spec, dict) and not is_byte_level(spec)


def _main_file(folder: Path) -> Path | None:
    json_file, model_file = folder / "tokenizer.json", folder / "tokenizer.model"
    sentencepiece_model = model_file.is_file() and not looks_like_tiktoken(_head(model_file))
    if sentencepiece_model and (not json_file.is_file() or _json_is_sentencepiece_conversion(json_file)):
        return model_file
    if json_file.is_file():
        return json_file
    if model_file.is_file():
        return model_file
    if (folder / "tokenizer.bin").is_file():
        return folder / "tokenizer.bin"
    bins = sorted(p for p in folder.glob("tok*.bin") if p.is_file())
    if len(bins) > 1:
        raise TokenizerError(f"{folder}: several llama2.c tokenizers ({', '.join(p.name for p in bins)}); pass the "
                             "one that belongs to the model")
    if bins:
        return bins[0]
    ggufs = sorted(p for p in folder.glob("*.gguf") if p.is_file() and not is_later_split_part(p))
    # One model's own vocabulary (several: which one is not ours to guess; none: a weights-only GGUF).
    return ggufs[0] if len(ggufs) == 1 and has_vocabulary(ggufs[0]) else None


def find_tokenizer_files(folder: str | Path) -> list[Path]:
    """The files `load_tokenizer(folder)` would read, main file first ([] if there is no tokenizer there)."""
    folder = Path(folder)
    main = _main_file(folder) if folder.is_dir() else None
    if main is None:
        return []
    side = [folder / name for name in SIDE_FILES if (folder / name).is_file()]
    return [main] + (side if main.suffix in (".json", ".model") else [])


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a folder (see the module docstring for the choice) or from one file, by its content."""
    path = Path(path)
    if path.is_dir():
        main = _main_file(path)
        if main is None:
            raise TokenizerError(f"{path}: no tokenizer found; expected tokenizer.json, tokenizer.model "
                                 "(SentencePiece or Llama 3 tiktoken) or a llama2.c tokenizer.bin / tok*.bin")
        return _load_file(main)
    if not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    return _load_file(path)


def _load_file(path: Path) -> Tokenizer:
    head = _head(path)
    if head.startswith(GGUF_MAGIC):
        return load_gguf_vocabulary(path)
    if head.lstrip()[:1] == b"{" or path.suffix == ".json":
        return HFJsonTokenizer.from_json_file(path, read_special_config(path.parent))
    if looks_like_tiktoken(head):
        return load_tiktoken(path, read_special_config(path.parent))
    if path.suffix == ".bin" or looks_like_llama2c(head) and not path.name.endswith(".model"):
        return load_llama2c_tokenizer(path)
    try:
        return SentencePieceTokenizer.from_model_file(path, read_special_config(path.parent))
    except TokenizerError as error:
        if "not a valid SentencePiece model" not in str(error):
            raise
        raise TokenizerError(f"{error}; nor a Llama 3 tiktoken file (lines of 'base64-token rank'), nor a llama2.c "
                             f"tokenizer.bin; the file starts with {head[:16]!r}") from None
