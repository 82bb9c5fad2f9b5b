"""Figures of the beyond-the-peers views: the sampler pipeline, the logit lens, two models side
by side, a scored text, and the Chinchilla calculator. Pure functions: data in, plotly out."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .chinchilla import ChinchillaPlan
from .logit_lens import LogitLens
from .published import PublishedModel, compute_optimal
from .run_figures import CHOSEN, KEPT, REMOVED, probability_colour, visible_piece
from .run_record import RunRecord
from .scoring import Divergence, TextScore

STAGE_TITLES = {"raw": "raw logits", "penalties": "after repetition / presence / frequency penalties",
                "temperature": "after temperature", "top_k": "after top-k", "top_p": "after top-p",
                "min_p": "after min-p (sampled from)", "greedy": "greedy (argmax)"}


def pipeline_figure(record: RunRecord, step_index: int) -> go.Figure:
    """One bar chart per sampler stage, aligned over the same candidate tokens: which stage
    removed a token (grey from there on) and which boosted or damped it (the bars' lengths)."""
    step = record.steps[step_index]
    labels = [f"{visible_piece(a.piece)} #{a.token_id}" for a in step.top]
    fig = make_subplots(rows=1, cols=len(step.stages), shared_yaxes=True, horizontal_spacing=0.015,
                        subplot_titles=[STAGE_TITLES.get(name, name) for name, _ in step.stages])
    previous = None
    for col, (name, probs) in enumerate(step.stages, start=1):
        colours = [CHOSEN if a.token_id == step.token_id else (KEPT if p > 0 else REMOVED)
                   for a, p in zip(step.top, probs)]
        change = ["" if previous is None else (f"{p / q:.2f}×" if q > 0 and p > 0 else ("removed" if q > 0 else ""))
                  for p, q in zip(probs, previous or probs)]
        fig.add_bar(y=labels, x=list(probs), orientation="h", marker_color=colours, name=name, showlegend=False,
                    text=[f"{p:.3f}" for p in probs], textposition="outside", customdata=change,
                    hovertemplate="%{y}<br>p = %{x:.4f}<br>%{customdata}<extra>" + name + "</extra>", row=1, col=col)
        fig.update_xaxes(range=[0, 1.25], showticklabels=False, row=1, col=col)
        previous = probs
    fig.update_yaxes(autorange="reversed")
    fig.update_annotations(font_size=11)
    fig.update_layout(template="plotly_white", height=140 + 30 * len(labels), margin=dict(l=10, r=10, t=60, b=10),
                      title=f"Sampler pipeline at step {step_index}: chose {visible_piece(step.piece)!r}")
    return fig


def logit_lens_figure(lens: LogitLens, pieces: list[str], piece_of, max_positions: int = 48) -> go.Figure:
    """Layers × positions: the top token read from the residual stream (as text in each cell),
    coloured by its probability; `piece_of` turns a token id into its text."""
    start = max(0, len(pieces) - max_positions)
    columns = [f"{i}: {visible_piece(p)}" for i, p in enumerate(pieces)][start:]
    top = [[visible_piece(piece_of(int(t))) for t in row] for row in lens.top_ids[:, start:]]
    fig = go.Figure(go.Heatmap(z=lens.top_probs[:, start:], x=columns, y=lens.labels, colorscale="Viridis", zmin=0,
                               zmax=1, text=top, texttemplate="%{text}", textfont={"size": 10},
                               colorbar={"title": "p(top)"},
                               hovertemplate="%{y}, position %{x}<br>top: %{text} (p = %{z:.3f})<extra></extra>"))
    fig.update_layout(template="plotly_white", height=160 + 34 * len(lens.labels),
                      margin=dict(l=10, r=10, t=50, b=10),
                      title="Logit lens: the next-token guess after each layer (the last row is the model's own)")
    fig.update_xaxes(title="input position: token", tickangle=-45)
    return fig


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
            f'{"".join(spans)}</div><p><b>perplexity {score.perplexity:.2f}</b> · {score.mean_nll:.3f} nats/token over '
            f'{len(score.tokens)} tokens</p>')


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
    for family in ("LLaMA", "GPT-3", "Chinchilla", "Gopher", "PaLM", "Llama 2"):
        ms = [m for m in published if m.family == family and m.training_tokens]
        if ms:
            fig.add_scatter(x=[m.params_b * 1e9 for m in ms], y=[m.training_tokens for m in ms], mode="markers+text",
                            name=family, text=[m.name for m in ms], textposition="top center",
                            hovertemplate="%{text}: %{x:.3s} params, %{y:.3s} tokens<extra></extra>")
    if ours:
        fig.add_scatter(x=[p["params"] for p in ours], y=[p["tokens"] for p in ours], mode="markers+text",
                        name="our models", text=[p["name"] for p in ours], textposition="bottom center",
                        marker={"symbol": "diamond", "size": 11},
                        hovertemplate="%{text}: %{x:.3s} params, %{y:.3s} tokens<extra></extra>")
    fig.add_scatter(x=[plan.n_params], y=[plan.tokens], mode="markers", name="your plan",
                    marker={"symbol": "x", "size": 16, "color": CHOSEN})
    fig.add_scatter(x=[plan.n_opt], y=[plan.d_opt], mode="markers", name="optimal for the same compute",
                    marker={"symbol": "star", "size": 16, "color": "#2ca02c"})
    fig.update_xaxes(type="log", title="parameters N")
    fig.update_yaxes(type="log", title="training tokens D")
    fig.update_layout(template="plotly_white", height=520, margin=dict(l=10, r=10, t=60, b=10),
                      title=f"C = {plan.flops:.3g} FLOPs: {plan.tokens_per_param:.0f} tokens/param planned, "
                            f"{plan.d_opt / plan.n_opt:.0f} optimal; predicted loss {plan.loss:.3f} "
                            f"(optimal {plan.loss_opt:.3f})")
    return fig


def plan_markdown(plan: ChinchillaPlan) -> str:
    return (f"**Compute** {plan.flops:.3g} FLOPs · **your split** {plan.n_params:.3g} parameters × {plan.tokens:.3g} "
            f"tokens ({plan.tokens_per_param:.1f} tokens/param), predicted loss **{plan.loss:.3f}** · "
            f"**compute-optimal** {plan.n_opt:.3g} × {plan.d_opt:.3g} ({plan.d_opt / plan.n_opt:.1f} tokens/param), "
            f"loss **{plan.loss_opt:.3f}** ({plan.loss_above_optimal:+.3f} for your split). Losses are in "
            "nats/token of the fitted law (Hoffmann et al. 2022, App. D.2) on their data, not on our corpus.")
