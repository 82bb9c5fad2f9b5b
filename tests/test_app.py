"""The app as users meet it: a real server, driven by gradio_client and by Chromium through Playwright."""

from __future__ import annotations

import time

import pytest

from app_server import REPO, AppServer, api_client
from browser import launch, plot_labels, require_chromium

OUTPUT = REPO / "test-output"


@pytest.fixture(scope="module")
def server():
    OUTPUT.mkdir(exist_ok=True)
    app = AppServer(log_path=OUTPUT / "app.log").wait_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(server):
    return api_client(server.url)


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


def test_generate_endpoint_returns_text_and_token_probabilities(client):
    result = client.predict("In the beginning", max_new_tokens=12, temperature=0, api_name="/generate")
    assert result["stop_reason"] in ("length", "eos") and result["text"]
    assert len(result["tokens"]) == result["timing"]["tokens"] <= 12
    token = result["tokens"][0]
    assert 0 < token["prob"] <= 1 and token["prob_filtered"] == 1.0  # greedy
    assert [t[0] for t in token["top"]][0] == token["token_id"]  # greedy picks the most likely
    assert "".join(t["text"] for t in result["tokens"]) == result["text"]


def test_same_seed_gives_the_same_text(client):
    runs = [client.predict("The Python interpreter", max_new_tokens=16, temperature=1.0, seed=42,
                           api_name="/generate")["text"] for _ in range(2)]
    assert runs[0] == runs[1]


def test_bad_parameter_is_a_clear_error_and_the_server_keeps_serving(client):
    from gradio_client.exceptions import ValidationError

    message = r"temperature must be a finite number in \[0, 2\] \(0 = greedy\), got -1$"
    with pytest.raises(ValidationError, match=message):  # refused before the queue, echoing the value as sent
        client.predict("x", temperature=-1, api_name="/generate")
    assert client.predict("x", max_new_tokens=2, temperature=0, api_name="/generate")["text"] is not None


def test_a_second_request_waits_in_the_queue_and_completes(client):
    other = api_client(client.src)
    first = client.submit("In the beginning", max_new_tokens=200, temperature=0, api_name="/generate")
    time.sleep(0.3)
    second = other.submit("The Python interpreter", max_new_tokens=5, temperature=0, api_name="/generate")
    seen_queued = False
    while not second.done():
        status = second.status()
        seen_queued |= status.code.name == "IN_QUEUE" and not first.done()
        time.sleep(0.05)
    assert first.result()["timing"]["tokens"] > 0 and second.result()["timing"]["tokens"] > 0
    assert seen_queued  # one model job at a time: the second waited for the first


def test_absent_preset_explains_how_to_add_weights(client):
    info, _ = client.predict("LLaMA-7B (6.7B, weights not found)", 96, api_name="/load_model")
    assert "needs its weights" in info and "params.json" in info


def _generate_in_page(page, prompt: str, max_tokens: int | None = None) -> None:
    page.fill("#prompt textarea", prompt)
    if max_tokens is not None:
        page.get_by_label("Max new tokens").first.fill(str(max_tokens))
    page.click("#generate")


def _wait_finished(page, timeout_ms: int = 120_000) -> str:
    page.wait_for_function("document.querySelector('#status')?.innerText.includes('stop:')", timeout=timeout_ms)
    return page.inner_text("#status")


def test_browser_generate_then_every_panel_shows_the_run(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)  # the default model is loaded and described
    _generate_in_page(page, "In the beginning")
    page.wait_for_function("document.querySelector('#output textarea')?.value.length > 0", timeout=60_000)
    status = _wait_finished(page)
    assert "tokens/s" in status and "time to first token" in status
    output = page.input_value("#output textarea")
    assert output.strip()
    page.screenshot(path=str(OUTPUT / "generate.png"), full_page=True)

    page.get_by_role("tab", name="Token probabilities").click()
    page.wait_for_selector("#token-view .tok", timeout=30_000)  # the panels arrive just after the last token
    tokens = page.locator("#token-view .tok")
    assert tokens.count() >= 1
    assert "hsl(" in tokens.first.get_attribute("style") and "p = " in tokens.first.get_attribute("title")
    tokens.nth(min(2, tokens.count() - 1)).click()
    page.wait_for_function("document.querySelector('#alternatives .gtitle')?.textContent.startsWith('Step "
                           f"{min(2, tokens.count() - 1)}:')", timeout=30_000)
    assert page.locator("#alternatives .bars path").count() >= 2
    page.screenshot(path=str(OUTPUT / "probabilities.png"), full_page=True)

    page.get_by_role("tab", name="Attention").click()
    page.wait_for_selector("#attention .heatmaplayer, #attention .hm", timeout=30_000)
    assert "0 <s>" in page.locator("#attention .ytick text").all_text_contents()  # the sink keeps its label
    labels = plot_labels(page, "#attention")  # every query position (the tick labels are thinned to fit)
    assert "·beginning" in " ".join(labels)
    generated_piece = page.locator("#token-view .tok").first.text_content()
    assert any(generated_piece.strip() and generated_piece.strip() in t for t in labels)
    page.screenshot(path=str(OUTPUT / "attention.png"), full_page=True)

    page.get_by_role("tab", name="Scaling").click()
    page.wait_for_selector("#performance .scatterlayer", timeout=30_000)
    labels = " ".join(page.locator("#performance text").all_text_contents())
    assert "LLaMA-13B" in labels and "GPT-3 175B" in labels
    # The run just made put the default model on the measured-speed panel of our models' chart.
    page.wait_for_function("document.querySelector('#our-models')?.textContent.includes('decode speed')",
                           timeout=30_000)
    page.locator("#our-models").scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "scaling.png"), full_page=True)
    page.close()


def test_browser_stop_ends_generation_and_the_next_request_works(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    _generate_in_page(page, "And the LORD said unto Moses,", max_tokens=200)
    page.wait_for_function("document.querySelector('#output textarea')?.value.length > 20", timeout=60_000)
    page.click("#stop")
    status = _wait_finished(page, timeout_ms=10_000)
    assert "stop: **cancelled**" in status or "stop: cancelled" in status
    stopped_at = page.input_value("#output textarea")
    time.sleep(1.0)
    assert page.input_value("#output textarea") == stopped_at  # nothing more arrives after Stop
    _generate_in_page(page, "The Python interpreter", max_tokens=8)
    page.wait_for_function(f"document.querySelector('#output textarea')?.value !== {stopped_at!r}", timeout=60_000)
    assert "stop: " in _wait_finished(page)
    page.close()


def test_browser_switch_to_another_bundled_model_and_generate(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    first_model = page.inner_text("#model-info strong")
    page.get_by_label("Model size").click()
    options = [o.replace("✓", "").strip() for o in page.get_by_role("option").all_text_contents()]
    other = next(o for o in options if "(bundled)" in o and o != first_model)
    page.get_by_role("option").filter(has_text=other).first.click()
    page.wait_for_function(f"document.querySelector('#model-info strong')?.innerText === {other!r}",
                           timeout=60_000)
    _generate_in_page(page, "In the beginning", max_tokens=10)
    assert "stop: " in _wait_finished(page)
    page.close()
