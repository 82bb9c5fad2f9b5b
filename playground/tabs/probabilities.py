"""The Token probabilities tab: the run's tokens coloured by probability, the alternatives and the sampler
pipeline at a clicked step, branching from it, and the run report.

Layout in `create_ui`, wiring in `wire`; its charts are drawn when the tab shows (playground/tabs/views.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from playground import probability_handlers as charts
from playground.handlers import NO_TOKENS

from .views import QUIET, TabViews, lazy

# A click on a token says which one (its data-index), as the token view's event data.
TOKEN_CLICK_JS = """
element.addEventListener('click', (event) => {
  const token = event.target.closest('[data-index]');
  if (token) trigger('click', {index: Number(token.dataset.index)});
});
"""


@dataclass
class ProbabilitiesTab:
    token_view: gr.HTML
    alternatives: gr.Plot
    probability: gr.Plot
    pipeline: gr.Plot
    branch_token: gr.Dropdown
    branch_button: gr.Button
    branches: gr.State
    branch_menu: gr.Dropdown
    run_text: gr.Textbox
    branch_text: gr.Textbox
    branch_plot: gr.Plot
    export: gr.Button
    report_files: gr.File
    report_upload: gr.File
    replay: gr.Button
    replay_result: gr.Markdown


def create_ui() -> ProbabilitiesTab:
    gr.Markdown("Each generated token is coloured by the probability the model gave it (red = unlikely, green = "
                "likely); hover for numbers, click a token to see what else the model considered.")
    token_view = gr.HTML(NO_TOKENS, js_on_load=TOKEN_CLICK_JS, elem_id="token-view")
    alternatives = gr.Plot(label="Alternatives at the selected step", elem_id="alternatives", visible=False)
    probability = gr.Plot(label="Probability and entropy", elem_id="probability", visible=False)
    gr.Markdown("### Sampler pipeline at the selected step\nThe next-token distribution after each stage, over the "
                "same candidates: which stage removed a token (grey, at its height before) or reshaped the rest.")
    pipeline = gr.Plot(show_label=False, elem_id="pipeline", visible=False)
    gr.Markdown("### Branch from this step\nContinue the run as if the model had chosen another token here (same "
                "sampler and seed); every branch stays in the menu, drawn beside the run.")
    with gr.Row():
        branch_token = gr.Dropdown([], label="Token to force at the selected step", elem_id="branch-token")
        branch_button = gr.Button("Continue from it", elem_id="branch")
    branches = gr.State(None)
    branch_menu = gr.Dropdown([], label="Branches of this run", elem_id="branches")
    with gr.Row():
        run_text = gr.Textbox(label="The run", lines=4, interactive=False, elem_id="branch-run-text")
        branch_text = gr.Textbox(label="The branch (the run up to the fork, the forced token, what followed)",
                                 lines=4, interactive=False, elem_id="branch-text")
    branch_plot = gr.Plot(label="The branch beside the run", elem_id="branch-probability")
    gr.Markdown("### Run report\nThe run as JSON (model identity with a weights hash, or for a remote model the "
                "server, its model id and fingerprint; prompt, settings, seed, tokens with probabilities, timings, "
                "branches) and as one HTML page that opens offline (the coloured tokens "
                "with their alternatives, the selected step's attention, the branches); importing a JSON replays it "
                "and says whether the same tokens come out.")
    with gr.Row():
        export = gr.Button("Export this run", elem_id="export-run")
        report_files = gr.File(label="Report files", file_count="multiple", interactive=False, elem_id="report-files")
    with gr.Row():
        report_upload = gr.File(label="Run JSON to replay", file_types=[".json"], type="filepath",
                                elem_id="report-upload")
        replay = gr.Button("Replay it", elem_id="replay")
    replay_result = gr.Markdown(elem_id="replay-result")
    return ProbabilitiesTab(token_view, alternatives, probability, pipeline, branch_token, branch_button, branches,
                            branch_menu, run_text, branch_text, branch_plot, export, report_files, report_upload,
                            replay, replay_result)


def wire(tab: ProbabilitiesTab, tab_item: gr.Tab, views: TabViews, run_state: gr.State, selected_step: gr.State,
         branching: dict):
    """Events of the tab; returns `after_run(event)`: what every run (or Stop) is followed by here."""
    private = {"api_visibility": "private"}
    model_job = {"concurrency_id": "model", **private}  # these run the model: one job at a time with the rest
    draw_charts = lazy(views, "probabilities", tab_item, [
        (charts.alternatives_and_confidence, [run_state, selected_step], [tab.alternatives, tab.probability]),
        (charts.pipeline, [run_state, selected_step], [tab.pipeline, tab.branch_token])])
    tab.token_view.click(charts.select_token, run_state, [tab.token_view, tab.alternatives, selected_step],
                         **QUIET).then(charts.pipeline, [run_state, selected_step], [tab.pipeline, tab.branch_token],
                                       **QUIET)
    tab.branch_button.click(branching["branch"], [run_state, selected_step, tab.branch_token, tab.branches],
                            [tab.branches, tab.branch_menu, tab.run_text, tab.branch_text, tab.branch_plot],
                            **model_job)
    tab.branch_menu.input(branching["show_branch"], [tab.branch_menu, tab.branches, run_state],
                          [tab.run_text, tab.branch_text, tab.branch_plot], **private)
    tab.export.click(branching["export_report"], [run_state, selected_step, tab.branches], tab.report_files,
                     **private)
    tab.replay.click(branching["import_report"], tab.report_upload, tab.replay_result, **model_job)

    def after_run(event) -> None:
        draw_charts(event)
        # A new run starts with no branches (a branch belongs to the run it forks).
        event.then(lambda: (None, gr.update(choices=[], value=None), "", "", None), None,
                   [tab.branches, tab.branch_menu, tab.run_text, tab.branch_text, tab.branch_plot], **QUIET)

    return after_run
