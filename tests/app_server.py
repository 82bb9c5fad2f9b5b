"""Start the real app for the UI and API tests: `python app.py` on a free localhost port in a
subprocess (`AppServer`), or the same app in this process (`InProcessApp`), where a test can
reach the loaded models to count or break their forward passes. `raw_run` speaks Gradio's queue
protocol itself (POST /gradio_api/queue/join, then the SSE stream of /gradio_api/queue/data),
as any HTTP client can, without gradio_client's checks in the way."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "test-output"
FAST_MODEL = "playground-1m (bundled)"
SHARED_QUEUE_SIZE = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"app did not answer at {url} within {timeout} s")


class AppServer:
    def __init__(self, *args: str, log_path: Path, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **(env or {})}
        self.log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--port", str(self.port), *args],
                                        cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"app exited with {self.process.returncode}; see {self.log.name}")

    def wait_ready(self, timeout: float = 120) -> "AppServer":
        wait_for(self.url, timeout, self._check_alive)
        return self

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


class InProcessApp:
    """app.build_app + app.launch, as `python app.py ARGS` would run them, served from a thread."""

    def __init__(self, *args: str, models_dir: Path | None = None):
        import app
        from playground.access import RateLimiter
        from playground.registry import BUNDLED_DIR, ModelRegistry, discover

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        options = app.parse_args(["--port", str(self.port), *args])
        self.registry = ModelRegistry(discover(models_dir, []))
        self.demo = app.build_app(self.registry, RateLimiter(options.rate_limit))
        app.launch(self.demo, options, [str(BUNDLED_DIR)], prevent_thread_lock=True, quiet=True)
        wait_for(self.url, 60)

    def stop(self) -> None:
        self.demo.close()


_SHARED: dict[str, AppServer] = {}


def shared_server(config) -> AppServer:
    """`python app.py --queue-size 4`, for every test module that needs nothing else: started on
    first use, stopped when the pytest session (`config`) ends."""
    if "app" not in _SHARED:
        OUTPUT.mkdir(exist_ok=True)
        app = AppServer("--queue-size", str(SHARED_QUEUE_SIZE), log_path=OUTPUT / "app-shared.log")
        config.add_cleanup(app.stop)
        _SHARED["app"] = app.wait_ready()
    return _SHARED["app"]


def api_client(url: str, **options):
    """A gradio_client client of the app at `url`, quiet and offline (no telemetry, files left on the server)."""
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, download_files=False, **options)


def fn_index(url: str, api_name: str) -> int:
    """The event index the queue API expects for an endpoint."""
    with urllib.request.urlopen(url + "config", timeout=10) as response:
        config = json.load(response)
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name.lstrip("/"))


def raw_join(url: str, api_name: str, data: list, session_hash: str | None = None, headers: dict | None = None):
    """POST /gradio_api/queue/join with exactly `data` (NaN and Infinity are sent as JSON's extensions).

    Returns (HTTP status, decoded body, session hash)."""
    import httpx

    session_hash = session_hash or uuid.uuid4().hex[:11]
    body = json.dumps({"data": data, "fn_index": fn_index(url, api_name), "session_hash": session_hash,
                       "event_data": None, "trigger_id": None}, allow_nan=True)
    response = httpx.post(url + "gradio_api/queue/join", content=body, timeout=30,
                          headers={"content-type": "application/json", **(headers or {})})
    return response.status_code, response.json(), session_hash


def raw_messages(url: str, session_hash: str, timeout: float = 120, stop_after=None):
    """The SSE messages of one session until its event completes (or `stop_after(message)` is true,
    which also closes the connection, as a closed tab would)."""
    import httpx

    messages = []
    with httpx.stream("GET", url + f"gradio_api/queue/data?session_hash={session_hash}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            message = json.loads(line[5:])
            messages.append(message)
            if message.get("msg") == "process_completed" or (stop_after and stop_after(message)):
                break
    return messages


def raw_run(url: str, api_name: str, data: list, headers: dict | None = None):
    """Join the queue and follow the event: (join status, join body, messages)."""
    status, body, session_hash = raw_join(url, api_name, data, headers=headers)
    return status, body, (raw_messages(url, session_hash) if status == 200 else [])


def rejected_fields(body: dict) -> dict[str, str]:
    """The messages of a 422 answer from a validator, by parameter name."""
    return {item["parameter_name"]: item["message"] for item in body["detail"] if not item["is_valid"]}
