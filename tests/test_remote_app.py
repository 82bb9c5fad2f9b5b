"""The playground on a remote model, through its public API (gradio_client): `python app.py --remote URL` against a
REAL llama-cpp-python server (tests/remote_server.py) — directly, and through the fault proxy
(tests/fault_proxy.py) — plus a server that is down when the app starts.

What the app shows is compared with what the same server answers to the same request sent here directly. The
faults are app-level: each must give its message, keep the run's partial text, and leave the app serving.
Page-only events (side by side, Score text's page view) are driven through Gradio's queue as the page sends
them (tests/app_server.raw_run); branching and the run report are the browser test's (test_remote_browser.py).
"""

from __future__ import annotations

import json
import math
import secrets
import time
import urllib.request

import httpx
import pytest

from app_server import OUTPUT, AppServer, api_client, raw_run
from fault_proxy import FaultProxy
from llama_core.backends.remote_client import sampling_fields
from llama_core.sampling import SamplingParams
from remote_server import LlamaServer, closed_port_url, remote_gguf, shared_llama_server  # noqa: F401 (fixtures)

KEY_ENV = "PLAYGROUND_TEST_REMOTE_KEY"
KEY = "sk-test-" + secrets.token_hex(16)  # sent to the server as a bearer token; must never come back
TIMEOUT_S = 4  # --remote-timeout: how long the app waits on a silent server
LOCAL = "playground-1m (bundled)"
MODEL_ID = "playground-1m"
# llama-cpp-python keeps the last request's tokens in its KV cache (fp16) and evaluates only what differs from the
# cached prefix: a prompt evaluated in one batch and the same prompt read back from the cache then differ by up to
# 3e-4 in a log-probability over 200 tokens. Every compared request therefore starts from the same cold cache
# (`cold`), where one server thread computes the same request the same way: the numbers are equal, and
# LOGPROB_TOL only absorbs the float's trip through JSON twice.
LOGPROB_TOL = 1e-9
LONG_CTX, LONG_RUN = 2048, 2000  # tokens: the fault tests' window and run (about 6 s of one llama.cpp thread here)
SERVER: dict[str, str] = {}  # the shared server's URL, for `cold`

def label_of(url: str) -> str:
    return f"{MODEL_ID} (remote: {url.removeprefix('http://')})"


@pytest.fixture(scope="module")
def backends(request, remote_gguf, tmp_path_factory):
    """The shared real server and a fault proxy in front of it."""
    server = shared_llama_server(request.config, remote_gguf, tmp_path_factory.getbasetemp())
    server.heal()
    SERVER["url"] = server.url
    with FaultProxy(server.url) as proxy:
        yield server, proxy


@pytest.fixture(scope="module")
def long_server(remote_gguf, tmp_path_factory):
    """A server of the fault tests' own with a 2048-token window: a run long enough (seconds) to break mid-way
    on any machine, after the app's first partial result."""
    server = LlamaServer(remote_gguf, tmp_path_factory.mktemp("long") / "llama-server.log", n_ctx=LONG_CTX)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def app(backends, long_server):
    server, proxy = backends
    OUTPUT.mkdir(exist_ok=True)
    # The key env given before every --remote applies to all of them.
    app = AppServer("--remote-key-env", KEY_ENV, "--remote", server.url, "--remote", proxy.url,
                    "--remote", long_server.url, "--remote", closed_port_url(), "--remote-timeout", str(TIMEOUT_S),
                    log_path=OUTPUT / "app-remote.log", env={KEY_ENV: KEY}).wait_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(app):
    client = api_client(app.url)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def healthy(backends, long_server):
    """Each test starts with the servers running and the proxy passing everything through."""
    server, proxy = backends
    server.heal()
    long_server.heal()
    proxy.clear()


def menu_labels(app) -> list[str]:
    with urllib.request.urlopen(app.url + "config", timeout=10) as response:
        config = json.load(response)
    menu = next(c["props"]["choices"] for c in config["components"] if c["props"].get("label") == "Model size")
    return [choice[0] for choice in menu]


def generate(client, model: str, prompt: str = "In the beginning", **changes) -> dict:
    fields = {"prompt": prompt, "model": model, "max_new_tokens": 24, "temperature": 0.0, "seed": 7}
    cold()
    return client.predict(**{**fields, **changes}, api_name="/generate")


def direct_completion(url: str, prompt: str, params: SamplingParams, top_n: int = 5) -> dict:
    """The same request the app sends (its sampling fields), non-streamed, straight to the server."""
    body = {"model": MODEL_ID, "prompt": prompt, "logprobs": top_n, **sampling_fields(params)}
    cold()
    response = httpx.post(url + "/v1/completions", json=body, timeout=60)
    response.raise_for_status()
    return response.json()["choices"][0]


def cold_at(url: str) -> None:
    """Leave the server's prompt cache on another prompt, so the next request evaluates its prompt afresh."""
    body = {"model": MODEL_ID, "prompt": "Cold cache.", "max_tokens": 1, "temperature": 0.0}
    httpx.post(url + "/v1/completions", json=body, timeout=60).raise_for_status()


def cold() -> None:
    """`cold_at` the shared server itself: through the proxy it would use up a fault scripted for the next request."""
    cold_at(SERVER["url"])


def assert_tokens_match_server(result: dict, reference: dict) -> None:
    """The app's tokens, probabilities and alternatives are the server's."""
    logprobs = reference["logprobs"]
    assert [t["piece"] for t in result["tokens"]] == logprobs["tokens"]
    for token, logprob, top in zip(result["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]):
        assert token["logprob"] == pytest.approx(logprob, abs=LOGPROB_TOL)
        assert token["prob"] == pytest.approx(math.exp(logprob), rel=LOGPROB_TOL)
        shown = {piece: prob for _, piece, prob, _ in token["top"]}
        for piece, server_logprob in top.items():  # every alternative the server named, at its probability
            assert shown[piece] == pytest.approx(math.exp(server_logprob), rel=LOGPROB_TOL)


def test_menu_offers_each_servers_models_with_their_origin_and_explains_a_server_that_was_down(app, client, backends):
    server, proxy = backends
    labels = menu_labels(app)
    assert label_of(server.url) in labels and label_of(proxy.url) in labels
    down = next(label for label in labels if label.endswith("(remote: not reachable)"))
    assert labels.index(LOCAL) < labels.index(label_of(server.url))  # the bundled models first

    info, _ = client.predict(label_of(server.url), 32, api_name="/load_model")
    assert f"served by {server.url}" in info and f"model `{MODEL_ID}`" in info and "need a local model" in info
    info, _ = client.predict(down, 32, api_name="/load_model")
    assert "did not list its models when the app started" in info and "restart the app" in info
    assert "Connection refused" in info or "could not connect" in info
    assert "refused" in (OUTPUT / "app-remote.log").read_text()  # and the log said so at startup


def test_generate_shows_the_tokens_and_probabilities_the_server_returns(client, backends):
    server, _ = backends
    cold()
    job = client.submit(prompt="In the beginning", model=label_of(server.url), max_new_tokens=200, temperature=0.0,
                        seed=7, api_name="/generate")
    result = job.result(timeout=120)
    assert result["stop_reason"] == "length" and len(result["tokens"]) == 200 and result["error"] is None
    assert result["source"] == {"kind": "remote", "server": server.url, "model": MODEL_ID,
                                "fingerprint": result["source"]["fingerprint"], "top_n": 5}
    assert result["prompt_tokens"] == []  # the server tokenized the prompt: its tokens are not known here
    assert all(result["text"].startswith(partial["text"]) for partial in job.outputs())  # streamed, only growing
    params = SamplingParams(temperature=0.0, max_new_tokens=200, seed=7)
    assert_tokens_match_server(result, direct_completion(server.url, "In the beginning", params))
    assert "".join(t["text"] for t in result["tokens"]) == result["text"]


def test_a_seeded_sampled_run_is_the_servers_run_for_that_seed(client, backends):
    server, _ = backends
    result = generate(client, label_of(server.url), temperature=0.9, top_k=40, top_p=0.95, seed=1234,
                      max_new_tokens=32)
    reference = direct_completion(server.url, "In the beginning",
                                  SamplingParams(temperature=0.9, top_k=40, top_p=0.95, max_new_tokens=32, seed=1234))
    assert result["text"] == reference["text"] and result["seed"] == 1234
    stages = [name for name, _ in result["tokens"][0]["stages"]]
    assert stages[0] == "raw" and "temperature" in stages and "top_p" in stages  # the pipeline, on the top-n
    for token in result["tokens"]:  # renormalised over the server's candidates: the chosen one among them
        after = {piece: prob_filtered for _, piece, _, prob_filtered in token["top"]}
        assert sum(after.values()) == pytest.approx(1.0) and token["prob_filtered"] == after[token["piece"]]


def test_chat_replies_through_the_servers_chat_endpoint(client, backends):
    server, _ = backends
    messages = [{"role": "user", "content": "Who made the heaven and the earth?"}]
    cold()
    result = client.predict(messages, model=label_of(server.url), max_new_tokens=16, temperature=0.0, seed=3,
                            api_name="/chat")
    body = {"model": MODEL_ID, "messages": messages, "logprobs": True, "top_logprobs": 5,
            **sampling_fields(SamplingParams(temperature=0.0, max_new_tokens=16, seed=3))}
    cold()
    reference = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    content = reference["logprobs"]["content"]
    assert result["reply"] == {"role": "assistant", "content": reference["message"]["content"]}
    assert [t["piece"] for t in result["tokens"]] == [c["token"] for c in content]
    for token, entry in zip(result["tokens"], content):
        assert token["logprob"] == pytest.approx(entry["logprob"], abs=LOGPROB_TOL)
    assert result["settings"]["chat_template"] == "" and "[user] Who made" in result["prompt"]


def test_score_gives_the_servers_prompt_logprobs(client, backends):
    server, _ = backends
    text = "In the beginning God created the heaven and the earth."
    cold()
    scored = client.predict(text, model=label_of(server.url), api_name="/score")
    body = {"model": MODEL_ID, "prompt": text, "max_tokens": 1, "echo": True, "logprobs": 5, "temperature": 0.0}
    cold()
    echoed = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["logprobs"]
    n_prompt = len(scored["tokens"]) + 1  # the first token has no probability (nothing precedes it)
    assert [t["piece"] for t in scored["tokens"]] == echoed["tokens"][1:n_prompt]
    for token, logprob in zip(scored["tokens"], echoed["token_logprobs"][1:n_prompt]):
        assert token["prob"] == pytest.approx(math.exp(logprob), rel=LOGPROB_TOL)
        assert token["surprisal_bits"] == pytest.approx(-logprob / math.log(2), rel=LOGPROB_TOL)
    assert scored["perplexity"] > 1 and len(scored["tokens"]) >= 10


def test_score_says_it_is_unavailable_on_a_server_without_prompt_logprobs(client, backends):
    from gradio_client.exceptions import AppError

    _, proxy = backends
    proxy.status(400, '{"error": {"message": "echo is not supported", "type": "invalid_request_error"}}')
    with pytest.raises(AppError, match=f"Scoring is unavailable on this server: {proxy.url} returns no "
                                       "log-probabilities for a prompt's tokens"):
        client.predict("In the beginning God created the heaven.", model=label_of(proxy.url), api_name="/score")
    assert client.predict("In the beginning God created the heaven.", model=label_of(proxy.url),
                          api_name="/score")["perplexity"] > 1  # the next request is served


def test_side_by_side_local_against_remote_or_two_remote_and_score_page(app, backends):
    server, proxy = backends
    settings = ["In the beginning", "plain", 0.0, 0, 1.0, 0.0, 12, 5]  # the Generate tab's, as the page sends them
    cold()
    status, _, messages = raw_run(app.url, "side_by_side", [LOCAL, label_of(server.url), *settings])
    assert status == 200
    text_a, text_b, summary, _ = messages[-1]["output"]["data"]
    reference = direct_completion(server.url, "In the beginning", SamplingParams(temperature=0.0, max_new_tokens=12,
                                                                                 seed=5))
    assert text_b == reference["text"] and text_a
    assert "seed 5" in summary and "needs two local models" in summary
    assert f"{LOCAL}: " in summary and f"{label_of(server.url)}: " in summary  # one model, told apart by origin

    # Two remote models (here one server reached directly and through the proxy: two entries of the menu).
    status, _, messages = raw_run(app.url, "side_by_side", [label_of(server.url), label_of(proxy.url), *settings])
    text_a, text_b, summary, _ = messages[-1]["output"]["data"]
    assert status == 200 and text_a and text_b
    assert f"{label_of(server.url)}: " in summary and f"{label_of(proxy.url)}: " in summary

    status, _, messages = raw_run(app.url, "score_page", ["In the beginning God created.", [LOCAL,
                                                                                            label_of(server.url)]])
    view = messages[-1]["output"]["data"][0]
    assert status == 200 and view.count("perplexity") == 2 and f"<h4>{label_of(server.url)}</h4>" in view


def test_the_api_key_is_sent_to_the_server_and_never_shown(app, client, backends):
    _, proxy = backends
    result = generate(client, label_of(proxy.url), max_new_tokens=4)
    sent = [r.headers.get("Authorization") for r in proxy.requests if "/completions" in r.path]
    assert sent == [f"Bearer {KEY}"]  # the server got it
    shown = [json.dumps(result)]
    for path in ("", "config", "gradio_api/info"):
        with urllib.request.urlopen(app.url + path, timeout=10) as response:
            shown.append(response.read().decode())
    info, _ = client.predict(label_of(proxy.url), 32, api_name="/load_model")
    shown += [info, (OUTPUT / "app-remote.log").read_text()]
    assert not any(KEY in text for text in shown)
    assert all(KEY_ENV not in text for text in shown[:-1])  # not even the variable's name reaches the page


def test_stop_closes_the_servers_request(client, backends):
    _, proxy = backends
    job = client.submit(prompt="In the beginning", model=label_of(proxy.url), max_new_tokens=480, temperature=0.0,
                        seed=1, api_name="/generate")
    deadline = time.monotonic() + 60
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.outputs(), "no partial result within 60 s"
    job.cancel()
    request = next(r for r in proxy.requests if "/completions" in r.path)
    while request.ended is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert request.client_closed and not request.done_sent and request.events < 480  # hung up mid-stream
    assert generate(client, label_of(proxy.url), max_new_tokens=3)["text"]  # and the app serves the next one


def _partial_then(client, server, fault) -> tuple[dict, dict]:
    """Start a long greedy run on `server`, wait for a partial result, apply `fault`: (the last partial seen, the
    final result)."""
    cold_at(server.url)
    job = client.submit(prompt="In the beginning", model=label_of(server.url), max_new_tokens=LONG_RUN,
                        temperature=0.0, seed=1, api_name="/generate")
    deadline = time.monotonic() + 60
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.outputs(), "no partial result within 60 s"
    seen = job.outputs()[-1]
    fault()
    return seen, job.result(timeout=120)


def assert_partial_kept(client, server, partial: dict, result: dict, message: str) -> None:
    """The error names the server and says what happened; every token before it was kept, and they are the
    tokens a clean run of that length gives (from a cold cache, as the broken run began)."""
    assert result["error"] and message in result["error"] and server.url in result["error"], result["error"]
    assert result["stop_reason"] == "error" and 0 < len(result["tokens"]) < LONG_RUN
    assert len(result["tokens"]) >= len(partial["tokens"])  # nothing seen before the fault was lost
    cold_at(server.url)
    clean = client.predict(prompt="In the beginning", model=label_of(server.url), temperature=0.0, seed=1,
                           max_new_tokens=len(result["tokens"]), api_name="/generate")
    assert clean["text"] == result["text"]  # and the app served the next request


def test_a_server_killed_mid_stream_keeps_the_partial_text_and_the_app_serves_on(client, long_server):
    partial, result = _partial_then(client, long_server, long_server.kill)
    long_server.restart()
    assert_partial_kept(client, long_server, partial, result, "")


def test_a_server_paused_past_the_timeout_gives_its_message_and_keeps_the_partial_text(client, long_server):
    started = time.monotonic()
    partial, result = _partial_then(client, long_server, long_server.pause)
    assert time.monotonic() - started >= TIMEOUT_S
    long_server.resume()
    assert_partial_kept(client, long_server, partial, result, f"{TIMEOUT_S:g} s")


def test_rate_limited_then_served_after_the_wait_the_server_asked_for(client, backends):
    server, proxy = backends
    proxy.rate_limit(times=1, retry_after=1)
    started = time.monotonic()
    result = generate(client, label_of(proxy.url), max_new_tokens=12)
    assert time.monotonic() - started >= 1.0 and result["error"] is None
    assert [r.status for r in proxy.requests if "/completions" in r.path] == [429, 200]
    assert result["text"] == direct_completion(server.url, "In the beginning",
                                               SamplingParams(temperature=0.0, max_new_tokens=12, seed=7))["text"]


@pytest.mark.parametrize("fault, message", [("garbage", "malformed"), ("truncate", "")])
def test_a_broken_stream_keeps_the_tokens_before_it(client, backends, fault, message):
    _, proxy = backends
    full = generate(client, label_of(proxy.url), max_new_tokens=24)
    getattr(proxy, f"{fault}_after")(10)
    result = generate(client, label_of(proxy.url), max_new_tokens=24)
    assert result["error"] and proxy.url in result["error"] and message in result["error"], result["error"]
    assert 0 < len(result["tokens"]) <= 10 and full["text"].startswith(result["text"])
    pieces = [t["piece"] for t in result["tokens"]]
    assert pieces == [t["piece"] for t in full["tokens"]][: len(pieces)]
    assert generate(client, label_of(proxy.url), max_new_tokens=24)["text"] == full["text"]  # served again


def test_a_refused_request_and_a_server_down_at_startup_give_their_messages(app, client, backends):
    from gradio_client.exceptions import AppError, ValidationError

    _, proxy = backends
    proxy.status(503, "the model is loading")
    with pytest.raises(AppError, match=r"503.*the model is loading"):
        generate(client, label_of(proxy.url))
    down = next(label for label in menu_labels(app) if label.endswith("(remote: not reachable)"))
    with pytest.raises(ValidationError, match=r"did not list its models when the app started"):
        generate(client, down)
    assert generate(client, label_of(proxy.url), max_new_tokens=3)["text"]


def test_the_page_endpoint_keeps_the_partial_text_beside_the_error(client, backends):
    _, proxy = backends
    fields = {"model_label": label_of(proxy.url), "prompt": "In the beginning", "template": "plain", "system": "",
              "temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repetition_penalty": 1.0,
              "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_new_tokens": 24, "seed": 7, "stop": "",
              "capture_attention": True}
    cold()
    full, _ = client.predict(**fields, api_name="/stream")[:2]
    proxy.garbage_after(10)
    cold()
    text, status = client.predict(**fields, api_name="/stream")[:2]
    assert text and full.startswith(text) and "⚠️ stopped by an error" in status and proxy.url in status
    cold()
    assert client.predict(**fields, api_name="/stream")[0] == full
