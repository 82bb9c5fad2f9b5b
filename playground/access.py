"""Who may use a public app, and how often: an optional password, a per-client limit on
generations, and a per-client limit on failed logins (Gradio's login has none).

A client is its network address. Behind a proxy that runs on this machine or on a private
network (the share-link tunnel, a Space's front end) every request comes from the proxy, so the
client is the last address the proxy appended to X-Forwarded-For; a client that reaches the app
directly cannot pick its own key that way, and the entries a client wrote itself come first.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections import deque
from urllib.parse import urlsplit

WINDOW_S = 60.0
FORGET_AFTER_CLIENTS = 10_000  # above this many tracked clients, idle ones are dropped


def client_key(host: str | None, forwarded_for: str | None) -> str:
    """The address a request is counted against."""
    if host and forwarded_for and _is_local(host):
        return forwarded_for.split(",")[-1].strip() or host
    return host or "unknown"


def _is_local(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def request_client_key(request) -> str:
    """client_key of a gr.Request (or of nothing, for calls made in-process)."""
    if request is None:
        return "local"
    client = getattr(request, "client", None)
    return client_key(getattr(client, "host", None), request.headers.get("x-forwarded-for"))


class RateLimiter:
    """At most `per_minute` events per client in any 60 s window; 0 means no limit."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait_s(self, key: str) -> float:
        """Seconds until `key` may go again (0 when it may now); counts nothing."""
        if not self.per_minute:
            return 0.0
        with self._lock:
            return self._wait(key, self._clock())

    def record(self, key: str) -> None:
        if self.per_minute:
            with self._lock:
                self._events.setdefault(key, deque()).append(self._clock())

    def acquire(self, key: str) -> float:
        """Count one event for `key` if it may go now and return 0; else the seconds to wait."""
        if not self.per_minute:
            return 0.0
        with self._lock:
            now = self._clock()
            wait = self._wait(key, now)
            if not wait:
                self._events.setdefault(key, deque()).append(now)
            return wait

    def _wait(self, key: str, now: float) -> float:
        if len(self._events) > FORGET_AFTER_CLIENTS:
            for idle in [k for k, times in self._events.items() if not times or now - times[-1] >= WINDOW_S]:
                del self._events[idle]
        times = self._events.get(key)
        if not times:
            return 0.0
        while times and now - times[0] >= WINDOW_S:
            times.popleft()
        return 0.0 if len(times) < self.per_minute else max(WINDOW_S - (now - times[0]), 0.001)


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """`user:password` (from --auth or PLAYGROUND_AUTH) as a pair; None when not set."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise ValueError("auth must look like user:password, both parts non-empty")
    return user.strip(), password


class LoginThrottle:
    """ASGI middleware: after `limiter.per_minute` failed logins from one client, further login
    attempts from it are answered 429 until the oldest failure is a minute old."""

    def __init__(self, app, limiter: RateLimiter):
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1") or None
        key = client_key((scope.get("client") or (None,))[0], forwarded)
        wait = self.limiter.wait_s(key)
        if wait:
            body = json.dumps({"detail": f"Too many failed logins from this address; try again in {wait:.0f} s."})
            await send({"type": "http.response.start", "status": 429,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"%d" % int(wait + 1))]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        status = {}

        async def remember_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, remember_status)
        if status.get("code") != 200:
            self.limiter.record(key)


LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1"}


def _hostname(value: str) -> str:
    """'localhost' from 'http://localhost:7860' (an Origin) or 'localhost:7860' (a Host)."""
    return urlsplit(value if "://" in value else f"//{value}").hostname or ""


class LocalOriginGuard:
    """ASGI middleware: an app served on localhost refuses (403) requests that a page from another
    site makes it send. Gradio's strict CORS only hides the answer from that page; the upload or
    the generation would still happen. Requests without an Origin (API clients) pass."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin", b"").decode("latin-1")
            host = headers.get(b"host", b"").decode("latin-1")
            if origin and _hostname(host) in LOCAL_HOSTS and _hostname(origin) not in LOCAL_HOSTS:
                body = json.dumps({"detail": f"Requests from {origin} to this local app are refused."})
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


class QueueAdmission:
    """ASGI middleware: a queue join that would overflow the queue is answered 503 "Queue is full".

    Gradio 6.31 compares the queue's length with its max_size, then awaits the event's validator,
    then adds the event: arrivals at the same moment all pass the comparison and the queue grows
    past its size. Here the joins still in progress count as already queued."""

    def __init__(self, app):
        self.app = app
        self.joining = 0

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not (
                path.endswith("/queue/join") or "/call/" in path):
            return await self.app(scope, receive, send)
        queue = scope["app"].get_blocks()._queue
        waiting = len(queue) + self.joining
        if queue.max_size is not None and waiting >= queue.max_size:
            body = json.dumps({"detail": f"Queue is full. Max size is {queue.max_size} and size is {waiting}."})
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        self.joining += 1  # no await since the comparison: no other join slips in between
        try:
            await self.app(scope, receive, send)
        finally:
            self.joining -= 1
