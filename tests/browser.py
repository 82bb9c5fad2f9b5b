"""Finding a Chromium for the browser tests, and the one way they start it.

A developer's laptop may hold Debian's `chromium`, Ubuntu's `chromium-browser`, or the browser a
`playwright install` left in its cache; any of them will do. Where none is found the browser tests
are skipped with the reason — except under CI (`CI=true`, set by `.ci/run`), where `scripts/test.sh`
has installed Debian's Chromium and a missing browser means the machine is not what CI needs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# No GPU, no background traffic: the machine has no network beyond the package registries, and
# Chromium's own update and metrics connections would only fail (and slow it down) there.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The first Chromium on PATH under its usual names, else Playwright's own download, else None."""
    for name in _NAMES:
        if found := shutil.which(name):
            return found
    for fallback in ("/usr/bin/chromium", "/usr/lib/chromium/chromium"):
        if Path(fallback).exists():
            return fallback
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            bundled = playwright.chromium.executable_path  # where `playwright install` puts it
        return bundled if bundled and Path(bundled).exists() else None
    except Exception:  # noqa: BLE001 — no playwright, or no driver: simply no browser
        return None


CHROMIUM = find_chromium()


def require_chromium() -> str:
    """The browser's path; skip the test where none can be had, fail where CI promised one."""
    if CHROMIUM is None:
        reason = f"no Chromium found (looked for {', '.join(_NAMES)} and Playwright's own)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: under CI, scripts/test.sh installs Debian's chromium")
        pytest.skip(f"{reason}; `bash scripts/test.sh` installs Debian's chromium when it may")
    return CHROMIUM


def launch(playwright):
    """Start the browser the tests use, with the flags this machine needs."""
    return playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)


def plot_labels(page, selector: str, axis: str = "y") -> list[str]:
    """The category names of a chart's first trace along `axis`, as a reader sees them: every position,
    not only the tick labels Plotly has room to draw (they are thinned), with markup and entities removed."""
    import html
    import re

    names = page.evaluate(f"document.querySelector('{selector} .js-plotly-plot').data[0].{axis}")
    return [html.unescape(re.sub(r"<[^>]+>", "", str(name))) for name in names]


def export_run(page, folder):
    """Export the page's latest run and download both report files into `folder`: (run.json, run.html)."""
    page.click("#export-run")
    page.wait_for_selector("#report-files a[download='run.json']", timeout=30_000)
    saved = []
    for name in ("run.json", "run.html"):
        with page.expect_download() as download:
            page.locator(f"#report-files a[download='{name}']").click()
        download.value.save_as(folder / name)
        saved.append(folder / name)
    return tuple(saved)
