"""LLaMA Playground: the Gradio app. It assembles the tabs (playground/tabs/: each holds its layout and its
wiring), parses the flags and launches; the work happens in playground/ and llama_core/."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from llama_core.errors import ParameterError
from llama_core.loading import MAX_CONTEXT, MIN_CONTEXT
from playground.access import LocalOriginGuard, LoginThrottle, QueueAdmission, RateLimiter, parse_auth
from playground.attention_handlers import make_attention_handlers
from playground.branch_handlers import make_branch_handlers
from playground.chat_handlers import make_chat_handlers
from playground.dependency_floors import require_dependency_floors
from playground.handlers import make_handlers
from playground.insights import make_insight_handlers
from playground.page_assets import CSS, JS
from playground.registry import BUNDLED_DIR, ModelRegistry, discover
from playground.remote_models import add_remote_arguments, list_remote, remote_configs
from playground.same_compute import make_same_compute_handler
from playground.tabs import attention, chat, generate, lens, probabilities, scaling, score, side_by_side
from playground.tabs.views import QUIET, create_views, track

PUBLIC_RATE_LIMIT = 10  # generations a minute per client, by default on share links and Spaces
FAILED_LOGINS_PER_MINUTE = 5


def build_app(registry: ModelRegistry, limiter: RateLimiter | None = None) -> gr.Blocks:
    handlers = make_handlers(registry, limiter)
    insights = make_insight_handlers(registry)
    chat_handlers = make_chat_handlers(registry, handlers)
    runnable = [label for label, choice in registry.choices.items() if choice.source is not None]
    with gr.Blocks(title="LLaMA Playground") as demo:
        gr.Markdown("# 🦙 LLaMA Playground\nGenerate with a LLaMA model, then look inside: the probability of "
                    "every token and the alternatives, attention maps, and how model size and training tokens trade off.")
        run_state = gr.State(None, time_to_live=3600)  # a run's attention rows are big; an idle session drops them
        active_model = gr.State(registry.default)  # the last model this session loaded, to return to on a failure
        speeds = gr.State({})  # model name -> params and decode tokens/s of its latest run, this session
        selected_step = gr.State(0)
        views = create_views("generate")  # which tab shows, and what each tab's charts show
        with gr.Tab("Generate") as generate_item:
            generate_ui = generate.create_ui(registry)
        with gr.Tab("Chat") as chat_item:
            chat_ui = chat.create_ui()
        with gr.Tab("Token probabilities") as probabilities_item:
            probabilities_ui = probabilities.create_ui()
        with gr.Tab("Attention", elem_id="attention-tab") as attention_item:
            attention_ui = attention.create_ui()
        with gr.Tab("Logit lens") as lens_item:
            lens_ui = lens.create_ui()
        with gr.Tab("Side by side") as side_item:
            side_ui = side_by_side.create_ui(runnable)
        with gr.Tab("Score text") as score_item:
            score_ui = score.create_ui(runnable)
        with gr.Tab("Scaling") as scaling_item:
            scaling_ui = scaling.create_ui()

        # --- wiring: each tab's own events, then what follows every run ------------------------------
        for item, name in ((generate_item, "generate"), (chat_item, "chat"), (lens_item, "lens"),
                           (side_item, "side by side"), (score_item, "score")):
            track(views, item, name)
        draw_probabilities = probabilities.wire(probabilities_ui, probabilities_item, views, run_state, selected_step,
                                                make_branch_handlers(registry))
        draw_attention = attention.wire(attention_ui, attention_item, views, run_state,
                                        make_attention_handlers(registry))
        draw_speeds = scaling.wire(scaling_ui, scaling_item, views, speeds, insights)

        def after_run(event):  # after every run, of the Generate tab or the Chat tab, and after a Stop
            draw_probabilities(event)
            draw_attention(event)
            draw_speeds(event.then(handlers["record_speed"], [run_state, speeds], speeds, **QUIET))

        run_outputs = [generate_ui.output, generate_ui.status, run_state, probabilities_ui.token_view, selected_step]
        generate.wire(generate_ui, demo, registry, handlers, active_model, run_outputs, after_run)
        chat.wire(chat_ui, demo, chat_handlers, generate_ui.model, generate_ui.controls[2:], run_outputs[2:],
                  after_run)
        lens.wire(lens_ui, run_state, insights)
        sliders = generate_ui.sliders
        settings = [generate_ui.prompt, generate_ui.template, sliders["temperature"], sliders["top_k"],
                    sliders["top_p"], sliders["min_p"], sliders["max_new_tokens"], generate_ui.seed]
        side_by_side.wire(side_ui, insights, make_same_compute_handler(registry), settings)
        score.wire(score_ui, insights)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    on_space = "SPACE_ID" in os.environ
    parser = argparse.ArgumentParser(description="LLaMA Playground")
    # A Space has no command line: PLAYGROUND_MODELS (space-separated) offers checkpoints there; flags add to it.
    parser.add_argument("--model", action="append", default=os.environ.get("PLAYGROUND_MODELS", "").split(),
                        help="checkpoint path or Hub id (repeatable; also PLAYGROUND_MODELS, space-separated)")
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
    add_remote_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.remote_configs = remote_configs(args)
    except ParameterError as error:
        flag = {"url": "--remote", "timeout_s": "--remote-timeout", "api_key_env": "--remote-key-env"}
        parser.error(f"{flag.get(error.name, error.name)}: {error}")
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
    remote_choices, remote_models = list_remote(args.remote_configs)
    registry = ModelRegistry(discover(models_dir, args.model, remote_choices), context_length=args.context,
                             remote_models=remote_models)
    demo = build_app(registry, RateLimiter(args.rate_limit))
    # Checkpoints are never served as files: the model directories and every offered checkpoint are blocked.
    launch(demo, args, [str(BUNDLED_DIR), *([str(models_dir)] if models_dir else []), *registry.local_paths])


if __name__ == "__main__":
    main()
