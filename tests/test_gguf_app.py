"""A GGUF file in `--models-dir`, picked from the model menu in a real browser, generates the text the engine gives."""

from __future__ import annotations

import pytest
from app_server import AppServer
from test_app import OUTPUT, _generate_in_page, _wait_finished, browser  # noqa: F401 (fixture)

from llama_core import SamplingParams, generate_stream, load_checkpoint
from llama_core.formats.gguf_export import export_gguf

BUNDLED = OUTPUT.parent / "models" / "playground-1m"
LABEL = "playground-1m-q8_0.gguf (local)"
PROMPT, NEW_TOKENS = "In the beginning", 12


@pytest.fixture(scope="module")
def gguf_server(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    path = export_gguf(BUNDLED, models / "playground-1m-q8_0.gguf", "q8_0")
    OUTPUT.mkdir(exist_ok=True)
    app = AppServer("--models-dir", str(models), log_path=OUTPUT / "app-gguf.log").wait_ready()
    yield app, path
    app.stop()


def test_browser_picks_a_gguf_from_the_models_dir_and_generates(gguf_server, browser):
    server, path = gguf_server
    loaded = load_checkpoint(path)
    ids = loaded.tokenizer.encode(PROMPT)
    steps = generate_stream(loaded.model, loaded.tokenizer, ids, SamplingParams(temperature=0.0,
                                                                                max_new_tokens=NEW_TOKENS))
    expected = loaded.tokenizer.decode([step.token_id for step in steps])

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    page.get_by_label("Model size").click()
    page.get_by_role("option").filter(has_text=LABEL).first.click()
    page.wait_for_function(f"document.querySelector('#model-info strong')?.innerText === {LABEL!r}", timeout=60_000)
    page.get_by_label("Temperature (0 = greedy)").first.fill("0")
    _generate_in_page(page, PROMPT, max_tokens=NEW_TOKENS)
    assert "stop: " in _wait_finished(page)
    # Greedy: the engine's own tokens from the same file (the page keeps the space that joins them to the prompt).
    assert page.input_value("#output textarea").strip() == expected.strip() != ""
    page.screenshot(path=str(OUTPUT / "gguf-model.png"), full_page=True)
    page.close()
