"""A remote model in a real browser: `python app.py --remote URL` against a real llama-cpp-python server
(tests/remote_server.py), driven by Chromium through Playwright — pick the remote model, generate, read its
tokens and probabilities, branch, export and replay the run report; the views that need the weights say so;
side by side puts the local engine beside the server."""

from __future__ import annotations

import json
import secrets

import pytest

from app_server import OUTPUT, AppServer
from browser import export_run, require_chromium
from remote_server import remote_gguf, shared_llama_server  # noqa: F401 (fixtures)
from test_app import _generate_in_page, _wait_finished, browser  # noqa: F401 (fixture)

KEY_ENV = "PLAYGROUND_TEST_REMOTE_KEY"
KEY = "sk-test-" + secrets.token_hex(16)
LOCAL = "playground-1m (bundled)"


@pytest.fixture(scope="module")
def remote_app(request, remote_gguf, tmp_path_factory):
    require_chromium()
    server = shared_llama_server(request.config, remote_gguf, tmp_path_factory.getbasetemp())
    server.heal()
    OUTPUT.mkdir(exist_ok=True)
    app = AppServer("--remote", server.url, "--remote-key-env", KEY_ENV, log_path=OUTPUT / "app-remote-browser.log",
                    env={KEY_ENV: KEY}).wait_ready()
    yield app, server, f"playground-1m (remote: {server.url.removeprefix('http://')})"
    app.stop()


def _choose(page, label: str, menu: str = "Model size") -> None:
    page.get_by_label(menu).first.click()
    page.get_by_role("option").filter(has_text=label).first.click()


def test_browser_remote_model_generate_probabilities_branch_and_report(remote_app, browser, tmp_path):
    app, server, remote = remote_app
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    _choose(page, remote)
    page.wait_for_function("document.querySelector('#model-info')?.innerText.includes('served by')", timeout=30_000)
    assert server.url in page.inner_text("#model-info")
    page.get_by_label("Temperature (0 = greedy)").first.fill("0")
    _generate_in_page(page, "In the beginning", max_tokens=16)
    status = _wait_finished(page)
    assert "16 tokens" in status and "stop: length" in status
    output = page.input_value("#output textarea")
    assert output

    page.get_by_role("tab", name="Token probabilities").click()
    page.wait_for_selector("#token-view .tok", timeout=30_000)
    assert page.locator("#token-view .tok").count() == 16
    assert page.inner_text("#token-view .prompt") == "In the beginning"  # the prompt, as text
    page.locator("#token-view .tok").nth(3).click()
    page.wait_for_function("document.querySelector('#pipeline')?.textContent.includes('recomputed on the server')",
                           timeout=30_000)
    page.wait_for_function("document.querySelector('#probability')?.textContent.includes('lower bound')",
                           timeout=30_000)
    page.screenshot(path=str(OUTPUT / "remote-probabilities.png"), full_page=True)

    # Branch with the greedy token itself: a new request with the prompt, the text before step 3 and that token.
    page.click("#branch")
    page.wait_for_function("document.querySelector('#branch-text textarea')?.value.length > 0", timeout=60_000)
    branch_text = page.input_value("#branch-text textarea")
    assert branch_text and output.startswith(branch_text[: len(output) // 3])
    assert "branch 1: step 3" in page.locator("#branches input").input_value()

    report_path, html_path = export_run(page, tmp_path)
    report = json.loads(report_path.read_text())
    identity = report["model_identity"]
    assert identity["kind"] == "remote" and identity["server"] == server.url and identity["model"] == "playground-1m"
    assert "weights" not in identity and "fingerprint" in identity and len(report["tokens"]) == 16
    assert report["branches"] and report["branches"][0]["fork_step"] == 3
    html = html_path.read_text()
    assert f"served by {server.url}" in html and "attention needs a local model" in html
    assert KEY not in html and KEY not in report_path.read_text()

    page.locator("#report-upload input[type=file]").set_input_files(str(report_path))
    page.click("#replay")
    page.wait_for_function("document.querySelector('#replay-result')?.innerText.includes('replayed')",
                           timeout=60_000)
    assert "the same tokens" in page.inner_text("#replay-result")

    page.get_by_role("tab", name="Attention").click()
    page.wait_for_function("document.querySelector('#attention-empty')?.innerText.includes('needs a local model')",
                           timeout=30_000)
    page.get_by_role("tab", name="Logit lens").click()
    page.click("#lens-run")
    page.wait_for_function("document.querySelector('#lens-note')?.innerText.includes('needs a local model')",
                           timeout=30_000)
    assert KEY not in page.content()
    page.close()


def test_browser_side_by_side_local_against_remote(remote_app, browser):
    app, _, remote = remote_app
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    page.get_by_label("Max new tokens").first.fill("12")
    page.get_by_role("tab", name="Side by side").click()
    _choose(page, LOCAL, "Model A")
    _choose(page, remote, "Model B")
    page.click("#compare")
    page.wait_for_function("document.querySelector('#compare-summary')?.innerText.includes('tokens/s')",
                           timeout=120_000)
    summary = page.inner_text("#compare-summary")
    assert "needs two local models" in summary and page.input_value("#text-b textarea")
    page.wait_for_selector("#divergence .scatterlayer", timeout=30_000)
    page.screenshot(path=str(OUTPUT / "remote-side-by-side.png"), full_page=True)
    page.close()
