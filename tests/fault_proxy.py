"""A small threaded HTTP proxy in front of a real server, with scripted faults, for the remote-backend tests.

    proxy = FaultProxy(llama_server.url)          # or the `fault_proxy` fixture (in front of `llama_server`)
    proxy.rate_limit(times=1, retry_after=1)      # the next request gets 429 + Retry-After: 1, the one after passes
    RemoteServer(RemoteConfig(proxy.url)) ...

Faults are queued and each is used by one request, first in first out; a request that finds none is passed
through unchanged. A fault waits for a request whose path contains `on` (default "/completions": both
/v1/completions and /v1/chat/completions, so a GET /v1/models in between does not use it up).
- `rate_limit(times, retry_after)`: `times` requests answered 429 with `Retry-After` (seconds, or a string sent
  as is, e.g. an HTTP date), never reaching the server.
- `status(code, body)`: one request answered `code` with `body`, never reaching the server.
- `garbage_after(n_events)`: n events of the server's stream, then an event whose data is malformed JSON, then the
  rest of the stream (a client that skipped the bad event would finish "normally", so it cannot pass unnoticed).
- `truncate_after(n_events, clean=False)`: n events, then the connection closes mid-body (the chunked body is never
  terminated); `clean=True` ends the body properly but without the rest and without `data: [DONE]`.
Streams (text/event-stream) are forwarded event by event as the server sends them, never buffered; an "event" is a
block ending in a blank line that holds a `data:` line (keep-alive comments pass through and are not counted).
`proxy.requests` records each request: method, path, headers, JSON body, the fault used, the status returned, the
events forwarded, whether `[DONE]` went through, whether the client hung up mid-stream (`client_closed`), and when
it arrived and ended (time.monotonic()).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

import pytest

# Cut off in the middle of a string, as a proxy or server that garbles a chunk would leave it.
GARBAGE = b'{"id": "cmpl-garbled", "choices": [{"text": "oo'
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding"}


@dataclass
class Fault:
    kind: str  # "rate_limit" | "status" | "garbage" | "truncate"
    on: str = "/completions"
    code: int = 0
    body: bytes = b""
    retry_after: str | None = None
    n_events: int = 0
    clean: bool = False


@dataclass
class ProxiedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    fault: str | None
    arrived: float
    status: int | None = None
    events: int = 0
    done_sent: bool = False
    client_closed: bool = False
    ended: float | None = None


@dataclass
class _State:
    upstream: tuple[str, int, str]  # host, port, base path
    faults: list[Fault] = field(default_factory=list)
    requests: list[ProxiedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if fault.on in path:
                    return self.faults.pop(i)
        return None


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format, *args) -> None:  # the tests print no access log
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_DELETE = do_PUT = do_GET

    def _proxy(self) -> None:
        self.close_connection = True  # one request per connection: simpler, and every client copes
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        fault = state.take_fault(self.path)
        record = ProxiedRequest(self.command, self.path, dict(self.headers.items()), body,
                                fault and fault.kind, time.monotonic())
        with state.lock:
            state.requests.append(record)
        try:
            if fault is not None and fault.kind in ("rate_limit", "status"):
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                self._answer(record, fault.code, fault.body, headers)
            else:
                self._forward(record, raw, fault)
        except _ClientGone:
            record.client_closed = True
        finally:
            record.ended = time.monotonic()

    def _answer(self, record: ProxiedRequest, code: int, body: bytes, headers: dict[str, str]) -> None:
        record.status = code
        self.send_response(code)
        kind = "application/json" if body.lstrip().startswith((b"{", b"[")) else "text/plain; charset=utf-8"
        for name, value in {"Content-Type": kind, **headers, "Content-Length": str(len(body)),
                            "Connection": "close"}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, record: ProxiedRequest, raw: bytes, fault: Fault | None) -> None:
        host, port, base = self.server.state.upstream
        upstream = http.client.HTTPConnection(host, port, timeout=300)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            try:
                upstream.request(self.command, base + self.path, body=raw or None, headers=headers)
                response = upstream.getresponse()
            except OSError as error:
                self._answer(record, 502, f"fault proxy: upstream {host}:{port} failed: {error}".encode(), {})
                return
            if not response.getheader("Content-Type", "").startswith("text/event-stream"):
                passed = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                self._answer(record, response.status, response.read(), passed)
                return
            self._stream(record, response, fault)
        finally:
            upstream.close()  # the server sees the hang-up and stops generating

    def _stream(self, record: ProxiedRequest, response: http.client.HTTPResponse, fault: Fault | None) -> None:
        record.status = response.status
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for block in _events(response):
            counted = any(line.startswith(b"data:") for line in block.splitlines())
            if counted and fault is not None and record.events == fault.n_events:
                if fault.kind == "truncate":
                    if fault.clean:
                        self._write(b"0\r\n\r\n")
                    return  # not clean: the socket closes with the chunked body unterminated
                if fault.kind == "garbage":
                    self._chunk(b"data: " + GARBAGE + b"\n\n")
                    fault = None
            self._chunk(block)
            if counted:
                record.events += 1
                record.done_sent = record.done_sent or b"data: [DONE]" in block
        self._write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as error:
            raise _ClientGone from error


def _events(response: http.client.HTTPResponse):
    """The server-sent event blocks of a response (each ending in its blank line), as they arrive."""
    block = b""
    while line := response.readline():
        block += line
        if line in (b"\n", b"\r\n"):
            yield block
            block = b""
    if block:
        yield block


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FaultProxy:
    """A proxy on a free localhost port forwarding to `upstream` ("http://host:port"), faults scripted per request."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream: expected http://host:port[/path], got {upstream!r}")
        self.upstream = upstream
        self._state = _State((parts.hostname, parts.port or 80, parts.path.rstrip("/")))
        self._server = _ProxyServer(self._state)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # A short poll: close() waits up to one interval for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fault-proxy",
                                        daemon=True)
        self._thread.start()

    def _add(self, fault: Fault, times: int = 1) -> FaultProxy:
        with self._state.lock:
            self._state.faults.extend(Fault(**vars(fault)) for _ in range(times))
        return self

    def rate_limit(self, times: int = 1, retry_after: float | str | None = 1, on: str = "/completions") -> FaultProxy:
        value = None if retry_after is None else retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        body = b'{"error": {"message": "rate limit reached (fault proxy)", "type": "rate_limit_error"}}'
        return self._add(Fault("rate_limit", on, 429, body, retry_after=value), times)

    def status(self, code: int, body: str = "", on: str = "/completions") -> FaultProxy:
        return self._add(Fault("status", on, code, body.encode()))

    def garbage_after(self, n_events: int, on: str = "/completions") -> FaultProxy:
        return self._add(Fault("garbage", on, n_events=n_events))

    def truncate_after(self, n_events: int, clean: bool = False, on: str = "/completions") -> FaultProxy:
        return self._add(Fault("truncate", on, n_events=n_events, clean=clean))

    @property
    def pending(self) -> int:
        """Scripted faults not used yet."""
        with self._state.lock:
            return len(self._state.faults)

    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def clear(self) -> None:
        """Forget scripted faults and recorded requests."""
        with self._state.lock:
            self._state.faults.clear()
            self._state.requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def fault_proxy(llama_server):
    """A FaultProxy in front of the shared `llama_server` (import both fixtures by name)."""
    with FaultProxy(llama_server.url) as proxy:
        yield proxy
