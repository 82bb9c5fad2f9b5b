"""The views beyond a plain playground, in a real browser on the bundled models."""

from __future__ import annotations

import json

from app_server import api_client
from browser import export_run
from test_app import OUTPUT, _generate_in_page, _wait_finished, browser, server  # noqa: F401 (fixtures)


def _plot_text(page, selector: str) -> str:
    return " ".join(page.locator(f"{selector} text").all_text_contents())


def test_browser_pipeline_branch_and_run_report(server, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    page.get_by_label("Temperature (0 = greedy)").first.fill("0")
    _generate_in_page(page, "In the beginning", max_tokens=16)
    _wait_finished(page)

    page.get_by_role("tab", name="Token probabilities").click()
    page.wait_for_selector("#token-view .tok", timeout=30_000)
    page.locator("#token-view .tok").nth(3).click()
    page.wait_for_function("document.querySelector('#pipeline')?.textContent.includes('Sampler pipeline at step 3')",
                           timeout=30_000)
    assert "raw logits" in _plot_text(page, "#pipeline") and "greedy (argmax)" in _plot_text(page, "#pipeline")
    page.locator("#pipeline").screenshot(path=str(OUTPUT / "pipeline.png"))

    # Branch with the greedy token itself (the menu's first entry is the top alternative): the branch
    # reproduces the main run's text from that step on.
    page.click("#branch")
    page.wait_for_function("document.querySelector('#branch-text textarea')?.value.length > 0", timeout=60_000)
    main_text = page.input_value("#output textarea")
    branch_text = page.input_value("#branch-text textarea")
    assert branch_text and main_text.startswith(branch_text[: len(main_text) // 2])
    assert "branch 1: step 3" in page.locator("#branches input").input_value()

    report_path, page_path = export_run(page, tmp_path)
    report = json.loads(report_path.read_text())
    assert report["model_identity"]["weights"].startswith("sha256:") and len(report["tokens"]) == 16
    # The HTML report opens offline: plotly.js inflates from the page itself and draws its figures.
    assert page_path.stat().st_size <= 5_000_000
    offline = browser.new_page()
    offline.goto(page_path.as_uri())
    offline.wait_for_selector(".figure .main-svg", timeout=60_000)
    assert offline.locator(".run-text .tok").count() == 16 and "Attention at step" in offline.inner_text("body")
    assert "Branch 1: step 3" in offline.inner_text("body")  # the branch made above is in the report
    offline.close()
    page.locator("#report-upload input[type=file]").set_input_files(str(report_path))
    page.click("#replay")
    page.wait_for_function("document.querySelector('#replay-result')?.innerText.includes('replayed')",
                           timeout=60_000)
    assert "the same tokens" in page.inner_text("#replay-result")
    page.locator("#replay-result").scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "run-report.png"))

    page.get_by_role("tab", name="Logit lens").click()
    page.click("#lens-run")
    page.wait_for_selector("#logit-lens .heatmaplayer, #logit-lens .hm", timeout=60_000)
    labels = page.locator("#logit-lens .ytick text").all_text_contents()
    assert "embeddings" in labels and "layer 8" in labels  # the default model has 8 layers
    page.locator("#logit-lens").screenshot(path=str(OUTPUT / "logit-lens.png"))
    page.close()


def test_browser_side_by_side_score_text_and_chinchilla_calculator(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    page.get_by_label("Max new tokens").first.fill("12")

    page.get_by_role("tab", name="Side by side").click()
    page.click("#compare")
    page.wait_for_function("document.querySelector('#compare-summary')?.innerText.includes('tokens/s')",
                           timeout=120_000)
    summary = page.inner_text("#compare-summary")
    assert "playground-16m" in summary and "playground-4m" in summary and "agree at" in summary
    assert page.input_value("#text-a textarea") and page.input_value("#text-b textarea")
    page.wait_for_selector("#divergence .barlayer", timeout=30_000)
    page.screenshot(path=str(OUTPUT / "side-by-side.png"), full_page=True)

    page.get_by_role("tab", name="Score text").click()
    page.click("#score")
    page.wait_for_selector("#score-view .tok", timeout=60_000)
    assert page.locator("#score-view h4").count() == 2 and "perplexity" in page.inner_text("#score-view")
    assert "title" in page.locator("#score-view .tok").first.evaluate("e => e.outerHTML")
    page.locator("#score-view").screenshot(path=str(OUTPUT / "score-text.png"))

    page.get_by_role("tab", name="Scaling").click()
    page.click("#calculate")
    page.wait_for_function("document.querySelector('#calc-result')?.innerText.includes('compute-optimal')",
                           timeout=30_000)
    assert "149.3 tokens/param" in page.inner_text("#calc-result")  # LLaMA-7B: 1T tokens on 6.7B parameters
    page.wait_for_selector("#chinchilla .scatterlayer", timeout=30_000)
    # Every model is on the chart (named on hover); a label where it fits without overlapping another.
    names = page.evaluate("[].concat(...document.querySelector('#chinchilla .js-plotly-plot').data"
                          ".map(t => t.customdata || []))")
    assert "LLaMA-65B" in names and "playground-16m" in names and "LLaMA-7B" in _plot_text(page, "#chinchilla")
    page.locator("#chinchilla").screenshot(path=str(OUTPUT / "chinchilla.png"))
    page.close()


def test_score_and_chinchilla_endpoints(server):
    client = api_client(server.url)
    scored = client.predict("In the beginning God created the heaven and the earth.", api_name="/score")
    assert scored["perplexity"] > 1 and len(scored["tokens"]) >= 10
    assert all(0 < t["prob"] <= 1 and len(t["top"]) == 5 for t in scored["tokens"])
    law = client.predict(6.7e9, 1e12, 0, api_name="/chinchilla")
    assert round(law["tokens_per_param"]) == 149 and law["loss_opt"] < law["loss"]
    from gradio_client.exceptions import AppError

    import pytest

    with pytest.raises(AppError, match="n_params"):
        client.predict(-5, 0, 0, api_name="/chinchilla")
    assert client.predict(0, 0, 1e21, api_name="/chinchilla")["n_opt"] > 0  # the server kept serving
    client.close()
