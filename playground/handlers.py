"""Event handlers: plain functions of plain values, generators where they stream."""

from __future__ import annotations

import dataclasses
import time

import gradio as gr

from llama_core import (
    GenerationError, ParameterError, SamplingParams, StopReason, apply_template, generate_stream, parameter_count,
)
from llama_core.errors import CheckpointError, TokenizerError
from llama_core.generation import encode_prompt
from llama_core.run_figures import (
    alternatives_figure, attention_figure, heads_figure, probability_entropy_figure, token_html,
)
from llama_core.run_record import RunRecord

from .registry import ModelRegistry
from .scaling_panel import our_models_plot

MAX_PROMPT_CHARS = 20_000  # the page's cap; the engine's own (200k) guards the Python API
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                   "frequency_penalty", "max_new_tokens")


def parse_stop(text: str) -> list[str]:
    """One stop sequence per line; `\\n` and `\\t` typed as escapes mean a newline and a tab."""
    lines = [line for line in (text or "").splitlines() if line != ""]
    return [line.replace("\\n", "\n").replace("\\t", "\t") for line in lines]


def sampling_params(values: dict) -> SamplingParams:
    """Validated parameters from the controls; seed -1 (or empty) means random."""
    seed = values.get("seed")
    if seed is None or (isinstance(seed, (int, float)) and not isinstance(seed, bool) and seed == -1):
        seed = None
    return SamplingParams(**{k: values[k] for k in SAMPLING_FIELDS}, seed=seed, stop=tuple(parse_stop(values["stop"])))


def check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str):
        raise ParameterError("prompt", "a text", type(prompt).__name__)
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ParameterError("prompt", f"at most {MAX_PROMPT_CHARS} characters", f"{len(prompt)} characters")
    if not prompt.strip():
        raise ParameterError("prompt", "a non-empty text", prompt)
    return prompt


def status_line(record: RunRecord, running: bool) -> str:
    running = running and record.stop_reason is None and record.error is None  # Stop may have ended it already
    timing = record.timing()
    if not timing["tokens"]:
        return f"⚠️ {record.error}" if record.error else "⏳ prefill…"
    rate = timing["decode_tokens_per_s"]
    parts = [f"**{timing['tokens']}** tokens", f"time to first token **{timing['ttft_s'] * 1000:.0f} ms**",
             f"**{rate:.1f}** tokens/s" if rate else "", f"seed {record.seed}"]
    if running:
        parts.append("generating…")
    elif record.error:
        parts.append(f"⚠️ stopped by an error: {record.error}")
    else:
        parts.append(f"stop: **{record.stop_reason.value if record.stop_reason else 'cancelled'}**")
    return " · ".join(p for p in parts if p)


def model_info(registry: ModelRegistry, label: str) -> str:
    choice = registry.get(label)
    if choice.source is None:
        return f"ℹ️ {choice.hint}"
    loaded = registry.load(label)
    a = loaded.args
    card = loaded.model_card or {}
    trained = (f" · trained on {card['tokens_seen']:,} tokens, val loss {card['val_loss']}"
               if "tokens_seen" in card else "")
    gqa = f", {a.kv_heads} kv heads" if a.kv_heads != a.n_heads else ""
    return (f"**{label}** · {parameter_count(a) / 1e6:,.1f}M parameters · {loaded.format} · "
            f"{str(loaded.dtype).removeprefix('torch.')} · {loaded.n_bytes / 2**20:,.1f} MiB · "
            f"dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads{gqa}, context {a.max_seq_len}{trained}")


def make_handlers(registry: ModelRegistry):
    """The handlers, closed over the shared registry (the only server-wide state)."""

    def prepare_run(label: str, prompt, template: str, system: str, values: dict):
        """Validate everything and tokenize; any problem becomes a message for the user."""
        try:
            check_prompt(prompt)
            params = sampling_params(values)
            loaded = registry.load(label)
            full_prompt = apply_template(template, prompt, system or "")
            prompt_ids = encode_prompt(loaded.tokenizer, full_prompt)
        except (ParameterError, CheckpointError, TokenizerError, KeyError) as error:
            raise gr.Error(str(error)) from None
        settings = {"template": template, "system": system, **dataclasses.asdict(params)}
        return loaded, params, RunRecord.start(label, loaded.tokenizer, full_prompt, prompt_ids, settings)

    def switch_model(label: str, max_new_tokens: float, progress=gr.Progress()):
        """Load the chosen size and describe it; the token slider follows its context window."""
        choice = registry.get(label)
        if choice.source is None:
            return model_info(registry, label), gr.skip()
        if not registry.is_loaded(label):
            progress(0.1, desc=f"loading {label}…")
        try:
            info = model_info(registry, label)
        except (CheckpointError, TokenizerError) as error:
            raise gr.Error(f"Could not load {label}: {error}. The previous model stays loaded.") from None
        limit = registry.load(label).args.max_seq_len - 1
        return info, gr.update(maximum=limit, value=min(int(max_new_tokens or 1), limit))

    def validate(model_label, prompt, *values):
        """Checks every control before the request enters the queue (rejects answer at once)."""
        results = [gr.validate(True, "")] * (len(values) + 2)
        if model_label not in registry.choices:
            results[0] = gr.validate(False, f"model must be one of the listed models, got {model_label!r}")
        try:
            check_prompt(prompt)
        except ParameterError as error:
            results[1] = gr.validate(False, str(error))
        for i, (name, value) in enumerate(zip(CONTROL_NAMES, values), start=2):
            if name in SAMPLING_FIELDS:
                try:
                    SamplingParams(**{name: value})
                except ParameterError as error:
                    results[i] = gr.validate(False, str(error))
        return results

    def generate(model_label, prompt, template, system, temperature, top_k, top_p, min_p, repetition_penalty,
                 presence_penalty, frequency_penalty, max_new_tokens, seed, stop, capture_attention):
        """Stream the text; when the run ends, fill the inspection panels from its record."""
        values = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                      repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                      frequency_penalty=frequency_penalty, max_new_tokens=max_new_tokens, seed=seed, stop=stop)
        loaded, params, record = prepare_run(model_label, prompt, template, system, values)
        stream = generate_stream(loaded.model, loaded.tokenizer, record.prompt_ids, params,
                                 capture_attention=bool(capture_attention), top_n=10)
        last_yield = 0.0
        try:
            for step in stream:
                if record.stop_reason is StopReason.CANCELLED:
                    break  # Stop marked the shared record while this step was computing: drop it, end here
                record.add(step)
                now = time.perf_counter()
                if now - last_yield > 0.05 or step.stop_reason is not None:  # ~20 updates a second is plenty
                    last_yield = now
                    # The record goes into the session state as it grows, so Stop can draw what exists.
                    yield (record.text, status_line(record, running=True), record) + (gr.skip(),) * 8
        except ParameterError as error:  # raised before any compute (e.g. the run would overflow the context)
            raise gr.Error(str(error)) from None
        except (GenerationError, RuntimeError, MemoryError) as error:
            # Mid-stream: keep the partial text and show the error beside it.
            record.error = str(error) if not isinstance(error, MemoryError) else "out of memory"
        finally:
            stream.close()
        yield (record.text, status_line(record, running=False)) + panels(record, loaded.args.kv_heads)

    def panels(record: RunRecord, n_kv_heads: int) -> tuple:
        """Everything drawn from a finished run: state, tokens, charts and the attention controls."""
        if not record.steps:
            return (record, "", None, None, None, None, 0, gr.update(), gr.update())
        selected = len(record.steps) - 1
        matrix = record.attention_matrix()
        if matrix is None:
            attention = heads = None
            layer_update, head_update = gr.update(value=0), gr.update(choices=["mean"], value="mean")
        else:
            attention = attention_figure(matrix, record.all_pieces(), 0, None)
            heads = heads_figure(matrix, 0, n_kv_heads)
            layers, n_heads = matrix.shape[:2]
            layer_update = gr.update(maximum=max(1, layers - 1), value=0)  # a slider needs min < max
            head_update = gr.update(choices=["mean"] + [str(h) for h in range(n_heads)], value="mean")
        return (record, token_html(record, selected), alternatives_figure(record, selected),
                probability_entropy_figure(record), attention, heads, selected, layer_update, head_update)

    def stop(record: RunRecord | None):
        """After Stop cancelled the stream: mark the run and draw the panels from what it produced."""
        if record is None:
            return (gr.skip(),) * 11
        if record.stop_reason is None and record.error is None:
            record.stop_reason = StopReason.CANCELLED
        n_kv_heads = registry.load(record.model_name).args.kv_heads
        return (record.text, status_line(record, running=False)) + panels(record, n_kv_heads)

    def select_token(record: RunRecord | None, evt: gr.EventData):
        index = getattr(evt, "index", None)
        if record is None or not isinstance(index, int) or not 0 <= index < len(record.steps):
            return gr.skip(), gr.skip(), gr.skip()
        return token_html(record, index), alternatives_figure(record, index), index

    def redraw_attention(record: RunRecord | None, layer, head):
        matrix = record.attention_matrix() if record is not None else None
        if matrix is None:
            return None, None
        layer = int(min(max(layer or 0, 0), matrix.shape[0] - 1))
        head_index = None if head in (None, "mean") else int(head)
        kv_heads = registry.load(record.model_name).args.kv_heads
        return attention_figure(matrix, record.all_pieces(), layer, head_index), heads_figure(matrix, layer, kv_heads)

    def record_speed(record: RunRecord | None, speeds: dict | None):
        """After a run: keep its decode speed (per session) and redraw the our-models chart."""
        rate = record.timing()["decode_tokens_per_s"] if record is not None and record.steps else None
        if not rate or not registry.is_loaded(record.model_name):
            return gr.skip(), gr.skip()
        loaded = registry.load(record.model_name)
        name = (loaded.model_card or {}).get("name", record.model_name)
        speeds = {**(speeds or {}), name: {"params": loaded.n_params, "tokens_per_s": round(rate, 1)}}
        return speeds, our_models_plot(speeds)

    def generate_json(prompt: str, model: str = "", max_new_tokens: float = 32, temperature: float = 0.0,
                      top_k: float = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                      seed: float = -1, stop: str = "", template: str = "plain") -> dict:
        """API: generate without streaming; returns the text and every token with its probability and alternatives."""
        values = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                      repetition_penalty=repetition_penalty, presence_penalty=0.0, frequency_penalty=0.0,
                      max_new_tokens=max_new_tokens, seed=seed, stop=stop)
        loaded, params, record = prepare_run(model or registry.default, prompt, template, "", values)
        try:
            for step in generate_stream(loaded.model, loaded.tokenizer, record.prompt_ids, params, top_n=5):
                record.add(step)
        except (ParameterError, GenerationError) as error:
            raise gr.Error(str(error)) from None
        return record.to_dict()

    return {"switch_model": switch_model, "validate": validate, "generate": generate, "stop": stop,
            "select_token": select_token, "redraw_attention": redraw_attention, "record_speed": record_speed,
            "generate_json": generate_json}


CONTROL_NAMES = ("template", "system", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                 "presence_penalty", "frequency_penalty", "max_new_tokens", "seed", "stop", "capture_attention")

