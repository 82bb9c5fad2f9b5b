"""The Logit lens tab: the next-token guess after every layer, for every position of the latest run.

Layout in `create_ui`, wiring in `wire`. Reading the run runs the model once more, so it waits for a click.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

NO_RUN = "Generate first (Generate or Chat tab), then press **Read the last run**: the lens reads that run's tokens."
REMOTE_RUN = ("**The logit lens needs a local model.** The latest run came from {model} on the server {server}: "
              "the lens reads the residual stream after every layer, which only the model's weights give. Choose a "
              "local model on the Generate tab and generate again.")


@dataclass
class LensTab:
    button: gr.Button
    note: gr.Markdown
    plot: gr.Plot


def create_ui() -> LensTab:
    gr.Markdown("The model's next-token guess read out of the residual stream after every layer (through the final "
                "norm and output matrix), for the last run's tokens. The last row is the model's own prediction; a "
                "ring marks a guess that is the token that actually came next, and the hover gives that token's rank.")
    button = gr.Button("Read the last run", elem_id="lens-run")
    note = gr.Markdown(NO_RUN, elem_id="lens-note", elem_classes="empty-note")
    plot = gr.Plot(show_label=False, elem_id="logit-lens", visible=False)
    return LensTab(button, note, plot)


def wire(tab: LensTab, run_state: gr.State, insights: dict) -> None:
    def read_lens(record):
        if record is None or not record.steps:
            return gr.update(value=NO_RUN, visible=True), gr.update(value=None, visible=False)
        if record.is_remote:
            note = REMOTE_RUN.format(model=record.source["model"], server=record.source["server"])
            return gr.update(value=note, visible=True), gr.update(value=None, visible=False)
        return gr.update(visible=False), gr.update(value=insights["lens"](record), visible=True)

    tab.button.click(read_lens, run_state, [tab.note, tab.plot], concurrency_id="model", api_visibility="private")
