"""Property-based tests (hypothesis) of the code every request and file goes through: the
sampling stages, the bundled tokenizer, the llama2.c header parser, and the app's field checks."""

from __future__ import annotations

import math
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_core.errors import CheckpointError, ParameterError
from llama_core.formats.llama2c import MAGIC, V1_HEADER_BYTES, read_header
from llama_core.sampling import SamplingParams, sample, sampler_stages
from llama_core.tokenizer import Tokenizer
from playground.controls import SLIDERS, check_field

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64

sampling_params = st.builds(
    SamplingParams,
    temperature=st.one_of(st.just(0.0), st.floats(0.01, 2.0)),
    top_k=st.integers(0, VOCAB + 10),
    top_p=st.floats(0.001, 1.0),
    min_p=st.floats(0.0, 1.0),
    repetition_penalty=st.floats(0.05, 10.0),
    presence_penalty=st.floats(-2.0, 2.0),
    frequency_penalty=st.floats(-2.0, 2.0),
    seed=st.integers(0, 2**63 - 1),
)
# Finite logits as big as a model can produce, with some already masked to -inf (never all of them).
logits = st.lists(st.one_of(st.floats(-1e4, 1e4), st.just(-math.inf)), min_size=VOCAB, max_size=VOCAB).filter(
    lambda values: any(math.isfinite(v) for v in values)).map(torch.tensor)


@settings(max_examples=150, deadline=None)
@given(logits, sampling_params, st.lists(st.integers(0, VOCAB - 1), max_size=20))
def test_A1_A4_sampling_stages_never_produce_nan_and_pick_an_allowed_token(raw, params, history):
    seen = torch.zeros(VOCAB, dtype=torch.bool)
    counts = torch.zeros(VOCAB)
    for token in history:
        seen[token], counts[token] = True, counts[token] + 1
    stages = list(sampler_stages(raw, params, seen, counts))
    final = stages[-1][1]
    assert not torch.isnan(final).any() and torch.isfinite(final).any()
    probs = torch.softmax(final, dim=-1)
    assert not torch.isnan(probs).any() and math.isclose(float(probs.sum()), 1.0, rel_tol=1e-5)
    token = sample(final, torch.Generator().manual_seed(params.seed))
    assert 0 <= token < VOCAB and torch.isfinite(final[token]) and probs[token] > 0
    assert torch.isfinite(raw[token])  # a token masked before sampling is never chosen


@pytest.fixture(scope="module")
def bundled_tokenizer():
    return Tokenizer.from_file(REPO / "models" / "tokenizer.model")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_bundled_tokenizer_round_trips_any_unicode(bundled_tokenizer, text):
    # No normalisation and byte fallback: every string comes back, except that U+2581 ("▁"), which
    # SentencePiece uses to write a space, comes back as the space it stands for.
    ids = bundled_tokenizer.encode(text, bos=False)
    assert all(0 <= i < bundled_tokenizer.vocab_size for i in ids)
    assert bundled_tokenizer.decode(ids) == text.replace("\u2581", " ")


def header_file(data: bytes) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=".bin", delete=False)
    handle.write(data)
    handle.close()
    return Path(handle.name)


def parse(data: bytes):
    path = header_file(data)
    try:
        return read_header(path)
    finally:
        path.unlink()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_B9_llama2c_header_parser_on_random_bytes_only_raises_checkpoint_errors(data):
    try:
        header = parse(data)
    except CheckpointError as error:
        assert str(error).startswith("tmp")  # the message names the file
    else:
        assert header.expected_bytes == len(data)  # accepted only when the size matches exactly


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-2**31, 2**31 - 1), min_size=7, max_size=7), st.booleans(), st.booleans(),
       st.integers(0, 4096))
def test_B9_llama2c_header_parser_on_random_headers_only_raises_checkpoint_errors(params, v1, shared, tail):
    if v1:
        head = struct.pack("<Ii7iB", MAGIC, 1, *params, shared).ljust(V1_HEADER_BYTES, b"\0")
    else:
        head = struct.pack("<7i", *params)
    try:
        header = parse(head + bytes(tail))
    except CheckpointError:
        return
    assert header.expected_bytes == len(head) + tail
    assert min(header.args.dim, header.args.n_layers, header.args.n_heads, header.args.vocab_size) > 0


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
              st.text(max_size=30)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=10,
)
FIELDS = [*SLIDERS, "prompt", "system", "template", "seed", "stop", "capture_attention"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), json_values, st.one_of(st.none(), st.integers(2, 4096)))
def test_A17_any_json_value_in_any_field_is_accepted_or_refused_with_its_name(name, value, context):
    try:
        clean = check_field(name, value, context)
    except ParameterError as error:
        assert str(error).startswith(f"{name} must be ") and ", got " in str(error)
        assert len(str(error)) < 600  # a huge value is echoed only in part
        return
    if name in SLIDERS:
        assert isinstance(clean, (int, float)) and not isinstance(clean, bool) and math.isfinite(clean)
        assert SLIDERS[name].minimum <= clean
