"""Meta's Llama 3 `tokenizer.model`: tiktoken's format (one `base64(token bytes) rank` per line).

Meta's tokenizer.py reads it with tiktoken, Llama 3's pre-tokenizer pattern, and 256 special tokens numbered after
the ranks. We build the same BPE with the `tokenizers` library instead (as transformers' TikTokenConverter does):
the ranks are the ids, every split of a token into two tokens is a merge ranked by the token it makes, and a
pre-token that is itself a token is taken whole (tiktoken's first step, `ignore_merges`).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ..errors import TokenizerError
from .hf_json import HFJsonTokenizer
from .special_files import SpecialConfig

# Meta's `pat_str` in llama3/tokenizer.py.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Llama 3.1's special tokens as its tokenizer.json names them (transformers' conversion script): 3.0 calls
# 128004/8/10 reserved, Meta's newer code calls 128005 <|step_id|> and numbers the reserved ones from 2; the ids of
# the tokens that matter (begin/end of text, headers, eom, eot) agree across all of them.
_NAMED = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
          "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
          "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
LLAMA3_SPECIAL_TOKENS = _NAMED + [f"<|reserved_special_token_{3 + i}|>" for i in range(256 - len(_NAMED))]
_LINE = re.compile(rb"^[A-Za-z0-9+/=]+ [0-9]+$")


def looks_like_tiktoken(head: bytes) -> bool:
    """Whether a file starts like a tiktoken BPE file (its first line `base64 rank`)."""
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    return bool(_LINE.match(first))


def read_ranks(path: Path) -> dict[bytes, int]:
    """token bytes -> rank, checked: every line `base64 rank`, ranks 0..n-1 once each, all 256 bytes present."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (ValueError, binascii.Error):
            raise TokenizerError(f"{path}: line {number}: expected 'base64-token rank' (tiktoken format), found "
                                 f"{line[:60]!r}; the file may be truncated or not a Llama 3 tokenizer.model") from None
        if token in ranks:
            raise TokenizerError(f"{path}: line {number}: token {token!r} appears twice (ranks {ranks[token]} and "
                                 f"{rank})")
        ranks[token] = rank
    if sorted(ranks.values()) != list(range(len(ranks))):
        missing = next(i for i, r in enumerate(sorted(ranks.values())) if i != r)
        raise TokenizerError(f"{path}: expected ranks 0..{len(ranks) - 1} once each, found rank {missing} missing")
    absent = [b for b in range(256) if bytes([b]) not in ranks]
    if absent:
        raise TokenizerError(f"{path}: expected all 256 single bytes as tokens, found {len(absent)} missing "
                             f"(first: 0x{absent[0]:02X}); the file may be truncated")
    return ranks


def bpe_from_ranks(ranks: dict[bytes, int]) -> HFTokenizer:
    """A byte-level BPE that encodes as tiktoken does on the same ranks, with Llama 3's pre-tokenizer."""
    from .hf_json import byte_level_table

    # bytes -> latin-1 text (one character per byte) -> the byte-level stand-ins, both at C speed
    stand_in = str.maketrans({chr(byte): char for char, byte in byte_level_table().items()})

    def symbols(token: bytes) -> str:
        return token.decode("latin-1").translate(stand_in)

    merges = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], symbols(left), symbols(right)))
    merges.sort()
    vocab = {symbols(token): rank for token, rank in ranks.items()}
    tokenizer = HFTokenizer(models.BPE(vocab, [(m[3], m[4]) for m in merges], fuse_unk=False, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in LLAMA3_SPECIAL_TOKENS])
    return tokenizer


def load_tiktoken(path: Path, config: SpecialConfig | None = None) -> HFJsonTokenizer:
    """Meta's Llama 3 tokenizer: BOS `<|begin_of_text|>` added by default, and Meta's stop tokens
    (`<|end_of_text|>`, `<|eom_id|>`, `<|eot_id|>`) as the eos ids; side files, if any, may rename bos/eos."""
    config = config or SpecialConfig()
    tokenizer = bpe_from_ranks(read_ranks(path))
    names = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", **config.named()}
    config = SpecialConfig(bos_token=names["bos_token"], eos_token=names["eos_token"],
                           add_bos_token=True if config.add_bos_token is None else config.add_bos_token,
                           chat_template=config.chat_template, files=config.files)
    stops = [tokenizer.token_to_id(t) for t in ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")]
    return HFJsonTokenizer(tokenizer, path, config, kind="tiktoken", eos_ids=stops)
