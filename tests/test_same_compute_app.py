"""The "Same compute" preset and the inference-aware calculator, in a real browser on the bundled models."""

from __future__ import annotations

import re

import pytest

from app_server import api_client
from test_app import OUTPUT, browser, server  # noqa: F401 (fixtures)


def _table_row(table: str, name: str) -> list[str]:
    row = next(line for line in table.splitlines() if line.startswith(name))
    return [cell.strip() for cell in row.split("\t")[1:]]


def test_browser_same_compute_preset_shows_both_texts_speeds_and_losses(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    page.get_by_label("Max new tokens").first.fill("24")
    page.get_by_role("tab", name="Side by side").click()
    page.click("#same-compute")
    page.wait_for_function("document.querySelector('#same-compute-table')?.innerText.includes('tokens/s')",
                           timeout=180_000)
    assert "same-compute-1.9m" in page.locator("#model-a input").input_value()  # the menus show the pair
    assert "same-compute-17m" in page.locator("#model-b input").input_value()
    assert page.input_value("#text-a textarea") and page.input_value("#text-b textarea")  # both texts

    table = page.inner_text("#same-compute-table")
    speeds = [float(s) for s in _table_row(table, "decode tokens/s")]  # both speeds, measured in this run
    losses = [float(s) for s in _table_row(table, "validation loss")]  # both losses, from the cards
    flops = [float(s) for s in _table_row(table, "training FLOPs")]
    assert all(s > 0 for s in speeds) and losses[0] < losses[1]
    assert max(flops) <= 1.01 * min(flops)  # the two runs' models were trained on equal compute

    summary = page.inner_text("#compare-summary")
    assert summary.startswith("At the same training compute")
    assert f"{losses[0]:.3f} vs {losses[1]:.3f}" in summary
    assert re.search(rf"\({speeds[0]:.0f} vs {speeds[1]:.0f} tokens/s\)", summary)  # this run's numbers
    page.wait_for_selector("#divergence .barlayer", timeout=30_000)
    page.locator("#same-compute").scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "same-compute.png"), full_page=True)
    page.close()


def test_browser_inference_aware_calculator_moves_the_optimum_and_places_llama(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url)
    page.get_by_role("tab", name="Scaling").click()
    assert "The story in a minute" in page.inner_text("#scaling-story")
    assert "same-compute-1.9m" in page.inner_text("#scaling-story")
    page.locator("#calc-inference input").fill("1e13")
    page.click("#calculate")
    page.wait_for_function("document.querySelector('#inference-result')?.innerText.includes('Cheapest')",
                           timeout=30_000)
    result = page.inner_text("#inference-result")
    assert "1e+13 tokens served" in result and "arXiv:2401.00448" in result and "arXiv:2203.15556" in result
    page.wait_for_selector("#inference-aware .scatterlayer", timeout=30_000)
    labels = " ".join(page.locator("#inference-aware text").all_text_contents())
    assert all(name in labels for name in ("LLaMA-7B", "LLaMA-13B", "LLaMA-65B"))
    page.locator("#inference-aware").screenshot(path=str(OUTPUT / "inference-aware.png"))
    page.close()


def test_chinchilla_endpoint_answers_the_inference_aware_optimum(server):
    from llama_core.chinchilla import implied_inference_tokens

    client = api_client(server.url)
    demand = implied_inference_tokens(6.7e9, 1e12)  # the lifetime demand for which LLaMA-7B is the optimum
    law = client.predict(6.7e9, 1e12, 0, demand, api_name="/chinchilla")
    best = law["inference_aware"]
    assert best["n_params"] == pytest.approx(6.7e9, rel=1e-5) and best["tokens"] == pytest.approx(1e12, rel=1e-5)
    assert best["total_flops"] == pytest.approx(best["training_flops"] + 2 * 6.7e9 * demand, rel=1e-5)
    assert client.predict(6.7e9, 1e12, 0, api_name="/chinchilla")["inference_aware"]["inference_flops"] == 0
    client.close()
