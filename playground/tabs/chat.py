"""The Chat tab: a multi-turn conversation whose every reply is an ordinary run.

Layout in `create_ui`, wiring in `wire`. The model, the sampling sliders and the attention switch
are the Generate tab's; each reply's record becomes the session's latest run, so the Token
probabilities, Attention and Logit lens tabs show it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from playground.chat_handlers import template_menu_choices
from playground.controls import MAX_PROMPT_CHARS, MAX_SYSTEM_CHARS


@dataclass
class ChatTab:
    chatbot: gr.Chatbot
    history: gr.State
    message: gr.Textbox
    system: gr.Textbox
    chat_template: gr.Dropdown
    template_note: gr.Markdown
    send: gr.Button
    stop: gr.Button
    regenerate: gr.Button
    undo: gr.Button
    clear: gr.Button
    rendered: gr.Textbox
    status: gr.Markdown


def create_ui() -> ChatTab:
    gr.Markdown("Talk with the model chosen on the Generate tab, with its sampling settings. Each reply is a run "
                "like any other: open Token probabilities, Attention or Logit lens to look inside the latest one.")
    with gr.Row():
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Conversation", height=420, render_markdown=False, elem_id="chatbot",
                                 feedback_options=None, buttons=["copy"])
            message = gr.Textbox(label="Message", lines=2, max_length=MAX_PROMPT_CHARS, elem_id="chat-message",
                                 placeholder="Type a message; Enter sends it, Shift+Enter starts a new line")
            with gr.Row():
                send = gr.Button("Send", variant="primary", min_width=80, elem_id="chat-send")
                stop = gr.Button("Stop", variant="stop", min_width=80, elem_id="chat-stop")
                regenerate = gr.Button("Regenerate", min_width=80, elem_id="chat-regenerate")
                undo = gr.Button("Undo", min_width=80, elem_id="chat-undo")
                clear = gr.Button("Clear", min_width=80, elem_id="chat-clear")
            status = gr.Markdown(elem_id="chat-status")
        with gr.Column(scale=2):
            chat_template = gr.Dropdown(template_menu_choices(False), value="plain", label="Chat template",
                                        elem_id="chat-template")
            template_note = gr.Markdown(elem_id="chat-template-note")
            system = gr.Textbox(label="System prompt", lines=3, max_length=MAX_SYSTEM_CHARS, elem_id="chat-system")
            with gr.Accordion("The conversation as the model reads it", open=False):
                rendered = gr.Textbox(show_label=False, lines=10, interactive=False, elem_id="chat-rendered")
    history = gr.State([])
    return ChatTab(chatbot, history, message, system, chat_template, template_note, send, stop, regenerate, undo,
                   clear, rendered, status)


def wire(tab: ChatTab, demo: gr.Blocks, chat: dict, model: gr.Dropdown, controls: list, run_outputs: list,
         after_run) -> None:
    """Events of the tab. `controls`: the Generate tab's sliders, seed, stop and attention switch;
    `run_outputs`: the run state and the panels drawn from it; `after_run(event)` chains what the
    app does after every run (the sampler pipeline, the speed chart)."""
    outputs = [tab.chatbot, tab.history, tab.message, tab.rendered, tab.status, *run_outputs]
    # preprocess=False: the validator sees the values as sent, as the Generate tab's does.
    run = {"preprocess": False, "concurrency_id": "model", "concurrency_limit": 1, "api_visibility": "private"}
    reply_inputs = [model, tab.history, tab.message, tab.system, tab.chat_template, *controls]
    replies = [
        tab.send.click(chat["reply"], reply_inputs, outputs, validator=chat["validate_reply"], **run),
        tab.message.submit(chat["reply"], reply_inputs, outputs, validator=chat["validate_reply"], **run),
        tab.regenerate.click(chat["regenerate"], [model, tab.history, tab.system, tab.chat_template, *controls],
                             outputs, validator=chat["validate_regenerate"], **run),
    ]
    for event in replies:
        after_run(event)
    private = {"api_visibility": "private"}
    after_run(tab.stop.click(chat["stop"], [run_outputs[0], tab.history], outputs, cancels=replies, **private))
    conversation = [tab.chatbot, tab.history, tab.message, tab.rendered, tab.status]
    tab.undo.click(chat["undo"], tab.history, conversation, **private)
    tab.clear.click(chat["clear"], None, conversation, **private)
    tab.chatbot.clear(chat["clear"], None, conversation, **private)  # the chatbot's own bin icon forgets the history too
    # The menu follows the model (its own template, when it has one, comes first and is chosen).
    for trigger in (model.change, demo.load):
        trigger(chat["template_menu"], model, tab.chat_template, concurrency_id="model", **private).then(
            chat["template_note"], [model, tab.chat_template], tab.template_note, **private)
    tab.chat_template.change(chat["template_note"], [model, tab.chat_template], tab.template_note, **private)
    api = gr.api(chat["chat_json"], api_name="chat", concurrency_id="model", concurrency_limit=1)
    demo.fns[api["id"]].validator = chat["validate_api"]  # gr.api takes no validator= (Gradio 6.31)
