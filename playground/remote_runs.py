"""What a run on a remote model needs besides the local path: the request it sends, its record and how
the record reads on the page.

The server tokenizes, so here the prompt stays text: a single prompt is formatted by the chosen prompt
template (as for a local model, without BOS text: the server adds its own) and sent to /v1/completions;
a conversation goes to /v1/chat/completions as messages, which the server renders with its own chat
template, unless a built-in template was chosen, which is rendered here and sent as text. The record
holds no prompt tokens (their ids are the server's), only the prompt text, and its `source` names the
server, the model and the top-n the numbers were read from.
"""

from __future__ import annotations

from llama_core.backends import RemoteModel
from llama_core.chat import BUILTIN_CHAT_TEMPLATES, MODEL_TEMPLATE, render_chat, with_system_prompt
from llama_core.insight.run_figures import token_html
from llama_core.insight.run_record import RunRecord
from llama_core.insight.run_report import server_chat_messages
from llama_core.templates import apply_template
from llama_core.token_display import html_token

SERVER_TEMPLATE_LABEL = "the server's own (its chat endpoint renders the conversation)"
EMPTY_PROMPT_SPAN = '<span class="prompt" style="color:#666"></span>'


def uses_server_template(chat_template: str) -> bool:
    """"" and "model" mean the model's own template: for a remote model, the one the server applies."""
    return chat_template in ("", MODEL_TEMPLATE)


def conversation_text(messages: list[dict]) -> str:
    """A conversation as the record shows it when the server renders it (its rendering is not returned)."""
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def remote_prompt(values: dict) -> tuple[str, list[dict] | None]:
    """(the prompt text the record keeps, the messages for the chat endpoint or None) of a checked request."""
    if "messages" not in values:
        return apply_template(values["template"], values["prompt"], values["system"]), None
    if messages := server_chat_messages(values):
        return conversation_text(messages), messages
    messages = with_system_prompt(values["messages"], values.get("system", ""))
    name = values["chat_template"]
    return render_chat(messages, BUILTIN_CHAT_TEMPLATES[name], bos_token="", eos_token="",
                       source=f"built-in template {name!r}"), None


def start_record(label: str, remote: RemoteModel, prompt: str, settings: dict, top_n: int) -> RunRecord:
    """A remote run's record: its prompt as text, no prompt tokens, and `source` naming where it ran."""
    return RunRecord.start(label, remote.tokenizer, prompt, [], settings, source=remote.source(top_n))


def run_token_html(record: RunRecord, selected: int | None = None) -> str:
    """The token view: a remote run's prompt has no tokens here, so it is shown as the text it was."""
    view = token_html(record, selected)
    if record.is_remote and not record.prompt_ids and record.prompt:
        filled = EMPTY_PROMPT_SPAN.replace("></span>", f">{html_token(record.prompt)}</span>")
        view = view.replace(EMPTY_PROMPT_SPAN, filled, 1)
    return view
