"""Hugging Face `tokenizer.json` through the `tokenizers` library (Llama 3, SmolLM, LLaMA 2 conversions).

The file is used as transformers uses it: its added tokens (and those of the side files) are matched in text as
their ids, and BOS comes from its post-processor unless tokenizer_config.json sets `add_bos_token`. A LLaMA 2
conversion whose config names LlamaTokenizer is encoded as SentencePiece encodes (transformers rebuilds that
class's pipeline too, with `legacy` deciding the space after a special token) — except that transformers 5's
Metaspace pipeline drops a leading space of the text (" Hello" as "Hello"; huggingface/transformers PR #47700),
which we keep as SentencePiece, Meta's reference and llama.cpp do.
"""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Sequence

from tokenizers import AddedToken as HFAddedToken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import normalizers

from ..errors import TokenizerError
from .base import Tokenizer, utf8_state
from .special_files import AddedToken, SpecialConfig, added_token_pattern, encode_around_added

_SPACE = "\u2581"


def byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: each stand-in character (Ġ for space, Ċ for newline) -> its byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:  # bytes without a printable glyph are moved to 256 and up, in order
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table


def read_tokenizer_json(path: Path) -> HFTokenizer:
    """Parse a tokenizer.json, naming the file, what was expected and what was found when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except UnicodeDecodeError as error:
        raise TokenizerError(f"{path}: expected a UTF-8 JSON tokenizer.json, found undecodable bytes "
                             f"({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise TokenizerError(f"{path}: expected a JSON tokenizer.json, found a syntax error at line {error.lineno} "
                             f"column {error.colno}: {error.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        found = f"keys {sorted(data)[:8]}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise TokenizerError(f"{path}: expected a Hugging Face tokenizer.json (an object with a \"model\" "
                             f"object), found {found}")
    try:
        return HFTokenizer.from_str(text)
    except Exception as error:  # the Rust side raises bare Exception with serde's message
        model_type = data["model"].get("type", "no type")
        raise TokenizerError(f"{path}: expected a tokenizer.json the tokenizers library can read, found a "
                             f"{model_type} model it rejects: {error}") from None


def _pipeline_spec(tokenizer: HFTokenizer) -> dict:
    """The decoder and pre-tokenizer as data (their JSON), without serializing the whole vocabulary."""
    return {key: json.loads(part.__getstate__()) if (part := getattr(tokenizer, key)) is not None else None
            for key in ("decoder", "pre_tokenizer")}


def is_byte_level(spec: dict) -> bool:
    """Whether a parsed tokenizer.json works on GPT-2's byte-level alphabet (its decoder or pre-tokenizer says so)."""
    return any('"ByteLevel"' in json.dumps(spec.get(key)) for key in ("decoder", "pre_tokenizer"))


def _strips_first_space(decoder: dict | None) -> bool:
    """Whether the file's decoder drops the space SentencePiece puts before the first word (Strip, or Metaspace)."""
    steps = (decoder or {}).get("decoders", [decoder]) if decoder else []
    for step in steps:
        if step.get("type") == "Strip" and step.get("content") == " " and step.get("start", 0) > 0:
            return True
        if step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") != "never" and step.get(
                "add_prefix_space", True):
            return True
    return False


def _sentencepiece_pipelines(tokenizer: HFTokenizer, config: SpecialConfig) -> tuple[HFTokenizer, HFTokenizer]:
    """The file's vocabulary encoding as SentencePiece does: '▁' for every space, and one more '▁' before the text
    that starts the input (also before text after a special token only with `"legacy": true`)."""
    add_prefix = config.add_prefix_space if config.add_prefix_space is not None else True
    pipelines = []
    for prefix in (add_prefix, add_prefix and bool(config.legacy)):
        copy = HFTokenizer.from_str(tokenizer.to_str())
        # Prepend as a normalizer, not Metaspace's prepend_scheme: Metaspace skips the prefix when the text
        # already starts with a space, and " Hello" must become "▁▁Hello" as SentencePiece makes it.
        replace = normalizers.Replace(" ", _SPACE)
        copy.normalizer = normalizers.Sequence([normalizers.Prepend(_SPACE), replace]) if prefix else replace
        copy.pre_tokenizer = None
        pipelines.append(copy)
    return pipelines[0], pipelines[1]


class HFJsonTokenizer(Tokenizer):
    """A `tokenizers` Tokenizer plus the side files; also the engine of the tiktoken backend."""

    def __init__(self, tokenizer: HFTokenizer, path: Path | None, config: SpecialConfig | None = None,
                 kind: str = "hf-json", eos_ids: Sequence[int] = ()):
        self.kind = kind
        config = config or SpecialConfig()
        self.backend = tokenizer
        spec = _pipeline_spec(tokenizer)
        byte_level = is_byte_level(spec)

        # Tokens the side files add that the file lacks, in id order, each where the side file says it is.
        for token_id, token in sorted(config.added.items()):
            if tokenizer.token_to_id(token.content) is not None:
                continue
            size = tokenizer.get_vocab_size(with_added_tokens=True)
            if token_id != size:  # the next free id is where the library would put it
                raise TokenizerError(f"{config.where(f'id {token_id}') or path}: added token {token.content!r} has "
                                     f"id {token_id}, expected {size} (the first id after {path})")
            tokenizer.add_tokens([HFAddedToken(token.content, single_word=False, lstrip=token.lstrip,
                                               rstrip=token.rstrip, normalized=token.normalized,
                                               special=token.special)])
        names = config.named()
        for key in ("bos_token", "eos_token"):
            if key in names and tokenizer.token_to_id(names[key]) is None:
                raise TokenizerError(f"{config.where(key) or path}: {key} {names[key]!r} is not a token of {path}")
        # Special tokens the side files name are matched in text as their ids, as transformers registers them.
        # One the vocabulary lacks (a pad_token "<pad>" of a model without one) is left out, not appended:
        # the model has no embedding row for it.
        known = [t for t in config.special_texts() if tokenizer.token_to_id(t) is not None]
        tokenizer.add_special_tokens([HFAddedToken(t, normalized=False, special=True) for t in known])

        size = max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        added = tokenizer.get_added_tokens_decoder()
        special = {i for i, t in added.items() if t.special} | {tokenizer.token_to_id(t) for t in known}
        # str.translate maps the byte-level stand-ins back to chr(byte) at C speed; latin-1 then gives the bytes.
        to_byte = str.maketrans({char: chr(byte) for char, byte in byte_level_table().items()})
        byte_fallback = getattr(tokenizer.model, "byte_fallback", False)
        tokens, data, byte_ids = [], [], set()
        for token_id in range(size):
            text = tokenizer.id_to_token(token_id)
            tokens.append(text if text is not None else "")
            if token_id in special or text is None:
                data.append(None)
                special.add(token_id)
            elif token_id in added:
                data.append(text.encode("utf-8"))  # a non-special added token is literal text
            elif byte_level:
                try:
                    data.append(text.translate(to_byte).encode("latin-1"))
                except UnicodeEncodeError:  # a character outside the byte alphabet stands for itself
                    data.append(text.encode("utf-8"))
            elif byte_fallback and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                data.append(bytes([int(text[3:5], 16)]))
                byte_ids.add(token_id)
            else:
                data.append(text.replace(_SPACE, " ").encode("utf-8"))
            if byte_level and data[-1] is not None and utf8_state(data[-1]) != "complete":
                byte_ids.add(token_id)

        # A LLaMA 2 conversion (LlamaTokenizer, not byte-level): transformers rebuilds SentencePiece's way of
        # treating spaces around added tokens; we encode the text between added tokens as SentencePiece would.
        self._pipelines = None
        strip_first_space = _strips_first_space(spec.get("decoder"))
        if not byte_level and (config.tokenizer_class or "").lower().removesuffix("fast") == "llamatokenizer":
            strip_first_space = config.add_prefix_space is not False
            self._pipelines = _sentencepiece_pipelines(tokenizer, config)
            self._matcher = added_token_pattern({i: AddedToken(t.content, t.special, t.lstrip, t.rstrip)
                                                 for i, t in added.items()})
        bos_id = tokenizer.token_to_id(names["bos_token"]) if "bos_token" in names else None
        eos_id = tokenizer.token_to_id(names["eos_token"]) if "eos_token" in names else None
        if config.add_bos_token is not None:
            add_bos = config.add_bos_token
        else:  # the file's post-processor decides, as transformers keeps it when the config says nothing
            plain = tokenizer.encode("a", add_special_tokens=False).ids
            full = tokenizer.encode("a", add_special_tokens=True).ids
            leading = full[0] if len(full) > len(plain) and full[1 : len(plain) + 1] == plain else None
            if bos_id is None and leading is not None and leading in special:
                bos_id = leading
            add_bos = leading is not None and leading == bos_id
        super().__init__(path=path, tokens=tokens, token_bytes=data, special_ids=special, byte_ids=byte_ids,
                         bos_id=bos_id, eos_id=eos_id, eos_ids=eos_ids, add_bos=add_bos,
                         strip_first_space=strip_first_space, chat_template=config.chat_template)

    @classmethod
    def from_json_file(cls, path: Path, config: SpecialConfig | None = None) -> HFJsonTokenizer:
        return cls(read_tokenizer_json(path), path, config)

    def _encode_text(self, text: str) -> list[int]:
        if self._pipelines is None:
            return self.backend.encode(text, add_special_tokens=False).ids
        return encode_around_added(text, self._matcher, lambda segment, at_start: self._pipelines[
            0 if at_start else 1].encode(segment, add_special_tokens=False).ids)
