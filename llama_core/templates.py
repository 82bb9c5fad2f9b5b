"""Prompt templates for a single prompt: the chat formats of `chat.py` applied to one user turn."""

from __future__ import annotations

from .chat import BUILTIN_CHAT_TEMPLATES, render_chat

# Name -> Jinja chat template; the names are what the CLI, the API and the Generate tab accept.
TEMPLATES: dict[str, str] = BUILTIN_CHAT_TEMPLATES


def apply_template(name: str, prompt: str, system: str = "") -> str:
    """Wrap `prompt` (and `system`, when not blank) in the named format, ready for the assistant's turn.

    No BOS/EOS text is written: the prompt is encoded with the tokenizer's own BOS, as a typed
    prompt is. The prompt is stripped except for "plain", which keeps the text exactly as typed.
    """
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; choose one of {', '.join(TEMPLATES)}")
    messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
    messages.append({"role": "user", "content": prompt if name == "plain" else prompt.strip()})
    return render_chat(messages, TEMPLATES[name], bos_token="", eos_token="", source=f"built-in template {name!r}")
