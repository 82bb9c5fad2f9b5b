"""The Score text tab: any text coloured by each model's probability of every token, with its perplexity,
and the /score API. Layout in `create_ui`, wiring in `wire`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from playground.controls import MAX_PROMPT_CHARS


@dataclass
class ScoreTab:
    text: gr.Textbox
    models: gr.CheckboxGroup
    button: gr.Button
    view: gr.HTML
    surprisal: gr.Plot


def create_ui(runnable: list[str]) -> ScoreTab:
    gr.Markdown("Paste any text: each token coloured by its probability under each model (hover for the surprisal "
                "and the alternatives), and the text's perplexity — nothing is generated.")
    text = gr.Textbox(label="Text", lines=4, max_length=MAX_PROMPT_CHARS, elem_id="score-input",
                      value="In the beginning God created the heaven and the earth.")
    models = gr.CheckboxGroup(runnable, value=runnable[:2], label="Models", elem_id="score-models")
    button = gr.Button("Score", variant="primary", elem_id="score")
    view = gr.HTML(elem_id="score-view")
    surprisal = gr.Plot(elem_id="surprisal")
    return ScoreTab(text, models, button, view, surprisal)


def wire(tab: ScoreTab, insights: dict) -> None:
    tab.button.click(insights["score"], [tab.text, tab.models], [tab.view, tab.surprisal], concurrency_id="model",
                     api_visibility="private", api_name="score_page")  # "/score" is the public endpoint below
    gr.api(insights["score_api"], api_name="score", concurrency_id="model", concurrency_limit=1)
