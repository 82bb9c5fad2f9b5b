"""The vocabulary inside a GGUF file: llama.cpp's own test vectors on its LLaMA vocabulary file, and byte-level BPE
vocabularies (Llama 3, SmolLM) encoding exactly as the tokenizer.json they were converted from.

That llama.cpp itself tokenizes these files as we do is checked in test_gguf_llamacpp.py (it needs llama-cpp-python).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from gguf_fixtures import bpe_vocabulary, vocabulary_only_gguf
from test_tokenizer_llama_vocab import MODEL, THIRD_PARTY, vectors
from tokenizer_fixtures import CHATML_TEMPLATE, LLAMA3_TEMPLATE, write_llama3_hf, write_smollm_hf

from llama_core.errors import TokenizerError
from llama_core.tokenizer import load_tokenizer

LLAMA_SPM_GGUF = THIRD_PARTY / "ggml-vocab-llama-spm.gguf"
TEXTS = [text for text, _ in vectors()] + [
    "<|begin_of_text|>Hi there<|eot_id|>", "<|im_start|>user\nhello<|im_end|>\n", "12345 678,9", "  two spaces",
    "tab\there\r\nand CRLF", "don't I'VE we'll", "日本語 🦙 café", "<s> not special in BPE </s>",
    # Text like the fixtures' training corpus, where their merges exist: only here do the pre-tokenizers'
    # boundaries (punctuation before a newline, a quote before a word) change the tokens.
    'pictures or conversations?"\nSo she was considering in her own mind',
    'no pictures or conversations in it, "and what is the use of a book," thought Alice',
]


@pytest.fixture(scope="module")
def llama_spm():
    return load_tokenizer(LLAMA_SPM_GGUF)


@pytest.mark.parametrize("text, expected", vectors(), ids=[f"v{i}" for i in range(46)])
def test_llama_cpp_vectors_with_the_vocabulary_read_from_gguf(llama_spm, text, expected):
    assert llama_spm.encode(text, bos=False) == expected
    assert llama_spm.decode(expected) == text


def test_the_gguf_vocabulary_is_metas_sentencepiece_model(llama_spm):
    meta = load_tokenizer(MODEL)
    assert (llama_spm.kind, llama_spm.vocab_size, llama_spm.bos_id, llama_spm.eos_id, llama_spm.add_bos) == (
        "gguf", 32000, 1, 2, True)
    assert all(llama_spm.token_bytes(i) == meta.token_bytes(i) for i in range(32000))
    assert [llama_spm.is_special(i) for i in range(4)] == [True, True, True, False] and llama_spm.is_byte(3)
    assert llama_spm.encode("<s>[INST] hi [/INST]", bos=False)[0] == 1  # a typed <s> is BOS, as elsewhere
    # llama.cpp puts the dummy-prefix space after a special token too: "<s> not" is <s> ▁ ▁not.
    assert llama_spm.encode("<s> not", bos=False) == [1, 29871, 451]
    assert llama_spm.eos_ids == (2,) and llama_spm.chat_template is None


def llama3_gguf(tmp_path: Path, **overrides) -> tuple[Path, Path]:
    folder = tmp_path / "llama3"
    write_llama3_hf(folder)
    options = {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "eot": "<|eot_id|>", "add_bos": True,
               "chat_template": LLAMA3_TEMPLATE, **overrides}
    return folder, vocabulary_only_gguf(tmp_path / "llama3.gguf",
                                        bpe_vocabulary(folder / "tokenizer.json", "llama-bpe", **options))


def smollm_gguf(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "smollm"
    write_smollm_hf(folder)
    vocabulary = bpe_vocabulary(folder / "tokenizer.json", "smollm", bos="<|im_start|>", eos="<|im_end|>",
                                chat_template=CHATML_TEMPLATE)
    return folder, vocabulary_only_gguf(tmp_path / "smollm.gguf", vocabulary)


@pytest.mark.parametrize("make", [llama3_gguf, smollm_gguf], ids=["llama-bpe", "smollm"])
def test_byte_level_bpe_encodes_as_the_tokenizer_json_it_came_from(tmp_path, make):
    folder, path = make(tmp_path)
    theirs, ours = load_tokenizer(folder), load_tokenizer(path)
    assert (ours.kind, ours.vocab_size, ours.bos_id, ours.eos_id, ours.add_bos, ours.chat_template) == (
        "gguf", theirs.vocab_size, theirs.bos_id, theirs.eos_id, theirs.add_bos, theirs.chat_template)
    for text in TEXTS:
        ids = theirs.encode(text)
        assert ours.encode(text) == ids, text
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.display_pieces(ids) == theirs.display_pieces(ids)
    assert {i for i in range(ours.vocab_size) if ours.is_special(i)} == {
        i for i in range(theirs.vocab_size) if theirs.is_special(i)}


def test_llama3_stop_tokens_and_bos_default_follow_llama_cpp(tmp_path):
    # Without add_bos_token, llama.cpp adds BOS for the llama-bpe pre-tokenizer; it stops on eos, eot, eom and
    # <|end_of_text|> (by name, as llama-vocab.cpp's end-of-generation list does).
    _, path = llama3_gguf(tmp_path, add_bos=None)
    ours = load_tokenizer(path)
    names = {ours.piece(i) for i in ours.eos_ids}
    assert ours.add_bos and ours.encode("hi")[0] == ours.bos_id
    assert names == {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"}


def test_unknown_models_and_pre_tokenizers_are_refused_by_name(tmp_path):
    def vocabulary(model: str, pre: str | None = None, merges: bool = True):
        def write(writer: gguf.GGUFWriter) -> None:
            writer.add_tokenizer_model(model)
            if pre:
                writer.add_tokenizer_pre(pre)
            writer.add_token_list(["a", "b"])
            if merges:
                writer.add_token_merges(["a b"])
        return write

    cases = [
        (vocabulary("bert"), r"tokenizer\.ggml\.model is 'bert'; supported: 'llama' \(SentencePiece\) and 'gpt2'"),
        (vocabulary("gpt2", "qwen2"), r"tokenizer\.ggml\.pre is 'qwen2', a pre-tokenizer this loader does not know; "
                                      r"supported: llama-bpe, smollm, default"),
        (vocabulary("gpt2", "llama-bpe", merges=False), r"a 'gpt2' vocabulary needs tokenizer\.ggml\.merges"),
        (vocabulary("gpt2", "llama-bpe"), r"a byte-level vocabulary must hold all 256 byte symbols; 254 are missing"),
    ]
    for number, (write, message) in enumerate(cases):
        path = vocabulary_only_gguf(tmp_path / f"v{number}.gguf", write)
        with pytest.raises(TokenizerError, match=rf"v{number}\.gguf: {message}"):
            load_tokenizer(path)


def test_a_special_token_id_outside_the_vocabulary_is_named(tmp_path):
    def write(writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("llama")
        writer.add_token_list(["<unk>", "<s>", "</s>", "a"])
        writer.add_eos_token_id(7)

    path = vocabulary_only_gguf(tmp_path / "v.gguf", write)
    with pytest.raises(TokenizerError, match=r"v\.gguf: tokenizer\.ggml\.eos_token_id is 7, outside the 4 tokens"):
        load_tokenizer(path)
