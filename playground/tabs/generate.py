"""The Generate tab: the model menu, the prompt and every sampling control, the streamed output.

Layout in `create_ui`, wiring in `wire`. Its controls are the app's: the Chat tab samples with its
sliders, Side by side runs its prompt and settings on two models. A run's record becomes the
session's latest run, which the inspecting tabs draw (see playground/tabs/views.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from llama_core.templates import TEMPLATES
from playground.controls import MAX_PROMPT_CHARS, SLIDERS
from playground.model_info import MODEL_DEFAULTS, template_note
from playground.registry import ModelRegistry

EXAMPLES = [line for line in (Path(__file__).parents[2] / "examples" / "prompts.txt").read_text().splitlines() if line]


@dataclass
class GenerateTab:
    model: gr.Dropdown
    model_info: gr.Markdown
    prompt: gr.Textbox
    template: gr.Radio
    system: gr.Textbox
    template_note: gr.Markdown
    generate: gr.Button
    stop: gr.Button
    output: gr.Textbox
    status: gr.Markdown
    sliders: dict[str, gr.Slider]  # by SamplingParams field, in SLIDERS order
    seed: gr.Number
    stop_sequences: gr.Textbox
    capture: gr.Checkbox

    @property
    def controls(self) -> list:
        """What a run reads besides the model and the prompt, in the handlers' parameter order."""
        return [self.template, self.system, *self.sliders.values(), self.seed, self.stop_sequences, self.capture]


def slider(name: str) -> gr.Slider:
    control = SLIDERS[name]
    return gr.Slider(control.minimum, control.maximum, value=control.default, step=control.step, label=control.label,
                     elem_id="slider-" + name.replace("_", "-"))


def create_ui(registry: ModelRegistry) -> GenerateTab:
    with gr.Row():
        with gr.Column(scale=3):
            model = gr.Dropdown(registry.labels, value=registry.default, label="Model size", allow_custom_value=False)
            model_info = gr.Markdown(elem_id="model-info")
            prompt = gr.Textbox(label="Prompt", lines=4, max_length=MAX_PROMPT_CHARS, value=EXAMPLES[0],
                                elem_id="prompt")
            gr.Examples(EXAMPLES, inputs=prompt, label="Example prompts")
            with gr.Row():
                template = gr.Radio(list(TEMPLATES), value="plain", label="Prompt template",
                                    info="All but plain are instruction formats: they help instruction-tuned models "
                                         "only.")
                system = gr.Textbox(label="System prompt (instruction formats)", lines=1)
            note = gr.Markdown(elem_id="template-note")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
            output = gr.Textbox(label="Output", lines=8, interactive=False, elem_id="output")
            status = gr.Markdown(elem_id="status")
        with gr.Column(scale=2):
            sliders = {name: slider(name) for name in SLIDERS}
            seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random; the seed used is reported)")
            stop_sequences = gr.Textbox(label="Stop sequences (one per line; \\n = newline)", lines=2)
            capture = gr.Checkbox(value=True, label="Record attention (for the Attention tab)")
    return GenerateTab(model, model_info, prompt, template, system, note, generate, stop, output, status, sliders,
                       seed, stop_sequences, capture)


def wire(tab: GenerateTab, demo: gr.Blocks, registry: ModelRegistry, handlers: dict, active_model: gr.State,
         run_outputs: list, after_run) -> None:
    """The run, Stop, model switching and the template note. `run_outputs`: (output, status, the session's run
    state, the panels a run fills at once); `after_run(event)` chains what follows every run."""
    private = {"api_visibility": "private"}
    # preprocess=False: values reach the validator as sent, so its checks (not Gradio's, which let
    # NaN through and name no parameter) answer a bad request, before it joins the queue. The status
    # line says what the run is doing; no spinner is drawn over the outputs on every streamed token.
    generation = tab.generate.click(
        handlers["generate"], [tab.model, tab.prompt, *tab.controls], run_outputs, validator=handlers["validate_stream"],
        preprocess=False, concurrency_id="model", concurrency_limit=1, api_name="stream", show_progress="hidden",
    )
    stopped = tab.stop.click(handlers["stop"], run_outputs[2], run_outputs, cancels=[generation], **private)
    after_run(generation)
    after_run(stopped)
    max_new_tokens = tab.sliders["max_new_tokens"]
    # .input: a user's choice; the menu set back below (to the model still loaded) is not a new choice.
    switch = tab.model.input(handlers["switch_model"], [tab.model, max_new_tokens], [tab.model_info, max_new_tokens],
                             concurrency_id="model", api_name="load_model")
    # A preset without weights, or a model that fails to load, leaves the menu on the model this session has.
    switch.success(handlers["after_switch"], [tab.model, active_model], [active_model, tab.model, tab.model_info],
                   **private)
    switch.failure(lambda label: label, active_model, tab.model, **private)
    # The sampling sliders the checkpoint's generation_config.json sets show its values.
    defaults = [tab.sliders[name] for name in MODEL_DEFAULTS]
    switch.success(handlers["model_sampling_defaults"], tab.model, defaults, **private)
    demo.load(handlers["switch_model"], [tab.model, max_new_tokens], [tab.model_info, max_new_tokens],
              concurrency_id="model", **private).success(handlers["model_sampling_defaults"], tab.model, defaults,
                                                          **private)
    for trigger in (tab.template.change, tab.model.change):
        trigger(lambda label, name: template_note(registry, label, name), [tab.model, tab.template],
                tab.template_note, **private)
    api = gr.api(handlers["generate_json"], api_name="generate", concurrency_id="model", concurrency_limit=1)
    # gr.api takes no validator= (Gradio 6.31), but the event it creates runs one like any other.
    demo.fns[api["id"]].validator = handlers["validate_api"]
