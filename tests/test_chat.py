"""Chat templates: rendered text and token ids equal transformers' apply_chat_template, the built-in
formats equal their sources, and a template cannot leave Jinja's sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizer_fixtures import (
    CHATML_TEMPLATE, LLAMA2_TEMPLATE, LLAMA3_TEMPLATE, write_llama2_sentencepiece, write_llama3_hf, write_smollm_hf,
)
from transformers import AutoTokenizer

from llama_core.chat import (
    BUILTIN_CHAT_TEMPLATES, ROLES, chat_prompt, check_messages, encode_chat, model_template, render_chat,
)
from llama_core.errors import ChatTemplateError, ParameterError
from llama_core.tokenizer import load_tokenizer

SYSTEM = "You are a terse assistant."
TURNS = [  # three user turns, the replies between them; accents, emoji, CJK and a newline in the text
    ("Hello there! How are you?", "I am fine, thank you."),
    ("Tell me about llamas 🦙 in the café.", "Llamas live in the Andes.\nThey are 日本 friendly."),
    ("And alpacas?", None),
]


def conversation(system: bool = True) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}] if system else []
    for user, assistant in TURNS:
        messages.append({"role": "user", "content": user})
        if assistant is not None:
            messages.append({"role": "assistant", "content": assistant})
    return messages


def reference_ids(reference, messages, **options) -> list[int]:
    """transformers' prompt ids (apply_chat_template(tokenize=True) encodes with add_special_tokens=False)."""
    out = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **options)
    return list(out["input_ids"] if hasattr(out, "keys") else out)  # v5 returns a BatchEncoding, v4 a list


# TinyLlama-1.1B-Chat's template (Zephyr's), laid out as its tokenizer_config.json has it: one statement a line,
# so the rendered text depends on trim_blocks dropping the newline after each block tag.
ZEPHYR_MULTILINE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
# The fixtures whose tokenizer_config.json carries a chat template, as the real downloads do.
WRITERS = {
    "llama-2-sentencepiece": lambda d: write_llama2_sentencepiece(d, chat_template=LLAMA2_TEMPLATE),
    "tinyllama-zephyr": lambda d: write_llama2_sentencepiece(d, chat_template=ZEPHYR_MULTILINE),
    "llama-3-tokenizer-json": lambda d: write_llama3_hf(d, chat_template=LLAMA3_TEMPLATE),
    "smollm-chatml": lambda d: write_smollm_hf(d, chat_template=CHATML_TEMPLATE),
}


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory) -> dict[str, Path]:
    dirs = {}
    for name, write in WRITERS.items():
        dirs[name] = tmp_path_factory.mktemp(name)
        write(dirs[name])
    return dirs


@pytest.fixture(scope="module")
def pairs(fixture_dirs):
    """(ours, transformers') tokenizer of each fixture."""
    return {name: (load_tokenizer(d), AutoTokenizer.from_pretrained(str(d))) for name, d in fixture_dirs.items()}


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("system", [True, False])
def test_model_template_renders_and_tokenizes_as_transformers(pairs, name, system):
    ours, reference = pairs[name]
    messages = conversation(system)
    text, ids = chat_prompt(ours, messages)
    assert text == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ids == reference_ids(reference, messages)
    assert encode_chat(ours, messages) == ids


@pytest.mark.parametrize("name", ["llama-2-sentencepiece", "llama-3-tokenizer-json"])
def test_the_templates_bos_is_its_id_once(pairs, name):
    ours, _ = pairs[name]
    ids = encode_chat(ours, conversation())
    # The template writes bos_token as text; it must come back as the one BOS id, not as characters
    # and not doubled by the tokenizer's own BOS.
    assert ids[0] == ours.bos_id and ids[1] != ours.bos_id
    assert ids.count(ours.bos_id) == (3 if name.startswith("llama-2") else 1)  # Llama 2: one per exchange


def test_special_tokens_typed_by_the_user_are_parsed_as_transformers_parses_them(pairs):
    ours, reference = pairs["llama-3-tokenizer-json"]
    messages = [{"role": "user", "content": "a <|eot_id|> inside"}]
    assert encode_chat(ours, messages) == reference_ids(reference, messages)


@pytest.mark.parametrize("fixture", ["llama-2-sentencepiece", "llama-3-tokenizer-json"])
@pytest.mark.parametrize("template", BUILTIN_CHAT_TEMPLATES)
def test_builtin_templates_render_and_tokenize_as_transformers(pairs, fixture, template):
    ours, reference = pairs[fixture]
    messages = conversation()
    source = BUILTIN_CHAT_TEMPLATES[template]
    text, ids = chat_prompt(ours, messages, template)
    assert text == reference.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                 add_generation_prompt=True)
    assert ids == reference_ids(reference, messages, chat_template=source)


def _vicuna_reference(messages, bos, eos):
    # FastChat's SeparatorStyle.ADD_COLON_TWO, written out: system + sep, then "ROLE: message" + seps[i % 2].
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = [m for m in messages if m["role"] != "system"]
    text = bos + system + " "
    for i, m in enumerate(turns):
        text += ("USER" if m["role"] == "user" else "ASSISTANT") + ": " + m["content"] + (" ", eos)[i % 2]
    return text + "ASSISTANT:"


def _llama2_reference(messages, bos, eos):
    # meta-llama/llama generation.py chat_completion: system folded into the first user turn.
    first, *rest = messages
    dialog = [{"role": "user", "content": f"<<SYS>>\n{first['content']}\n<</SYS>>\n\n{rest[0]['content']}"}] + rest[1:]
    text = ""
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        text += f"{bos}[INST] {prompt['content'].strip()} [/INST] {answer['content'].strip()} {eos}"
    return text + f"{bos}[INST] {dialog[-1]['content'].strip()} [/INST]"


def _llama3_reference(messages, bos, eos):
    # meta-llama/llama3 tokenizer.py ChatFormat.encode_dialog_prompt, as text.
    def header(role):
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    return bos + "".join(header(m["role"]) + m["content"].strip() + "<|eot_id|>" for m in messages) + header(
        "assistant")


def test_builtin_formats_equal_their_sources():
    messages, bos, eos = conversation(), "<s>", "</s>"
    (u1, a1), (u2, a2), (u3, _) = TURNS

    def render(name):
        return render_chat(messages, BUILTIN_CHAT_TEMPLATES[name], bos_token=bos, eos_token=eos)

    assert render("vicuna") == _vicuna_reference(messages, bos, eos)
    assert render("llama-2-chat") == _llama2_reference(messages, bos, eos)
    assert render("llama-3-instruct") == _llama3_reference(messages, bos, eos)
    assert render("chatml") == "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
        "<|im_start|>assistant\n"
    assert render("zephyr") == bos + "".join(f"<|{m['role']}|>\n{m['content']}{eos}\n" for m in messages) + \
        "<|assistant|>\n"
    assert render("alpaca") == (f"{bos}{SYSTEM}\n\n### Instruction:\n{u1}\n\n### Response:\n{a1}\n\n"
                                f"### Instruction:\n{u2}\n\n### Response:\n{a2}\n\n### Instruction:\n{u3}\n\n"
                                "### Response:\n")
    assert render("plain") == bos + "\n".join(m["content"] for m in messages)
    # Without a system message: Alpaca's and Vicuna's own preambles (stanford_alpaca, FastChat).
    alone = [{"role": "user", "content": "Hi"}]
    assert render_chat(alone, BUILTIN_CHAT_TEMPLATES["alpaca"]) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nHi\n\n### Response:\n")
    assert render_chat(alone, BUILTIN_CHAT_TEMPLATES["vicuna"], eos_token=eos) == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: Hi ASSISTANT:")


def test_builtin_formats_put_no_bos_where_the_tokenizer_adds_none(pairs):
    ours, reference = pairs["smollm-chatml"]  # SmolLM2-Instruct: bos_token is <|im_start|>, never added
    assert not ours.add_bos
    text, ids = chat_prompt(ours, [{"role": "user", "content": "Hello"}], "plain")
    assert text == "Hello" and ids == reference("Hello", add_special_tokens=False)["input_ids"]


# Features of transformers' Jinja environment a template may use; each must render as there.
FEATURE_TEMPLATE = """{%- set ns = namespace(count=0) -%}
{% for message in messages %}
    {% if message['role'] == 'system' %}{% continue %}{% endif %}
    {% set ns.count = ns.count + 1 %}
    {% generation %}{{ ns.count }}:{{ message | tojson }}{% endgeneration %}
    {% if ns.count > 3 %}{% break %}{% endif %}
{% endfor %}
{{ dict(a=1) | tojson }} {{ {'<b>': 'é'} | tojson(indent=1) }} {{ strftime_now('%Y') | length }}
{% if add_generation_prompt %}>>{% endif %}"""


def test_jinja_environment_features_render_as_in_transformers(pairs):
    ours, reference = pairs["llama-2-sentencepiece"]
    messages = conversation()
    ours_text = render_chat(messages, FEATURE_TEMPLATE, bos_token=ours.bos_token, eos_token=ours.eos_token)
    assert ours_text == reference.apply_chat_template(messages, chat_template=FEATURE_TEMPLATE, tokenize=False,
                                                      add_generation_prompt=True)
    assert '"<b>": "é"' in ours_text  # tojson neither HTML-escapes nor ASCII-escapes


def _write_template(directory: Path, template: str) -> Path:
    write_llama2_sentencepiece(directory, chat_template=template)
    return directory / "tokenizer_config.json"


def test_raise_exception_is_a_clear_error_naming_the_file(pairs, fixture_dirs):
    ours, _ = pairs["llama-2-sentencepiece"]
    twice = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    with pytest.raises(ChatTemplateError, match="Conversation roles must alternate") as caught:
        encode_chat(ours, twice)
    assert str(fixture_dirs["llama-2-sentencepiece"] / "tokenizer_config.json") in str(caught.value)
    with pytest.raises(ChatTemplateError, match="built-in template 'llama-2-chat'.*alternate"):
        encode_chat(ours, twice, "llama-2-chat")


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% set ns = namespace() %}{% set ns._hidden = 1 %}{{ ns._hidden }}",
    "{{ messages.append({'role': 'x'}) }}",
])
def test_a_template_reaching_outside_the_sandbox_is_refused(tmp_path, escape):
    marker = tmp_path / "escaped"
    config = _write_template(tmp_path / "tok", escape.replace("{marker}", str(marker)))
    tokenizer = load_tokenizer(config.parent)
    with pytest.raises(ChatTemplateError, match="outside its sandbox") as caught:
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}])
    assert str(config) in str(caught.value)
    assert not marker.exists()


def test_broken_templates_name_the_file(tmp_path):
    config = _write_template(tmp_path / "syntax", "{% for message in messages %}{{ message['content'] }}")
    with pytest.raises(ChatTemplateError, match=r"tokenizer_config.json: the chat template does not compile.*line 1"):
        encode_chat(load_tokenizer(config.parent), [{"role": "user", "content": "hi"}])
    config = _write_template(tmp_path / "empty", "{% if false %}x{% endif %}")
    with pytest.raises(ChatTemplateError, match="rendered this conversation as empty"):
        encode_chat(load_tokenizer(config.parent), [{"role": "user", "content": "hi"}])


def test_no_template_asks_for_a_builtin(tmp_path):
    write_llama2_sentencepiece(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    assert model_template(tokenizer) is None
    with pytest.raises(ChatTemplateError, match="no chat template in this checkpoint; choose a built-in one: plain"):
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}])
    with pytest.raises(ParameterError, match="template must be one of 'plain'"):
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}], "gpt-4")


def test_chat_template_jinja_wins_and_is_named(tmp_path):
    # Newer downloads keep the template in chat_template.jinja, which transformers prefers to tokenizer_config.json.
    write_llama2_sentencepiece(tmp_path, chat_template="{{ 'from the config' }}")
    (tmp_path / "chat_template.jinja").write_text("{{ raise_exception('from the jinja file') }}")
    with pytest.raises(ChatTemplateError, match=r"chat_template.jinja: .*from the jinja file"):
        encode_chat(load_tokenizer(tmp_path), [{"role": "user", "content": "hi"}])


def test_named_templates_use_the_default_one(tmp_path):
    # tokenizer_config.json may hold a list of named templates; transformers takes "default" when none is named.
    write_llama2_sentencepiece(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "TOOLS"}, {"name": "default", "template": "{{ 'D' }}"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert model_template(load_tokenizer(tmp_path))[0] == "{{ 'D' }}"


@pytest.mark.parametrize("messages, parameter", [
    ([], "messages"),
    ("hello", "messages"),
    ([{"role": "wizard", "content": "x"}], r"messages\[0\].role"),
    ([{"role": "user", "content": 5}], r"messages\[0\].content"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}, {"role": "user", "content": "c"}],
     r"messages\[1\].role"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], r"messages\[1\]"),
    ([{"role": "user", "content": "x" * 30}], "messages must be at most 20 characters"),
])
def test_bad_messages_name_the_field(messages, parameter):
    with pytest.raises(ParameterError, match=parameter):
        check_messages(messages, max_chars=20)


def test_check_messages_keeps_plain_copies():
    class Text(str):  # a str subclass could carry methods the sandbox does not know about
        def upper(self):
            raise AssertionError("the template reached the caller's object")

    clean = check_messages([{"role": "user", "content": Text("hi"), "name": "ignored"}])
    assert clean == [{"role": "user", "content": "hi"}] and type(clean[0]["content"]) is str
    assert set(ROLES) == {"system", "user", "assistant"}
