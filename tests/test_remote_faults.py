"""Faults of a remote server, met by the engine's client (llama_core.backends) against a REAL llama_cpp.server:
killed mid-stream, paused (SIGSTOP) past the timeout, rate-limited (429 + Retry-After) then served, garbage JSON,
a truncated stream, nothing listening, 4xx/5xx answers.

Each must end in a RemoteError whose message names the server and what happened; whatever was yielded before the
fault stays (the tests collect it before the error and compare it with a clean run of the same request); and the
next request to a healthy server works. Faults the real server cannot be made to show on demand (429, garbled or
cut streams, 503) come from the fault proxy in front of it (tests/fault_proxy.py).

Clean runs are the comparison: greedy (temperature 0) on the same server and the same GGUF, one thread, so a
repeated request computes the same thing — except that llama-cpp-python may reuse the prompt's cached KV entries,
evaluating its last token alone instead of in the prompt's batch, an fp32 re-ordering of ~1e-6 relative. That can
change a greedy token only at a near-tie, so `assert_prefix` checks that the top-2 log-probability gap of every token
it compares exceeds 1e-3 (below it the comparison would not be sound); log-probabilities agree within 1e-4 absolute.
"""

from __future__ import annotations

import email.utils
import time

import pytest
from fault_proxy import FaultProxy, fault_proxy  # noqa: F401 (fixtures)
from remote_server import closed_port_url, llama_server, remote_gguf  # noqa: F401 (fixtures)

from llama_core import SamplingParams
from llama_core.backends import RemoteConfig, RemoteError, RemoteModel, RemoteServer

PROMPT = "Once upon a time"
TOP_N = 3
SEED = 0  # greedy runs do not draw; the server still takes one
SHORT = SamplingParams(temperature=0.0, max_new_tokens=16)
# About a second of generation on the 1-thread server: a stream that is still running when the test breaks it.
LONG = SamplingParams(temperature=0.0, max_new_tokens=400)
NEAR_TIE = 1e-3
LOGPROB_TOLERANCE = 1e-4


def client(url: str, **config) -> RemoteServer:
    return RemoteServer(RemoteConfig(url, **config))


def complete(server: RemoteServer, model_id: str, params: SamplingParams = SHORT, prompt: str = PROMPT):
    return server.complete_stream(model_id, prompt, params, TOP_N, seed=SEED)


def collect(stream) -> tuple[list, RemoteError | None]:
    """Everything the stream yields before it fails, and its RemoteError (None if it ends normally)."""
    items = []
    try:
        for item in stream:
            items.append(item)
    except RemoteError as error:
        return items, error
    return items, None


def reference(server: RemoteServer, model_id: str, params: SamplingParams = SHORT) -> list:
    tokens, error = collect(complete(server, model_id, params))
    assert error is None, f"the clean run failed: {error}"
    return tokens


def assert_prefix(partial: list, clean: list) -> None:
    """The tokens kept from a broken run are the clean run's first tokens, with the same probabilities."""
    assert len(partial) <= len(clean)
    for i, (ours, theirs) in enumerate(zip(partial, clean)):
        best = sorted((logprob for _, logprob in theirs.top), reverse=True)
        if len(best) >= 2:  # a near-tie could flip under the cached prompt's re-ordering (module docstring)
            assert best[0] - best[1] > NEAR_TIE, f"token {i} {theirs.text!r} is a near-tie; choose another prompt"
        assert ours.text == theirs.text, f"token {i}: {ours.text!r} kept, the clean run has {theirs.text!r}"
        assert ours.logprob == pytest.approx(theirs.logprob, abs=LOGPROB_TOLERANCE)


def assert_serves(server: RemoteServer, model_id: str, clean: list) -> None:
    """The next request goes through and gives the clean run's tokens."""
    tokens, error = collect(complete(server, model_id))
    assert error is None, f"the request after the fault failed: {error}"
    assert_prefix(tokens, clean)
    assert len(tokens) == len(clean)


def assert_names(error: RemoteError, url: str, *what: str) -> str:
    """The message names the server and, in some words of `what` (any one), what happened."""
    message = str(error)
    assert url in message, f"the message does not name the server {url}: {message}"
    assert any(word.lower() in message.lower() for word in what), f"expected one of {what} in: {message}"
    return message


@pytest.fixture
def remote(llama_server) -> RemoteServer:
    return client(llama_server.url, timeout_s=30)


@pytest.fixture
def clean(remote, llama_server) -> list:
    return reference(remote, llama_server.model_id)


def test_server_killed_mid_stream(llama_server, remote):
    model = llama_server.model_id
    clean_long = reference(remote, model, LONG)
    stream = complete(remote, model, LONG)
    first = [next(stream) for _ in range(3)]
    llama_server.kill()
    started = time.monotonic()
    rest, error = collect(stream)
    assert error is not None, "the stream of a killed server ended without an error"
    assert time.monotonic() - started < 10  # the reset is noticed at once, not after timeout_s (30 s)
    partial = first + rest
    assert 3 <= len(partial) < LONG.max_new_tokens
    assert_prefix(partial, clean_long)
    assert_names(error, llama_server.url, "closed", "broke off", "reset", "connection", "ended")
    llama_server.restart()  # same port: the client keeps its URL
    assert_serves(remote, model, clean_long[: SHORT.max_new_tokens])


def test_server_paused_past_the_timeout_mid_stream(llama_server, clean):
    timeout_s = 1.0
    remote = client(llama_server.url, timeout_s=timeout_s)
    model = llama_server.model_id
    clean_long = reference(remote, model, LONG)
    stream = complete(remote, model, LONG)
    first = [next(stream) for _ in range(3)]
    llama_server.pause()
    started = time.monotonic()
    rest, error = collect(stream)
    waited = time.monotonic() - started
    llama_server.resume()
    assert error is not None, "the stream of a paused server ended without an error"
    # The socket may still hold events sent before the pause; then nothing for timeout_s.
    assert timeout_s * 0.9 <= waited < timeout_s + 5
    partial = first + rest
    assert 3 <= len(partial) < LONG.max_new_tokens
    assert_prefix(partial, clean_long)
    assert_names(error, llama_server.url, "timeout", "did not answer", "within", "timed out")
    assert_serves(remote, model, clean)


def test_server_paused_before_the_request(llama_server, clean):
    remote = client(llama_server.url, timeout_s=1.0, connect_timeout_s=1.0)
    llama_server.pause()  # the kernel still accepts the connection; nothing reads it
    started = time.monotonic()
    try:
        with pytest.raises(RemoteError) as caught:
            remote.list_models()
        assert time.monotonic() - started < 6
        tokens, error = collect(complete(remote, llama_server.model_id))
    finally:
        llama_server.resume()
    assert_names(caught.value, llama_server.url, "timeout", "did not answer", "within", "timed out")
    assert tokens == [] and error is not None
    assert [m.id for m in remote.list_models()] == [llama_server.model_id]
    assert_serves(remote, llama_server.model_id, clean)


def test_rate_limited_then_served_after_retry_after(llama_server, fault_proxy, clean):
    remote = client(fault_proxy.url, timeout_s=30, max_retries=3, max_retry_wait_s=10)
    fault_proxy.rate_limit(times=1, retry_after=1)
    tokens, error = collect(complete(remote, llama_server.model_id))
    assert error is None, f"a single 429 with Retry-After: 1 should be retried: {error}"
    assert_prefix(tokens, clean)
    assert len(tokens) == len(clean)
    limited, served = fault_proxy.requests
    assert (limited.status, served.status) == (429, 200)
    assert served.arrived - limited.ended >= 0.95, "the retry came before Retry-After (1 s) had passed"
    assert served.arrived - limited.ended < 5


def test_retry_after_as_an_http_date(llama_server, fault_proxy, clean):
    remote = client(fault_proxy.url, timeout_s=30, max_retries=3, max_retry_wait_s=10)
    # Whole seconds: a date 2 s ahead is between 1 and 2 s away once formatted.
    fault_proxy.rate_limit(times=1, retry_after=email.utils.formatdate(time.time() + 2, usegmt=True))
    tokens, error = collect(complete(remote, llama_server.model_id))
    assert error is None, f"a 429 with an HTTP-date Retry-After should be retried: {error}"
    assert len(tokens) == len(clean)
    limited, served = fault_proxy.requests
    assert 0.9 <= served.arrived - limited.ended < 5


def test_rate_limited_past_max_retries(llama_server, fault_proxy, clean):
    remote = client(fault_proxy.url, timeout_s=30, max_retries=2, max_retry_wait_s=10)
    fault_proxy.rate_limit(times=3, retry_after=0)
    tokens, error = collect(complete(remote, llama_server.model_id))
    assert tokens == [] and error is not None
    assert_names(error, fault_proxy.url, "429", "rate limit")
    assert [r.status for r in fault_proxy.requests] == [429, 429, 429]  # the first try and max_retries more
    assert_serves(remote, llama_server.model_id, clean)


def test_retry_after_beyond_the_cap_waits_only_the_cap(llama_server, fault_proxy, clean):
    remote = client(fault_proxy.url, timeout_s=30, max_retries=3, max_retry_wait_s=0.5)
    fault_proxy.rate_limit(times=1, retry_after=3600)
    tokens, error = collect(complete(remote, llama_server.model_id))
    assert error is None and len(tokens) == len(clean)
    limited, served = fault_proxy.requests
    assert 0.45 <= served.arrived - limited.ended < 3  # max_retry_wait_s, not the hour asked for


def test_garbage_json_keeps_the_tokens_before_it(llama_server, fault_proxy, clean):
    remote = client(fault_proxy.url, timeout_s=30)
    fault_proxy.garbage_after(5)  # each of llama.cpp's completion events carries one token
    tokens, error = collect(complete(remote, llama_server.model_id))
    assert error is not None, "a malformed event was passed over"
    assert len(tokens) == 5
    assert_prefix(tokens, clean)
    assert_names(error, fault_proxy.url, "json", "malformed")
    assert_serves(remote, llama_server.model_id, clean)


@pytest.mark.parametrize("clean_end", [False, True], ids=["connection-cut", "ended-without-done"])
def test_truncated_stream_keeps_the_tokens_before_it(llama_server, fault_proxy, clean, clean_end):
    remote = client(fault_proxy.url, timeout_s=30)
    fault_proxy.truncate_after(6, clean=clean_end)
    tokens, error = collect(complete(remote, llama_server.model_id))
    assert error is not None, "a stream cut before its end (no finish_reason, no [DONE]) passed as complete"
    assert len(tokens) == 6
    assert_prefix(tokens, clean)
    assert_names(error, fault_proxy.url, "broke off", "ended", "closed", "truncated", "incomplete")
    assert_serves(remote, llama_server.model_id, clean)


def test_nothing_listening():
    url = closed_port_url()
    remote = client(url, connect_timeout_s=2)
    started = time.monotonic()
    with pytest.raises(RemoteError) as caught:
        remote.list_models()
    tokens, error = collect(complete(remote, "any-model"))
    assert time.monotonic() - started < 5  # refused at once, not retried until a timeout
    assert_names(caught.value, url, "connect", "refused", "unreachable", "running")
    assert tokens == [] and error is not None
    assert_names(error, url, "connect", "refused", "unreachable", "running")


def test_server_error_names_the_status_and_the_body(llama_server, fault_proxy, clean):
    remote = client(fault_proxy.url, timeout_s=30)
    fault_proxy.status(503, '{"error": {"message": "model is loading, try later"}}')
    tokens, error = collect(complete(remote, llama_server.model_id))
    assert tokens == [] and error is not None
    assert "model is loading" in assert_names(error, fault_proxy.url, "503")
    fault_proxy.status(502, "upstream gone", on="/v1/models")
    with pytest.raises(RemoteError) as caught:
        remote.list_models()
    assert "upstream gone" in assert_names(caught.value, fault_proxy.url, "502")
    assert_serves(remote, llama_server.model_id, clean)


def test_client_errors_from_the_real_server(llama_server, remote, clean):
    # An operator's typo in the URL's path: the real server answers 404.
    wrong_path = client(f"{llama_server.url}/llama", timeout_s=30)
    with pytest.raises(RemoteError) as caught:
        wrong_path.list_models()
    assert_names(caught.value, f"{llama_server.url}/llama", "404")
    # A prompt longer than n_ctx: llama-cpp-python answers 400 (context_length_exceeded) to a plain request...
    too_long = "x " * (llama_server.n_ctx + 100)
    reason = remote.prompt_logprobs_or_reason(llama_server.model_id, too_long, TOP_N)
    assert isinstance(reason, str) and "maximum context length" in reason
    # ...but to a streamed one it answers 200 and an empty stream (the error stays in its log): that must not
    # pass as a run that generated nothing.
    tokens, error = collect(complete(remote, llama_server.model_id, prompt=too_long))
    assert tokens == [] and error is not None
    assert_names(error, llama_server.url, "without a finish reason", "broke off", "ended")
    assert_serves(remote, llama_server.model_id, clean)


def test_chat_stream_garbage_keeps_the_tokens_before_it(llama_server, fault_proxy):
    remote = client(fault_proxy.url, timeout_s=30)
    messages = [{"role": "user", "content": "Tell me a story."}]
    clean_chat, error = collect(remote.chat_stream(llama_server.model_id, messages, SHORT, TOP_N, seed=SEED))
    assert error is None and len(clean_chat) >= 3
    # llama.cpp's chat stream opens with an event holding only the assistant role: events 2..4 hold 3 tokens.
    fault_proxy.garbage_after(4)
    tokens, error = collect(remote.chat_stream(llama_server.model_id, messages, SHORT, TOP_N, seed=SEED))
    assert error is not None and len(tokens) == 3
    assert [t.text for t in tokens] == [t.text for t in clean_chat[:3]]
    assert_names(error, fault_proxy.url, "json", "malformed")


def test_remote_model_keeps_the_step_records_before_a_fault(llama_server, fault_proxy):
    remote = client(fault_proxy.url, timeout_s=30)
    (info,) = [m for m in remote.list_models() if m.id == llama_server.model_id]
    model = RemoteModel(remote, info)
    clean_steps, error = collect(model.generate(PROMPT, SHORT, top_n=TOP_N))
    assert error is None and len(clean_steps) == SHORT.max_new_tokens
    fault_proxy.truncate_after(4)
    steps, error = collect(model.generate(PROMPT, SHORT, top_n=TOP_N))
    assert error is not None and len(steps) == 4
    assert [s.piece for s in steps] == [s.piece for s in clean_steps[:4]]
    assert [s.index for s in steps] == [0, 1, 2, 3]
    assert_names(error, fault_proxy.url, "broke off", "ended", "closed", "truncated", "incomplete")
    again, error = collect(model.generate(PROMPT, SHORT, top_n=TOP_N))
    assert error is None and [s.piece for s in again] == [s.piece for s in clean_steps]


def test_closing_the_stream_ends_the_upstream_request(llama_server, fault_proxy):
    remote = client(fault_proxy.url, timeout_s=30)
    stream = complete(remote, llama_server.model_id, LONG)
    next(stream)
    stream.close()  # what Stop does
    deadline = time.monotonic() + 10
    while fault_proxy.requests[0].ended is None and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = fault_proxy.requests
    assert record.client_closed and record.events < LONG.max_new_tokens, "the upstream request ran to its end"
