"""LLaMA Playground: the Gradio app. Layout first, wiring last; the work happens in playground/ and llama_core/."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr

from llama_core.published import BENCHMARKS, published_models
from llama_core.scaling_figures import params_vs_benchmark_figure, tokens_per_param_figure
from llama_core.templates import TEMPLATES
from playground.handlers import MAX_PROMPT_CHARS, make_handlers
from playground.registry import BUNDLED_DIR, ModelRegistry, discover
from playground.scaling_panel import our_experiment_figures, our_models_plot

EXAMPLES = [line for line in (Path(__file__).parent / "examples" / "prompts.txt").read_text().splitlines() if line]
TOKEN_CLICK_JS = """
element.addEventListener('click', (event) => {
  const token = event.target.closest('[data-index]');
  if (token) trigger('click', {index: Number(token.dataset.index)});
});
"""
CSS = ".tok { cursor: pointer; border-radius: 3px; padding: 0 1px; } .tok:hover { outline: 1px solid #555; }"


def build_app(registry: ModelRegistry) -> gr.Blocks:
    handlers = make_handlers(registry)
    with gr.Blocks(title="LLaMA Playground") as demo:
        gr.Markdown("# 🦙 LLaMA Playground\nGenerate with a LLaMA model, then look inside: the probability of "
                    "every token and the alternatives, attention maps, and how model size and training tokens trade off.")
        run_state = gr.State(None)
        speeds = gr.State({})  # model name -> params and decode tokens/s of its latest run, this session
        selected_step = gr.State(0)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=3):
                    model = gr.Dropdown(registry.labels, value=registry.default, label="Model size",
                                        allow_custom_value=False)
                    model_info = gr.Markdown(elem_id="model-info")
                    prompt = gr.Textbox(label="Prompt", lines=4, max_length=MAX_PROMPT_CHARS, value=EXAMPLES[0],
                                        elem_id="prompt")
                    gr.Examples(EXAMPLES, inputs=prompt, label="Example prompts")
                    with gr.Row():
                        template = gr.Radio(list(TEMPLATES), value="plain", label="Prompt template")
                        system = gr.Textbox(label="System prompt (Llama-2-chat only)", lines=1)
                    with gr.Row():
                        generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                    output = gr.Textbox(label="Output", lines=8, interactive=False, elem_id="output")
                    status = gr.Markdown(elem_id="status")
                with gr.Column(scale=2):
                    temperature = gr.Slider(0, 2, value=0.8, step=0.01, label="Temperature (0 = greedy)")
                    top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
                    top_p = gr.Slider(0.01, 1, value=1.0, step=0.01, label="Top-p (1 = off)")
                    min_p = gr.Slider(0, 1, value=0.0, step=0.01, label="Min-p (0 = off)")
                    repetition_penalty = gr.Slider(0.5, 2, value=1.0, step=0.01, label="Repetition penalty (1 = off)")
                    presence_penalty = gr.Slider(-2, 2, value=0.0, step=0.05, label="Presence penalty")
                    frequency_penalty = gr.Slider(-2, 2, value=0.0, step=0.05, label="Frequency penalty")
                    max_new_tokens = gr.Slider(1, 512, value=96, step=1, label="Max new tokens")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random; the seed used is reported)")
                    stop = gr.Textbox(label="Stop sequences (one per line; \\n = newline)", lines=2)
                    capture = gr.Checkbox(value=True, label="Record attention (for the Attention tab)")
        with gr.Tab("Token probabilities"):
            gr.Markdown("Each generated token is coloured by the probability the model gave it (red = unlikely, "
                        "green = likely); hover for numbers, click a token to see what else the model considered.")
            token_view = gr.HTML(js_on_load=TOKEN_CLICK_JS, css_template=CSS, elem_id="token-view")
            alternatives_plot = gr.Plot(label="Alternatives at the selected step", elem_id="alternatives")
            probability_plot = gr.Plot(label="Probability and entropy", elem_id="probability")
        with gr.Tab("Attention"):
            with gr.Row():
                layer = gr.Slider(0, 1, value=0, step=1, label="Layer")
                head = gr.Dropdown(["mean"], value="mean", label="Head (or the mean over heads)")
            attention_plot = gr.Plot(label="Attention map", elem_id="attention")
            heads_plot = gr.Plot(label="All heads of the layer", elem_id="heads")
        with gr.Tab("Scaling"):
            gr.Markdown("LLaMA-13B outperforms GPT-3 (175B) on most benchmarks: a smaller model trained on more "
                        "tokens (Touvron et al. 2023). Figures as published; sources in `data/published_results.json`.")
            benchmark = gr.Dropdown(list(BENCHMARKS.values()), value=BENCHMARKS["mmlu_5shot"], label="Benchmark")
            models = published_models()
            performance_plot = gr.Plot(params_vs_benchmark_figure(models, "mmlu_5shot"), elem_id="performance")
            gr.Plot(tokens_per_param_figure(models))
            for figure in our_experiment_figures():
                gr.Plot(figure)
            our_models = gr.Plot(our_models_plot(), elem_id="our-models")

        # --- wiring ---------------------------------------------------------------------------------
        controls = [template, system, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                    frequency_penalty, max_new_tokens, seed, stop, capture]
        run_outputs = [output, status, run_state, token_view, alternatives_plot, probability_plot, attention_plot,
                       heads_plot, selected_step, layer, head]
        generation = generate_button.click(
            handlers["generate"], [model, prompt, *controls], run_outputs, validator=handlers["validate"],
            concurrency_id="model", concurrency_limit=1, api_name="stream",
        )
        generation.then(handlers["record_speed"], [run_state, speeds], [speeds, our_models],
                        api_visibility="private")
        stop_button.click(handlers["stop"], run_state, run_outputs, cancels=[generation], api_visibility="private")
        model.change(handlers["switch_model"], [model, max_new_tokens], [model_info, max_new_tokens],
                     concurrency_id="model", api_name="load_model")
        demo.load(handlers["switch_model"], [model, max_new_tokens], [model_info, max_new_tokens],
                  concurrency_id="model", api_visibility="private")
        token_view.click(handlers["select_token"], run_state, [token_view, alternatives_plot, selected_step],
                         api_visibility="private")
        for control in (layer, head):
            control.change(handlers["redraw_attention"], [run_state, layer, head], [attention_plot, heads_plot],
                           api_visibility="private")
        label_to_id = {label: key for key, label in BENCHMARKS.items()}
        benchmark.change(lambda label: params_vs_benchmark_figure(models, label_to_id[label]), benchmark,
                         performance_plot, api_visibility="private")
        gr.api(handlers["generate_json"], api_name="generate", concurrency_id="model", concurrency_limit=1)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    on_space = "SPACE_ID" in os.environ
    parser = argparse.ArgumentParser(description="LLaMA Playground")
    parser.add_argument("--model", action="append", default=[], help="checkpoint path or Hub id (repeatable)")
    parser.add_argument("--models-dir", default=os.environ.get("LLAMA_MODELS_DIR"),
                        help="directory scanned for checkpoints (and LLaMA-7B… preset folders)")
    parser.add_argument("--share", action="store_true", help="create a public Gradio share link")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0" if on_space else "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--queue-size", type=int, default=16)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models_dir = Path(args.models_dir).expanduser() if args.models_dir else None
    registry = ModelRegistry(discover(models_dir, args.model))
    demo = build_app(registry)
    # One model job at a time on a CPU; a bounded queue; the API cannot skip the queue.
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1, api_open=False)
    blocked = [str(BUNDLED_DIR)] + ([str(models_dir)] if models_dir else [])
    demo.launch(
        server_name=args.host, server_port=args.port, share=args.share and "SPACE_ID" not in os.environ,
        show_error=False, enable_monitoring=False, max_file_size="1mb", blocked_paths=blocked,
        mcp_server=False, ssr_mode=False, css=CSS, footer_links=["api"],
    )


if __name__ == "__main__":
    main()
