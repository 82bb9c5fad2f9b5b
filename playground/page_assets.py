"""The page's own CSS and the one script it runs on load (passed to `launch(css=..., js=...)`)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

CSS = """
.tok { cursor: pointer; border-radius: 3px; padding: 0 1px; }
.tok:hover { outline: 1px solid #555; }
.tok.later { cursor: default; }
.ws { color: #aaa; }
.cont { display: inline-block; width: 4px; height: 1em; vertical-align: text-bottom; }
/* Gradio draws a validation message over the top of its input, where it hides the slider or box it
   is about: below the input instead, in a space the input makes for it. */
.block:has(> .wrap .validation-error), .block:has(.validation-error) { margin-bottom: 3.2em !important;
  overflow: visible !important; }
.validation-error { top: calc(100% + 4px) !important; bottom: auto !important; left: 0 !important;
  right: auto !important; max-width: 100%; text-align: left !important; border-radius: 4px !important;
  border: 1px solid var(--error-border-color) !important; font-size: var(--text-sm) !important; }
.empty-note { color: var(--body-text-color-subdued); font-style: italic; }
"""

def _plotly_chunk() -> str:
    """The file name of Gradio's Plotly chunk (hashed per Gradio release), or "" if this Gradio has none."""
    assets = Path(gr.__file__).parent / "templates" / "frontend" / "assets"
    found = sorted(assets.glob("PlotlyPlot-*.js"))
    return found[0].name if found else ""


# Two things Gradio 6 leaves to the page. (1) Plotly gives a chart drawn inside a hidden tab its
# fallback width (700 px), and Gradio redraws a chart only when its value changes: every chart's box
# is watched, and a chart whose width differs from its box's is resized. (2) Plotly (4.6 MB of script)
# is evaluated when the first chart is drawn, about a second of main thread that would land right
# after the first run; the page loads Gradio's own Plotly chunk (the same URL, so the same module) once
# it is idle after loading.
JS = """
() => {
  const watched = new WeakSet();
  const resize = new ResizeObserver(entries => {
    for (const entry of entries) {
      const plot = entry.target, width = entry.contentRect.width;
      if (width > 0 && window.Plotly && plot._fullLayout && Math.abs(plot._fullLayout.width - width) > 2) {
        window.Plotly.Plots.resize(plot);
      }
    }
  });
  let pending = false;
  const watchNew = () => {
    pending = false;
    document.querySelectorAll('.js-plotly-plot').forEach(plot => {
      if (!watched.has(plot)) { watched.add(plot); resize.observe(plot); }
    });
  };
  new MutationObserver(() => { if (!pending) { pending = true; requestAnimationFrame(watchNew); } })
    .observe(document.body, {childList: true, subtree: true});
  watchNew();
  const chunk = "PLOTLY_CHUNK", entry = document.querySelector('script[type=module][src*="/assets/index-"]');
  if (chunk && entry && !window.Plotly) {
    setTimeout(() => requestIdleCallback(() => import(new URL(chunk, entry.src).href), {timeout: 5000}), 1000);
  }
}
""".replace("PLOTLY_CHUNK", _plotly_chunk())
