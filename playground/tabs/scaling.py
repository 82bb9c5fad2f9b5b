"""The Scaling tab: published models by size and tokens, our own IsoFLOP experiment and bundled models,
the Chinchilla calculator with its inference-aware optimum, and the /chinchilla API.

Layout in `create_ui`, wiring in `wire`; the chart of our models' measured speeds is drawn when the
tab shows (playground/tabs/views.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from llama_core.published import BENCHMARKS, published_models
from llama_core.scaling_figures import params_vs_benchmark_figure, tokens_per_param_figure
from playground.scaling_panel import our_experiment_figures, our_models_plot, scaling_story_markdown

from .views import TabViews, lazy


@dataclass
class ScalingTab:
    benchmark: gr.Dropdown
    performance: gr.Plot
    our_models: gr.Plot
    params: gr.Number
    tokens: gr.Number
    flops: gr.Number
    inference: gr.Number
    calculate: gr.Button
    result: gr.Markdown
    plot: gr.Plot
    inference_result: gr.Markdown
    inference_plot: gr.Plot


def create_ui() -> ScalingTab:
    gr.Markdown("LLaMA-13B outperforms GPT-3 (175B) on most benchmarks: a smaller model trained on more tokens "
                "(Touvron et al. 2023). Figures as published; sources in `data/published_results.json`.")
    gr.Markdown(scaling_story_markdown(), elem_id="scaling-story")
    benchmark = gr.Dropdown(list(BENCHMARKS.values()), value=BENCHMARKS["mmlu_5shot"], label="Benchmark")
    models = published_models()
    performance = gr.Plot(params_vs_benchmark_figure(models, "mmlu_5shot"), elem_id="performance")
    gr.Plot(tokens_per_param_figure(models))
    for figure in our_experiment_figures():
        gr.Plot(figure)
    our_models = gr.Plot(our_models_plot(), elem_id="our-models")
    gr.Markdown("### Chinchilla calculator\nGive parameters, tokens or compute (0 = work it out): the compute-optimal "
                "split and the loss Hoffmann et al.'s fitted law predicts.")
    with gr.Row():
        params = gr.Number(value=6.7e9, label="Parameters N", elem_id="calc-n")
        tokens = gr.Number(value=1e12, label="Training tokens D", elem_id="calc-d")
        flops = gr.Number(value=0, label="Compute C (FLOPs)", elem_id="calc-c")
        inference = gr.Number(value=1e12, label="Tokens you will generate over the model's life",
                              elem_id="calc-inference")
    calculate = gr.Button("Calculate", elem_id="calculate")
    result = gr.Markdown(elem_id="calc-result")
    plot = gr.Plot(elem_id="chinchilla")
    gr.Markdown("### Inference-aware optimum\nFor the loss of the plan above: the model that is cheapest to train "
                "*and* run, as the tokens it will generate grow (training 6·N·D + inference 2·N per token; Sardana & "
                "Frankle 2023).")
    inference_result = gr.Markdown(elem_id="inference-result")
    inference_plot = gr.Plot(elem_id="inference-aware")
    return ScalingTab(benchmark, performance, our_models, params, tokens, flops, inference, calculate, result, plot,
                      inference_result, inference_plot)


def _speeds_key(speeds: dict | None) -> tuple | None:
    return tuple(sorted((name, value["tokens_per_s"]) for name, value in speeds.items())) if speeds else None


def wire(tab: ScalingTab, tab_item: gr.Tab, views: TabViews, speeds: gr.State, insights: dict):
    """Events of the tab; returns `after_speeds(event)`, which redraws our models' speeds when the tab shows."""
    private = {"api_visibility": "private"}
    tab.calculate.click(insights["calculator"], [tab.params, tab.tokens, tab.flops, tab.inference],
                        [tab.result, tab.plot, tab.inference_result, tab.inference_plot], **private)
    gr.api(insights["chinchilla_api"], api_name="chinchilla")
    label_to_id = {label: key for key, label in BENCHMARKS.items()}
    models = published_models()
    tab.benchmark.change(lambda label: params_vs_benchmark_figure(models, label_to_id[label]), tab.benchmark,
                         tab.performance, **private)
    return lazy(views, "scaling", tab_item, [(our_models_plot, [speeds],
                                              [tab.our_models])], key=_speeds_key)
