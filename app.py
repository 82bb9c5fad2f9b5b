"""LLaMA Playground: the Gradio app. Layout first, wiring last; the work happens in playground/ and llama_core/."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from llama_core.attention_figures import SINK_NOTE
from llama_core.loading import MAX_CONTEXT, MIN_CONTEXT
from llama_core.published import BENCHMARKS, published_models
from llama_core.scaling_figures import params_vs_benchmark_figure, tokens_per_param_figure
from llama_core.templates import TEMPLATES
from playground.access import LocalOriginGuard, LoginThrottle, QueueAdmission, RateLimiter, parse_auth
from playground.attention_handlers import NO_RUN, make_attention_handlers
from playground.branch_handlers import make_branch_handlers
from playground.chat_handlers import make_chat_handlers
from playground.controls import MAX_PROMPT_CHARS, SLIDERS
from playground.dependency_floors import require_dependency_floors
from playground.handlers import make_handlers
from playground.insights import make_insight_handlers
from playground.page_assets import CSS, JS
from playground.registry import BUNDLED_DIR, ModelRegistry, discover
from playground.same_compute import button_label, make_same_compute_handler
from playground.scaling_panel import our_experiment_figures, our_models_plot, scaling_story_markdown
from playground.tabs import chat as chat_tab

EXAMPLES = [line for line in (Path(__file__).parent / "examples" / "prompts.txt").read_text().splitlines() if line]
TOKEN_CLICK_JS = """
element.addEventListener('click', (event) => {
  const token = event.target.closest('[data-index]');
  if (token) trigger('click', {index: Number(token.dataset.index)});
});
"""
PUBLIC_RATE_LIMIT = 10  # generations a minute per client, by default on share links and Spaces
FAILED_LOGINS_PER_MINUTE = 5


def slider(name: str) -> gr.Slider:
    control = SLIDERS[name]
    return gr.Slider(control.minimum, control.maximum, value=control.default, step=control.step, label=control.label)


def build_app(registry: ModelRegistry, limiter: RateLimiter | None = None) -> gr.Blocks:
    handlers = make_handlers(registry, limiter)
    insights = make_insight_handlers(registry)
    attention = make_attention_handlers(registry)
    branching = make_branch_handlers(registry)
    chat = make_chat_handlers(registry, handlers)
    runnable = [label for label, choice in registry.choices.items() if choice.source is not None]
    with gr.Blocks(title="LLaMA Playground") as demo:
        gr.Markdown("# 🦙 LLaMA Playground\nGenerate with a LLaMA model, then look inside: the probability of "
                    "every token and the alternatives, attention maps, and how model size and training tokens trade off.")
        run_state = gr.State(None, time_to_live=3600)  # a run's attention rows are big; an idle session drops them
        active_model = gr.State(registry.default)  # the last model this session loaded, to return to on a failure
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
                        template = gr.Radio(list(TEMPLATES), value="plain", label="Prompt template",
                                            info="All but plain are instruction formats: they help instruction-"
                                                 "tuned models only (the bundled models are base models).")
                        system = gr.Textbox(label="System prompt (instruction formats)", lines=1)
                    with gr.Row():
                        generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                        stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                    output = gr.Textbox(label="Output", lines=8, interactive=False, elem_id="output")
                    status = gr.Markdown(elem_id="status")
                with gr.Column(scale=2):
                    temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty, \
                        max_new_tokens = (slider(name) for name in SLIDERS)
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random; the seed used is reported)")
                    stop = gr.Textbox(label="Stop sequences (one per line; \\n = newline)", lines=2)
                    capture = gr.Checkbox(value=True, label="Record attention (for the Attention tab)")
        with gr.Tab("Chat"):
            chat_ui = chat_tab.create_ui()
        with gr.Tab("Token probabilities"):
            gr.Markdown("Each generated token is coloured by the probability the model gave it (red = unlikely, "
                        "green = likely); hover for numbers, click a token to see what else the model considered.")
            token_view = gr.HTML(js_on_load=TOKEN_CLICK_JS, elem_id="token-view")
            alternatives_plot = gr.Plot(label="Alternatives at the selected step", elem_id="alternatives")
            probability_plot = gr.Plot(label="Probability and entropy", elem_id="probability")
            gr.Markdown("### Sampler pipeline at the selected step\nThe next-token distribution after each stage, "
                        "over the same candidates: which stage removed a token (grey) or reshaped the rest.")
            pipeline_plot = gr.Plot(elem_id="pipeline")
            gr.Markdown("### Branch from this step\nContinue the run as if the model had chosen another token here "
                        "(same sampler and seed); every branch stays in the menu below.")
            with gr.Row():
                branch_token = gr.Dropdown([], label="Token to force at the selected step", elem_id="branch-token")
                branch_button = gr.Button("Continue from it", elem_id="branch")
            branches = gr.State(None)
            branch_menu = gr.Dropdown([], label="Branches of this run", elem_id="branches")
            branch_text = gr.Textbox(label="Text of the branch", lines=4, interactive=False, elem_id="branch-text")
            branch_plot = gr.Plot(label="Probability along the branch", elem_id="branch-probability")
            gr.Markdown("### Run report\nThe run as JSON (model identity with a weights hash, prompt, settings, seed, "
                        "tokens with probabilities, timings) and as a self-contained HTML page; importing a JSON "
                        "replays it and says whether the same tokens come out.")
            with gr.Row():
                export_button = gr.Button("Export this run", elem_id="export-run")
                report_files = gr.File(label="Report files", file_count="multiple", interactive=False,
                                       elem_id="report-files")
            with gr.Row():
                report_upload = gr.File(label="Run JSON to replay", file_types=[".json"], type="filepath",
                                        elem_id="report-upload")
                replay_button = gr.Button("Replay it", elem_id="replay")
            replay_result = gr.Markdown(elem_id="replay-result")
        with gr.Tab("Attention", elem_id="attention-tab"):
            gr.Markdown("Where each token looks when the model reads it. Click a token in the text to make it the "
                        "query: the text is shaded by its attention and the head view draws a line to every token "
                        f"it attends to, one colour per head. {SINK_NOTE}")
            attention_empty = gr.Markdown(NO_RUN, elem_id="attention-empty", elem_classes="empty-note")
            with gr.Row():
                layer = gr.Slider(0, 1, value=0, step=1, label="Layer", elem_id="attention-layer")
                head = gr.Dropdown(["mean"], value="mean", label="Head (or the mean over heads)",
                                   elem_id="attention-head")
            attention_query = gr.State(0)
            attention_text = gr.HTML(js_on_load=TOKEN_CLICK_JS, elem_id="attention-text", visible=False)
            head_view_plot = gr.Plot(label="Head view", elem_id="head-view", visible=False)
            attention_plot = gr.Plot(label="Attention map", elem_id="attention", visible=False)
            heads_plot = gr.Plot(label="All heads of the layer", elem_id="heads", visible=False)
        with gr.Tab("Logit lens"):
            gr.Markdown("The model's next-token guess read out of the residual stream after every layer (through "
                        "the final norm and output matrix), for the last run's tokens. The last row is the model's "
                        "own prediction.")
            lens_button = gr.Button("Read the last run", elem_id="lens-run")
            lens_plot = gr.Plot(elem_id="logit-lens")
        with gr.Tab("Side by side"):
            gr.Markdown("The Generate tab's prompt, template, sampling settings and seed on two models at once; "
                        "then both models read the first one's text, and the chart shows where they part.")
            with gr.Row():
                model_a = gr.Dropdown(runnable, value=runnable[0], label="Model A", elem_id="model-a")
                model_b = gr.Dropdown(runnable, value=runnable[min(1, len(runnable) - 1)], label="Model B",
                                      elem_id="model-b")
            with gr.Row():
                compare_button = gr.Button("Run both", variant="primary", elem_id="compare")
                same_compute_button = gr.Button(button_label(), elem_id="same-compute")
            same_compute_table = gr.Markdown(elem_id="same-compute-table")
            compare_summary = gr.Markdown(elem_id="compare-summary")
            with gr.Row():
                text_a = gr.Textbox(label="Model A", lines=6, interactive=False, elem_id="text-a")
                text_b = gr.Textbox(label="Model B", lines=6, interactive=False, elem_id="text-b")
            divergence_plot = gr.Plot(elem_id="divergence")
        with gr.Tab("Score text"):
            gr.Markdown("Paste any text: each token coloured by its probability under each model (hover for the "
                        "surprisal and the alternatives), and the text's perplexity — nothing is generated.")
            score_input = gr.Textbox(label="Text", lines=4, max_length=MAX_PROMPT_CHARS, elem_id="score-input",
                                     value="In the beginning God created the heaven and the earth.")
            score_models = gr.CheckboxGroup(runnable, value=runnable[:2], label="Models", elem_id="score-models")
            score_button = gr.Button("Score", variant="primary", elem_id="score")
            score_view = gr.HTML(elem_id="score-view")
            surprisal_plot = gr.Plot(elem_id="surprisal")
        with gr.Tab("Scaling"):
            gr.Markdown("LLaMA-13B outperforms GPT-3 (175B) on most benchmarks: a smaller model trained on more "
                        "tokens (Touvron et al. 2023). Figures as published; sources in `data/published_results.json`.")
            gr.Markdown(scaling_story_markdown(), elem_id="scaling-story")
            benchmark = gr.Dropdown(list(BENCHMARKS.values()), value=BENCHMARKS["mmlu_5shot"], label="Benchmark")
            models = published_models()
            performance_plot = gr.Plot(params_vs_benchmark_figure(models, "mmlu_5shot"), elem_id="performance")
            gr.Plot(tokens_per_param_figure(models))
            for figure in our_experiment_figures():
                gr.Plot(figure)
            our_models = gr.Plot(our_models_plot(), elem_id="our-models")
            gr.Markdown("### Chinchilla calculator\nGive parameters, tokens or compute (0 = work it out): the "
                        "compute-optimal split and the loss Hoffmann et al.'s fitted law predicts.")
            with gr.Row():
                calc_params = gr.Number(value=6.7e9, label="Parameters N", elem_id="calc-n")
                calc_tokens = gr.Number(value=1e12, label="Training tokens D", elem_id="calc-d")
                calc_flops = gr.Number(value=0, label="Compute C (FLOPs)", elem_id="calc-c")
                calc_inference = gr.Number(value=1e12, label="Tokens you will generate over the model's life",
                                           elem_id="calc-inference")
            calc_button = gr.Button("Calculate", elem_id="calculate")
            calc_result = gr.Markdown(elem_id="calc-result")
            calc_plot = gr.Plot(elem_id="chinchilla")
            gr.Markdown("### Inference-aware optimum\nFor the loss of the plan above: the model that is cheapest to "
                        "train *and* run, as the tokens it will generate grow (training 6·N·D + inference 2·N per "
                        "token; Sardana & Frankle 2023).")
            inference_result = gr.Markdown(elem_id="inference-result")
            inference_plot = gr.Plot(elem_id="inference-aware")

        # --- wiring ---------------------------------------------------------------------------------
        controls = [template, system, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                    frequency_penalty, max_new_tokens, seed, stop, capture]
        run_outputs = [output, status, run_state, token_view, alternatives_plot, probability_plot, selected_step]
        # preprocess=False: values reach the validator as sent, so its checks (not Gradio's, which let
        # NaN through and name no parameter) answer a bad request, before it joins the queue.
        generation = generate_button.click(
            handlers["generate"], [model, prompt, *controls], run_outputs, validator=handlers["validate_stream"],
            preprocess=False, concurrency_id="model", concurrency_limit=1, api_name="stream",
        )
        stopped = stop_button.click(handlers["stop"], run_state, run_outputs, cancels=[generation],
                                    api_visibility="private")
        switch = model.change(handlers["switch_model"], [model, max_new_tokens], [model_info, max_new_tokens],
                              concurrency_id="model", api_name="load_model")
        # A model that fails to load leaves the menu on the model this session still has.
        switch.success(lambda label: label, model, active_model, api_visibility="private")
        # The sampling sliders the checkpoint's generation_config.json sets show its values.
        model_defaults = [temperature, top_k, top_p, repetition_penalty]
        switch.success(handlers["model_sampling_defaults"], model, model_defaults, api_visibility="private")
        switch.failure(lambda label: label, active_model, model, api_visibility="private")
        demo.load(handlers["switch_model"], [model, max_new_tokens], [model_info, max_new_tokens],
                  concurrency_id="model", api_visibility="private").success(
            handlers["model_sampling_defaults"], model, model_defaults, api_visibility="private")
        token_view.click(handlers["select_token"], run_state, [token_view, alternatives_plot, selected_step],
                         api_visibility="private")
        attention_view = [run_state, layer, head, attention_query]
        layer.input(attention["redraw_layer"], attention_view, [attention_text, head_view_plot, attention_plot,
                                                                heads_plot], trigger_mode="always_last",
                    api_visibility="private")
        head.input(attention["redraw_head"], attention_view, [attention_text, attention_plot],
                   trigger_mode="always_last", api_visibility="private")
        attention_text.click(attention["select_query"], [run_state, layer, head],
                             [attention_query, attention_text, head_view_plot], api_visibility="private")
        # --- the views beyond a plain playground (playground/insights.py) ---------------------------
        private = {"api_visibility": "private"}
        model_job = {"concurrency_id": "model", **private}  # these run the model: one job at a time with the rest

        attention_panels = [layer, head, attention_query, attention_empty, attention_text, head_view_plot,
                            attention_plot, heads_plot]

        def after_run(event):  # after every run, of the Generate tab or the Chat tab (and after a Stop)
            event.then(attention["after_run"], run_state, attention_panels, **private)
            event.then(handlers["record_speed"], [run_state, speeds], [speeds, our_models], **private)
            event.then(insights["pipeline"], [run_state, selected_step], [pipeline_plot, branch_token], **private)
            event.then(lambda: (None, gr.update(choices=[], value=None), "", None), None,
                       [branches, branch_menu, branch_text, branch_plot], **private)

        after_run(generation)
        after_run(stopped)
        chat_tab.wire(chat_ui, demo, chat, model, controls[2:], run_outputs[2:], after_run)
        selected_step.change(insights["pipeline"], [run_state, selected_step], [pipeline_plot, branch_token],
                             **private)
        branch_button.click(branching["branch"], [run_state, selected_step, branch_token, branches],
                            [branches, branch_menu, branch_text, branch_plot], **model_job)
        branch_menu.input(branching["show_branch"], [branch_menu, branches, run_state], [branch_text, branch_plot],
                          **private)
        export_button.click(branching["export_report"], [run_state, selected_step, branches], report_files, **private)
        replay_button.click(branching["import_report"], report_upload, replay_result, **model_job)
        lens_button.click(insights["lens"], run_state, lens_plot, **model_job)
        compare_button.click(insights["side_by_side"], [model_a, model_b, prompt, template, temperature, top_k, top_p,
                                                        min_p, max_new_tokens, seed],
                             [text_a, text_b, compare_summary, divergence_plot], **model_job)
        score_button.click(insights["score"], [score_input, score_models], [score_view, surprisal_plot], **model_job,
                           api_name="score_page")  # "/score" is the public endpoint below
        calc_button.click(insights["calculator"], [calc_params, calc_tokens, calc_flops, calc_inference],
                          [calc_result, calc_plot, inference_result, inference_plot], **private)
        same_compute_button.click(make_same_compute_handler(registry), [prompt, template, temperature, top_k, top_p,
                                                                         min_p, max_new_tokens, seed],
                                  [model_a, model_b, text_a, text_b, compare_summary, divergence_plot,
                                   same_compute_table], **model_job)
        gr.api(insights["score_api"], api_name="score", concurrency_id="model", concurrency_limit=1)
        gr.api(insights["chinchilla_api"], api_name="chinchilla")
        label_to_id = {label: key for key, label in BENCHMARKS.items()}
        benchmark.change(lambda label: params_vs_benchmark_figure(models, label_to_id[label]), benchmark,
                         performance_plot, api_visibility="private")
        api = gr.api(handlers["generate_json"], api_name="generate", concurrency_id="model", concurrency_limit=1)
        # gr.api takes no validator= (Gradio 6.31), but the event it creates runs one like any other.
        demo.fns[api["id"]].validator = handlers["validate_api"]
        chat_api = gr.api(chat["chat_json"], api_name="chat", concurrency_id="model", concurrency_limit=1)
        demo.fns[chat_api["id"]].validator = chat["validate_api"]
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
    parser.add_argument("--auth", default=os.environ.get("PLAYGROUND_AUTH"),
                        help="user:password required to use the app (or set PLAYGROUND_AUTH, which ps cannot show)")
    parser.add_argument("--rate-limit", type=int, default=None,
                        help=f"generations a minute per client address; 0 = none (default: {PUBLIC_RATE_LIMIT} with "
                             "--share or on a Space, else none)")
    parser.add_argument("--context", type=int, default=None, metavar="TOKENS",
                        help=f"context length of every model loaded (default: each model's own); at least "
                             f"{MIN_CONTEXT}; above a model's trained length it runs, with a warning on its model line")
    args = parser.parse_args(argv)
    if args.context is not None and not MIN_CONTEXT <= args.context <= MAX_CONTEXT:
        parser.error(f"--context must be an integer in [{MIN_CONTEXT}, {MAX_CONTEXT}] (tokens), got {args.context}")
    try:
        args.auth = parse_auth(args.auth)
    except ValueError as error:
        parser.error(str(error))
    if args.rate_limit is None:
        args.rate_limit = PUBLIC_RATE_LIMIT if args.share or on_space else 0
    return args


def launch(demo: gr.Blocks, args: argparse.Namespace, blocked_paths: list[str], **overrides):
    """Queue and serve `demo` with what a public app needs (each setting is checked in tests/test_reliability_*)."""
    # One model job at a time on a CPU; a bounded queue; the API cannot skip the queue.
    demo.queue(max_size=args.queue_size, default_concurrency_limit=1, api_open=False)
    middleware = [Middleware(LocalOriginGuard), Middleware(QueueAdmission)]
    if args.auth:
        middleware.append(Middleware(LoginThrottle, limiter=RateLimiter(FAILED_LOGINS_PER_MINUTE)))
    on_space = "SPACE_ID" in os.environ
    if args.share and on_space:
        print("--share is ignored on a Space: the Space itself is the public address")
    return demo.launch(**{
        "server_name": args.host, "server_port": args.port, "share": args.share and not on_space,
        "auth": [args.auth] if args.auth else None, "app_kwargs": {"middleware": middleware},
        "show_error": False, "enable_monitoring": False, "max_file_size": "1mb", "blocked_paths": blocked_paths,
        "mcp_server": False, "ssr_mode": False, "css": CSS, "js": JS, "footer_links": ["api"], **overrides,
    })


def main(argv: list[str] | None = None) -> None:
    require_dependency_floors()
    args = parse_args(argv)
    models_dir = Path(args.models_dir).expanduser() if args.models_dir else None
    registry = ModelRegistry(discover(models_dir, args.model), context_length=args.context)
    demo = build_app(registry, RateLimiter(args.rate_limit))
    # Checkpoints are never served as files: the model directories and every offered checkpoint are blocked.
    launch(demo, args, [str(BUNDLED_DIR), *([str(models_dir)] if models_dir else []), *registry.local_paths])


if __name__ == "__main__":
    main()
