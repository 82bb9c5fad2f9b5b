"""The inspecting panels in a real browser (issue 14): charts fill their boxes after a run made while their
tab was hidden, tokens read as characters, the attention views and the lens cover every position, and
messages explain themselves without covering a control.

Performance itself is measured by examples/page_benchmark.py (a benchmark, not a timed test); these tests
assert the structure that makes its numbers possible: charts drawn when their tab shows, heatmaps as one
numeric array, heads as images."""

from __future__ import annotations

import re

from browser import plot_labels
from test_app import _generate_in_page, _wait_finished, browser, server  # noqa: F401 (fixtures)

REMOVED_GREY = "#c7c7c7"
PROMPT = "In the beginning was the café 你好 🦙 and"


def _open(page, tab: str) -> None:
    page.get_by_role("tab", name=tab).click()


def _chart_widths(page, selector: str, settle_ms: int = 10_000) -> tuple[float, float]:
    """(the chart's drawn width, its box's width), once the chart fills its box or `settle_ms` have passed: Plotly
    draws at its default 700 px first and then resizes to its box, and on a loaded machine the charts drawn last
    (the head overview) may not have resized yet when the first one is there."""
    widths = f"""(() => {{
        const plot = document.querySelector('{selector} .js-plotly-plot');
        const svg = plot && plot.querySelector('.main-svg');
        return svg ? [svg.getBoundingClientRect().width, plot.getBoundingClientRect().width] : [0, 1];
    }})()"""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"(() => {{ const [d, b] = {widths}; return d >= 0.95 * b; }})()", timeout=settle_ms)
    except PlaywrightTimeout:
        pass  # measured as it is: the assertion says how wide it stayed
    return page.evaluate(widths)


def _run(page, prompt: str, tokens: int) -> str:
    # A short run may finish before a poll sees "generating": wait for this run's status, whichever shows first
    # (a finished status differs from the previous run's in its timings).
    before = page.inner_text("#status") if page.locator("#status").count() else ""
    _generate_in_page(page, prompt, max_tokens=tokens)
    page.wait_for_function("""(before) => {
        const text = document.querySelector('#status')?.innerText || '';
        return text.includes('generating') || (text.includes('stop:') && text !== before);
    }""", arg=before, timeout=60_000, polling=50)
    return _wait_finished(page)


def test_charts_fill_their_boxes_and_the_views_read_every_token(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    page.get_by_label("Top-k (0 = off)").first.fill("3")  # a filter that removes candidates at every step
    page.get_by_label("Top-k (0 = off)").first.press("Enter")
    _run(page, PROMPT, 24)
    for tab in ("Token probabilities", "Attention"):  # opened once, so later runs draw into mounted tabs
        _open(page, tab)
        page.wait_for_selector("#token-view .tok" if tab == "Token probabilities" else "#attention .hm", timeout=60_000)
    _open(page, "Generate")
    _run(page, PROMPT, 24)  # the second run, made while those tabs were hidden

    _open(page, "Token probabilities")
    for chart in ("#alternatives", "#probability", "#pipeline"):
        page.wait_for_selector(f"{chart} .main-svg", timeout=60_000)
    page.wait_for_function("document.querySelector('#alternatives .gtitle')?.textContent.startsWith('Step 23')",
                           timeout=60_000)
    for chart in ("#alternatives", "#probability", "#pipeline"):
        drawn, box = _chart_widths(page, chart)
        assert drawn >= 0.95 * box, f"{chart} is {drawn:.0f} px wide in a {box:.0f} px box"
    # Characters spread over byte tokens read whole; no <0x..> code is shown for them.
    text = page.inner_text("#token-view")
    assert "café" in text and "你好" in text and "🦙" in text and "<0x" not in text
    # Candidates cut by top-k: grey bars at their height before removal, in the top-k panel and after it.
    removed = page.evaluate(f"""document.querySelector('#pipeline .js-plotly-plot').data
        .filter(t => t.marker.color === '{REMOVED_GREY}').flatMap(t => Array.from(t.x).filter(x => x !== null))""")
    assert removed and all(x > 0 for x in removed)

    _open(page, "Attention")
    page.wait_for_selector("#attention .hm, #attention .heatmaplayer image", timeout=60_000)
    for chart in ("#attention", "#heads", "#head-view"):
        drawn, box = _chart_widths(page, chart)
        assert drawn >= 0.95 * box, f"{chart} is {drawn:.0f} px wide in a {box:.0f} px box"
    assert "0 <s>" in page.locator("#attention .xtick text").all_text_contents()  # escaped, so not a tag
    labels = plot_labels(page, "#attention")
    assert any(label.endswith(" é") for label in labels) and any(label.endswith(" 你") for label in labels)
    # Each head of the layer is one image, not one heatmap of numbers per head.
    titles = [t for t in page.locator("#heads .annotation-text").all_text_contents() if t.startswith("head ")]
    assert len(titles) >= 4 and page.locator("#heads image").count() == len(titles)
    # The head view draws lines from the selected token; a click in the text makes another token the query.
    assert page.locator("#head-view .scatterlayer .trace").count() > 0
    page.locator("#attention-text .tok[data-index='5']").click()
    page.wait_for_function("document.querySelector('#head-view .gtitle')?.textContent.includes('token 5')",
                           timeout=30_000)
    shaded = page.locator("#attention-text .tok[data-index='3']").get_attribute("style")
    assert re.search(r"rgba\(31,\s*119,\s*180", shaded)
    page.screenshot(path="test-output/panels-attention.png", full_page=True)

    _open(page, "Logit lens")
    page.click("#lens-run")
    page.wait_for_selector("#logit-lens .hm, #logit-lens .heatmaplayer image", timeout=60_000)
    positions = plot_labels(page, "#logit-lens", "x")
    assert len(positions) == len(labels) + 1  # every position: the attention's queries and the last token
    assert positions[0] == "0 <s>" and page.locator("#logit-lens .scatterlayer .point").count() > 0  # hits marked
    page.close()


def test_messages_explain_themselves_without_covering_controls(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    loaded = page.inner_text("#model-info strong")

    _open(page, "Attention")  # before any run, the tab says why it is empty and what to do
    assert "Generate something first" in page.inner_text("#attention-empty")
    _open(page, "Generate")

    # A preset without weights explains how to add them, and the menu returns to the loaded model.
    page.get_by_label("Model size").click()
    page.get_by_role("option").filter(has_text="LLaMA-7B").first.click()
    page.wait_for_function("document.querySelector('#model-info')?.innerText.includes('The menu is back on')",
                           timeout=90_000)
    assert "needs its weights" in page.inner_text("#model-info")
    assert page.get_by_label("Model size").input_value() == loaded
    # An instruction format on a base model carries a note.
    page.get_by_label("alpaca").check()
    page.wait_for_function("document.querySelector('#template-note')?.innerText.includes('base model')",
                           timeout=90_000)
    page.get_by_label("plain").check()

    # A request the context cannot hold: the message sits below the slider it names, covering nothing.
    page.fill("#prompt textarea", "word " * 450)
    page.get_by_label("Max new tokens").first.fill("200")
    page.get_by_label("Max new tokens").first.press("Enter")
    page.click("#generate")
    message = page.locator("#slider-max-new-tokens .validation-error")
    message.wait_for(timeout=90_000)
    assert "max_new_tokens" in message.inner_text()
    box, number = message.bounding_box(), page.locator("#slider-max-new-tokens input[type=number]").bounding_box()
    track = page.locator("#slider-max-new-tokens input[type=range]").bounding_box()
    for control in (number, track):
        assert box["y"] >= control["y"] + control["height"] or box["y"] + box["height"] <= control["y"]
    assert page.locator(".toast-body").count() == 0  # no error toast for it

    # Recording off: the Attention tab says the run kept no attention and how to get it.
    page.fill("#prompt textarea", "In the beginning")
    page.get_by_label("Record attention (for the Attention tab)").uncheck()
    _run(page, "In the beginning", 8)
    _open(page, "Attention")
    page.wait_for_function("document.querySelector('#attention-empty')?.innerText.includes('Record attention')",
                           timeout=90_000)
    assert not page.locator("#attention .main-svg").is_visible()
    page.close()
