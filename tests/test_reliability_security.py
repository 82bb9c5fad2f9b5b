"""Checklist D (docs/reliability.md): the app as a stranger on a share link meets it. One app
(python app.py --auth ... --rate-limit 3 --models-dir ...) for the module. The app sits on
127.0.0.1, where X-Forwarded-For is trusted as from a proxy, so each test is its own client."""

from __future__ import annotations

import http.client
import importlib.util
import json
import shutil
import uuid
import warnings
from types import SimpleNamespace

import gradio as gr
import pytest
import torch

from app_server import FAST_MODEL, REPO, AppServer, api_client

OUTPUT = REPO / "test-output"
AUTH = ("tester", "correct horse battery")
RATE_LIMIT = 3


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    """A models directory with a checkpoint and a secret beside it."""
    root = tmp_path_factory.mktemp("private")
    shutil.copytree(REPO / "models" / "playground-1m", root / "models" / "mine")
    (root / "models" / ".env").write_text("HF_TOKEN=hf_secret\n")
    return root / "models"


@pytest.fixture(scope="module")
def server(private):
    OUTPUT.mkdir(exist_ok=True)
    app = AppServer("--models-dir", str(private), "--rate-limit", str(RATE_LIMIT), log_path=OUTPUT / "app-security.log",
                    env={"PLAYGROUND_AUTH": ":".join(AUTH)}).wait_ready()
    yield app
    app.stop()


def new_key() -> str:
    return f"198.51.100.{uuid.uuid4().int % 250 + 1}-{uuid.uuid4().hex[:6]}"


def connect(server, key: str | None = None):
    """A gradio_client client that logged in, counted as its own address by the rate limiter."""
    return api_client(server.url, auth=AUTH, headers={"X-Forwarded-For": key or new_key()})


def login_cookie(server, key: str | None = None) -> str:
    status, headers, body = request(server, "POST", "/login", body=f"username={AUTH[0]}&password={AUTH[1]}",
                                    headers={"Content-Type": "application/x-www-form-urlencoded",
                                             "X-Forwarded-For": key or new_key()})
    assert status == 200, body
    return "; ".join(value.split(";")[0] for name, value in headers if name.lower() == "set-cookie")


def request(server, method: str, path: str, body: str | bytes | None = None, headers: dict | None = None):
    """One HTTP request sent exactly as written: no client normalises the path (no ../ folding)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    result = response.status, response.getheaders(), response.read().decode("utf-8", "replace")
    connection.close()
    return result


def assert_serves(server) -> None:
    client = connect(server)
    result = client.predict("In the beginning", model=FAST_MODEL, max_new_tokens=3, temperature=0, api_name="/generate")
    assert result["timing"]["tokens"] == 3
    client.close()


def file_answer(server, cookie: str, path: str) -> tuple[int, str]:
    status, headers, body = request(server, "GET", f"/gradio_api/file={path}", headers={"Cookie": cookie})
    assert not any(name.lower() == "location" for name, _ in headers)  # never a redirect
    return status, body.replace(path, "<path>")


def test_D1_checkpoints_and_secrets_are_not_served_and_existence_is_not_revealed(server, private):
    cookie = login_cookie(server)
    bundled = REPO / "models" / "playground-16m" / "model.safetensors"
    pairs = [  # (exists, does not exist): the answers must not tell them apart
        (str(bundled), str(bundled.with_name("missing.safetensors"))),
        (str(private / "mine" / "model.safetensors"), str(private / "mine" / "missing.safetensors")),
        (str(private / ".env"), str(private / ".envx")),
        ("/etc/passwd", "/etc/no-such-file"),
        ("models/playground-16m/model.safetensors", "models/playground-16m/missing.safetensors"),
        ("../main/models/playground-1m/config.json", "../main/models/playground-1m/missing.json"),
        (str(REPO / "app.py"), str(REPO / "missing.py")),
    ]
    for present, absent in pairs:
        answer = file_answer(server, cookie, present)
        assert answer[0] == 403 and answer == file_answer(server, cookie, absent), (present, answer)
    assert file_answer(server, cookie, "../.env")[0] == 403
    assert file_answer(server, cookie, "../../../../../../etc/passwd")[0] == 403
    assert_serves(server)


def test_D2_blocked_path_bypass_attempts_are_refused(server):
    cookie = login_cookie(server)
    model = str(REPO / "models" / "playground-16m" / "model.safetensors")
    for variant in (model.replace("/models/", "/MODELS/"), model.replace("/models/", "/Models/"),
                    model.replace("/models/", "//models//"), model.replace("/models/", "/models/./"),
                    model.replace("/models/", "/models/../models/"), model + "::$DATA", model + "%00.png",
                    model.replace("/", "%2F"), "\\\\host\\share\\model.safetensors", "..%2f..%2fetc%2fpasswd",
                    "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd/", "file:///etc/passwd"):
        assert file_answer(server, cookie, variant)[0] == 403, variant
    assert_serves(server)


def test_D3_the_file_route_fetches_no_url(server):
    cookie = login_cookie(server)
    for url in ("http://169.254.169.254/latest/meta-data/", "https://example.com/x.png", "http://127.0.0.1:1/"):
        assert file_answer(server, cookie, url)[0] == 403
    assert_serves(server)


def test_D4_oversized_uploads_and_hostile_filenames_are_refused(server):
    cookie = login_cookie(server)

    def upload(filename: str, size: int) -> int:
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n")
        body = head.encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()
        return request(server, "POST", "/gradio_api/upload", body=body, headers={
            "Cookie": cookie, "Content-Type": f"multipart/form-data; boundary={boundary}"})[0]

    assert upload("big.bin", 2 * 2**20) == 413  # max_file_size is 1 MB
    assert upload("a" * 9000 + ".txt", 10) == 413
    assert upload("..", 10) == 400
    assert upload("small.txt", 10) == 200
    assert_serves(server)


def test_D5_the_api_cannot_skip_the_queue(server):
    cookie = login_cookie(server)
    config = json.loads(request(server, "GET", "/config", headers={"Cookie": cookie})[2])
    queued = {d["api_name"]: d["id"] for d in config["dependencies"] if d["queue"] is not False and d.get("api_name")}
    assert {"stream", "generate", "load_model"} <= set(queued)
    attempts = [(f"/gradio_api/{route}/{name}", {"data": ["In the beginning"]})
                for route in ("api", "run") for name in ("generate", "stream", "load_model")]
    attempts += [("/gradio_api/run/predict", {"data": ["In the beginning"], "fn_index": index, "session_hash": "x"})
                 for index in queued.values()]
    for path, payload in attempts:
        status, _, body = request(server, "POST", path, body=json.dumps(payload),
                                  headers={"Cookie": cookie, "Content-Type": "application/json"})
        assert status == 404 and "join the queue" in body, (path, payload, status, body)
    assert_serves(server)


def test_D6_a_password_is_required_and_each_client_is_rate_limited(server):
    from gradio_client import Client
    from gradio_client.exceptions import ValidationError

    for path in ("/config", "/gradio_api/info", "/gradio_api/queue/status", f"/gradio_api/file={REPO / 'app.py'}"):
        assert request(server, "GET", path)[0] == 401
    join = json.dumps({"data": ["In the beginning"], "fn_index": 0, "session_hash": "anonymous"})
    status, _, _ = request(server, "POST", "/gradio_api/queue/join", body=join,
                           headers={"Content-Type": "application/json"})
    assert status == 401
    with pytest.raises(Exception):
        Client(server.url, verbose=False, analytics_enabled=False)  # no password, no app
    limited, other = connect(server), connect(server)
    ask = dict(prompt="In the beginning", model=FAST_MODEL, max_new_tokens=2, api_name="/generate")
    with pytest.raises(ValidationError):
        limited.predict(**{**ask, "temperature": -1})  # a refused request is not counted
    for _ in range(RATE_LIMIT):
        assert limited.predict(**ask)["timing"]["tokens"] == 2
    with pytest.raises(ValidationError, match=rf"too many requests from this address: at most {RATE_LIMIT} "
                                              r"generations a minute; try again in \d+ s"):
        limited.predict(**ask)
    with pytest.raises(ValidationError, match="too many requests"):
        limited.predict(**{**STREAM, "model_label": FAST_MODEL}, api_name="/stream")  # the page's endpoint too
    assert other.predict(**ask)["timing"]["tokens"] == 2  # the next client is not held back by the first
    limited.close()
    other.close()


STREAM = dict(prompt="In the beginning", template="plain", system="", temperature=0.0, top_k=0, top_p=1.0, min_p=0.0,
              repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, max_new_tokens=2, seed=1, stop="",
              capture_attention=False)


def test_D6_share_links_get_a_rate_limit_by_default_and_spaces_ignore_share(monkeypatch, capsys):
    import app

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("PLAYGROUND_AUTH", raising=False)
    assert app.parse_args([]).rate_limit == 0
    assert app.parse_args(["--share"]).rate_limit == app.PUBLIC_RATE_LIMIT > 0
    assert app.parse_args(["--share", "--rate-limit", "0"]).rate_limit == 0
    assert app.parse_args(["--auth", "ann:pw:with:colons"]).auth == ("ann", "pw:with:colons")
    with pytest.raises(SystemExit):
        app.parse_args(["--auth", "no-password"])
    launched = {}
    demo = SimpleNamespace(queue=lambda **kw: launched.update(queue=kw), launch=lambda **kw: launched.update(kw))
    app.launch(demo, app.parse_args(["--share", "--auth", "ann:pw"]), [])
    assert launched["share"] is True and launched["auth"] == [("ann", "pw")]
    assert launched["queue"] == {"max_size": 16, "default_concurrency_limit": 1, "api_open": False}
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    app.launch(demo, app.parse_args(["--share"]), [])
    assert launched["share"] is False and "--share is ignored on a Space" in capsys.readouterr().out
    assert app.parse_args([]).rate_limit == app.PUBLIC_RATE_LIMIT


def test_D7_password_guessing_is_throttled_per_client(server):
    guesser, other = new_key(), new_key()

    def login(key: str, password: str) -> int:
        return request(server, "POST", "/login", body=f"username={AUTH[0]}&password={password}",
                       headers={"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": key})[0]

    assert [login(guesser, f"guess{i}") for i in range(5)] == [400] * 5
    status, headers, body = request(server, "POST", "/login", body=f"username={AUTH[0]}&password={AUTH[1]}",
                                    headers={"Content-Type": "application/x-www-form-urlencoded",
                                             "X-Forwarded-For": guesser})
    assert status == 429 and "Too many failed logins" in body and dict(headers).get("retry-after")
    assert login(other, AUTH[1]) == 200
    assert_serves(server)


def test_D8_a_page_from_another_site_cannot_make_the_local_app_act(server):
    cookie = login_cookie(server)
    join = json.dumps({"data": [], "fn_index": 0, "session_hash": "x"})
    for origin in ("http://evil.example", "null"):
        for path, body, kind in (("/gradio_api/queue/join", join, "application/json"),
                                 ("/gradio_api/upload", "", "multipart/form-data; boundary=x")):
            status, _, answer = request(server, "POST", path, body=body,
                                        headers={"Cookie": cookie, "Origin": origin, "Content-Type": kind})
            assert status == 403 and "are refused" in answer, (origin, path, status)
    status, _, _ = request(server, "POST", "/gradio_api/queue/join", body=join, headers={
        "Cookie": cookie, "Origin": f"http://127.0.0.1:{server.port}", "Content-Type": "application/json"})
    assert status != 403  # the app's own page may
    assert_serves(server)


def authenticated_config(server) -> dict:
    status, _, body = request(server, "GET", "/config", headers={"Cookie": login_cookie(server)})
    assert status == 200
    return json.loads(body)


def test_D9_no_flagging(server):
    config = authenticated_config(server)
    assert not any("flag" in (d.get("api_name") or "") for d in config["dependencies"])
    assert not any(c.get("props", {}).get("label") == "Flag" for c in config["components"])
    assert not (REPO / ".gradio" / "flagged").exists()
    assert_serves(server)


def test_D10_monitoring_is_off(server):
    cookie = login_cookie(server)
    for path in ("/monitoring", "/monitoring/summary", "/gradio_api/monitoring", "/gradio_api/monitoring/summary"):
        assert request(server, "GET", path, headers={"Cookie": cookie})[0] in (403, 404), path
    assert_serves(server)


def test_D11_no_mcp_server(server):
    assert authenticated_config(server)["mcp_server"] is False
    cookie = login_cookie(server)
    for path in ("/gradio_api/mcp/sse", "/gradio_api/mcp/", "/gradio_api/mcp/schema", "/gradio_api/mcp/messages/"):
        assert request(server, "GET", path, headers={"Cookie": cookie})[0] == 404, path
    assert_serves(server)


def test_D12_dependency_floors_are_checked_before_anything_starts(monkeypatch):
    import app
    from playground.dependency_floors import dependency_problems

    assert dependency_problems(gr.__version__, torch.__version__, True) == ([], [])  # what is installed passes
    monkeypatch.setattr(gr, "__version__", "6.19.2")
    with pytest.raises(SystemExit, match=r"gradio 6\.19\.2 is older than 6\.20"):
        app.main(["--port", "1"])
    monkeypatch.setattr(gr, "__version__", "6.31.0")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors"
                        else real_find_spec(name, *a))
    with pytest.raises(SystemExit, match="the safetensors package is missing"):
        app.main(["--port", "1"])
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    monkeypatch.setattr(torch, "__version__", "2.9.0")
    def started(*args):
        raise RuntimeError("started")

    monkeypatch.setattr(app, "discover", started)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RuntimeError, match="started"):
        warnings.simplefilter("always")
        app.main(["--port", "1"])  # an old torch only warns: the app goes on to start (stopped here)
    assert any("pickled checkpoints (.pth, pytorch_model.bin) will be refused" in str(w.message) for w in caught)


def test_D6_the_rate_limit_window_slides_and_forgets_idle_clients():
    from playground import access

    now = [0.0]
    limiter = access.RateLimiter(2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0 and limiter.acquire("a") == 0
    now[0] = 20.0
    assert limiter.acquire("a") == pytest.approx(40.0) and limiter.acquire("b") == 0  # "a" waits for its oldest
    now[0] = 60.0
    assert limiter.acquire("a") == 0  # the first request left the window
    for i in range(access.FORGET_AFTER_CLIENTS + 1):
        limiter.record(f"client-{i}")
    now[0] = 200.0
    limiter.wait_s("a")
    assert len(limiter._events) <= 1  # clients idle for a minute are forgotten: the table cannot grow forever
    assert access.client_key("127.0.0.1", "203.0.113.9, 10.0.0.2") == "10.0.0.2"  # the hop the proxy added
    assert access.client_key("8.8.8.8", "203.0.113.9") == "8.8.8.8"  # a client from the internet cannot choose
