"""The Side by side tab: the Generate tab's prompt and settings on two models, where their choices part,
and the compute-matched pair as a preset. Layout in `create_ui`, wiring in `wire`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from playground.same_compute import button_label


@dataclass
class SideBySideTab:
    model_a: gr.Dropdown
    model_b: gr.Dropdown
    compare: gr.Button
    same_compute: gr.Button
    same_compute_table: gr.Markdown
    summary: gr.Markdown
    text_a: gr.Textbox
    text_b: gr.Textbox
    divergence: gr.Plot


def create_ui(runnable: list[str]) -> SideBySideTab:
    gr.Markdown("The Generate tab's prompt, template, sampling settings and seed on two models at once; then both "
                "models read the first one's text, and the chart shows where they part. With a model on a server (the "
                "seed's size ladder, walked on real servers), each side's own run is drawn instead: a server gives "
                "neither its whole distribution nor a reading of another model's text.")
    with gr.Row():
        model_a = gr.Dropdown(runnable, value=runnable[0], label="Model A", elem_id="model-a")
        model_b = gr.Dropdown(runnable, value=runnable[min(1, len(runnable) - 1)], label="Model B", elem_id="model-b")
    with gr.Row():
        compare = gr.Button("Run both", variant="primary", elem_id="compare")
        same_compute = gr.Button(button_label(), elem_id="same-compute")
    same_compute_table = gr.Markdown(elem_id="same-compute-table")
    summary = gr.Markdown(elem_id="compare-summary")
    with gr.Row():
        text_a = gr.Textbox(label="Model A", lines=6, interactive=False, elem_id="text-a")
        text_b = gr.Textbox(label="Model B", lines=6, interactive=False, elem_id="text-b")
    divergence = gr.Plot(elem_id="divergence")
    return SideBySideTab(model_a, model_b, compare, same_compute, same_compute_table, summary, text_a, text_b,
                         divergence)


def wire(tab: SideBySideTab, insights: dict, same_compute, settings: list) -> None:
    """`settings`: the Generate tab's prompt, template, temperature, top-k, top-p, min-p, max new tokens and seed."""
    model_job = {"concurrency_id": "model", "api_visibility": "private"}
    tab.compare.click(insights["side_by_side"], [tab.model_a, tab.model_b, *settings],
                      [tab.text_a, tab.text_b, tab.summary, tab.divergence], **model_job)
    tab.same_compute.click(same_compute, settings, [tab.model_a, tab.model_b, tab.text_a, tab.text_b, tab.summary,
                                                    tab.divergence, tab.same_compute_table], **model_job)
