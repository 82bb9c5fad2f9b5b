"""Broken tokenizer files: every error names the file, what was expected and what was found."""

from __future__ import annotations

import json
import re
import struct

import pytest
from tokenizer_fixtures import write_llama2c_tokenizer, write_llama3_hf, write_llama3_tiktoken

from llama_core.errors import TokenizerError
from llama_core.tokenizer import Tokenizer, load_tokenizer


def raises(path, *fragments):
    """load_tokenizer(path) fails with a TokenizerError naming the file and saying each fragment."""
    with pytest.raises(TokenizerError) as caught:
        load_tokenizer(path)
    message = str(caught.value)
    for fragment in (str(path), *fragments):
        assert re.search(fragment, message), (fragment, message)
    return message


def test_truncated_tokenizer_json(tmp_path):
    write_llama3_hf(tmp_path)
    text = (tmp_path / "tokenizer.json").read_text(encoding="utf-8")
    (tmp_path / "tokenizer.json").write_text(text[: len(text) // 2], encoding="utf-8")
    raises(tmp_path / "tokenizer.json", "expected a JSON tokenizer.json", "found a syntax error at line")


def test_json_that_is_not_a_tokenizer(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0}}), encoding="utf-8")
    raises(tmp_path / "tokenizer.json", r"expected a Hugging Face tokenizer.json \(an object with a \"model\"",
           r"found keys \['vocab'\]")
    (tmp_path / "tokenizer.json").write_text("[1, 2]", encoding="utf-8")
    raises(tmp_path / "tokenizer.json", "found a JSON list")


def test_tokenizer_json_the_library_rejects(tmp_path):
    write_llama3_hf(tmp_path)
    spec = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    spec["model"]["merges"] = [["no such", "symbols"]]  # a merge of tokens the vocabulary does not have
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    raises(tmp_path / "tokenizer.json", "expected a tokenizer.json the tokenizers library can read",
           "found a BPE model it rejects")


def test_corrupt_side_file_is_named(tmp_path):
    write_llama3_hf(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"bos_token": ', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: expected JSON, found a syntax error"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": "yes"}', encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: add_bos_token must be true or false, "
                                             r"found 'yes'"):
        load_tokenizer(tmp_path)


def test_bos_token_missing_from_the_vocabulary(tmp_path):
    write_llama3_hf(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["bos_token"] = "<|not a token|>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: bos_token '<\|not a token\|>' is not a token"):
        load_tokenizer(tmp_path)


def test_truncated_tiktoken_file(tmp_path):
    write_llama3_tiktoken(tmp_path)
    data = (tmp_path / "tokenizer.model").read_bytes()
    (tmp_path / "tokenizer.model").write_bytes(data[: len(data) - 7])  # cut inside the last line
    raises(tmp_path / "tokenizer.model", r"line \d+: expected 'base64-token rank' \(tiktoken format\)",
           "the file may be truncated")


def test_tiktoken_file_missing_single_bytes(tmp_path):
    write_llama3_tiktoken(tmp_path)
    lines = (tmp_path / "tokenizer.model").read_text(encoding="ascii").splitlines()
    # Keep only the first rank: a file cut at a line boundary early on lacks most single bytes.
    (tmp_path / "tokenizer.model").write_text(lines[0] + "\n", encoding="ascii")
    raises(tmp_path / "tokenizer.model", "expected all 256 single bytes as tokens", "255 missing")


def test_wrong_llama2c_bin(tmp_path):
    (tmp_path / "tokenizer.bin").write_bytes(b"\xff\xff\xff\xff" + b"\0" * 64)
    raises(tmp_path / "tokenizer.bin", "expected a llama2.c tokenizer whose header is the longest piece's length",
           "found 4294967295")
    good = tmp_path / "good" / "tokenizer.bin"
    write_llama2c_tokenizer(good)
    data = good.read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) - 3])
    raises(tmp_path / "cut.bin", r"record 511 ", "the file may be truncated")
    # A float/length/bytes stream without llama2.c's BOS/EOS pieces is some other file.
    (tmp_path / "other.bin").write_bytes(struct.pack("<I", 4) + struct.pack("<fI", 0.0, 4) + b"abcd")
    raises(tmp_path / "other.bin", r"expected llama2.c's BOS/EOS pieces \('\\n<s>\\n'\), found none among 1 pieces")


def test_garbage_tokenizer_model_and_missing_files(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x00\x01 not a sentencepiece model" * 10)
    message = raises(bad, "not a valid SentencePiece model", "nor a Llama 3 tiktoken file", "nor a llama2.c")
    assert "starts with" in message
    with pytest.raises(TokenizerError, match="tokenizer file not found"):
        Tokenizer.from_file(tmp_path / "missing.model")
    empty = tmp_path / "empty"
    empty.mkdir()
    raises(empty, "no tokenizer found; expected tokenizer.json, tokenizer.model")


def test_two_llama2c_tokenizers_are_ambiguous(tmp_path):
    for name in ("tok512.bin", "tok4096.bin"):
        write_llama2c_tokenizer(tmp_path / name)
    raises(tmp_path, r"several llama2.c tokenizers \(tok4096.bin, tok512.bin\)")
    assert load_tokenizer(tmp_path / "tok512.bin").kind == "llama2c"


def test_decode_checks_ids(tmp_path):
    import numpy as np

    from llama_core.errors import ParameterError

    write_llama3_hf(tmp_path)
    tok = load_tokenizer(tmp_path)
    ids = tok.encode("Hi there", bos=False)
    assert tok.decode(np.array(ids)) == tok.decode(ids) == "Hi there"  # numpy and torch ints are ids too
    for bad in (tok.vocab_size, -1, 1.0, "3"):
        with pytest.raises(ParameterError, match=rf"token id must be an integer in \[0, {tok.vocab_size - 1}\]"):
            tok.decode([bad])
