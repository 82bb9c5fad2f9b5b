"""The remote client on the answers of engines not installed here, and its configuration.

The events below are written as vLLM, TGI, llama.cpp's server and Ollama write them (shapes read in their
sources: vLLM's completion/chat protocol, TGI's router/src/lib.rs, llama.cpp's tools/server/server-task.cpp),
served over real HTTP by a small scripted server, so the SSE framing is exercised too. The real llama-cpp-python
server is in test_remote_backend.py.
"""

from __future__ import annotations

import email.utils
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from remote_server import closed_port_url

from llama_core import ParameterError, SamplingParams, TokenizerError
from llama_core.backends import PieceVocabulary, RemoteConfig, RemoteError, RemoteModel, RemoteModelInfo, RemoteServer
from llama_core.generation import StopReason
from llama_core.insight.run_record import RunRecord

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8)


class ScriptedServer:
    """Answers each request with the next scripted (status, headers, body) and records what it was sent."""

    def __init__(self, *answers: tuple[int, dict, bytes]):
        self.answers, self.requests = list(answers), []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                scripted.requests.append((self.path, dict(self.headers.items()),
                                          json.loads(self.rfile.read(length)) if length else None))
                status, headers, body = scripted.answers.pop(0)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sse(*events: object, done: bool = True, newline: str = "\n") -> tuple[int, dict, bytes]:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}{newline}{newline}" for e in events]
    body = ": ping - keep-alive comment" + newline + newline + "".join(lines)
    return 200, {"Content-Type": "text/event-stream"}, (body + (f"data: [DONE]{newline}{newline}" if done else "")).encode()


@pytest.fixture
def scripted():
    servers = []

    def start(*answers):
        servers.append(ScriptedServer(*answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def model_at(server: ScriptedServer, **config) -> RemoteModel:
    return RemoteModel(RemoteServer(RemoteConfig(server.url, **config)), RemoteModelInfo("m"))


def run(model: RemoteModel, **kwargs) -> list:
    return list(model.generate("Hello", kwargs.pop("params", GREEDY), top_n=3, **kwargs))


def completion(text, tokens=None, logprobs=None, finish=None, **extra) -> dict:
    return {"id": "cmpl-1", "choices": [{"index": 0, "text": text, "finish_reason": finish,
                                         "logprobs": logprobs if tokens is None else tokens}], **extra}


def test_vllm_completions(scripted):
    """Parallel lists; the chosen token inside top_logprobs; -9999 for -inf; the last token and the finish
    reason in one event; the fingerprint on the terminal event only."""
    lp = {"tokens": [" world"], "token_logprobs": [-0.5], "text_offset": [5],
          "top_logprobs": [{" world": -0.5, " there": -1.25, "!": -9999.0}]}
    last = {"tokens": ["!"], "token_logprobs": [-0.1], "text_offset": [11], "top_logprobs": [{"!": -0.1}]}
    server = scripted(sse(completion(" world", lp), completion("!", last, finish="length", system_fingerprint="fp1")))
    steps = run(model_at(server))
    assert [(s.piece, s.text) for s in steps] == [(" world", " world"), ("!", "!")]
    assert [(a.piece, a.prob) for a in steps[0].top] == [(" world", math.exp(-0.5)), (" there", math.exp(-1.25)),
                                                         ("!", 0.0)]
    assert steps[1].stop_reason is StopReason.LENGTH and steps[0].stop_reason is None
    body = server.requests[0][2]
    assert server.requests[0][0] == "/v1/completions" and body["logprobs"] == 3 and body["stream"] is True
    assert body["top_k"] == 0 and body["min_p"] == 0.0 and body["repeat_penalty"] == body["repetition_penalty"] == 1.0


def test_llamacpp_server_completions_carry_chat_style_entries(scripted):
    """llama.cpp's own server: `logprobs.content` with ids and bytes, two tokens in one event, a build fingerprint."""
    def entry(token_id: int, text: str, logprob: float) -> dict:
        own = {"id": token_id, "token": text, "bytes": list(text.encode()), "logprob": logprob}
        return {**own, "top_logprobs": [own, {"id": 99, "token": "zz", "bytes": [122, 122], "logprob": -4.0}]}

    event = completion("ab", {"content": [entry(5, "a", -0.2), entry(6, "b", -0.3)]}, system_fingerprint="b4500-1a")
    model = model_at(scripted(sse(event, completion("", None, finish="stop"))))
    steps = run(model)
    assert [(s.piece, s.stop_reason) for s in steps] == [("a", None), ("b", StopReason.EOS)]
    assert model.describe()["fingerprint"] == "b4500-1a"


def test_tgi_chat_and_completions(scripted):
    chunk = {"object": "chat.completion.chunk", "system_fingerprint": "3.0.1-sha-abc", "choices": [
        {"index": 0, "delta": {"role": "assistant", "content": " Hi"}, "finish_reason": None,
         "logprobs": {"content": [{"token": " Hi", "logprob": -0.1,
                                   "top_logprobs": [{"token": " Hi", "logprob": -0.1}, {"token": " Hello", "logprob": -2.5}]}]}}]}
    end = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "stop",
                        "logprobs": None}]}
    # TGI's /v1/completions: a bare list of floats, and finish_reason "" until the end.
    plain = [completion(" x", [-0.3], finish=""), completion(" y", [-0.4], finish="length")]
    server = scripted(sse(chunk, end), sse(*plain))
    model = model_at(server)
    steps = run(model, messages=[{"role": "user", "content": "Hey"}])
    assert [(a.piece, round(a.prob, 6)) for a in steps[0].top] == [(" Hi", round(math.exp(-0.1), 6)),
                                                                  (" Hello", round(math.exp(-2.5), 6))]
    assert steps[0].stop_reason is StopReason.EOS
    body = server.requests[0][2]
    assert server.requests[0][0] == "/v1/chat/completions" and body["logprobs"] is True and body["top_logprobs"] == 3
    steps = run(model)
    assert [(s.piece, s.logprob, s.top[0].piece) for s in steps] == [(" x", -0.3, " x"), (" y", -0.4, " y")]
    assert steps[-1].stop_reason is StopReason.LENGTH


def test_ollama_without_logprobs_gives_text_of_unknown_probability(scripted):
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": c}, "finish_reason": None}]}
              for c in ("Hel", "lo")]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    steps = run(model_at(scripted(sse(*events, newline="\r\n"))), messages=[{"role": "user", "content": "Hey"}])
    assert "".join(s.text for s in steps) == "Hello" and all(math.isnan(s.prob) and s.top == () for s in steps)


def test_an_eos_first_run_and_a_stop_string(scripted):
    """llama-cpp-python never reports the end-of-sequence token: a run that ends at once is one empty step."""
    cut = completion(" t", {"tokens": [" the"], "token_logprobs": [-1.0], "top_logprobs": [{" the": -1.0}]})
    server = scripted(sse(completion("", None, finish="stop")), sse(cut, completion("", None, finish="stop")))
    model = model_at(server)
    (step,) = run(model)
    assert step.stop_reason is StopReason.EOS and step.text == "" and math.isnan(step.prob)
    (step,) = run(model, params=SamplingParams(temperature=0.0, max_new_tokens=8, stop=("he",)))
    assert (step.piece, step.text, step.stop_reason) == (" the", " t", StopReason.STOP_SEQUENCE)
    assert server.requests[1][2]["stop"] == ["he"]


@pytest.mark.parametrize("events, done, expected", [
    ([{"error": {"message": "max_tokens is too large", "type": "BadRequestError"}}], True, "max_tokens is too large"),
    ([{"error": "Input validation error", "error_type": "validation"}], True, "Input validation error"),
    (["{not json"], True, "malformed JSON in an event"),
    ([{"unexpected": 1}], True, "without a 'choices' list"),
    ([], False, "ended without a finish reason"),
])
def test_stream_faults_keep_the_tokens_before_them(scripted, events, done, expected):
    first = completion(" a", {"tokens": [" a"], "token_logprobs": [-0.1], "top_logprobs": [{" a": -0.1}]})
    server = scripted(sse(first, *events, done=done))
    kept = []
    with pytest.raises(RemoteError, match=expected) as error:
        for step in model_at(server).generate("Hello", GREEDY, top_n=3):
            kept.append(step)
    assert [s.piece for s in kept] == [" a"] and server.url in str(error.value) and "after 1 tokens" in str(error.value)


def test_a_json_answer_to_a_stream_request(scripted):
    body = completion(" ok", {"tokens": [" ok"], "token_logprobs": [-0.2], "top_logprobs": [{" ok": -0.2}]},
                      finish="length")
    steps = run(model_at(scripted((200, {"Content-Type": "application/json"}, json.dumps(body).encode()))))
    assert [(s.piece, s.stop_reason) for s in steps] == [(" ok", StopReason.LENGTH)]


def test_rate_limit_waits_for_an_http_date_but_no_longer_than_allowed(scripted):
    later = email.utils.formatdate(time.time() + 600, usegmt=True)
    limited = (429, {"Retry-After": later, "Content-Type": "application/json"}, b'{"error": {"message": "slow down"}}')
    ok = completion(" a", None, finish="length")
    server = scripted(limited, sse(ok), limited, limited)
    start = time.monotonic()
    assert [s.text for s in run(model_at(server, max_retry_wait_s=0.3))] == [" a"]
    assert 0.3 <= time.monotonic() - start < 5
    with pytest.raises(RemoteError, match=r"HTTP 429 Too Many Requests \(after 1 retries\): slow down"):
        run(model_at(server, max_retries=1, max_retry_wait_s=0.0))


def test_models_with_context_lengths(scripted):
    listing = {"object": "list", "data": [
        {"id": "meta-llama/Llama-3.1-70B", "object": "model", "owned_by": "vllm", "max_model_len": 8192},
        {"id": "llama.gguf", "object": "model", "owned_by": "llamacpp", "meta": {"n_ctx_train": 4096, "n_vocab": 32000}},
        {"id": "llama3:8b", "object": "model", "owned_by": "library"}]}
    server = scripted((200, {"Content-Type": "application/json"}, json.dumps(listing).encode()))
    infos = RemoteServer(RemoteConfig(server.url)).list_models()
    assert [(i.id, i.context_length) for i in infos] == [("meta-llama/Llama-3.1-70B", 8192), ("llama.gguf", 4096),
                                                        ("llama3:8b", None)]


def test_unreachable_server_named_in_the_error():
    url = closed_port_url()
    with pytest.raises(RemoteError, match=f"could not connect to the server {url} .*is it running"):
        RemoteServer(RemoteConfig(url, connect_timeout_s=2)).list_models()


def test_score_unavailable_says_why(scripted):
    refused = (400, {"Content-Type": "application/json"}, b'{"detail": "echo is not supported"}')
    ignored = (200, {"Content-Type": "application/json"},
               json.dumps(completion(" a", None, finish="length", usage={"completion_tokens": 1})).encode())
    model = model_at(scripted(refused, ignored))
    assert model.score("Hello there") is None and "echo is not supported" in model.score_note
    assert model.capabilities.prompt_logprobs is False
    assert model.score("Hello there") is None and "no log-probabilities for the prompt" in model.score_note


@pytest.mark.parametrize("field, value", [
    ("url", "ftp://host:21"), ("url", "http://"), ("url", "localhost:8000"), ("url", "http://h:8000/v1?key=x"),
    ("url", "http://h:99999"), ("url", 8000), ("api_key_env", "MY-KEY"), ("api_key_env", ""),
    ("timeout_s", 0), ("timeout_s", -1), ("timeout_s", float("nan")), ("timeout_s", "5"), ("timeout_s", True),
    ("connect_timeout_s", float("inf")), ("max_retries", -1), ("max_retries", 11), ("max_retries", 1.5),
    ("max_retries", True), ("max_retry_wait_s", -0.5),
])
def test_bad_config_names_the_field(field, value):
    arguments = {"url": "http://127.0.0.1:8000", field: value}
    with pytest.raises(ParameterError) as error:
        RemoteConfig(**arguments)
    assert error.value.name == field and str(error.value).startswith(field)


def test_credentials_in_a_url_are_refused_without_being_echoed():
    with pytest.raises(ParameterError, match="api_key_env") as error:
        RemoteConfig("https://user:s3cret-pass@example.com/v1")
    assert "s3cret" not in str(error.value)
    assert RemoteConfig("https://example.com/llm/v1/").url == "https://example.com/llm"


def test_piece_vocabulary_numbers_what_it_sees():
    vocabulary = PieceVocabulary("m at http://h")
    ids = vocabulary.add_all(["Once", " upon", "Once", "é", ""])
    assert ids == [0, 1, 0, 2, 3] and vocabulary.vocab_size == 4 and vocabulary.eos_id is None
    assert vocabulary.decode([0, 1, 2]) == "Once uponé" and vocabulary.piece(1) == " upon"
    record = RunRecord.start("m", vocabulary, "Once", [0], {})
    assert record.all_pieces() == ["Once"] and not record.is_remote
    with pytest.raises(TokenizerError, match="tokenizer is not available"):
        vocabulary.encode("Once")
    with pytest.raises(ParameterError, match="token id"):
        vocabulary.decode([4])
