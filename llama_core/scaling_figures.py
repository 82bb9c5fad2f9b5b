"""The scaling story as figures: published models (params, tokens, scores) and our IsoFLOP experiment.

Pure functions: plain data in (published models, a results dict, IsoFlopFit objects), a plotly Figure out.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .published import BENCHMARKS, ChinchillaLaw, PublishedModel, chinchilla_tokens_per_param, compute_optimal
from .label_layout import PlotArea, place_labels
from .scaling import IsoFlopFit, fit_power_law, geometric_mean

FAMILY_STYLE = {  # one colour and marker per family, in legend order
    "LLaMA": ("#1f77b4", "circle"), "Llama 2": ("#17becf", "diamond"), "GPT-3": ("#d62728", "square"),
    "Gopher": ("#9467bd", "triangle-up"), "Chinchilla": ("#2ca02c", "star"), "PaLM": ("#ff7f0e", "hexagon"),
    "TinyLlama": ("#8c564b", "cross"),
}
PARAMS_AXIS = "parameters (billions, log scale)"
FLOPS_AXIS = "training FLOPs (6·N·D)"


def _style(fig: go.Figure, title: str, subtitle: str = "", height: int = 560) -> go.Figure:
    fig.update_layout(template="plotly_white", title={"text": title, "x": 0.01, "subtitle": {"text": subtitle}},
                      height=height, width=1000, font={"size": 15}, hoverlabel={"font_size": 13},
                      margin={"t": 100 if subtitle else 80, "r": 30}, legend={"bgcolor": "rgba(255,255,255,0.8)"})
    return fig


def _tokens(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e12:.1f}T" if n >= 1e12 else f"{n / 1e9:.0f}B"


def _overlap(p: tuple, q: tuple) -> float:
    return max(0, min(p[2], q[2]) - max(p[0], q[0])) * max(0, min(p[3], q[3]) - max(p[1], q[1]))


def label_sides(xs: list[float], ys: list[float], names: list[str]) -> list[str]:
    """Label sides that least overlap other labels and markers: greedy from the top, then two passes of repair."""
    # As drawn (log10 on log axes, padded as the axes are), scaled to a ~770 x 390 px plot area; a char is ~8.5 px.
    x, y, px, py = np.asarray(xs), np.asarray(ys), 1 / 770, 1 / 390
    u, v = (x - x.min() + 0.25) / (np.ptp(x) + 0.5), 0.05 + 0.9 * (y - y.min()) / (np.ptp(y) or 1.0)
    # Each marker listed 4 times: hiding a data point costs more than touching another label.
    markers = [(a - 9 * px, b - 9 * py, a + 9 * px, b + 9 * py) for a, b in zip(u, v)] * 4
    boxes = []
    for a, b, name in zip(u, v, names):
        w, h = 8.5 * len(name) * px, 18 * py
        corner = {"top center": (a - w / 2, b + 10 * py), "bottom center": (a - w / 2, b - 10 * py - h),
                  "middle right": (a + 10 * px, b - h / 2), "middle left": (a - 10 * px - w, b - h / 2)}
        boxes.append({side: (x0, y0, x0 + w, y0 + h) for side, (x0, y0) in corner.items()})
    chosen: dict[int, str] = {}
    for _ in range(3):
        for i in sorted(range(len(xs)), key=lambda i: -ys[i]):
            others = markers + [boxes[j][side] for j, side in chosen.items() if j != i]
            chosen[i] = min(boxes[i], key=lambda side: sum(_overlap(boxes[i][side], o) for o in others))  # ties: top
    return [chosen[i] for i in range(len(xs))]


def _log_range(values: list[float], pad: float = 0.25) -> list[float]:
    # Room for the text labels of the outermost points, which plotly's autorange does not leave.
    return [math.log10(min(values)) - pad, math.log10(max(values)) + pad]


def _add_families(fig: go.Figure, models: list[PublishedModel], y: dict[str, float | None], source_key: str,
                  y_hover: str, log_y: bool = False, lines: bool = False) -> list[PublishedModel]:
    """One labelled trace per family; y maps a model's name to its value, models without one are skipped."""
    plotted = sorted((m for m in models if y.get(m.name) is not None), key=lambda m: m.params_b)
    sides = label_sides([math.log10(m.params_b) for m in plotted],
                            [math.log10(y[m.name]) if log_y else y[m.name] for m in plotted], [m.name for m in plotted])
    side_of = {m.name: side for m, side in zip(plotted, sides)}
    for family, (colour, symbol) in FAMILY_STYLE.items():
        ms = [m for m in plotted if m.family == family]
        if ms:
            fig.add_scatter(
                x=[m.params_b for m in ms], y=[y[m.name] for m in ms], name=family, text=[m.name for m in ms],
                mode="lines+markers+text" if lines and len(ms) > 1 else "markers+text",
                textposition=[side_of[m.name] for m in ms], line={"color": colour, "width": 1, "dash": "dot"},
                marker={"color": colour, "symbol": symbol, "size": 13},
                customdata=[[_tokens(m.training_tokens), "<br>".join(textwrap.wrap(m.source[source_key], 70))]
                            for m in ms],
                hovertemplate=f"<b>%{{text}}</b><br>%{{x:.3g}}B parameters, %{{customdata[0]}} tokens<br>{y_hover}"
                              "<br><i>%{customdata[1]}</i><extra></extra>")
    fig.update_xaxes(type="log", title=PARAMS_AXIS, range=_log_range([m.params_b for m in plotted] or [1, 100]))
    return plotted


def params_vs_benchmark_figure(models: list[PublishedModel], benchmark: str) -> go.Figure:
    """Published score vs parameters, one marker per family; models without that score are skipped."""
    fig = go.Figure()
    plotted = _add_families(fig, models, {m.name: m.scores.get(benchmark) for m in models}, benchmark,
                            "score %{y:.1f}", lines=True)
    by_name, label, story = {m.name: m for m in plotted}, BENCHMARKS.get(benchmark, benchmark), ""
    if "LLaMA-13B" in by_name and "GPT-3 175B" in by_name:
        small, big = by_name["LLaMA-13B"], by_name["GPT-3 175B"]
        fig.add_annotation(
            x=math.log10(small.params_b), y=small.scores[benchmark], ax=math.log10(big.params_b),
            ay=big.scores[benchmark], xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=0,
            arrowwidth=1.5, arrowcolor="#888", standoff=8, startstandoff=8)
        story = (f"LLaMA-13B ({small.scores[benchmark]:.1f}) "
                 f"{'beats' if small.scores[benchmark] > big.scores[benchmark] else 'trails'} GPT-3 175B "
                 f"({big.scores[benchmark]:.1f}) with {big.params_b / small.params_b:.0f}× fewer parameters "
                 f"and {small.training_tokens / big.training_tokens:.1f}× more training tokens")
    fig.update_yaxes(title=f"{label} (%)")
    return _style(fig, f"{label}: LLaMA-13B vs GPT-3 175B" if story else f"{label} vs model size", story)


def tokens_per_param_figure(models: list[PublishedModel], optimal: float | None = None) -> go.Figure:
    """Training tokens per parameter vs parameters, against Chinchilla's ≈20 tokens/param."""
    optimal = optimal if optimal is not None else chinchilla_tokens_per_param()
    fig = go.Figure()
    _add_families(fig, models, {m.name: m.tokens_per_param for m in models}, "training_tokens",
                  "%{y:.1f} tokens/param", log_y=True)
    fig.add_hline(y=optimal, line_dash="dash", line_color="#2ca02c")
    # On a log axis an annotation's y is log10 of the value (add_hline's own annotation gets this wrong).
    fig.add_annotation(xref="paper", x=0.01, y=math.log10(optimal), xanchor="left", yanchor="bottom", showarrow=False,
                       text=f"Chinchilla-optimal ≈ {optimal:.0f} tokens/param", font={"color": "#2ca02c"})
    fig.update_yaxes(type="log", title="training tokens per parameter (log scale)")
    return _style(fig, "Training tokens per parameter: GPT-3 and Gopher under-trained, LLaMA far past 20")


def _flops(c: float) -> str:
    return f"{c:.0e}".replace("e+", "e")


def _palette(scale: str, n: int) -> list[str]:
    return sample_colorscale(scale, [0.88 * i / max(1, n - 1) for i in range(n)])  # the pale ends wash out on white


def isoflop_curves_figure(results: dict) -> go.Figure:
    """Validation loss vs training FLOPs, one line per run, coloured by model size; each budget's best run starred."""
    runs = sorted(results["runs"], key=lambda r: (r["n_params"], r["budget_flops"]))
    sizes = list(dict.fromkeys(r["size"] for r in runs))  # smallest first: runs are sorted by n_params
    colours, fig = dict(zip(sizes, _palette("Viridis", len(sizes)))), go.Figure()
    for i, r in enumerate(runs):
        curve = r.get("curve") or [{"flops": r["flops"], "val_loss": r["val_loss"]}]  # older files: final point only
        fig.add_scatter(
            x=[p["flops"] for p in curve], y=[p["val_loss"] for p in curve], mode="lines+markers",
            name=f"{r['size']} ({r['n_params'] / 1e6:.2f}M params)", legendgroup=r["size"],
            showlegend=i == 0 or runs[i - 1]["size"] != r["size"], line={"color": colours[r["size"]], "width": 2},
            marker={"size": 5}, hovertemplate=f"{r['size']}, budget {_flops(r['budget_flops'])}<br>"
                                               "%{x:.3g} FLOPs<br>val loss %{y:.3f}<extra></extra>")
    best = [min((r for r in runs if r["budget_flops"] == b), key=lambda r: r["val_loss"])
            for b in sorted({r["budget_flops"] for r in runs})]
    fig.add_scatter(x=[r["flops"] for r in best], y=[r["val_loss"] for r in best], mode="markers+text",
                    name="best run per budget", text=[f"C={_flops(r['budget_flops'])}: {r['size']}" for r in best],
                    textposition="bottom center", marker={"symbol": "star", "size": 17, "color": "#d62728"},
                    hovertemplate="%{text}<br>val loss %{y:.3f}<extra></extra>")
    all_flops = [p["flops"] for r in runs for p in (r.get("curve") or [r])]
    fig.update_xaxes(type="log", title=FLOPS_AXIS, exponentformat="power", range=_log_range(all_flops, 0.2))
    fig.update_yaxes(title="validation loss (nats/token)")
    return _style(fig, "IsoFLOP runs: validation loss during training")


def isoflop_profiles_figure(results: dict, fits: list[IsoFlopFit]) -> go.Figure:
    """Final val loss vs N per budget, with the fitted parabola in log10 N and its minimum (budgets with ≥3 sizes)."""
    budgets, fig = sorted({r["budget_flops"] for r in results["runs"]}), go.Figure()
    for budget, colour in zip(budgets, _palette("Plasma", len(budgets))):
        runs = sorted((r for r in results["runs"] if r["budget_flops"] == budget), key=lambda r: r["n_params"])
        n, label = [r["n_params"] for r in runs], f"C = {_flops(budget)} FLOPs"
        fig.add_scatter(x=n, y=[r["val_loss"] for r in runs], text=[r["size"] for r in runs],
                        mode="markers", name=label, legendgroup=label, marker={"color": colour, "size": 11},
                        hovertemplate="%{text}: %{x:.3s} params<br>val loss %{y:.3f}<extra></extra>")
        fit = next((f for f in fits if f.budget == budget), None)
        if fit is None or len(set(n)) < 3:  # a parabola through < 3 sizes means nothing
            continue
        xs = np.linspace(math.log10(n[0]) - 0.1, math.log10(n[-1]) + 0.1, 60)
        fig.add_scatter(x=10**xs, y=np.polyval(fit.coefficients, xs), mode="lines", legendgroup=label,
                        showlegend=False, line={"color": colour, "dash": "dash"}, hoverinfo="skip")
        edge = fit.at_edge
        fig.add_scatter(x=[fit.n_opt], y=[fit.loss_opt], mode="markers+text", legendgroup=label, showlegend=False,
                        text=[f"N_opt {fit.n_opt / 1e6:.2f}M" + (" (grid edge)" if edge else "")],
                        textposition="bottom right" if fit.n_opt <= n[0] else "bottom center", cliponaxis=False,
                        textfont={"color": colour}, marker={"symbol": "star-open" if edge else "star", "size": 18, "color": colour,
                                "line": {"width": 1.5, "color": colour if edge else "black"}},
                        hovertemplate=f"optimum N = {fit.n_opt:.3g}, D = {fit.d_opt:.3g}<br>{fit.tokens_per_param:.1f}"
                                      f" tokens/param<br>loss {fit.loss_opt:.3f}<extra></extra>")
    fig.update_xaxes(type="log", title="parameters N (log scale)",
                     range=_log_range([r["n_params"] for r in results["runs"]] or [1e5, 1e7]))
    losses = [r["val_loss"] for r in results["runs"]] + [f.loss_opt for f in fits] or [0.0, 1.0]
    span = (max(losses) - min(losses)) or 1.0
    # Room under the lowest optimum for its "N_opt" label, which sits below its star.
    fig.update_yaxes(title="final validation loss (nats/token)", range=[min(losses) - 0.12 * span,
                                                                         max(losses) + 0.05 * span])
    return _style(fig, "IsoFLOP profiles: loss vs model size at fixed compute (★ parabola minimum, ☆ at grid edge)")


def frontier_figure(fits: list[IsoFlopFit], law: ChinchillaLaw | None = None) -> go.Figure:
    """Measured compute-optimal N and D vs C with power-law fits, against Chinchilla's fitted-law optimum."""
    fig = go.Figure()
    if not fits:
        fig.add_annotation(text="no budget with ≥ 3 sizes measured yet", showarrow=False, font={"size": 18})
        return _style(fig, "Compute-optimal frontier")
    fits = sorted(fits, key=lambda f: f.budget)
    c = np.array([f.budget for f in fits])
    grid = np.logspace(math.log10(c.min()) - 0.3, math.log10(c.max()) + 0.3, 50)
    interior = [f for f in fits if not f.at_edge]  # an edge optimum is a bound: kept out of the law
    power = fit_power_law(interior) if len(interior) >= 2 else None
    for key, what, colour, values in (("n", "N_opt (parameters)", "#1f77b4", [f.n_opt for f in fits]),
                                      ("d", "D_opt (tokens)", "#ff7f0e", [f.d_opt for f in fits])):
        fig.add_scatter(x=c, y=values, mode="markers", name=f"measured {what}",
                        marker={"color": colour, "size": 13, "line": {"width": 1.5, "color": "black"},
                                "symbol": ["circle-open" if f.at_edge else "circle" for f in fits]},
                        hovertemplate="C %{x:.2g}<br>%{y:.3s}<extra></extra>")
        if power:
            fig.add_scatter(x=grid, y=power[f"{key}_coefficient"] * grid ** power[f"{key}_exponent"], mode="lines",
                            name=f"fit (filled points): {key.upper()}_opt ∝ C^{power[f'{key}_exponent']:.2f}",
                            line={"color": colour}, hoverinfo="skip")
    law_n, law_d = zip(*(compute_optimal(float(x), law) for x in grid))
    for name, colour, values in (("N_opt", "#1f77b4", law_n), ("D_opt", "#ff7f0e", law_d)):
        fig.add_scatter(x=grid, y=values, mode="lines", name=f"Chinchilla law {name}", hoverinfo="skip",
                        line={"color": colour, "dash": "dash", "width": 1.5})
    ours = geometric_mean([f.tokens_per_param for f in (interior or fits)])
    law_ratio = [d / n for n, d in zip(law_n, law_d)]
    fig.add_annotation(
        xref="paper", yref="paper", x=0.01, y=0.99, xanchor="left", yanchor="top", showarrow=False, align="left",
        bgcolor="rgba(255,255,255,0.85)", bordercolor="#bbb", font={"size": 14},
        text=f"ours: ≈{ours:.1f} tokens/param{' (interior optima)' if interior else ''} (per budget: "
             + ", ".join(f"{f.tokens_per_param:.0f}" + ("*" if f.at_edge else "") for f in fits) + ")"
             f"<br>Chinchilla: ≈{chinchilla_tokens_per_param():.0f} tokens/param (70B on 1.4T; Table 3)"
             f"<br>Hoffmann law with D.2 constants, extrapolated here: {min(law_ratio):.0f}-{max(law_ratio):.0f}"
             + ("<br>* optimum at the edge of the sizes tried (open marker): a bound, not a minimum"
                if any(f.at_edge for f in fits) else ""))
    fig.update_xaxes(type="log", title=FLOPS_AXIS, exponentformat="power")
    fig.update_yaxes(type="log", title="compute-optimal N (parameters) and D (tokens)", exponentformat="power")
    return _style(fig, "Compute-optimal frontier: ours vs Chinchilla")


def our_models_figure(points: list[dict]) -> go.Figure:
    """Our models' validation loss vs parameters, and measured decode tokens/s beside it when any point has one."""
    points = sorted(points, key=lambda p: p["params"])
    speed = [p for p in points if p.get("tokens_per_s") is not None]
    scored = [p for p in points if p.get("val_loss") is not None]  # a user checkpoint has speed only
    panels = [("val_loss", scored, "validation loss (nats/token)", "#1f77b4", "linear")]
    panels += [("tokens_per_s", speed, "measured tokens/s (log scale)", "#ff7f0e", "log")] if speed else []
    readable = {"val_loss": ("validation loss", "nats/token"), "tokens_per_s": ("decode speed", "tokens/s")}
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.12,
                        subplot_titles=["validation loss", "decode speed measured here (latest run)"][:len(panels)])
    for col, (key, pts, title, colour, y_type) in enumerate(panels, start=1):
        # One series per group (e.g. the same-tokens models, the same-compute ones): a line joins models
        # that differ in one thing only. Points without a group (older callers) make one series.
        what, unit = readable[key]
        x_range = _log_range([p["params"] for p in pts], 0.4)
        values = [p[key] for p in pts]
        if y_type == "log":
            y_range = [math.log10(min(values)) - 0.3, math.log10(max(values)) + 0.3]
        else:
            pad = 0.15 * ((max(values) - min(values)) or 1.0)
            y_range = [min(values) - pad, max(values) + pad]
        # Labels where they fit in the panel (about 300 x 290 px, 15 px font), the rest on hover: small models crowd.
        sides = place_labels([(p["name"], p["params"], p[key]) for p in pts], PlotArea(tuple(x_range), tuple(y_range),
                                                                                     300, 290), log_y=y_type == "log",
                             font_px=15)
        side = {p["name"]: where for p, where in zip(pts, sides)}
        groups = list(dict.fromkeys(p.get("group", what) for p in pts))
        for i, group in enumerate(groups):
            members = [p for p in pts if p.get("group", what) == group]
            fig.add_scatter(x=[p["params"] for p in members], y=[p[key] for p in members], mode="lines+markers+text",
                            name=group, text=[p["name"] if side[p["name"]] else "" for p in members],
                            textposition=[side[p["name"]] or "top center" for p in members],
                            customdata=[p["name"] for p in members],
                            line={"dash": "dot"}, legendgroup=group, showlegend=col == 1 and len(groups) > 1,
                            marker={"size": 12, "color": colour, "symbol": ["circle", "diamond", "square"][i % 3]},
                            row=1, col=col,
                            hovertemplate=f"%{{customdata}}: %{{x:.3s}} params<br>{what} %{{y:.3g}} {unit}"
                                          "<extra></extra>")
        fig.update_xaxes(type="log", title="parameters (log scale)", range=x_range, dtick=1, row=1, col=col)
        fig.update_yaxes(type=y_type, title=title, range=y_range, row=1, col=col)
    return _style(fig, "Our models: loss and speed vs size", height=480)
