"""A run report as one HTML page that opens anywhere offline: the text coloured by probability (each
token's alternatives on hover), the attention of a chosen step, the confidence chart, every branch
beside the run, the settings, and the report's JSON for re-import.

plotly.js (4.8 MB, which alone nearly filled the 5 MB a report may take) is in the page once,
gzip-compressed (1.5 MB) and inflated by the browser's own DecompressionStream before the figures
are drawn; each figure is its JSON, with numeric arrays as base64 typed arrays.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from dataclasses import dataclass
from pathlib import Path

import plotly
import plotly.graph_objects as go

from .attention_figures import attention_text_html
from .run_figures import TOKEN_VIEW_STYLE, branch_figure, probability_entropy_figure, token_html
from .run_record import RunRecord

MAX_PAGE_BYTES = 5_000_000  # the most one report page may weigh (issue 14)
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}pre{white-space:pre-wrap;"
         "background:#f6f6f6;padding:1em}td,th{text-align:left;padding:2px 8px}.tok{border-radius:3px;padding:0 1px}"
         ".ws{color:#aaa}.cont{display:inline-block;width:4px;height:1em}.figure{min-height:320px}")
# Inflate plotly.js, run it, then draw every figure from its JSON.
LOADER = """<script>
(async () => {
  const packed = Uint8Array.from(atob(document.getElementById('plotly-js').textContent), c => c.charCodeAt(0));
  const stream = new Blob([packed]).stream().pipeThrough(new DecompressionStream('gzip'));
  const code = document.createElement('script');
  code.textContent = await new Response(stream).text();
  document.head.appendChild(code);
  for (const holder of document.querySelectorAll('.figure')) {
    const figure = JSON.parse(holder.querySelector('script').textContent);
    Plotly.newPlot(holder, figure.data, figure.layout, {responsive: true});
  }
})();
</script>"""


@dataclass(frozen=True)
class Branch:
    """A run continued from `fork_step` with `token_id` forced there (llama_core.insight.run_record.RunRecord.branch_prompt)."""

    fork_step: int
    token_id: int
    record: RunRecord


@functools.cache
def _packed_plotly() -> str:
    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return base64.b64encode(gzip.compress(source.read_bytes(), compresslevel=9, mtime=0)).decode()


def _script_safe(text: str) -> str:
    return text.replace("</", "<\\/")  # a "</script>" in generated text must not end the tag


def _figure(figure: go.Figure) -> str:
    return f'<div class="figure"><script type="application/json">{_script_safe(figure.to_json())}</script></div>'


def branch_entries(branches: list[Branch]) -> list[dict]:
    """The branches as the report's JSON holds them."""
    return [{"fork_step": b.fork_step, "forced_token_id": b.token_id, "text": b.record.text,
             "tokens": [{"token_id": s.token_id, "piece": s.piece, "prob": s.prob} for s in b.record.steps]}
            for b in branches]


def confidence_figure(record: RunRecord) -> go.Figure:
    """Confidence over the run; a remote run's entropy is marked as the lower bound over the server's top-n."""
    figure = probability_entropy_figure(record)
    if record.is_remote:
        label = f"entropy, lower bound (top-{record.source.get('top_n')})"
        figure.update_traces(name=label, selector={"name": "entropy (nats)"})
        figure.update_yaxes(title_text=f"{label}, nats", secondary_y=True)
        figure.update_layout(title="Confidence over the run (remote: the server's top-n probabilities)")
    return figure


def identity_line(report: dict) -> str:
    """Who made the run: the model with its weights' hash, or the server, model id and server fingerprint."""
    identity = report["model_identity"]
    if identity.get("kind") == "remote":
        fingerprint = identity.get("fingerprint") or "not reported by the server"
        return (f"<b>{html.escape(identity['name'])}</b> · served by {html.escape(identity['server'])} · model "
                f"{html.escape(identity['model'])} · server fingerprint {html.escape(fingerprint)} · probabilities "
                f"from the server's top-{identity.get('top_n')} · seed {report['seed']}")
    return (f"<b>{html.escape(identity['name'])}</b> · {identity['parameters']:,} parameters · "
            f"{html.escape(identity['dtype'])} · weights {html.escape(identity['weights'][:23])}… · "
            f"seed {report['seed']}")


def attention_section(record: RunRecord, step: int) -> str:
    """The text shaded by the attention (last layer, mean over heads) of the forward pass that chose `step`."""
    if record.is_remote:
        return (f"<p>This run was made on the server {html.escape(record.source['server'])}, which sends no "
                "attention weights: attention needs a local model.</p>")
    shape = record.attention_shape
    if shape is None:
        return "<p>This run kept no attention (Record attention was off).</p>"
    layers, _, n_queries = shape
    query = min(record.n_prompt - 1 + step, n_queries - 1)  # the token read when step `step` was chosen
    return attention_text_html(record.attention_layer(layers - 1), record.all_pieces(), query, None)


def report_html(report: dict, record: RunRecord, selected_step: int = 0, branches: list[Branch] = ()) -> str:
    """The whole page (see the module docstring); `selected_step` picks the attention shown."""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in report["settings"].items())
    step = min(max(0, selected_step), max(0, len(record.steps) - 1))
    parts = [
        (f"<h1>LLaMA Playground run</h1><p>{identity_line(report)}</p><h2>Prompt</h2>"
         f"<pre>{html.escape(report['prompt'])}</pre>"),
        ("<h2>Output</h2><p>Each generated token coloured by its probability (red = unlikely, green = likely); "
         "hover a token for its probability and the alternatives the model considered.</p>"), token_html(record),
        (f"<h2>Attention at step {step}</h2><p>The text shaded by how much the token read at step {step} attended "
         "to each earlier token (last layer, mean over heads).</p>"), attention_section(record, step),
        "<h2>Confidence</h2>", _figure(confidence_figure(record)),
    ]
    for number, branch in enumerate(branches, start=1):
        forced = html.escape(branch.record.all_pieces()[branch.record.n_prompt - 1])
        before = html.escape("".join(s.text for s in record.steps[: branch.fork_step]))
        parts += [f"<h2>Branch {number}: step {branch.fork_step} forced to “{forced}”</h2>",
                  (f'<div style="{TOKEN_VIEW_STYLE}"><span style="color:#666">{before}</span><b style="color:#d62728">'
                   f'{forced}</b>{html.escape(branch.record.text)}</div>'),
                  _figure(branch_figure(record, branch.record, branch.fork_step))]
    parts.append(f"<h2>Settings</h2><table>{rows}</table>")
    embedded = _script_safe(json.dumps(report))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>LLaMA Playground run</title><style>{STYLE}"
            f"</style></head><body>{''.join(parts)}<script type='application/json' id='run-report'>{embedded}"
            f"</script><script type='application/octet-stream' id='plotly-js'>{_packed_plotly()}</script>{LOADER}"
            "</body></html>")
