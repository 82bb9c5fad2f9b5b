"""Every tokenizer backend against an independent reference, on files in the real downloads' layouts.

References: transformers' AutoTokenizer for the Hugging Face layouts, tiktoken for Meta's Llama 3 file,
SentencePiece for llama2.c's tokenizer.bin. The fixtures are trained here on the tiny corpus (tokenizer_fixtures).
"""

from __future__ import annotations

import logging

import pytest
import sentencepiece as spm
from tokenizer_fixtures import (
    CHATML_TEMPLATE, LLAMA2_TEMPLATE, LLAMA3_PATTERN, LLAMA3_SPECIALS, LLAMA3_TEMPLATE, SP_VOCAB,
    sentencepiece_model_bytes, write_all_layouts,
)

from llama_core.tokenizer import Tokenizer, find_tokenizer_files, load_tokenizer

transformers = pytest.importorskip("transformers")
tiktoken_load = pytest.importorskip("tiktoken.load")
import tiktoken  # after the skip above

TEXTS = [
    "Alice was beginning to get very tired of sitting by her sister",
    "Café naïve résumé — façade, Zürich, Ångström",
    "日本語のテキストと中文字符，한국어",
    "emoji 🦙🔥 and a family 👨‍👩‍👧 in a row",
    "tabs\tand  two  spaces,   three,\n\nnewlines\r\n and trailing  ",
    "digits 1234567890, 3.14159 and 2024-01-01",
    "don't you'll we're I'M SHE'S",
    # Special-token strings typed in the text: each layout matches its own as transformers does.
    "<s>Hello</s> world <unk>",
    "<|begin_of_text|>Hi<|start_header_id|>user<|end_header_id|>\n\nyo<|eot_id|>",
    "<|im_start|>user\nhey<|im_end|>\n",
    "[PAD] padded [PAD]",
    "",
]
# transformers 5's LlamaTokenizer drops a leading space of the text (huggingface/transformers PR #47700); there
# the reference is SentencePiece itself (below), whose ids Meta's code and llama.cpp's test vectors agree with.
LEADING_SPACE_TEXTS = [" Hello", "  two spaces first", "\n newline first", " "]
LLAMA_TOKENIZER_LAYOUTS = {"llama2", "alpaca", "llama2-json", "llama2-json+model"}


@pytest.fixture(scope="session")
def layouts(tmp_path_factory) -> dict:
    return write_all_layouts(tmp_path_factory.mktemp("layouts"))


@pytest.fixture(scope="session")
def reference(layouts):
    logging.getLogger("transformers").setLevel(logging.ERROR)  # its notes on clean_up_tokenization_spaces
    cache = {}

    def load(name: str):
        if name not in cache:
            cache[name] = transformers.AutoTokenizer.from_pretrained(layouts[name])
        return cache[name]

    return load


@pytest.fixture(scope="session")
def ours(layouts):
    cache = {}

    def load(name: str) -> Tokenizer:
        if name not in cache:
            cache[name] = load_tokenizer(layouts[name])
        return cache[name]

    return load


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("name", ["llama2", "alpaca", "llama2-json", "llama2-json+model", "llama3", "llama3-base",
                                  "smollm"])
def test_prompt_ids_and_decode_equal_transformers(ours, reference, name, text):
    tok, ref = ours(name), reference(name)
    ids = tok.encode(text)
    assert ids == ref.encode(text)  # BOS as each tokenizer adds it by default
    assert tok.decode(ids, skip_special=False) == ref.decode(ids)
    assert tok.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    assert tok.encode(text, bos=False) == ref.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("text", LEADING_SPACE_TEXTS)
@pytest.mark.parametrize("name", sorted(LLAMA_TOKENIZER_LAYOUTS))
def test_leading_space_is_encoded_as_sentencepiece_does(ours, name, text):
    processor = spm.SentencePieceProcessor()
    processor.load_from_serialized_proto(sentencepiece_model_bytes())
    assert ours(name).encode(text, bos=False) == processor.encode(text)
    assert ours(name).decode(processor.encode(text)) == processor.decode(processor.encode(text))


@pytest.mark.parametrize("text", LEADING_SPACE_TEXTS)
@pytest.mark.parametrize("name", ["llama3", "smollm"])
def test_leading_space_equals_transformers_for_byte_level(ours, reference, name, text):
    assert ours(name).encode(text) == reference(name).encode(text)


@pytest.mark.parametrize("name", ["llama2", "alpaca", "llama2-json", "llama3", "llama3-base", "smollm"])
def test_special_tokens_and_sizes_equal_transformers(ours, reference, name):
    tok, ref = ours(name), reference(name)
    assert tok.vocab_size == len(ref)
    assert (tok.bos_id, tok.eos_id) == (ref.bos_token_id, ref.eos_token_id)
    assert (tok.bos_token, tok.eos_token) == (ref.bos_token, ref.eos_token)
    assert tok.add_bos == (ref.encode("a")[0] == ref.bos_token_id)
    assert tok.eos_ids == (ref.eos_token_id,)
    for token_id in ref.all_special_ids:
        assert tok.is_special(token_id)
        assert tok.token_to_id(ref.convert_ids_to_tokens(token_id)) == token_id


def test_kinds_and_chat_templates(ours):
    expected = {"llama2": ("sentencepiece", LLAMA2_TEMPLATE), "alpaca": ("sentencepiece", None),
                "llama2-json": ("hf-json", None), "llama2-json+model": ("sentencepiece", None),
                "llama3": ("hf-json", LLAMA3_TEMPLATE), "llama3-base": ("hf-json", None),
                "llama3-meta": ("tiktoken", None), "smollm": ("hf-json", CHATML_TEMPLATE), "llama2c": ("llama2c", None)}
    for name, (kind, template) in expected.items():
        assert (ours(name).kind, ours(name).chat_template) == (kind, template), name


def test_alpaca_pad_is_one_id_past_the_model(ours):
    alpaca = ours("alpaca")
    assert alpaca.vocab_size == SP_VOCAB + 1
    assert alpaca.token_to_id("[PAD]") == SP_VOCAB and alpaca.is_special(SP_VOCAB)
    assert alpaca.encode("[PAD]", bos=False) == [SP_VOCAB]
    assert alpaca.piece(SP_VOCAB) == "[PAD]"


def test_llama3_instruct_and_base_eos(ours):
    instruct, base = ours("llama3"), ours("llama3-base")
    first = SP_VOCAB  # the fixture's ranks are 512 long; the specials follow in Meta's order
    assert instruct.bos_id == base.bos_id == first  # <|begin_of_text|>
    assert instruct.eos_id == first + 9 and instruct.eos_token == "<|eot_id|>"
    assert base.eos_id == first + 1 and base.eos_token == "<|end_of_text|>"
    assert instruct.vocab_size == first + 256


# -- Meta's Llama 3 tokenizer.model (tiktoken format) ------------------------------------------------------------

@pytest.fixture(scope="session")
def tiktoken_reference(layouts):
    ranks = tiktoken_load.load_tiktoken_bpe(str(layouts["llama3-meta"] / "tokenizer.model"))
    specials = {token: len(ranks) + i for i, token in enumerate(LLAMA3_SPECIALS)}
    return tiktoken.Encoding("llama3-fixture", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


@pytest.mark.parametrize("text", TEXTS + LEADING_SPACE_TEXTS)
def test_tiktoken_ids_equal_tiktoken_and_the_tokenizer_json_from_the_same_ranks(ours, tiktoken_reference, text):
    meta = ours("llama3-meta")
    expected = tiktoken_reference.encode(text, allowed_special="all")  # specials typed in text are parsed
    assert meta.encode(text, bos=False) == expected
    assert meta.encode(text) == [meta.bos_id] + expected == ours("llama3").encode(text)
    assert meta.decode(expected, skip_special=False) == tiktoken_reference.decode(expected)


def test_tiktoken_on_the_whole_corpus(ours, tiktoken_reference):
    # Many more merges are exercised by real prose than by the short texts above.
    from tokenizer_fixtures import CORPUS

    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        assert ours("llama3-meta").encode(line, bos=False) == tiktoken_reference.encode(line, disallowed_special=())


def test_tiktoken_special_tokens_and_stop_ids(ours):
    meta = ours("llama3-meta")
    first = SP_VOCAB
    assert (meta.kind, meta.vocab_size, meta.bos_id, meta.eos_id) == ("tiktoken", first + 256, first, first + 1)
    assert meta.eos_ids == (first + 1, first + 8, first + 9)  # Meta's stop tokens: end_of_text, eom_id, eot_id
    assert [meta.piece(first + i) for i in (0, 6, 7, 9)] == [
        "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert meta.token_to_id("<|reserved_special_token_247|>") == first + 255


# -- llama2.c tokenizer.bin ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", TEXTS + LEADING_SPACE_TEXTS)
def test_llama2c_bin_ids_equal_sentencepiece_on_the_model_it_was_exported_from(ours, text):
    processor = spm.SentencePieceProcessor()
    processor.load_from_serialized_proto(sentencepiece_model_bytes())
    llama2c = ours("llama2c")
    assert llama2c.kind == "llama2c" and llama2c.vocab_size == processor.vocab_size()  # size from the file
    if not any(s in text for s in ("<s>", "</s>", "<unk>")):
        assert llama2c.encode(text) == [processor.bos_id()] + processor.encode(text)
        assert llama2c.decode(llama2c.encode(text)) == processor.decode(processor.encode(text))
    assert llama2c.encode(text) == ours("llama2").encode(text)  # typed specials too, as the SentencePiece backend


# -- choosing the file ----------------------------------------------------------------------------------------------

def test_folder_choice_follows_transformers_and_the_content(layouts, tmp_path):
    assert [p.name for p in find_tokenizer_files(layouts["llama2-json+model"])] == [
        "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]
    assert find_tokenizer_files(layouts["llama3"])[0].name == "tokenizer.json"
    assert find_tokenizer_files(layouts["llama3-meta"]) == [layouts["llama3-meta"] / "tokenizer.model"]
    assert find_tokenizer_files(tmp_path) == []
    # A llama2.c checkpoint folder: model.bin beside tok512.bin
    folder = tmp_path / "stories"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"\0" * 64)
    (folder / "tok512.bin").write_bytes(layouts["llama2c"].read_bytes())
    assert find_tokenizer_files(folder) == [folder / "tok512.bin"]
    assert load_tokenizer(folder).kind == "llama2c"
    # Meta's tiktoken file under any name is recognised by its content, and so is a renamed tokenizer.json.
    (tmp_path / "llama3.tok").write_bytes((layouts["llama3-meta"] / "tokenizer.model").read_bytes())
    assert load_tokenizer(tmp_path / "llama3.tok").kind == "tiktoken"
    # A byte-level tokenizer.json beside a SentencePiece tokenizer.model wins, as in transformers.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "tokenizer.json").write_bytes((layouts["llama3"] / "tokenizer.json").read_bytes())
    (mixed / "tokenizer.model").write_bytes(sentencepiece_model_bytes())
    assert load_tokenizer(mixed).kind == "hf-json"


def test_from_file_still_loads_a_sentencepiece_model(layouts):
    tok = Tokenizer.from_file(layouts["llama2"] / "tokenizer.model")
    assert tok.kind == "sentencepiece" and tok.processor.vocab_size() == SP_VOCAB
    assert tok.chat_template == LLAMA2_TEMPLATE  # the side files beside it are read too


def test_empty_token_names_of_early_conversions_fall_back_to_the_model(tmp_path):
    from tokenizer_fixtures import write_llama2_sentencepiece

    write_llama2_sentencepiece(tmp_path)
    # decapoda-research/llama-7b-hf's tokenizer_config.json named every special token "" (and the class LLaMA...)
    (tmp_path / "tokenizer_config.json").write_text(
        '{"bos_token": "", "eos_token": "", "unk_token": "", "tokenizer_class": "LLaMATokenizer"}', encoding="utf-8")
    (tmp_path / "special_tokens_map.json").unlink()
    tok = load_tokenizer(tmp_path)
    assert (tok.bos_id, tok.eos_id, tok.bos_token) == (1, 2, "<s>")


def test_additional_special_tokens_are_matched_in_text(layouts, tmp_path):
    import json
    import shutil

    folder = tmp_path / "smollm"
    shutil.copytree(layouts["smollm"], folder)
    chat = ("<|im_start|>", "<|im_end|>")
    # Make them plain vocabulary entries that only special_tokens_map.json's additional_special_tokens names.
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in chat]
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    del config["added_tokens_decoder"], config["additional_special_tokens"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = load_tokenizer(folder)
    assert tok.encode("<|im_start|>hi<|im_end|>") == [1] + tok.encode("hi") + [2]
    assert tok.is_special(1) and tok.is_special(2)


def test_gguf_vocabulary_is_sentencepiece_only_and_keeps_added_tokens(ours, tmp_path):
    gguf = pytest.importorskip("gguf")
    from llama_core.errors import TokenizerError
    from llama_core.formats.gguf_export import _add_vocabulary

    writer = gguf.GGUFWriter(tmp_path / "vocab.gguf", "llama")
    alpaca = ours("alpaca")
    _add_vocabulary(writer, alpaca, alpaca.vocab_size)  # 512 pieces + [PAD] past the model
    llama2c = ours("llama2c")
    _add_vocabulary(gguf.GGUFWriter(tmp_path / "l2c.gguf", "llama"), llama2c, llama2c.vocab_size)
    with pytest.raises(TokenizerError, match=r"GGUF export writes SentencePiece vocabularies .* this is a hf-json"):
        llama3 = ours("llama3")
        _add_vocabulary(gguf.GGUFWriter(tmp_path / "l3.gguf", "llama"), llama3, llama3.vocab_size)


@pytest.mark.parametrize("legacy", [True, False])
def test_legacy_decides_the_space_after_a_special_token(tmp_path, legacy):
    import json

    from tokenizer_fixtures import write_llama2_sentencepiece

    write_llama2_sentencepiece(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": legacy}), encoding="utf-8")
    ours, reference = load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in ("<s>hi</s>there", "a<s>b", "[INST]<s>[INST] x"):
        assert ours.encode(text) == reference.encode(text), text
    assert (ours.encode("<s>hi", bos=False)[1] == ours.encode("hi", bos=False)[0]) == legacy
