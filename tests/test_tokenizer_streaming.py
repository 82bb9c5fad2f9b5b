"""Streaming and the per-token display on every backend: exact deltas, whole characters."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizer_fixtures import write_all_layouts

from llama_core.tokenizer import StreamDecoder, Tokenizer, load_tokenizer

BACKENDS = ["llama2", "llama2-json", "llama3", "llama3-meta", "smollm", "llama2c"]
TEXTS = [
    "emoji 🦙🔥 and a family 👨‍👩‍👧 in a row",
    "日本語のテキストと中文字符",
    "Café naïve résumé — façade, Zürich",
    "  leading spaces, two  inside,\ttabs\nand\n\nnewlines   ",
    "é你🦙",
]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[str, Tokenizer]:
    paths = write_all_layouts(tmp_path_factory.mktemp("layouts"))
    return {name: load_tokenizer(paths[name]) for name in BACKENDS}


def stream(tokenizer: Tokenizer, context: list[int], ids: list[int]) -> list[str]:
    decoder = StreamDecoder(tokenizer, context)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


def expected_continuation(tokenizer: Tokenizer, prompt: list[int], generated: list[int]) -> str:
    return tokenizer.decode(prompt + generated)[len(tokenizer.decode(prompt)):]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("name", BACKENDS)
def test_deltas_concatenate_to_the_full_decode(tokenizers, name, text):
    tok = tokenizers[name]
    prompt = tok.encode("Once upon a time")
    generated = tok.encode(" " + text, bos=False)
    deltas = stream(tok, prompt, generated)
    assert "".join(deltas) == expected_continuation(tok, prompt, generated)
    assert "".join(deltas).strip(" ") == text.strip(" ")  # SentencePiece adds its dummy-prefix space
    assert all("\ufffd" not in d for d in deltas)  # never half a character


@pytest.mark.parametrize("name", BACKENDS)
def test_special_tokens_add_no_text_to_the_stream(tokenizers, name):
    tok = tokenizers[name]
    generated = tok.encode("Hi", bos=False) + [tok.eos_id]
    prompt = tok.encode("x")
    assert "".join(stream(tok, prompt, generated)).strip() == tok.decode(generated) == "Hi"
    assert tok.decode(generated, skip_special=False) == "Hi" + tok.eos_token
    assert tok.decode(prompt + generated, skip_special=False).startswith(tok.bos_token if tok.add_bos else "x")


@pytest.mark.parametrize("name", BACKENDS)
def test_display_shows_whole_characters(tokenizers, name):
    tok = tokenizers[name]
    ids = tok.encode("é 你 🦙 Zürich", bos=False)
    shown = tok.display_pieces(ids)
    assert len(shown) == len(ids)
    for character in ("é", "你", "🦙"):
        assert any(character in piece for piece in shown), (character, shown)
    assert all("\ufffd" not in piece and "<0x" not in piece for piece in shown)
    # Together the pieces are the text (SentencePiece's dummy prefix adds the first space).
    assert "".join(shown).removeprefix(" ") == "é 你 🦙 Zürich"
    # A group's followers show nothing, so a character is never shown twice.
    assert "".join(shown).count("🦙") == 1


@pytest.mark.parametrize("name", BACKENDS)
def test_piece_shows_spaces_newlines_and_specials_as_themselves(tokenizers, name):
    tok = tokenizers[name]
    word = tok.encode("Alice was", bos=False)[-1]
    assert tok.piece(word) == " was"  # '▁was' and 'Ġwas' alike
    assert "\n" in [tok.piece(i) for i in tok.encode("a\nb", bos=False)]  # 'Ċ' and <0x0A> alike
    assert tok.piece(tok.eos_id) == tok.eos_token and tok.is_special(tok.eos_id)
    lone = [i for i in tok.encode("🦙", bos=False) if tok.is_byte(i)]
    assert lone and all(tok.piece(i).startswith("<0x") for i in lone if len(tok.token_bytes(i)) == 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=30), name=st.sampled_from(BACKENDS))
def test_arbitrary_unicode_streams_exactly(tokenizers, text, name):
    tok = tokenizers[name]
    ids = tok.encode(text, bos=False)
    prompt = tok.encode("x")
    assert "".join(stream(tok, prompt, ids)) == expected_continuation(tok, prompt, ids)
    # Byte tokens that only together make a character are shown once, on the first of them.
    assert "\ufffd" not in "".join(tok.display_pieces(ids)) or "\ufffd" in text
