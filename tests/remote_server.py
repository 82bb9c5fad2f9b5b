"""A real OpenAI-compatible server for the remote-backend tests: llama-cpp-python's `python -m llama_cpp.server`
on a GGUF that our own exporter writes from the bundled playground-1m.

The GGUF is F32: llama.cpp then computes in fp32 like our engine (no fp16/8-bit activation rounding), and
llama-cpp-python 0.3.36 crashes in decode on quantized files with its repacked (AMX) weight buffers, which its
server has no option to switch off. The server runs with `--logits_all true` (without it llama-cpp-python refuses
`logprobs`) and one thread, since several test processes share a 2-core machine.

Fixture API (stable: the playground's app-level tests use it too). Import the fixtures by name
(`from remote_server import llama_server, own_llama_server  # noqa: F401 (fixtures)`), as with checkpoint_fixtures:
- `remote_gguf` (session): Path of the F32 GGUF of playground-1m, exported once per test session.
- `llama_server`: the session's shared `LlamaServer`, started on first use and stopped when the session ends.
  Before each test it is resumed or restarted if an earlier test paused or killed it, so a test may break it.
- `own_llama_server`: a `LlamaServer` of the test's own (its own port), stopped after the test.
- `LlamaServer` (for module-scoped fixtures of one's own, e.g. an app started with `--remote URL`):
  `.url` ("http://127.0.0.1:PORT", no /v1), `.model_id` (the id /v1/models lists), `.gguf_path`, `.port`,
  `.pid`, `.log_path`, `.log_tail()`; `.pause()` (SIGSTOP: the socket stays open, nothing answers),
  `.resume()` (SIGCONT), `.kill()` (SIGKILL, as a crash would), `.restart()` (kill if running, start again on the
  same port, wait until it answers), `.stop()` (always ends the process, also a paused one); `.is_running`.
- `closed_port_url()`: a URL where nothing listens (a port just bound and released), for "unreachable" tests.
- `require_llama_server()`: skip with the reason when `llama_cpp.server` cannot be imported — except under CI
  (`CI=true`), where that is a failure, as for the browser tests (tests/browser.py).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from app_server import free_port

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "models" / "playground-1m"
MODEL_ID = "playground-1m"
N_CTX = 512
START_TIMEOUT_S = 60.0


def require_llama_server() -> None:
    """Skip where llama-cpp-python's server extra is missing; fail under CI, which installs it."""
    try:
        import llama_cpp.server.app  # noqa: F401 — the [server] extra: fastapi, uvicorn, sse-starlette
    except ImportError as error:
        reason = f"llama_cpp.server cannot be imported ({error})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: under CI, requirements-dev.txt installs llama-cpp-python[server]")
        pytest.skip(f"{reason}; `pip install 'llama-cpp-python[server]'` to run the remote-server tests")


def closed_port_url() -> str:
    """A localhost URL with nothing listening: connecting is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def export_remote_gguf(folder: Path) -> Path:
    from llama_core.formats.gguf_export import export_gguf

    return export_gguf(BUNDLED, folder / f"{MODEL_ID}-f32.gguf", "f32")


class LlamaServer:
    """One `python -m llama_cpp.server` process on a localhost port; its output goes to `log_path`."""

    def __init__(self, gguf_path: Path, log_path: Path, *, model_id: str = MODEL_ID, n_ctx: int = N_CTX,
                 port: int | None = None):
        self.gguf_path = Path(gguf_path)
        self.log_path = Path(log_path)
        self.model_id = model_id
        self.n_ctx = n_ctx
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.paused = False
        self.startup_s: float | None = None  # seconds from spawn to the first answer of /v1/models

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        # n_threads_batch too: its default is every core, which the prompt pass would take from the other tests.
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf_path), "--model_alias",
                self.model_id, "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                "--n_threads", "1", "--n_threads_batch", "1", "--logits_all", "true", "--verbose", "false"]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LlamaServer:
        """Spawn the server and wait until GET /v1/models lists the model."""
        if self.is_running:
            raise RuntimeError(f"llama_cpp.server pid {self.pid} is already running on {self.url}")
        with open(self.log_path, "ab") as log:  # append: a restart keeps the earlier run's log
            log.write(f"--- {' '.join(self.command())}\n".encode())
            log.flush()
            # A new session: Ctrl-C in the terminal running pytest does not reach the server before teardown does.
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self.paused = False
        _LIVE.add(self)
        spawned = time.monotonic()
        self._wait_ready(spawned, timeout_s)
        self.startup_s = time.monotonic() - spawned
        return self

    def _wait_ready(self, spawned: float, timeout_s: float) -> None:
        while True:
            if not self.is_running:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode} before answering on "
                                   f"{self.url}; its log ({self.log_path}) ends:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as response:
                    ids = [model["id"] for model in json.load(response)["data"]]
                if self.model_id not in ids:
                    self.stop()
                    raise RuntimeError(f"{self.url}/v1/models lists {ids}, not {self.model_id!r}")
                return
            except OSError:
                pass
            if time.monotonic() - spawned > timeout_s:
                self.stop()
                raise TimeoutError(f"llama_cpp.server did not answer GET {self.url}/v1/models within "
                                   f"{timeout_s:g} s; its log ({self.log_path}) ends:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError as error:
            return f"(no log: {error})"

    def _signal(self, signum: int) -> None:
        if not self.is_running:
            raise RuntimeError(f"llama_cpp.server on {self.url} is not running; its log ends:\n{self.log_tail()}")
        os.kill(self.process.pid, signum)

    def pause(self) -> None:
        """SIGSTOP: the listening socket stays open and connections are accepted, but nothing is answered."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it: open connections are reset, nothing is flushed."""
        if self.is_running:
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)
        self.paused = False

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> LlamaServer:
        """Kill it if it runs, then start it again on the same port (clients keep their URL)."""
        self.kill()
        return self.start(timeout_s)

    def stop(self) -> None:
        """End the process whatever its state; a paused one is continued first so that it can exit."""
        if self.is_running:
            if self.paused:
                os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.paused = False
        _LIVE.discard(self)

    def heal(self) -> None:
        """Undo what a test did to a shared server: resume it if paused, restart it if it died."""
        if self.is_running and self.paused:
            self.resume()
        if not self.is_running:
            self.restart()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.is_running else "stopped"
        return f"LlamaServer({self.url}, model_id={self.model_id!r}, pid={self.pid}, {state})"


# Servers still alive if pytest itself is interrupted before teardown: ended at interpreter exit.
_LIVE: set[LlamaServer] = set()
atexit.register(lambda: [server.stop() for server in list(_LIVE)])
_SHARED: dict[str, LlamaServer] = {}


@pytest.fixture(scope="session")
def remote_gguf(tmp_path_factory) -> Path:
    require_llama_server()
    return export_remote_gguf(tmp_path_factory.mktemp("remote-gguf"))


def shared_llama_server(config, gguf_path: Path, log_dir: Path) -> LlamaServer:
    """One server for the whole session, whichever test modules import the fixture (a session fixture
    imported into several modules would otherwise start one per module)."""
    if "server" not in _SHARED:
        server = LlamaServer(gguf_path, log_dir / "llama-server-shared.log")
        config.add_cleanup(server.stop)
        _SHARED["server"] = server.start()
    return _SHARED["server"]


@pytest.fixture
def llama_server(request, remote_gguf, tmp_path_factory) -> LlamaServer:
    server = shared_llama_server(request.config, remote_gguf, tmp_path_factory.getbasetemp())
    server.heal()
    return server


@pytest.fixture
def own_llama_server(remote_gguf, tmp_path):
    server = LlamaServer(remote_gguf, tmp_path / "llama-server.log")
    try:
        yield server.start()
    finally:
        server.stop()
