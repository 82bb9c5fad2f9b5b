"""Handlers of the Chat tab and the /chat API.

A reply is an ordinary run: the conversation is rendered by a chat template into one prompt, then
the Generate tab's own path checks it before the queue (same validators, same rate limit),
streams it and stores its record as the session's latest run, so the token probabilities,
attention, sampler pipeline, logit lens and run report all show the latest reply. The history
lives in the session's state as plain {"role", "content"} messages (the system prompt apart).
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from llama_core.chat import BUILTIN_CHAT_TEMPLATES, MODEL_TEMPLATE, default_chat_template, model_template
from llama_core.errors import CheckpointError, TokenizerError

from .controls import SLIDERS
from .handlers import RUN_PANELS
from .registry import ModelRegistry
from .remote_runs import SERVER_TEMPLATE_LABEL, uses_server_template

# The fields of a chat request as the Generate tab's checks know them (a page's, then the API's, in its
# parameters' order), and the Chat tab's inputs, to place each problem on its box.
CHAT_FIELDS = ("model", "messages", "chat_template", "system", *SLIDERS, "seed", "stop", "capture_attention")
API_FIELDS = ("messages", "model", "chat_template", "max_new_tokens", "temperature", "top_k", "top_p", "min_p",
              "repetition_penalty", "seed", "stop")
API_DEFAULTS = {"system": "", "presence_penalty": 0.0, "frequency_penalty": 0.0, "capture_attention": False}
REPLY_INPUTS = ("model", "history", "message", "system", "chat_template", *SLIDERS, "seed", "stop",
                "capture_attention")
BASE_MODEL_NOTE = ("ℹ️ {model} has no chat template of its own, so it is most likely a base model (as the bundled "
                   "ones are): it continues text and was never trained on the {template} format.")


def conversation(history: list | None, message: str | None = None) -> list[dict]:
    """The history as fresh message dicts, with the user's new message after it when given."""
    messages = [{"role": m["role"], "content": m["content"]} for m in history or []
                if isinstance(m, dict) and "role" in m and "content" in m]
    if message is not None:
        messages.append({"role": "user", "content": message})
    return messages


def without_last_reply(history: list | None) -> list[dict]:
    """The conversation up to the last user message: what Regenerate replies to again."""
    messages = conversation(history)
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    return messages


def template_menu_choices(has_own: bool, source: str = "") -> list[tuple[str, str]]:
    own = [(f"the model's own ({source})" if source else "the model's own", MODEL_TEMPLATE)] if has_own else []
    return own + [(name, name) for name in BUILTIN_CHAT_TEMPLATES]


def make_chat_handlers(registry: ModelRegistry, handlers: dict):
    """The Chat tab's handlers, on the Generate tab's checks and run path (`handlers` from make_handlers)."""
    check_request, run_updates, stop_run = handlers["check_request"], handlers["run_updates"], handlers["stop"]

    def page_fields(model, messages, system, chat_template, controls: tuple) -> dict:
        return dict(zip(CHAT_FIELDS, (model, messages, chat_template, system, *controls)))

    def validated(fields: dict, request: gr.Request | None, inputs: tuple[str, ...]) -> list:
        """The request's problems as one gr.validate per input; a conversation's go to the message box."""
        errors = check_request(fields, request)
        where = {"messages": "message", "prompt": "message"}
        by_input = {}
        for name, message in errors.items():
            by_input.setdefault(where.get(name, name), message)
        return [gr.validate(name not in by_input, by_input.get(name, "")) for name in inputs]

    def run(messages: list[dict], fields: dict) -> Iterator[tuple]:
        """Stream one reply: (chatbot, history, message box, rendered prompt, status, record, RUN_PANELS panels).

        The message box is emptied once, when the reply starts, so that what the user types
        meanwhile stays; the rendered prompt is emptied then too, and arrives with the finished run."""
        first = True
        for finished, (text, status, record, *panels) in run_updates(fields):
            shown = messages + [{"role": "assistant", "content": text}]
            rendered = record.prompt if finished else "" if first else gr.skip()
            yield (shown, shown, "" if first else gr.skip(), rendered, status, record, *panels)
            first = False

    def reply(model, history, message, system, chat_template, temperature, top_k, top_p, min_p, repetition_penalty,
              presence_penalty, frequency_penalty, max_new_tokens, seed, stop, capture_attention):
        """Send the message: the model replies to the whole conversation."""
        controls = (temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty,
                    max_new_tokens, seed, stop, capture_attention)
        messages = conversation(history, message)
        yield from run(messages, page_fields(model, messages, system, chat_template, controls))

    def validate_reply(model, history, message, system, chat_template, temperature, top_k, top_p, min_p,
                       repetition_penalty, presence_penalty, frequency_penalty, max_new_tokens, seed, stop,
                       capture_attention, request: gr.Request):
        controls = (temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty,
                    max_new_tokens, seed, stop, capture_attention)
        fields = page_fields(model, conversation(history, message), system, chat_template, controls)
        return validated(fields, request, REPLY_INPUTS)

    def regenerate(model, history, system, chat_template, temperature, top_k, top_p, min_p, repetition_penalty,
                   presence_penalty, frequency_penalty, max_new_tokens, seed, stop, capture_attention):
        """Reply again to the last user message (a new sample unless the seed is fixed)."""
        controls = (temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty,
                    max_new_tokens, seed, stop, capture_attention)
        messages = without_last_reply(history)
        yield from run(messages, page_fields(model, messages, system, chat_template, controls))

    def validate_regenerate(model, history, system, chat_template, temperature, top_k, top_p, min_p,
                            repetition_penalty, presence_penalty, frequency_penalty, max_new_tokens, seed, stop,
                            capture_attention, request: gr.Request):
        controls = (temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty,
                    max_new_tokens, seed, stop, capture_attention)
        messages = without_last_reply(history)
        if not messages:
            raise gr.Error("Nothing to regenerate: send a message first")
        inputs = tuple(name for name in REPLY_INPUTS if name != "message")
        return validated(page_fields(model, messages, system, chat_template, controls), request, inputs)

    def stop(record, history):
        """After Stop: the reply keeps the text generated so far and the panels show the run."""
        messages = conversation(history)
        if record is None or not messages or messages[-1]["role"] != "assistant" or \
                record.settings.get("messages") != messages[:-1]:
            return (gr.skip(),) * (6 + RUN_PANELS)  # Stop came before this reply's run began: nothing of it to keep
        text, status, *rest = stop_run(record)
        messages[-1]["content"] = text
        return (messages, messages, gr.skip(), record.prompt, status, *rest)

    def undo(history):
        """Take back the last exchange; the user's message returns to the box to edit (the
        rendered prompt and status of the reply taken back are cleared)."""
        messages = without_last_reply(history)
        last = messages.pop()["content"] if messages else ""
        return messages, messages, last, "", ""

    def clear():
        return [], [], "", "", ""

    def template_menu(label: str):
        """The template menu for the chosen model: its own template first (chosen) when it has one."""
        choice = registry.get(label) if label in registry.choices else None
        if choice is None or choice.source is None:
            return gr.update(choices=template_menu_choices(False), value="plain")
        if registry.is_remote(label):  # the server's chat endpoint renders with the model's own template
            return gr.update(choices=[(SERVER_TEMPLATE_LABEL, MODEL_TEMPLATE)] + template_menu_choices(False),
                             value=MODEL_TEMPLATE)
        try:
            tokenizer = registry.load(label).tokenizer
        except (CheckpointError, TokenizerError):
            return gr.skip()  # the Generate tab's model line says what is wrong with it
        own = model_template(tokenizer)
        source = own[1].rsplit("/", 1)[-1] if own else ""
        return gr.update(choices=template_menu_choices(own is not None, source), value=default_chat_template(tokenizer))

    def template_note(label: str, chat_template: str) -> str:
        """One line under the menu: which template renders the chat, and whether it suits the model."""
        if label in registry.choices and registry.is_remote(label):
            if uses_server_template(chat_template):
                return (f"The conversation goes to the server's chat endpoint as messages; the server renders it "
                        f"with its own template for {label.split(' (')[0]} (the rendered text is not sent back).")
            return (f"The conversation is rendered here by the built-in **{chat_template}** template and sent to the "
                    "server as one prompt.")
        if label not in registry.choices or not registry.is_loaded(label):
            return ""
        own = model_template(registry.load(label).tokenizer)
        if chat_template == MODEL_TEMPLATE:
            return f"The conversation is rendered by the checkpoint's own chat template ({own[1] if own else '?'})."
        if chat_template == "plain":
            return "The turns are joined as plain text, one per line: the model continues it."
        return BASE_MODEL_NOTE.format(model=label.split(" (")[0], template=chat_template) if own is None else ""

    def api_fields(values: tuple) -> dict:
        fields = {**dict(zip(API_FIELDS, values)), **API_DEFAULTS}
        if fields["model"] in ("", None):
            fields["model"] = registry.default
        return fields

    def validate_api(messages, model, chat_template, max_new_tokens, temperature, top_k, top_p, min_p,
                     repetition_penalty, seed, stop, request: gr.Request):
        """The /chat endpoint's checks before the queue."""
        values = (messages, model, chat_template, max_new_tokens, temperature, top_k, top_p, min_p,
                  repetition_penalty, seed, stop)
        errors = check_request(api_fields(values), request)
        return [gr.validate(name not in errors, errors.get(name, "")) for name in API_FIELDS]

    def chat_json(messages: list, model: str = "", chat_template: str = "", max_new_tokens: float = 32,
                  temperature: float = 0.0, top_k: float = 0, top_p: float = 1.0, min_p: float = 0.0,
                  repetition_penalty: float = 1.0, seed: float = -1, stop: str = "") -> Iterator[dict]:
        """API: the assistant's reply to `messages` ([{"role": "system" | "user" | "assistant", "content": ...}],
        the last one the user's), with every token's probability and alternatives, as /generate returns them.

        chat_template: "" = the model's own (or "plain" when it has none), "model", or a built-in name.
        The result's `prompt` is the conversation as rendered for the model, `reply` the new message.
        """
        values = (messages, model, chat_template, max_new_tokens, temperature, top_k, top_p, min_p,
                  repetition_penalty, seed, stop)
        for result in handlers["json_run"](api_fields(values)):
            yield {**result, "reply": {"role": "assistant", "content": result["text"]}}

    return {"reply": reply, "validate_reply": validate_reply, "regenerate": regenerate,
            "validate_regenerate": validate_regenerate, "stop": stop, "undo": undo, "clear": clear,
            "template_menu": template_menu, "template_note": template_note, "chat_json": chat_json,
            "validate_api": validate_api}
