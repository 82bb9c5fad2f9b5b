"""Chat templates: a conversation rendered into one prompt as transformers renders it, then tokenized.

A checkpoint's `chat_template` is Jinja code from whoever published the model, so it runs in
Jinja's immutable sandbox, configured as transformers' `utils/chat_template_utils.py` configures
it (trim_blocks, lstrip_blocks, loop controls, the `generation` tag, `raise_exception`,
`strftime_now`, a `tojson` that does not HTML-escape, a `namespace` that refuses underscore names)
so that a template renders here to exactly the text `apply_chat_template` gives. Models without a
template get one of the built-in formats below.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ChatTemplateError, ParameterError
from .generation import MAX_PROMPT_CHARS
from .tokenizer import Tokenizer

ROLES = ("system", "user", "assistant")
MODEL_TEMPLATE = "model"  # the name under which callers ask for the checkpoint's own template

# Each format written from its source, ending with the header that asks for the assistant's turn.
# `bos_token`/`eos_token` are template variables, as in the checkpoints' own templates; `~` joins
# strings without failing on a variable left undefined (a tokenizer without an eos token).
BUILTIN_CHAT_TEMPLATES: dict[str, str] = {
    # The text as typed, turns on separate lines: for base models, which continue text.
    "plain": (
        "{{ bos_token }}{% for message in messages %}{{ message['content'] }}"
        "{% if not loop.last %}{{ '\n' }}{% endif %}{% endfor %}"
    ),
    # tatsu-lab/stanford_alpaca train.py PROMPT_DICT["prompt_no_input"] (a system message replaces
    # its preamble); later turns follow text-generation-webui's Alpaca instruction template.
    "alpaca": (
        "{{ bos_token }}{% if messages[0]['role'] != 'system' %}{{ 'Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n' }}{% endif %}"
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] ~ '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' ~ message['content'] ~ '\n\n' }}"
        "{% else %}{{ '### Response:\n' ~ message['content'] ~ '\n\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
    ),
    # lm-sys/FastChat conversation.py "vicuna_v1.1": SeparatorStyle.ADD_COLON_TWO, sep " ", sep2 "</s>".
    "vicuna": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] ~ ' ' }}"
        '{% else %}{{ "A chat between a curious user and an artificial intelligence assistant. The assistant gives '
        "helpful, detailed, and polite answers to the user's questions. \" }}{% endif %}"
        "{% for message in messages if message['role'] != 'system' %}{% if message['role'] == 'user' %}"
        "{{ 'USER: ' ~ message['content'] ~ ' ' }}{% else %}{{ 'ASSISTANT: ' ~ message['content'] }}{{ eos_token }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    ),
    # meta-llama/llama generation.py chat_completion: [INST]/[/INST] around each user turn, the
    # system prompt in <<SYS>> inside the first one, BOS before and EOS after each exchange.
    "llama-2-chat": (
        "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set turns = messages[1:] %}{% else %}{% set system = none %}{% set turns = messages %}{% endif %}"
        "{% for message in turns %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Llama-2-chat needs the turns to alternate user/assistant/user/...') }}{% endif %}"
        "{% set content = message['content'] %}{% if loop.first and system is not none %}"
        "{% set content = '<<SYS>>\n' ~ system ~ '\n<</SYS>>\n\n' ~ content %}{% endif %}"
        "{% if message['role'] == 'user' %}{{ bos_token }}{{ '[INST] ' ~ content | trim ~ ' [/INST]' }}"
        "{% else %}{{ ' ' ~ content | trim ~ ' ' }}{{ eos_token }}{% endif %}{% endfor %}"
    ),
    # meta-llama/llama3 llama/tokenizer.py ChatFormat: a header per message, content stripped, <|eot_id|>.
    "llama-3-instruct": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' ~ message['role'] ~ "
        "'<|end_header_id|>\n\n' ~ message['content'] | trim ~ '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    # OpenAI's ChatML (openai-python chatml.md, 2023), as SmolLM and Qwen use it; no BOS in the format.
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' ~ message['role'] ~ '\n' ~ message['content'] ~ "
        "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # HuggingFaceH4/zephyr-7b-beta tokenizer_config.json: <|role|> lines, EOS closing each message.
    "zephyr": (
        "{{ bos_token }}{% for message in messages %}{{ '<|' ~ message['role'] ~ '|>\n' ~ message['content'] }}"
        "{{ eos_token }}{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
}
# Formats whose source puts BOS first because the model's own tokenizer adds it there; rendered
# for a tokenizer that adds no BOS (SmolLM's "bos" is <|im_start|>), they start without one.
_BOS_BY_TOKENIZER = {"plain", "alpaca", "vicuna", "zephyr"}


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}…{% endgeneration %}` marks the assistant's tokens for training masks in
    transformers; it renders its body unchanged, so templates that use it compile here too."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace()` whose attributes cannot be underscore names, as in transformers."""

    def __init__(*args, **kwargs):  # Jinja's own signature trick, so namespace(self=...) still works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with '_': {name!r}")


class _TemplateDict:
    """`dict(...)` and `dict.fromkeys(...)` without handing the template the `dict` type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes <, >, & for HTML; templates expect plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_TemplateDict(),
                       namespace=_TemplateNamespace)
    return env.from_string(template)


def check_messages(messages: object, max_chars: int = MAX_PROMPT_CHARS,
                   max_messages: int = 10_000) -> list[dict[str, str]]:
    """A conversation as plain {"role", "content"} dicts, the last one the user's; ParameterError otherwise."""
    shape = "a non-empty list of {'role': 'system' | 'user' | 'assistant', 'content': text} objects"
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ParameterError("messages", shape, messages)
    if len(messages) > max_messages:
        raise ParameterError("messages", f"at most {max_messages} messages", f"{len(messages)} messages")
    clean, total = [], 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ParameterError(f"messages[{i}]", "an object with 'role' and 'content'", message)
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise ParameterError(f"messages[{i}].role", "one of " + ", ".join(map(repr, ROLES)), role)
        if not isinstance(content, str):
            raise ParameterError(f"messages[{i}].content", "a text", content)
        if role == "system" and i != 0:
            raise ParameterError(f"messages[{i}].role", "'user' or 'assistant' (a system message comes first)", role)
        total += len(content)
        # Plain str copies: the template sees data, never the caller's objects or their methods.
        clean.append({"role": str(role), "content": str(content)})
    if total > max_chars:
        raise ParameterError("messages", f"at most {max_chars} characters in all", f"{total} characters")
    if clean[-1]["role"] != "user" or not clean[-1]["content"].strip():
        raise ParameterError(f"messages[{len(clean) - 1}]", "a non-empty user message to reply to", messages[-1])
    return clean


def with_system_prompt(messages: list[dict[str, str]], system: str) -> list[dict[str, str]]:
    """The conversation with `system` as its first message, unless it opens with one already or `system` is blank
    (the system prompt box applies to a conversation that has none of its own)."""
    if system.strip() and messages and messages[0]["role"] != "system":
        return [{"role": "system", "content": system}, *messages]
    return list(messages)


def render_chat(messages: list[dict[str, str]], template: str, *, bos_token: str | None = None,
                eos_token: str | None = None, add_generation_prompt: bool = True,
                source: str = "chat template", **extra) -> str:
    """The conversation as the prompt text `template` makes of it (transformers' apply_chat_template
    with tokenize=False). A token passed as None stays undefined, as transformers leaves unset tokens.

    Args:
        source: where the template came from, named by any error (e.g. the tokenizer_config.json path).
        extra: further template variables (transformers passes every special token, e.g. unk_token).
    """
    variables = {"bos_token": bos_token, "eos_token": eos_token, **extra}
    variables = {name: value for name, value in variables.items() if value is not None}
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(source, f"the chat template does not compile: {error.message} (line {error.lineno})"
                                ) from None
    try:
        return compiled.render(messages=messages, tools=None, documents=None,
                               add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.exceptions.SecurityError as error:
        raise ChatTemplateError(source, f"the chat template tried to reach outside its sandbox and was stopped "
                                        f"({error})") from None
    except jinja2.TemplateError as error:  # raise_exception(...) and undefined names end here
        raise ChatTemplateError(source, f"the chat template refused this conversation: {error}") from None
    except Exception as error:  # e.g. a TypeError from '+' on a number: still the template's fault
        raise ChatTemplateError(source, f"the chat template failed ({type(error).__name__}: {error})") from None


def model_template(tokenizer: Tokenizer) -> tuple[str, str] | None:
    """The checkpoint's own chat template and the file it came from, or None when it has none.

    A list of named templates (tokenizer_config.json may hold one) gives its "default", as
    transformers picks when no name is asked for."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    if not isinstance(template, str) or not template.strip():
        return None
    return template, _template_source(tokenizer)


# Where a checkpoint folder keeps its template, in transformers' precedence (the first one present wins).
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


def _template_source(tokenizer: Tokenizer) -> str:
    source = getattr(tokenizer, "chat_template_source", None)
    if source:
        return str(source)
    path = getattr(tokenizer, "path", None)
    if path is None:
        return "the tokenizer's chat template"
    if Path(path).suffix == ".gguf":
        return str(path)  # the template is in the file's metadata (tokenizer.chat_template)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return str(next((folder / name for name in _TEMPLATE_FILES if (folder / name).is_file()), path))


def template_choices(tokenizer: Tokenizer | None) -> list[str]:
    """What a caller may ask for on this tokenizer: its own template (if any), then the built-ins."""
    own = [MODEL_TEMPLATE] if tokenizer is not None and model_template(tokenizer) else []
    return own + list(BUILTIN_CHAT_TEMPLATES)


def default_chat_template(tokenizer: Tokenizer) -> str:
    """The checkpoint's own template when it has one, else "plain" (the text as typed)."""
    return MODEL_TEMPLATE if model_template(tokenizer) else "plain"


def chat_prompt(tokenizer: Tokenizer, messages: list[dict[str, str]], template: str | None = None,
                *, add_generation_prompt: bool = True) -> tuple[str, list[int]]:
    """The rendered prompt and its token ids for a conversation.

    `template`: None or "model" for the checkpoint's own template, or a BUILTIN_CHAT_TEMPLATES name.
    The text is tokenized as transformers' apply_chat_template(tokenize=True) does: special-token
    strings the template wrote (or the user typed) become their ids, and no BOS is added on top of
    the one the template wrote, so it is never doubled.
    """
    bos, eos = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "eos_token", None)
    if template in (None, MODEL_TEMPLATE):
        own = model_template(tokenizer)
        if own is None:
            where = getattr(tokenizer, "path", None) or "this tokenizer"
            raise ChatTemplateError(str(where), "no chat template in this checkpoint; choose a built-in one: "
                                    + ", ".join(BUILTIN_CHAT_TEMPLATES))
        text, source = own
    elif template in BUILTIN_CHAT_TEMPLATES:
        text, source = BUILTIN_CHAT_TEMPLATES[template], f"built-in template {template!r}"
        if template in _BOS_BY_TOKENIZER and not getattr(tokenizer, "add_bos", True):
            bos = None
    else:
        raise ParameterError("template", "one of " + ", ".join(map(repr, template_choices(tokenizer))), template)
    extra = {name: getattr(tokenizer, name, None) for name in ("unk_token", "pad_token")}
    rendered = render_chat(messages, text, bos_token=bos, eos_token=eos, add_generation_prompt=add_generation_prompt,
                           source=source, **extra)
    if not rendered.strip():
        raise ChatTemplateError(source, "the chat template rendered this conversation as empty text")
    return rendered, tokenizer.encode(rendered, bos=False)


def encode_chat(tokenizer: Tokenizer, messages: list[dict[str, str]], template: str | None = None) -> list[int]:
    """Prompt token ids for a conversation (see chat_prompt), ending with the assistant's header."""
    return chat_prompt(tokenizer, check_messages(messages), template)[1]
