import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llama_core.errors import TokenizerError
from llama_core.tokenizer import StreamDecoder, Tokenizer

TEXTS = [
    "Alice was beginning to get very tired",
    "emoji 🦙🔥 and a family 👨‍👩‍👧 in a row",
    "日本語のテキストと中文字符",
    "Café naïve résumé — façade, Zürich",
    "  leading spaces, two  inside,\ttabs\nand\n\nnewlines  ",
    "digits 1234567890 and 3.14159",
]


def stream(tokenizer: Tokenizer, context: list[int], ids: list[int]) -> list[str]:
    decoder = StreamDecoder(tokenizer, context)
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_id
    assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("text", TEXTS)
def test_stream_deltas_concatenate_to_the_full_decode(tokenizer, text):
    prompt = tokenizer.encode("Once upon a time")
    generated = tokenizer.encode(" " + text, bos=False)
    deltas = stream(tokenizer, prompt, generated)
    expected = tokenizer.decode(prompt + generated)[len(tokenizer.decode(prompt)) :]
    assert "".join(deltas) == expected
    assert all("\ufffd" not in d for d in deltas)  # never half a character


def test_stream_without_context_matches_plain_decode(tokenizer):
    ids = tokenizer.encode("🦙 llama", bos=False)
    assert "".join(stream(tokenizer, [], ids)) == tokenizer.decode(ids)


def test_bytes_of_one_character_are_held_back_until_complete(tokenizer):
    ids = tokenizer.encode("🦙", bos=False)  # '▁' then the emoji's four UTF-8 bytes
    assert [tokenizer.is_byte(i) for i in ids] == [False, True, True, True, True]
    deltas = stream(tokenizer, tokenizer.encode("a"), ids)
    assert deltas == [" ", "", "", "", "🦙", ""]


def test_piece_display(tokenizer):
    space_piece = tokenizer.encode(" the", bos=False)[0]
    assert tokenizer.piece(space_piece).startswith(" ")
    newline = tokenizer.encode("a\nb", bos=False)
    assert "\n" in [tokenizer.piece(i) for i in newline]
    assert tokenizer.piece(tokenizer.bos_id) == "<s>"
    assert tokenizer.piece(tokenizer.encode("é", bos=False)[-1]) in {"é", "<0xA9>"}


def test_corrupt_tokenizer_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x00\x01 not a sentencepiece model" * 10)
    with pytest.raises(TokenizerError, match="tokenizer.model: not a valid SentencePiece model"):
        Tokenizer.from_file(bad)
    with pytest.raises(TokenizerError, match="not found"):
        Tokenizer.from_file(tmp_path / "missing.model")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=40))
def test_arbitrary_unicode_round_trips_and_streams(tokenizer, text):
    assume(not any(special in text for special in ("<s>", "</s>", "<unk>")))  # typed specials become their ids
    ids = tokenizer.encode(text, bos=False)
    assert tokenizer.decode(ids) == text
    prompt = tokenizer.encode("x")
    expected = tokenizer.decode(prompt + ids)[len(tokenizer.decode(prompt)) :]
    assert "".join(stream(tokenizer, prompt, ids)) == expected
