"""Figures of the beyond-the-peers views: the sampler pipeline, the logit lens, two models side
by side, a scored text, and the Chinchilla calculator. Pure functions: data in, plotly out."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..chinchilla import (
    ChinchillaPlan,
    InferenceAwarePlan,
    implied_inference_tokens,
    inference_aware_optimum,
    inference_demand_sweep,
)
from ..label_layout import PlotArea, place_labels
from .lens_figure import logit_lens_figure  # noqa: F401 (its own module now; callers import it here)
from .pipeline_figure import STAGE_TITLES, pipeline_figure  # noqa: F401 (likewise)
from ..published import PublishedModel, chinchilla_law, chinchilla_loss, chinchilla_tokens_per_param, compute_optimal
from .run_figures import CHOSEN, probability_colour, visible_piece
from .scoring import Divergence, TextScore


def divergence_figure(divergence: Divergence, pieces: list[str], names: tuple[str, str]) -> go.Figure:
    """Per position of a shared text: the probability each model gives the actual next token, and KL(A‖B)."""
    x = [f"{i + 1}: {visible_piece(p)}" for i, p in enumerate(pieces[1:])]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["probability of the actual next token", f"KL({names[0]} ‖ {names[1]}), nats"])
    fig.add_scatter(x=x, y=divergence.prob_a, name=names[0], mode="lines+markers", row=1, col=1)
    fig.add_scatter(x=x, y=divergence.prob_b, name=names[1], mode="lines+markers", row=1, col=1)
    fig.add_bar(x=x, y=divergence.kl_ab, name="KL", marker_color=["#888" if same else CHOSEN
                                                                   for same in divergence.argmax_agree],
                hovertemplate="%{x}<br>KL %{y:.3f} nats<extra>red: the models' top choices differ</extra>", row=2, col=1)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_layout(template="plotly_white", height=520, margin=dict(l=10, r=10, t=60, b=10),
                      title=f"Where {names[0]} and {names[1]} part", legend=dict(orientation="h", y=1.12))
    return fig


def scored_text_html(score: TextScore, first_piece: str = "") -> str:
    """The text with each token coloured by its probability; hover: surprisal and the top alternatives."""
    spans = [html.escape(first_piece)]
    for t in score.tokens:
        alternatives = ", ".join(f"{visible_piece(p)} {q:.2f}" for p, q in t.top)
        title = f"p = {t.prob:.3f} · {t.surprisal_bits:.1f} bits · top: {alternatives}"
        spans.append(f'<span class="tok scored" data-index="{t.index}" title="{html.escape(title)}" '
                     f'style="background:{probability_colour(t.prob)}">{html.escape(t.piece)}</span>')
    return ('<div class="scored-text" style="white-space:pre-wrap;line-height:1.9;font-family:ui-monospace,monospace">'
            f'{"".join(spans)}</div><p><b>perplexity {score.perplexity:.2f}</b> · {score.mean_nll / math.log(2):.3f} '
            f'bits/token over {len(score.tokens)} tokens (bits, as in the surprisal chart)</p>')


def surprisal_figure(scores: dict[str, TextScore]) -> go.Figure:
    """Surprisal per token under each model, for comparing sizes on the same text."""
    fig = go.Figure()
    for name, score in scores.items():
        fig.add_scatter(x=[f"{t.index}: {visible_piece(t.piece)}" for t in score.tokens],
                        y=[t.surprisal_bits for t in score.tokens], mode="lines+markers",
                        name=f"{name} (ppl {score.perplexity:.1f})")
    fig.update_layout(template="plotly_white", height=340, margin=dict(l=10, r=10, t=50, b=10),
                      title="Surprisal of each token (bits)", legend=dict(orientation="h", y=-0.35))
    return fig


def chinchilla_figure(plan: ChinchillaPlan, published: list[PublishedModel], ours: list[dict]) -> go.Figure:
    """Parameters vs training tokens on log axes: the compute-optimal line of the fitted law, the
    user's point and its optimal alternative, LLaMA, GPT-3, Chinchilla (and others) and our models."""
    fig = go.Figure()
    budgets = np.logspace(15, 26, 60)
    line = [compute_optimal(float(c)) for c in budgets]
    fig.add_scatter(x=[n for n, _ in line], y=[d for _, d in line], mode="lines", name="compute-optimal (fitted law)",
                    line={"color": "#2ca02c", "dash": "dash"}, hoverinfo="skip")
    families = ("LLaMA", "Chinchilla", "GPT-3", "PaLM", "Gopher", "Llama 2")  # label priority: the story first
    shown = [m for family in families for m in published if m.family == family and m.training_tokens]
    points = [(p["name"], p["params"], p["tokens"]) for p in ours] + [(m.name, m.params_b * 1e9, m.training_tokens)
                                                                       for m in shown]
    all_n = [n for _, n, _ in points] + [plan.n_params, plan.n_opt]
    all_d = [d for _, _, d in points] + [plan.tokens, plan.d_opt]
    x_range = (math.log10(min(all_n)) - 0.5, math.log10(max(all_n)) + 0.6)
    y_range = (math.log10(min(all_d)) - 0.6, math.log10(max(all_d)) + 0.6)
    # The plot area of a 1214 px wide, 520 px tall chart with its legend; a label that fits nowhere is left to the hover
    # (LLaMA, Llama 2, PaLM and Chinchilla crowd into one decade).
    markers = [("", plan.n_params, plan.tokens), ("", plan.n_opt, plan.d_opt)]
    sides = place_labels(markers + points, PlotArea(x_range, y_range, 880, 380))[len(markers):]
    side = {name: where for (name, _, _), where in zip(points, sides)}
    for family in families:
        ms = [m for m in shown if m.family == family]
        if ms:
            fig.add_scatter(x=[m.params_b * 1e9 for m in ms], y=[m.training_tokens for m in ms], mode="markers+text",
                            name=family, text=[m.name if side[m.name] else "" for m in ms],
                            textposition=[side[m.name] or "top center" for m in ms], customdata=[m.name for m in ms],
                            hovertemplate="%{customdata}: %{x:.3s} params, %{y:.3s} tokens<extra></extra>")
    if ours:
        fig.add_scatter(x=[p["params"] for p in ours], y=[p["tokens"] for p in ours], mode="markers+text",
                        name="our models", text=[p["name"] if side[p["name"]] else "" for p in ours],
                        textposition=[side[p["name"]] or "top center" for p in ours],
                        customdata=[p["name"] for p in ours], marker={"symbol": "diamond", "size": 11},
                        hovertemplate="%{customdata}: %{x:.3s} params, %{y:.3s} tokens<extra></extra>")
    fig.add_scatter(x=[plan.n_params], y=[plan.tokens], mode="markers", name="your plan",
                    marker={"symbol": "x", "size": 16, "color": CHOSEN})
    fig.add_scatter(x=[plan.n_opt], y=[plan.d_opt], mode="markers", name="optimal for the same compute",
                    marker={"symbol": "star", "size": 16, "color": "#2ca02c"})
    fig.update_xaxes(type="log", title="parameters N", range=x_range, dtick=1)  # one tick a decade
    fig.update_yaxes(type="log", title="training tokens D", range=y_range, dtick=1)
    fig.update_layout(template="plotly_white", height=520, margin={"l": 70, "r": 10, "t": 60, "b": 60},
                      title=f"C = {plan.flops:.3g} FLOPs: {plan.tokens_per_param:.0f} tokens/param planned, "
                            f"{plan.d_opt / plan.n_opt:.0f} optimal; predicted loss {plan.loss:.3f} "
                            f"(optimal {plan.loss_opt:.3f})")
    return fig


def plan_markdown(plan: ChinchillaPlan) -> str:
    rule = chinchilla_tokens_per_param()
    return (f"**Compute** {plan.flops:.3g} FLOPs · **your split** {plan.n_params:.3g} parameters × {plan.tokens:.3g} "
            f"tokens ({plan.tokens_per_param:.1f} tokens/param), predicted loss **{plan.loss:.3f}** · "
            f"**compute-optimal** {plan.n_opt:.3g} × {plan.d_opt:.3g} ({plan.d_opt / plan.n_opt:.1f} tokens/param), "
            f"loss **{plan.loss_opt:.3f}** ({plan.loss_above_optimal:+.3f} for your split). Losses are in "
            "nats/token of the fitted law (Hoffmann et al. 2022, App. D.2) on their data, not on our corpus.\n\n"
            f"Why {plan.d_opt / plan.n_opt:.0f} and not the ~{rule:.0f} tokens/param of the charts above: ~{rule:.0f} "
            "is Chinchilla's own allocation (70B parameters on 1.4T tokens; Hoffmann et al. 2022, Table 3, their "
            "approach 1), while this optimum minimises their approach-3 fitted law L = E + A/N^α + B/D^β with the "
            "App. D.2 constants, which puts more tokens per parameter as compute grows.")


def inference_sources() -> str:
    """The citations of the inference-aware view, with the law's constants as the data file holds them."""
    law = chinchilla_law()
    return (f"Loss law: Hoffmann et al. 2022, *Training Compute-Optimal Large Language Models*, arXiv:2203.15556, "
            f"App. D.2 (E = {law.E}, A = {law.A}, B = {law.B}, α = {law.alpha}, β = {law.beta}). Training + "
            "inference compute 6·N·D + 2·N·D_inf: Sardana & Frankle 2023, *Beyond Chinchilla-Optimal: Accounting "
            "for Inference in Language Model Scaling Laws*, arXiv:2401.00448. LLaMA parameters and training tokens: "
            "Touvron et al. 2023, arXiv:2302.13971, Table 2.")


LLAMA_ON_THE_CURVE = ("LLaMA-7B", "LLaMA-13B", "LLaMA-65B")


def _demand_axis(plans: list[float], demand: float) -> np.ndarray:
    """Lifetime inference tokens from 1e-4 to 1e4 times the smallest/largest training-only optimum's D."""
    lo, hi = min(plans) * 1e-4, max(plans) * 1e4
    if demand > 0:
        lo, hi = min(lo, demand / 10), max(hi, demand * 10)
    return np.geomspace(lo, hi, 49)


def inference_aware_figure(target_loss: float, inference_tokens: float, published: list[PublishedModel]) -> go.Figure:
    """How the cheapest model to train and run moves with lifetime inference demand: N (left) and
    tokens/parameter (right), for the user's target loss and for LLaMA-7B/13B/65B's own losses,
    each LLaMA model placed where its (N, D) is the optimum (Sardana & Frankle 2023)."""
    llama = [m for name in LLAMA_ON_THE_CURVE for m in published if m.name == name and m.training_tokens]
    losses = [("your target loss", target_loss)] + [(m.name, chinchilla_loss(m.params_b * 1e9, m.training_tokens))
                                                    for m in llama]
    demands = _demand_axis([inference_aware_optimum(loss).tokens for _, loss in losses], inference_tokens)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=["parameters N of the cheapest model", "its training tokens per parameter"])
    colours = {"your target loss": CHOSEN, "LLaMA-7B": "#1f77b4", "LLaMA-13B": "#9467bd", "LLaMA-65B": "#8c564b"}
    for label, loss in losses:
        sweep = inference_demand_sweep(loss, demands.tolist())
        name = f"{label}: L = {loss:.3f}"
        style = {"color": colours[label], "width": 4 if label == "your target loss" else 1.5,
                 "dash": "solid" if label == "your target loss" else "dot"}
        hover = [f"{name}<br>{p.inference_tokens:.3g} tokens served: N {p.n_params:.3g}, D {p.tokens:.3g} "
                 f"({p.tokens_per_param:.0f}/param)<br>train {p.training_flops:.3g} + serve {p.inference_flops:.3g} "
                 f"FLOPs" for p in sweep]
        for col, ys in ((1, [p.n_params for p in sweep]), (2, [p.tokens_per_param for p in sweep])):
            fig.add_scatter(x=demands, y=ys, mode="lines", name=name, line=style, legendgroup=label,
                            showlegend=col == 1, text=hover, hovertemplate="%{text}<extra></extra>", row=1, col=col)
    if inference_tokens > 0:
        you = inference_aware_optimum(target_loss, inference_tokens)
        for col, y in ((1, you.n_params), (2, you.tokens_per_param)):
            fig.add_scatter(x=[inference_tokens], y=[y], mode="markers", name="your demand", legendgroup="you",
                            showlegend=col == 1, marker={"symbol": "x", "size": 16, "color": CHOSEN}, row=1, col=col)
    for m in llama:
        n, d = m.params_b * 1e9, m.training_tokens
        implied = implied_inference_tokens(n, d)
        # A negative implied demand means fewer tokens than even the training-only optimum: the model sits
        # off its curve at the left edge (below it in tokens/param): no inference demand explains it under this law.
        x = implied if implied > 0 else demands[0]
        note = (f"optimal when serving {implied:.2g} tokens" if implied > 0
                else "fewer tokens than this law's compute optimum: off its curve")
        for col, y in ((1, n), (2, d / n)):
            fig.add_scatter(x=[x], y=[y], mode="markers+text", text=[m.name], textposition="top center",
                            marker={"size": 12, "color": colours[m.name], "line": {"width": 1, "color": "white"}},
                            name=m.name, legendgroup=m.name, showlegend=False, row=1, col=col,
                            hovertemplate=f"{m.name}: {n:.3g} params, {d:.3g} tokens ({d / n:.0f}/param)<br>"
                                          f"{note}<extra></extra>")
    rule = chinchilla_tokens_per_param()
    # A trace, not add_hline: on a log axis a shape's annotation takes log10(y) and would stretch the axis.
    fig.add_scatter(x=[demands[0], demands[-1]], y=[rule, rule], mode="lines+text", name=f"~{rule:.0f} tokens/param",
                    text=["", f"~{rule:.0f} tokens/param rule"], textposition="bottom left", showlegend=False,
                    line={"dash": "dash", "color": "#2ca02c"}, hoverinfo="skip", row=1, col=2)
    fig.update_xaxes(type="log", title="tokens generated over the model's life", exponentformat="power")
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_layout(template="plotly_white", height=520, margin=dict(l=10, r=10, t=90, b=10),
                      legend=dict(orientation="h", y=-0.2),
                      title={"text": "The more a model will be used, the smaller and longer-trained it should be",
                             "subtitle": {"text": "cheapest N and D reaching each loss, training + inference compute "
                                                  "(Hoffmann et al. 2022 law; Sardana & Frankle 2023)"}})
    return fig


def inference_markdown(plan: InferenceAwarePlan, base: InferenceAwarePlan) -> str:
    """The inference-aware optimum against the training-only optimum for the same loss and demand."""
    base_total = base.training_flops + 2 * base.n_params * plan.inference_tokens
    return (
        f"**Target loss {plan.target_loss:.3f}, {plan.inference_tokens:.3g} tokens served over the model's life.** "
        f"Cheapest to train *and* run: **{plan.n_params:.3g} parameters × {plan.tokens:.3g} tokens** "
        f"({plan.tokens_per_param:.0f} tokens/param): {plan.training_flops:.3g} training + "
        f"{plan.inference_flops:.3g} inference = **{plan.total_flops:.3g} FLOPs**. The compute-optimal model for the "
        f"same loss ({base.n_params:.3g} × {base.tokens:.3g}, {base.tokens_per_param:.0f} tokens/param) would cost "
        f"{base_total:.3g} FLOPs for the same use, **{base_total / plan.total_flops - 1:.1%} more**.\n\n"
        f"Why {base.tokens_per_param:.0f} and not ~{chinchilla_tokens_per_param():.0f} tokens/param when nothing is "
        "served: the ~20 rule reads Hoffmann et al.'s approach 1 (Table 3; Chinchilla itself is 70B on 1.4T), while "
        "this is their approach-3 law with its constants as printed (rounded), which favours more tokens at large "
        "scale. Either way, inference demand moves the optimum the same way: smaller, trained longer.\n\n"
        f"<small>{inference_sources()}</small>"
    )
