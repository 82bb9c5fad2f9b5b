"""Checklist A (docs/reliability.md): every generation parameter, sent through the API as
gradio_client sends it and as a raw HTTP client can (NaN included), is checked before the
request joins the queue; the answer names the parameter, the allowed range and the value; and
the server goes on serving. On the app that the plain modules share (python app.py)."""

from __future__ import annotations

import math
import time

import psutil
import pytest

from app_server import FAST_MODEL, REPO, api_client, raw_join, raw_run, rejected_fields, shared_server
from llama_core.tokenizer import Tokenizer
from playground.controls import SLIDERS

STREAM_FIELDS = dict(model_label=FAST_MODEL, prompt="In the beginning", template="plain", system="",
                     temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, presence_penalty=0.0,
                     frequency_penalty=0.0, max_new_tokens=3, seed=1, stop="", capture_attention=False)
API_FIELDS = dict(prompt="In the beginning", model=FAST_MODEL, max_new_tokens=3, temperature=0.0, top_k=0, top_p=1.0,
                  min_p=0.0, repetition_penalty=1.0, seed=1, stop="", template="plain")
CONTEXT = 512  # the bundled models' context window


@pytest.fixture(scope="module")
def server(request):
    return shared_server(request.config)


@pytest.fixture(scope="module")
def client(server):
    client = api_client(server.url)
    client.predict(FAST_MODEL, 96, api_name="/load_model")  # known context from here on: all checks run pre-queue
    return client


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_file(REPO / "models" / "playground-1m" / "tokenizer.model")


def generate(client, **changes) -> dict:
    return client.predict(**{**API_FIELDS, **changes}, api_name="/generate")


def stream(client, **changes) -> tuple:
    return client.predict(**{**STREAM_FIELDS, **changes}, api_name="/stream")


def rejection(client, endpoint: str = "/generate", **changes) -> str:
    """The validation message gradio_client raises for a request that must not reach the queue."""
    from gradio_client.exceptions import AppError, ValidationError

    fields = {**(API_FIELDS if endpoint == "/generate" else STREAM_FIELDS), **changes}
    with pytest.raises((ValidationError, AppError)) as raised:
        client.predict(**fields, api_name=endpoint)
    assert isinstance(raised.value, ValidationError), f"answered in the queue, not before it: {raised.value}"
    return str(raised.value)


def raw_rejection(server, endpoint: str = "/stream", **changes) -> dict[str, str]:
    """The per-field messages of a raw queue join that must be refused with 422."""
    fields = {**(STREAM_FIELDS if endpoint == "/stream" else API_FIELDS), **changes}
    status, body, _ = raw_join(server.url, endpoint, list(fields.values()))
    assert status == 422, (status, body)
    return rejected_fields(body)


def assert_serves(client, model: str = FAST_MODEL) -> None:
    """The normal request that follows every fault: the loaded model still generates."""
    result = generate(client, prompt="The Python interpreter", model=model, max_new_tokens=3)
    assert result["timing"]["tokens"] >= 1 and result["error"] is None


def test_A1_temperature_zero_is_greedy_and_deterministic(server, client):
    first, second = generate(client, temperature=0, seed=1, max_new_tokens=12), generate(client, temperature=0, seed=2,
                                                                                        max_new_tokens=12)
    assert first["text"] == second["text"] and first["text"]
    for token in first["tokens"]:
        assert math.isfinite(token["logprob"]) and 0 < token["prob"] <= 1 and token["prob_filtered"] == 1.0
        assert token["token_id"] == max(token["top"], key=lambda alt: alt[2])[0]  # the argmax of the raw distribution
    status, _, messages = raw_run(server.url, "/stream", list({**STREAM_FIELDS, "temperature": 0}.values()))
    assert status == 200 and messages[-1]["success"] and "stop: **length**" in messages[-1]["output"]["data"][1]
    assert_serves(client)


def test_A2_negative_temperature_is_rejected_with_the_range(server, client):
    message = "temperature must be a finite number in [0, 2] (0 = greedy), got -0.5"
    assert message in rejection(client, temperature=-0.5)
    assert message in rejection(client, "/stream", temperature=-0.5)
    assert raw_rejection(server, temperature=-0.5) == {"temperature": message}
    assert_serves(client)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_A3_non_finite_temperature_sent_raw_is_rejected(server, client, value):
    expected = {"temperature": f"temperature must be a finite number in [0, 2] (0 = greedy), got {value!r}"}
    assert raw_rejection(server, "/stream", temperature=value) == expected
    assert raw_rejection(server, "/generate", temperature=value) == expected
    assert_serves(client)


def test_A4_temperature_below_001_is_rejected_and_001_samples_finite_probabilities(server, client):
    assert "temperature must be 0 (greedy) or in [0.01, 2], got 0.005" in rejection(client, temperature=0.005)
    assert "got 1e-09" in raw_rejection(server, temperature=1e-9)["temperature"]
    result = generate(client, temperature=0.01, max_new_tokens=8)
    assert all(math.isfinite(t["logprob"]) and 0 <= t["prob_filtered"] <= 1 for t in result["tokens"])
    assert all(math.isfinite(alt[2]) and math.isfinite(alt[3]) for t in result["tokens"] for alt in t["top"])
    assert_serves(client)


def test_A5_temperature_far_above_the_range_is_rejected(server, client):
    assert "temperature must be a finite number in [0, 2] (0 = greedy), got 1000000.0" in rejection(
        client, temperature=1e6)
    assert "got 2.0001" in raw_rejection(server, temperature=2.0001)["temperature"]
    assert_serves(client)


def test_A6_top_p_outside_its_range_is_rejected_and_1_means_off(server, client):
    for bad in (0, -0.1, 1.0001):
        assert f"top_p must be a finite number in [0.01, 1] (1 = off), got {bad!r}" in rejection(client, top_p=bad)
    assert "got nan" in raw_rejection(server, top_p=math.nan)["top_p"]
    off = generate(client, temperature=1.0, seed=5, top_p=1.0, max_new_tokens=10)
    assert off["text"] == generate(client, temperature=1.0, seed=5, max_new_tokens=10)["text"]
    assert all(alt[3] > 0 for t in off["tokens"] for alt in t["top"])  # no alternative was filtered out
    assert_serves(client)


def test_A7_top_k_must_be_a_whole_number_in_range(server, client):
    for bad in (-2, -1, 5.5, 201):
        assert f"top_k must be an integer in [0, 200] (0 = off), got {bad!r}" in rejection(client, top_k=bad)
    assert generate(client, top_k=200, temperature=1.0, max_new_tokens=3)["timing"]["tokens"] == 3
    kept = generate(client, top_k=1, temperature=1.0, max_new_tokens=6)  # top_k=1 samples the argmax
    assert kept["text"] == generate(client, temperature=0, max_new_tokens=6)["text"]
    assert_serves(client)


def test_A9_repetition_penalty_must_be_positive_and_finite(server, client):
    for bad in (0, -1, 0.49, 2.01):
        assert "repetition_penalty must be a finite number in [0.5, 2] (1 = off)" in rejection(
            client, repetition_penalty=bad)
    for bad in (math.nan, math.inf):
        assert f"got {bad!r}" in raw_rejection(server, repetition_penalty=bad)["repetition_penalty"]
    assert_serves(client)


def test_A10_max_new_tokens_below_one_is_rejected(server, client):
    for bad in (0, -5, 2.5):
        assert f"max_new_tokens must be an integer in [1, {CONTEXT - 1}], got {bad!r}" in rejection(
            client, max_new_tokens=bad)
    assert_serves(client)


def test_A11_huge_max_new_tokens_is_rejected_before_any_allocation(server, client):
    process = psutil.Process(server.process.pid)
    before = process.memory_info().rss
    for huge in (10_000, 10**9):
        message = rejection(client, max_new_tokens=huge)
        assert f"max_new_tokens must be an integer in [1, {CONTEXT - 1}], got {huge}" in message
    # Within the slider, the prompt is what makes it too long: the message gives the arithmetic.
    assert (f"max_new_tokens must be at most {CONTEXT - 4} here: prompt tokens (4) + max_new_tokens must be ≤ the "
            f"context length ({CONTEXT}), got {CONTEXT - 3}") in rejection(client, max_new_tokens=CONTEXT - 3)
    assert process.memory_info().rss < before * 1.02  # nothing was allocated for the refused runs
    assert_serves(client)


def prompt_of(tokenizer, n_tokens: int) -> str:
    """A prompt that encodes (with BOS) to exactly n_tokens."""
    text = " the" * (n_tokens - 2)
    assert len(tokenizer.encode(text)) == n_tokens
    return text


def test_A12_prompt_must_leave_room_in_the_context_window(server, client, tokenizer):
    longest = prompt_of(tokenizer, CONTEXT - 1)
    result = generate(client, prompt=longest, max_new_tokens=1)
    assert result["timing"]["tokens"] == 1 and len(result["prompt_tokens"]) == CONTEXT - 1
    assert (f"max_new_tokens must be at most 1 here: prompt tokens ({CONTEXT - 1}) + max_new_tokens must be ≤ "
            f"the context length ({CONTEXT}), got 2") in rejection(client, prompt=longest, max_new_tokens=2)
    too_long = prompt_of(tokenizer, CONTEXT)
    expected = f"prompt must be at most {CONTEXT - 1} tokens for this model (context {CONTEXT}), got '{CONTEXT} tokens'"
    assert expected in rejection(client, prompt=too_long, max_new_tokens=1)
    assert raw_rejection(server, prompt=too_long, max_new_tokens=1) == {"prompt": expected}
    assert_serves(client)


def test_A13_megabyte_prompt_is_refused_before_tokenizing(server, client):
    start = time.perf_counter()
    fields = raw_rejection(server, prompt="a" * 1_000_000)
    assert fields == {"prompt": "prompt must be at most 20000 characters, got '1000000 characters'"}
    assert time.perf_counter() - start < 5  # no tokenizing of a megabyte (that alone takes seconds here)
    assert "prompt must be at most 20000 characters" in rejection(client, prompt="b" * 20_001)
    assert_serves(client)


def test_A14_empty_or_blank_prompt_is_rejected(server, client):
    for blank in ("", "   ", "\n\t "):
        assert f"prompt must be a non-empty text, got {blank!r}" in rejection(client, prompt=blank)
    assert raw_rejection(server, "/generate", prompt="")["prompt"] == "prompt must be a non-empty text, got ''"
    assert_serves(client)


def test_A15_stop_sequences_are_bounded_and_never_leak(server, client):
    allowed = "stop must be a list of at most 4 non-empty strings of at most 64 characters"
    assert allowed in rejection(client, stop="a\nb\nc\nd\ne")
    assert allowed in rejection(client, stop="x" * 65)
    assert "stop must be a text with one stop sequence per line, got ['a']" in raw_rejection(server, stop=["a"])["stop"]
    full = generate(client, prompt="And God said", max_new_tokens=24)
    tokens = [t["text"] for t in full["tokens"]]
    # A stop string that starts inside one token and ends inside the next (one line: the box splits lines).
    stop = next(candidate for i in range(2, len(tokens) - 1)
                if len(tokens[i]) >= 2 and tokens[i + 1]
                and (candidate := tokens[i][-2:] + tokens[i + 1][:1]).splitlines() == [candidate]
                and "\\" not in candidate and full["text"].index(candidate) > 0)
    expected = full["text"][: full["text"].index(stop)]
    cut = generate(client, prompt="And God said", max_new_tokens=24, stop=stop)
    assert cut["text"] == expected and cut["stop_reason"] == "stop_sequence"
    job = client.submit(**{**STREAM_FIELDS, "prompt": "And God said", "max_new_tokens": 24, "stop": stop},
                        api_name="/stream")
    job.result()
    streamed = [output[0] for output in job.outputs()]
    assert streamed[-1] == expected and all(expected.startswith(text) for text in streamed)  # nothing leaked, ever
    assert_serves(client)


def test_A16_seeds_out_of_range_are_rejected_and_minus_one_draws_one(server, client):
    allowed = "seed must be -1 (random) or an integer in [0, 2^63 - 1]"
    for bad in (-2, 2**63, 1.5, "7"):
        assert f"{allowed}, got {bad!r}" in rejection(client, seed=bad)
    assert f"{allowed}, got nan" in raw_rejection(server, seed=math.nan)["seed"]
    drawn = [generate(client, seed=-1, temperature=1.0) for _ in range(2)]
    assert all(isinstance(r["seed"], int) and 0 <= r["seed"] < 2**63 for r in drawn)
    assert drawn[0]["seed"] != drawn[1]["seed"]
    replay = generate(client, seed=drawn[0]["seed"], temperature=1.0)
    assert replay["text"] == drawn[0]["text"]  # the reported seed reproduces the run
    assert generate(client, seed=0, temperature=1.0)["seed"] == 0  # 0 is a seed like any other (no xorshift here)
    assert generate(client, seed=2**63 - 1, temperature=1.0)["seed"] == 2**63 - 1
    assert_serves(client)


def test_A17_wrong_types_get_a_message_and_the_server_keeps_serving(server, client):
    assert "temperature must be a finite number in [0, 2] (0 = greedy), got 'hot'" in rejection(
        client, temperature="hot")
    assert "prompt must be a text, got 'list'" in rejection(client, prompt=["In", "the"])
    assert "prompt must be a text, got 'NoneType'" in rejection(client, prompt=None)
    fields = raw_rejection(server, top_k=None, capture_attention="yes", template=3, system=["x"])
    assert fields == {
        "top_k": "top_k must be an integer in [0, 200] (0 = off), got None",
        "capture_attention": "capture_attention must be true or false, got 'yes'",
        "template": "template must be one of plain, alpaca, vicuna, llama-2-chat, llama-3-instruct, chatml, zephyr, "
                    "got 3",
        "system": "system must be a text of at most 2000 characters, got ['x']",
    }
    assert_serves(client)


@pytest.mark.parametrize("name", list(SLIDERS))
def test_A18_every_slider_at_and_beyond_its_bounds_through_the_api(server, client, tokenizer, name):
    control = SLIDERS[name]
    top, prompt = control.maximum, STREAM_FIELDS["prompt"]
    if name == "max_new_tokens":  # its maximum is the room the prompt leaves in the window: keep that short
        prompt, top = prompt_of(tokenizer, CONTEXT - 12), 12
    epsilon = 1 if control.integer else 0.001
    for accepted in (control.minimum, top):
        outputs = stream(client, prompt=prompt, **{name: accepted})
        assert "stop: **" in outputs[1], outputs[1]
    for refused in (control.minimum - epsilon, top + epsilon):
        message = rejection(client, "/stream", prompt=prompt, **{name: refused})
        assert f"- {name}: {name} must be" in message and f"got {refused!r}" in message
        assert f"[{control.minimum:g}, " in message or "prompt tokens" in message
    for refused in (math.nan, math.inf, -math.inf, "x", [1], True):
        fields = raw_rejection(server, **{name: refused})
        assert list(fields) == [name] and f"{name} must be {control.allowed()}".split(" in [")[0] in fields[name]
        assert fields[name].endswith(f"got {refused!r}")
    assert_serves(client)


@pytest.mark.parametrize("label", ["/etc/passwd", "../../x.pth", str(REPO / "models" / "playground-4m"), ""])
def test_A19_model_outside_the_listed_choices_is_refused(server, client, label):
    from gradio_client.exceptions import AppError

    assert "model must be one of 'playground-16m (bundled)'" in rejection(client, "/stream", model_label=label)
    if label:  # "" means the default model on /generate
        assert "model must be one of" in raw_rejection(server, "/generate", model=label)["model"]
    with pytest.raises(AppError, match="is not in the list of choices"):
        client.predict(label, 96, api_name="/load_model")
    assert_serves(client)


def test_A20_alternatives_per_token_are_capped(server, client):
    result = generate(client, temperature=2.0, max_new_tokens=20, seed=3)
    assert result["tokens"] and all(len(t["top"]) <= 6 for t in result["tokens"])  # 5, plus the chosen token
    assert all(any(alt[0] == t["token_id"] for alt in t["top"]) for t in result["tokens"])
    assert_serves(client)


def test_A21_token_ids_are_not_accepted_as_a_prompt(server, client):
    assert "prompt must be a text, got 'list'" in rejection(client, prompt=[1, 871, 266])
    assert raw_rejection(server, "/generate", prompt=[1, 99999])["prompt"] == "prompt must be a text, got 'list'"
    assert_serves(client)
