"""The Chat tab and the /chat API on a real server, with a tiny model whose tokenizer carries
Llama 2's chat template (the layout of a Llama-2-chat download)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from test_app import OUTPUT, browser  # noqa: F401 (fixture)
from tokenizer_fixtures import LLAMA2_TEMPLATE, write_llama2_sentencepiece
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from app_server import AppServer, api_client
from browser import plot_labels
from playground.chat_handlers import conversation, make_chat_handlers, without_last_reply
from playground.handlers import RUN_PANELS, make_handlers
from playground.registry import BUNDLED_DIR, ModelChoice, ModelRegistry

SYSTEM = "Answer in one line."
USER_TURNS = ["Hello, who are you?", "Tell me about the café 🦙.", "And the Andes?"]
GENERATION_DEFAULTS = {"temperature": 0.6, "top_p": 0.9}


def write_chat_checkpoint(out: Path) -> Path:
    """A seeded random LLaMA (Hugging Face layout) with a SentencePiece tokenizer and Llama 2's chat template."""
    vocab = write_llama2_sentencepiece(out, chat_template=LLAMA2_TEMPLATE)
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": 2, "do_sample": True, **GENERATION_DEFAULTS}))
    return out


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    return write_chat_checkpoint(tmp_path_factory.mktemp("checkpoints") / "tiny-llama-2-chat")


@pytest.fixture(scope="module")
def server(chat_model):
    OUTPUT.mkdir(exist_ok=True)
    app = AppServer("--model", str(chat_model), log_path=OUTPUT / "app-chat.log").wait_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def client(server):
    client = api_client(server.url)
    yield client
    client.close()


def label_of(chat_model: Path) -> str:
    return f"{chat_model.name} (local)"


def test_history_helpers():
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "metadata": None}]
    assert conversation(history, "c") == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                          {"role": "user", "content": "c"}]
    assert without_last_reply(history) == [{"role": "user", "content": "a"}]
    assert without_last_reply([]) == []


def test_stop_keeps_the_partial_reply_of_this_chat_only(chat_model):
    import gradio as gr

    label = label_of(chat_model)
    registry = ModelRegistry([ModelChoice(label, str(chat_model), "local")])
    chat = make_chat_handlers(registry, make_handlers(registry))
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    sampling = (0.0, 0, 1.0, 0.0, 1.0, 0.0, 0.0, 200)  # the sliders in SLIDERS order: greedy, 200 new tokens
    run = chat["reply"](label, history, "More?", "", "model", *sampling, 0, "", False)
    streamed = next(run)  # the first token's update; then the page's Stop cancels the event
    run.close()
    _, shown, message_box, _, _, record = streamed[:6]
    assert message_box == "" and len(record.steps) < 200
    after = chat["stop"](record, shown)
    messages, status = after[1], after[4]
    assert messages[:-1] == history + [{"role": "user", "content": "More?"}]
    assert messages[-1] == {"role": "assistant", "content": record.text} and "cancelled" in status
    # Stop before this reply's run began: the latest run is an earlier one, and the chat stays as it is.
    assert chat["stop"](record, history + [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]) \
        == (gr.skip(),) * (6 + RUN_PANELS)


def test_template_menu_and_note_follow_the_model(chat_model):
    own, base = label_of(chat_model), "playground-1m (bundled)"
    registry = ModelRegistry([ModelChoice(own, str(chat_model), "local"),
                              ModelChoice(base, str(BUNDLED_DIR / "playground-1m"), "bundled")])
    chat = make_chat_handlers(registry, make_handlers(registry))
    menu = chat["template_menu"](own)
    assert menu["value"] == "model" and menu["choices"][0] == ("the model's own (tokenizer_config.json)", "model")
    assert chat["template_menu"](base)["value"] == "plain"  # a base model: no template of its own
    assert "most likely a base model" in chat["template_note"](base, "alpaca")
    assert chat["template_note"](own, "alpaca") == ""  # an instruction-tuned model may use any format
    assert str(chat_model / "tokenizer_config.json") in chat["template_note"](own, "model")


def test_chat_endpoint_renders_and_tokenizes_as_transformers(client, chat_model):
    reference = AutoTokenizer.from_pretrained(str(chat_model))
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER_TURNS[0]},
                {"role": "assistant", "content": "I am a llama."}, {"role": "user", "content": USER_TURNS[1]}]
    result = client.predict(messages, model=label_of(chat_model), chat_template="model", max_new_tokens=6,
                            temperature=0, api_name="/chat")
    assert result["prompt"] == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
    assert [t["token_id"] for t in result["prompt_tokens"]] == expected
    assert result["reply"] == {"role": "assistant", "content": result["text"]}
    assert 1 <= len(result["tokens"]) <= 6 and result["settings"]["chat_template"] == "model"
    # A built-in format on the same model: Alpaca, with the system message as its preamble.
    alpaca = client.predict(messages[:2], model=label_of(chat_model), chat_template="alpaca", max_new_tokens=2,
                            temperature=0, api_name="/chat")
    assert alpaca["prompt"] == f"<s>{SYSTEM}\n\n### Instruction:\n{USER_TURNS[0]}\n\n### Response:\n"


def test_chat_endpoint_refuses_bad_requests_by_name(client, chat_model):
    from gradio_client.exceptions import AppError, ValidationError

    model = label_of(chat_model)
    with pytest.raises(ValidationError, match=r"messages\[0\].role must be one of 'system', 'user', 'assistant'"):
        client.predict([{"role": "wizard", "content": "hi"}], model=model, api_name="/chat")
    with pytest.raises(ValidationError, match="chat_template must be one of"):
        client.predict([{"role": "user", "content": "hi"}], model=model, chat_template="gpt-4", api_name="/chat")
    # Llama 2's template refuses two user turns in a row (raise_exception); the error names the file.
    with pytest.raises((ValidationError, AppError), match=r"tokenizer_config.json: .*roles must alternate"):
        client.predict([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], model=model,
                       api_name="/chat")
    assert client.predict([{"role": "user", "content": "hi"}], model=model, max_new_tokens=2, temperature=0,
                          api_name="/chat")["reply"]["role"] == "assistant"  # the server kept serving


def _messages(page) -> list[tuple[str, str]]:
    rows = page.locator("#chatbot .message-row")
    return [("user" if "user-row" in (rows.nth(i).get_attribute("class") or "") else "bot",
             rows.nth(i).inner_text()) for i in range(rows.count())]


def _wait_reply(page, n_rows: int, rendered_tail: str) -> str:
    """Wait for the reply's finished run: the rendered prompt (set last) ends with the user's turn."""
    page.wait_for_function(f"document.querySelectorAll('#chatbot .message-row').length === {n_rows}", timeout=60_000)
    ends = f"document.querySelector('#chat-rendered textarea')?.value.endsWith({json.dumps(rendered_tail)})"
    page.wait_for_function(ends, timeout=60_000)
    assert "stop:" in page.inner_text("#chat-status")
    return page.inner_text("#chat-status")


def _send(page, text: str, n_before: int) -> str:
    page.fill("#chat-message textarea", text)
    page.click("#chat-send")
    return _wait_reply(page, n_before + 2, f"{text} [/INST]")


def test_browser_three_turn_chat_then_probabilities_and_attention_of_the_last_reply(server, browser, chat_model):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(server.url)
    page.wait_for_selector("#model-info strong", timeout=60_000)
    label = label_of(chat_model)
    page.get_by_label("Model size").click()
    page.get_by_role("option").filter(has_text=label).first.click()
    page.wait_for_function(f"document.querySelector('#model-info strong')?.innerText === {label!r}", timeout=60_000)
    # The checkpoint's generation_config.json sets the sampling sliders, and the page says so.
    assert "temperature 0.6, top_p 0.9" in page.inner_text("#model-info")
    assert page.get_by_label("Temperature (0 = greedy) · model default").first.input_value() == "0.6"
    assert page.get_by_label("Top-p (1 = off) · model default").first.input_value() == "0.9"
    page.get_by_label("Max new tokens").first.fill("8")
    page.get_by_label("Temperature (0 = greedy)").first.fill("0")

    page.get_by_role("tab", name="Chat").click()
    page.wait_for_function("document.querySelector('#chat-template input')?.value.startsWith(\"the model's own\")",
                           timeout=30_000)
    assert "tokenizer_config.json" in page.inner_text("#chat-template-note")
    page.fill("#chat-system textarea", SYSTEM)
    page.get_by_text("The conversation as the model reads it").click()  # mounts the rendered prompt's box
    for turn, text in enumerate(USER_TURNS):
        status = _send(page, text, 2 * turn)
    rows = _messages(page)
    assert [who for who, _ in rows] == ["user", "bot"] * 3
    assert [text for who, text in rows if who == "user"] == USER_TURNS
    n_tokens = int(re.match(r"(\d+) tokens", status).group(1))  # "8 tokens · time to first token …"
    # The rendered prompt is Llama 2's: the system prompt in the first [INST], one [INST] per user turn.
    rendered = page.input_value("#chat-rendered textarea")
    assert rendered.startswith(f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{USER_TURNS[0]} [/INST]")
    assert rendered.count("[INST]") == 3 and rendered.endswith(f"{USER_TURNS[2]} [/INST]")
    page.screenshot(path=str(OUTPUT / "chat.png"), full_page=True)

    # The latest reply is the session's latest run: its tokens and its attention over the whole conversation.
    page.get_by_role("tab", name="Token probabilities").click()
    page.wait_for_selector("#token-view .tok", timeout=30_000)
    assert page.locator("#token-view .tok").count() == n_tokens
    shown = "".join(page.locator("#token-view .tok").all_text_contents())
    assert shown.strip() and shown.strip()[:3] in rows[-1][1]
    page.get_by_role("tab", name="Attention").click()
    page.wait_for_selector("#attention .heatmaplayer, #attention .hm", timeout=30_000)
    # Every query position's label ("12 ·the"), without its position and whitespace marks.
    ticks = "".join(re.sub(r"^\d+ ", "", label) for label in plot_labels(page, "#attention")).replace("·", "")
    # The query positions are the whole rendered conversation's tokens, up to the last turn's.
    assert ticks.count("[INST]") == 3 and "<<SYS>>" in ticks and "Andes?[/INST]" in ticks
    page.screenshot(path=str(OUTPUT / "chat-attention.png"), full_page=True)

    # Undo takes the last exchange back into the box; Regenerate replaces the reply; Clear empties it all.
    page.get_by_role("tab", name="Chat").click()
    page.click("#chat-undo")
    page.wait_for_function("document.querySelectorAll('#chatbot .message-row').length === 4", timeout=30_000)
    assert page.input_value("#chat-message textarea") == USER_TURNS[2]
    _send(page, USER_TURNS[2], 4)
    page.get_by_role("tab", name="Generate").click()  # the sampling settings live there
    page.get_by_label("Temperature (0 = greedy)").first.fill("1.5")  # a new sample, not the greedy reply again
    page.get_by_role("tab", name="Chat").click()
    before = page.inner_text("#chat-status")
    page.click("#chat-regenerate")
    # A new reply has a new status (its own seed); the run may be too quick to catch its first update.
    page.wait_for_function(f"(document.querySelector('#chat-status')?.innerText || {before!r}) !== {before!r}",
                           timeout=60_000)
    _wait_reply(page, 6, f"{USER_TURNS[2]} [/INST]")
    assert [who for who, _ in _messages(page)] == ["user", "bot"] * 3
    page.click("#chat-clear")
    page.wait_for_function("document.querySelectorAll('#chatbot .message-row').length === 0", timeout=30_000)
    page.close()
