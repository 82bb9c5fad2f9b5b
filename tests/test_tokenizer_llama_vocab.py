"""The real LLaMA vocabulary (Meta's tokenizer.model) against llama.cpp's tokenizer test vectors.

tests/data/third_party/README.md says where the files come from. The vectors are ids without BOS.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tokenizer_fixtures import write_llama2c_tokenizer

from llama_core.tokenizer import StreamDecoder, load_tokenizer

THIRD_PARTY = Path(__file__).parent / "data" / "third_party"
MODEL = THIRD_PARTY / "llama-tokenizer.model"


def vectors() -> list[tuple[str, list[int]]]:
    texts = (THIRD_PARTY / "ggml-vocab-llama-spm.gguf.inp").read_text(encoding="utf-8")
    texts = texts.split("\n__ggml_vocab_test__\n")[:-1]  # each string is followed by the separator line
    lines = (THIRD_PARTY / "ggml-vocab-llama-spm.gguf.out").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(texts) == len(lines) == 46
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines, strict=True)]


@pytest.fixture(scope="module")
def llama():
    return load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def llama2c(tmp_path_factory):
    # llama2.c ships Meta's vocabulary as its default tokenizer.bin, exported by its tokenizer.py.
    path = tmp_path_factory.mktemp("llama2c") / "tokenizer.bin"
    write_llama2c_tokenizer(path, MODEL)
    return load_tokenizer(path)


@pytest.mark.parametrize("text, expected", vectors(), ids=[f"v{i}" for i in range(46)])
def test_llama_cpp_vectors(llama, llama2c, text, expected):
    assert llama.encode(text, bos=False) == expected
    assert llama2c.encode(text, bos=False) == expected
    # Vectors are ids of plain text: decoding them gives the text back (SentencePiece drops only the dummy space).
    assert llama.decode(expected) == text


def test_real_vocabulary_facts(llama, llama2c):
    assert (llama.kind, llama.vocab_size, llama.bos_id, llama.eos_id, llama.add_bos) == (
        "sentencepiece", 32000, 1, 2, True)
    assert (llama2c.kind, llama2c.vocab_size) == ("llama2c", 32000)  # the size comes from the file's records
    assert llama.encode("Hello world") == [1, 15043, 3186]
    assert llama.encode(" Hello world") == [1, 29871, 15043, 3186]  # SentencePiece keeps the typed space
    assert llama.encode("<s>[INST] hi [/INST]", bos=False)[0] == 1  # a typed <s> is BOS, as in transformers


def test_real_vocabulary_display_and_stream(llama):
    text = "Café 🦙 日本"
    ids = llama.encode(text, bos=False)
    shown = llama.display_pieces(ids)
    assert "🦙" in shown and "é" in "".join(shown)  # the emoji's four byte pieces show as one character
    assert all("<0x" not in piece for piece in shown)
    llama_ids = llama.encode("🦙", bos=False)  # '▁' then the emoji's four UTF-8 bytes as byte pieces
    assert [llama.is_byte(i) for i in llama_ids] == [False, True, True, True, True]
    assert llama.display_pieces(llama_ids) == [" ", "🦙", "", "", ""]
    assert [llama.piece(i) for i in llama_ids] == [" ", "<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]
    decoder = StreamDecoder(llama, llama.encode("Once"))
    deltas = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(deltas) == " " + text and all("\ufffd" not in d for d in deltas)


def test_real_vocabulary_in_a_hugging_face_folder_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    shutil.copy(MODEL, tmp_path / "tokenizer.model")
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = load_tokenizer(tmp_path)
    # A bare tokenizer.model is Meta's layout, whose code always prepends BOS (so do we); transformers adds none
    # without a tokenizer_config.json saying so, hence the comparison without special tokens.
    for text, _ in vectors():
        ids = ours.encode(text, bos=False)
        assert ids == reference.encode(text, add_special_tokens=False)
        assert ours.decode([1] + ids, skip_special=False) == reference.decode([1] + ids)
