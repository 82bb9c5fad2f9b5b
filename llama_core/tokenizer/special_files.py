"""The side files of a Hugging Face tokenizer: tokenizer_config.json, special_tokens_map.json, added_tokens.json.

Every backend reads them the same way (transformers' precedence): the named tokens (bos/eos/unk/pad) from
tokenizer_config.json, else special_tokens_map.json; added tokens from `added_tokens_decoder`, then added_tokens.json;
the chat template from chat_template.jinja, else chat_template.json, else tokenizer_config.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from ..errors import TokenizerError

SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
              "chat_template.json")
NAMED = ("bos_token", "eos_token", "unk_token", "pad_token")


@dataclass(frozen=True)
class AddedToken:
    """One added token as transformers stores it: text matched before the model sees the rest of the input."""

    content: str
    special: bool = True
    lstrip: bool = False  # the token swallows the whitespace on its left when matched in text
    rstrip: bool = False
    normalized: bool = False


@dataclass
class SpecialConfig:
    """What the side files say; None where they say nothing (the backend's own file decides then)."""

    bos_token: str | None = None
    eos_token: str | None = None
    unk_token: str | None = None
    pad_token: str | None = None
    add_bos_token: bool | None = None
    add_eos_token: bool | None = None
    legacy: bool | None = None
    add_prefix_space: bool | None = None
    tokenizer_class: str | None = None
    chat_template: str | dict[str, str] | None = None
    added: dict[int, AddedToken] = field(default_factory=dict)
    additional_special: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # which file set each named token, for messages

    def where(self, key: str) -> Path | None:
        """The side file that set `key` (a named token, or "id N" for an added token), else the first one read."""
        return self.sources.get(key) or (self.files[0] if self.files else None)

    def named(self) -> dict[str, str]:
        return {k: v for k in NAMED if (v := getattr(self, k)) is not None}

    def special_texts(self) -> list[str]:
        """Every token text the side files call special: the named ones and additional_special_tokens."""
        return list(dict.fromkeys([*self.named().values(), *self.additional_special]))


def _read_json(path: Path, expected: type) -> object:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise TokenizerError(f"{path}: expected UTF-8 JSON, found undecodable bytes ({error.reason} at byte "
                             f"{error.start})") from None
    except json.JSONDecodeError as error:
        raise TokenizerError(f"{path}: expected JSON, found a syntax error at line {error.lineno} column "
                             f"{error.colno}: {error.msg}") from None
    if not isinstance(value, expected):
        raise TokenizerError(f"{path}: expected a JSON {expected.__name__}, found a {type(value).__name__}")
    return value


def _token_text(value: object, path: Path, key: str) -> str | None:
    # A named token is a string, or an AddedToken written as {"content": ..., "lstrip": ..., ...}.
    # An empty name (early LLaMA conversions wrote bos/eos/unk as "") names no token: the model file decides.
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"] or None
    raise TokenizerError(f"{path}: {key} must be a string or an object with a \"content\" string, found {value!r}")


def _flag(config: dict, key: str, path: Path) -> bool | None:
    value = config.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise TokenizerError(f"{path}: {key} must be true or false, found {value!r}")


def _chat_template(value: object, path: Path) -> str | dict[str, str] | None:
    # transformers accepts one template string or a list of {"name": ..., "template": ...}.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                       and isinstance(t.get("template"), str) for t in value):
        return {t["name"]: t["template"] for t in value}
    raise TokenizerError(f"{path}: chat_template must be a string or a list of {{\"name\", \"template\"}} objects, "
                         f"found {type(value).__name__}")


def _added_token(value: object, path: Path, key: str) -> AddedToken:
    if isinstance(value, str):
        return AddedToken(value)
    if not isinstance(value, dict) or not isinstance(value.get("content"), str):
        raise TokenizerError(f"{path}: added_tokens_decoder[{key}] must be an object with a \"content\" string, "
                             f"found {value!r}")
    return AddedToken(value["content"], bool(value.get("special", False)), bool(value.get("lstrip", False)),
                      bool(value.get("rstrip", False)), bool(value.get("normalized", False)))


def _token_id(key: object, path: Path, where: str) -> int:
    try:
        token_id = int(key)
    except (TypeError, ValueError):
        token_id = -1
    if isinstance(key, bool) or token_id < 0:
        raise TokenizerError(f"{path}: {where} ids must be non-negative integers, found {key!r}")
    return token_id


def read_special_config(folder: Path) -> SpecialConfig:
    """Read whichever side files `folder` holds; an empty config when it holds none."""
    config = SpecialConfig()
    mapping_path = folder / "special_tokens_map.json"
    if mapping_path.is_file():
        mapping = _read_json(mapping_path, dict)
        config.files.append(mapping_path)
        for key in NAMED:
            setattr(config, key, _token_text(mapping.get(key), mapping_path, key))
            if key in mapping:
                config.sources[key] = mapping_path
        extra = mapping.get("additional_special_tokens") or []
        config.additional_special = [t for i, v in enumerate(extra)
                                     if (t := _token_text(v, mapping_path, f"additional_special_tokens[{i}]"))]

    config_path = folder / "tokenizer_config.json"
    if config_path.is_file():
        tok_config = _read_json(config_path, dict)
        config.files.append(config_path)
        for key in NAMED:  # tokenizer_config.json wins over special_tokens_map.json, as in transformers
            if key in tok_config:
                setattr(config, key, _token_text(tok_config[key], config_path, key))
                config.sources[key] = config_path
        for key in ("add_bos_token", "add_eos_token", "legacy", "add_prefix_space"):
            setattr(config, key, _flag(tok_config, key, config_path))
        tokenizer_class = tok_config.get("tokenizer_class")
        config.tokenizer_class = tokenizer_class if isinstance(tokenizer_class, str) else None
        config.chat_template = _chat_template(tok_config.get("chat_template"), config_path)
        decoder = tok_config.get("added_tokens_decoder") or {}
        if not isinstance(decoder, dict):
            raise TokenizerError(f"{config_path}: added_tokens_decoder must be an object of id -> token, found "
                                 f"{type(decoder).__name__}")
        for key, value in decoder.items():
            token_id = _token_id(key, config_path, "added_tokens_decoder")
            config.added[token_id] = _added_token(value, config_path, key)
            config.sources[f"id {token_id}"] = config_path
        extra = tok_config.get("additional_special_tokens") or tok_config.get("extra_special_tokens") or []
        if isinstance(extra, list):
            config.additional_special += [t for t in extra if isinstance(t, str)]

    added_path = folder / "added_tokens.json"
    if added_path.is_file():
        config.files.append(added_path)
        named = set(config.named().values()) | set(config.additional_special)
        for content, token_id in _read_json(added_path, dict).items():
            token_id = _token_id(token_id, added_path, "token")
            # added_tokens.json says nothing of specialness: the named tokens are special, the rest are not.
            if token_id not in config.added:
                config.added[token_id] = AddedToken(content, special=content in named)
                config.sources[f"id {token_id}"] = added_path

    for name in ("chat_template.json", "chat_template.jinja"):  # the later, newer file wins
        path = folder / name
        if path.is_file():
            config.files.append(path)
            if name.endswith(".json"):
                config.chat_template = _chat_template(_read_json(path, dict).get("chat_template"), path)
            else:
                config.chat_template = path.read_text(encoding="utf-8")
    return config


def added_token_pattern(tokens: dict[int, AddedToken]) -> tuple[re.Pattern, list[int]] | None:
    """A regex finding added tokens in text leftmost-longest (with the whitespace an lstrip/rstrip token swallows),
    and the id of each of its groups: one group per token, so `match.lastindex` tells which one matched."""
    if not tokens:
        return None
    ordered = sorted(tokens.items(), key=lambda item: -len(item[1].content))
    pattern = "|".join((r"\s*" if t.lstrip else "") + f"({re.escape(t.content)})" + (r"\s*" if t.rstrip else "")
                       for _, t in ordered)
    return re.compile(pattern), [token_id for token_id, _ in ordered]


def encode_around_added(text: str, matcher: tuple[re.Pattern, list[int]] | None,
                        encode_segment: Callable[[str, bool], list[int]]) -> list[int]:
    """Added tokens in `text` become their ids; the text between them goes to `encode_segment(segment,
    at_start)`, `at_start` telling the segment that begins the text (the one SentencePiece's dummy prefix is for)."""
    ids: list[int] = []
    start = 0
    pattern, group_ids = matcher or (None, [])
    for match in pattern.finditer(text) if pattern else ():
        if match.start() > start:
            ids += encode_segment(text[start:match.start()], start == 0)
        ids.append(group_ids[match.lastindex - 1])
        start = match.end()
    if start < len(text):
        ids += encode_segment(text[start:], start == 0)
    return ids
