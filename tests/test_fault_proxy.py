"""The remote-test infrastructure itself, spoken to with plain httpx: the real llama_cpp.server fixture (start,
pause, kill, restart on the same port, stop) and the fault proxy's faults as a client sees them on the wire.

The fault tests of the engine (test_remote_faults.py) and of the app rely on these behaving as documented; a fault
that silently did not happen would make those tests pass for the wrong reason.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fault_proxy import GARBAGE, FaultProxy, fault_proxy  # noqa: F401 (fixtures)
from remote_server import closed_port_url, llama_server, own_llama_server, remote_gguf  # noqa: F401 (fixtures)

REQUEST = {"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0, "logprobs": 2, "stream": True}


def stream_events(url: str, body: dict = REQUEST, timeout: float = 30) -> tuple[int, list[bytes]]:
    """POST a streamed completion; the status and the `data:` payloads in order (raises on a broken body)."""
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=timeout) as response:
        payloads = [line[len("data: "):].encode() for line in response.iter_lines() if line.startswith("data: ")]
        return response.status_code, payloads


def texts(payloads: list[bytes]) -> list[str]:
    return [json.loads(p)["choices"][0]["text"] for p in payloads if p != b"[DONE]"]


def test_server_lists_its_model_and_streams_to_done(llama_server):
    models = httpx.get(f"{llama_server.url}/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == [llama_server.model_id]
    assert llama_server.gguf_path.exists() and llama_server.startup_s is not None
    status, payloads = stream_events(llama_server.url)
    assert status == 200 and payloads[-1] == b"[DONE]"
    assert len(texts(payloads)) == REQUEST["max_tokens"] + 1  # one token an event, then the finish event


def test_pause_resume_kill_restart_keep_the_url(own_llama_server):
    server = own_llama_server
    url, first_pid = server.url, server.pid
    server.pause()
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):  # a stopped process still has its socket: connected, never answered
        httpx.get(f"{url}/v1/models", timeout=httpx.Timeout(0.5, connect=5))
    assert time.monotonic() - started < 3
    server.resume()
    assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200
    server.kill()
    assert not server.is_running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/models", timeout=5)
    server.restart()
    assert server.url == url and server.pid != first_pid
    assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200
    server.pause()
    server.stop()  # a paused server is still ended
    assert not server.is_running and server.process.returncode is not None


def test_closed_port_refuses_at_once():
    started = time.monotonic()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{closed_port_url()}/v1/models", timeout=5)
    assert time.monotonic() - started < 2


def test_proxy_passes_through_the_same_tokens(llama_server, fault_proxy):
    _, direct = stream_events(llama_server.url)
    status, proxied = stream_events(fault_proxy.url)
    assert status == 200 and texts(proxied) == texts(direct)  # greedy on one server: the same computation
    (record,) = fault_proxy.requests
    assert record.fault is None and record.events == len(proxied) and record.done_sent
    assert record.body["max_tokens"] == REQUEST["max_tokens"]


def test_proxy_streams_each_event_as_it_comes(llama_server, fault_proxy):
    # 400 tokens take the 1-thread server about a second: a proxy that buffered would deliver the first event
    # only at the end.
    body = {**REQUEST, "max_tokens": 400}
    started = time.monotonic()
    with httpx.stream("POST", f"{fault_proxy.url}/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        first = time.monotonic() - started
        assert sum(line.startswith("data: ") for line in lines) == 401  # the rest, with [DONE]
    total = time.monotonic() - started
    assert first < total / 3, f"first event after {first:.2f} s of {total:.2f} s: the proxy buffered the stream"


def test_rate_limit_answers_429_with_retry_after_then_passes(fault_proxy):
    fault_proxy.rate_limit(times=2, retry_after=3)
    for _ in range(2):
        response = httpx.post(f"{fault_proxy.url}/v1/completions", json=REQUEST, timeout=10)
        assert response.status_code == 429 and response.headers["retry-after"] == "3"
        assert response.json()["error"]["type"] == "rate_limit_error"
    assert httpx.get(f"{fault_proxy.url}/v1/models", timeout=10).status_code == 200  # not a /completions path
    status, payloads = stream_events(fault_proxy.url)
    assert status == 200 and payloads[-1] == b"[DONE]" and fault_proxy.pending == 0
    assert [r.status for r in fault_proxy.requests] == [429, 429, 200, 200]


def test_status_fault_on_a_chosen_path(fault_proxy):
    fault_proxy.status(503, '{"error": {"message": "model is loading"}}', on="/v1/models")
    response = httpx.get(f"{fault_proxy.url}/v1/models", timeout=10)
    assert response.status_code == 503 and response.json()["error"]["message"] == "model is loading"
    assert httpx.get(f"{fault_proxy.url}/v1/models", timeout=10).status_code == 200


def test_garbage_event_after_n_then_the_rest(fault_proxy):
    fault_proxy.garbage_after(3)
    status, payloads = stream_events(fault_proxy.url)
    assert status == 200 and payloads[3] == GARBAGE and payloads[-1] == b"[DONE]"
    with pytest.raises(json.JSONDecodeError):
        json.loads(payloads[3])
    assert len(payloads) == REQUEST["max_tokens"] + 3  # 12 tokens, the finish event, [DONE], the garbage


def test_truncation_mid_body_and_clean_end_without_done(fault_proxy):
    fault_proxy.truncate_after(4)
    with pytest.raises(httpx.RemoteProtocolError):
        stream_events(fault_proxy.url)
    fault_proxy.truncate_after(4, clean=True)
    status, payloads = stream_events(fault_proxy.url)
    assert status == 200 and len(payloads) == 4 and b"[DONE]" not in payloads
    assert [r.events for r in fault_proxy.requests] == [4, 4]
    assert not any(r.done_sent for r in fault_proxy.requests)


def test_proxy_sees_the_client_hang_up(fault_proxy):
    with httpx.stream("POST", f"{fault_proxy.url}/v1/completions", json={**REQUEST, "max_tokens": 400},
                      timeout=60) as response:
        next(line for line in response.iter_lines() if line.startswith("data: "))
    deadline = time.monotonic() + 10
    while fault_proxy.requests[0].ended is None and time.monotonic() < deadline:
        time.sleep(0.05)
    record = fault_proxy.requests[0]
    assert record.client_closed and not record.done_sent and record.events < 401


def test_proxy_rejects_a_non_http_upstream():
    with pytest.raises(ValueError, match="upstream"):
        FaultProxy("ftp://127.0.0.1:21")
