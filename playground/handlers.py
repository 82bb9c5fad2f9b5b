"""Event handlers: plain functions of plain values, generators where they stream.

A generate request is checked field by field before it may join the queue (the validators: a
bad value is answered at once, 422, with the parameter, the allowed range and the value), then
again with the same checks when its turn comes, so nothing reaches the model unchecked. A fault
during a run ends that run only: the text so far is kept with the error beside it, and the
model stays loaded for the next request.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import time
from collections.abc import Iterator

import gradio as gr

from llama_core import ParameterError, SamplingParams, StopReason
from llama_core.backends import LocalBackend, RemoteError
from llama_core.errors import ChatTemplateError, CheckpointError, TokenizerError
from llama_core.insight.run_record import RunRecord

from .access import RateLimiter, request_client_key
from .controls import API_TOP_N, PAGE_TOP_N, SLIDERS, check_context, check_field
from .model_info import MODEL_DEFAULTS, default_slider_updates, model_info
from .registry import ModelRegistry
from .remote_runs import remote_prompt, run_token_html, start_record
from .runs import (  # noqa: F401 (ATTENTION_BUDGET: importable here, as before)
    ATTENTION_BUDGET,
    PreparedRun,
    build_prompt,
    failure_message,
    is_out_of_memory,
    log_failure,
    status_line,
)

# The fields of each generate endpoint, in the order of the handler's parameters.
# A chat request has "messages" and "chat_template" where a generate request has "prompt" and "template".
STREAM_FIELDS = ("model", "prompt", "template", "system", *SLIDERS, "seed", "stop", "capture_attention")
API_FIELDS = ("prompt", "model", "max_new_tokens", "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
              "seed", "stop", "template")
API_DEFAULTS = {"system": "", "presence_penalty": 0.0, "frequency_penalty": 0.0, "capture_attention": False}
# What a finished page run fills at once besides its state: the token view (light HTML) and the selected
# step; each inspecting tab draws its charts when it shows (playground/tabs/views.py).
RUN_PANELS = 2
NO_TOKENS = ('<p class="empty-note">No run yet (or the last one made no token): generate on the Generate or Chat '
             'tab, and its tokens appear here coloured by probability.</p>')
API_PARTIAL_EVERY_S = 0.5  # /generate sends the run so far this often; a client that left stops it there

log = logging.getLogger(__name__)

def make_handlers(registry: ModelRegistry, limiter: RateLimiter | None = None):
    """The handlers, closed over the shared registry (the only server-wide state) and the rate limiter."""

    def check_model(label: object) -> str:
        if not isinstance(label, str) or label not in registry.choices:
            raise ParameterError("model", "one of " + ", ".join(map(repr, registry.labels)), label)
        return label

    def check_request(fields: dict, request: gr.Request | None) -> dict[str, str]:
        """What is wrong with a generate request, by field; empty when nothing is. The prompt is
        tokenized (to check it against the context window) only when its model is loaded already; a remote
        model's server tokenizes, and answers a prompt too long for its window with an error of its own."""
        errors = {}
        try:
            label = check_model(fields["model"])
            context = registry.context_of(label)
        except ParameterError as error:
            errors["model"], label, context = str(error), None, None
        if label is not None and registry.get(label).source is None:  # a preset without its weights
            errors["model"], label = registry.get(label).hint.replace("`", ""), None
        values = {}
        for name, value in fields.items():
            if name != "model":
                try:
                    values[name] = check_field(name, value, context)
                except ParameterError as error:
                    errors[name] = str(error)
        if not errors and context is not None and not registry.is_remote(label):  # a server tokenizes its own
            try:
                check_context(len(build_prompt(registry.load(label).tokenizer, values)[1]), values["max_new_tokens"],
                              context)
            except ParameterError as error:
                errors["messages" if error.name == "prompt" and "messages" in values else error.name] = str(error)
            except ChatTemplateError as error:
                errors["chat_template"] = str(error)
        if not errors and limiter is not None:
            wait = limiter.acquire(request_client_key(request))
            if wait:
                errors["prompt"] = (f"too many requests from this address: at most {limiter.per_minute} generations "
                                    f"a minute; try again in {wait:.0f} s")
        return errors

    def prepare_run(fields: dict, top_n: int) -> PreparedRun:
        """Check everything again, load the model (a local one) and tokenize; any problem becomes a message for
        the user. A remote model's prompt stays text (see playground/remote_runs.py)."""
        try:
            label = check_model(fields["model"])
            values = {name: check_field(name, value) for name, value in fields.items() if name != "model"}
            params = SamplingParams(**{name: values[name] for name in SLIDERS}, seed=values["seed"],
                                    stop=values["stop"])
            if registry.is_remote(label):
                remote = registry.remote(label)
                if remote.context_length:
                    check_field("max_new_tokens", values["max_new_tokens"], remote.context_length)
                full_prompt, messages = remote_prompt(values)
            else:
                loaded = registry.load(label)
                full_prompt, prompt_ids = build_prompt(loaded.tokenizer, values)
                check_context(len(prompt_ids), values["max_new_tokens"], loaded.args.max_seq_len)
        except (ParameterError, CheckpointError, TokenizerError, ChatTemplateError) as error:
            raise gr.Error(str(error)) from None
        # What the run was asked, kept in its report: the template, system prompt and conversation.
        asked = {name: values[name] for name in ("template", "chat_template", "system", "messages") if name in values}
        settings = {**asked, **dataclasses.asdict(params)}
        if registry.is_remote(label):
            top_n = min(top_n, remote.capabilities.top_n_max)
            record = start_record(label, remote, full_prompt, settings, top_n)
            return PreparedRun(remote, params, record, values, full_prompt, messages, top_n)
        record = RunRecord.start(label, loaded.tokenizer, full_prompt, prompt_ids, settings)
        return PreparedRun(LocalBackend(loaded), params, record, values, prompt_ids, None, top_n)

    def switch_model(label: str, max_new_tokens: float, progress=gr.Progress()):
        """Load the chosen size and describe it; the token slider follows its context window. A remote model
        is only described (the loaded local models stay as they are)."""
        choice = registry.get(label)
        if choice.source is None:
            return model_info(registry, label), gr.skip()
        if registry.is_remote(label):
            limit = (registry.context_of(label) or SLIDERS["max_new_tokens"].maximum + 1) - 1
            return model_info(registry, label), gr.update(maximum=limit, value=min(int(max_new_tokens or 1), limit))
        if not registry.is_loaded(label):
            progress(0.1, desc=f"loading {label}…")
        try:
            info = model_info(registry, label)
        except (CheckpointError, TokenizerError) as error:
            raise gr.Error(f"Could not load {label}: {error}. The previous model stays loaded.") from None
        except Exception as error:  # a loader bug must still leave the app serving, and say what failed
            log.exception("loading %s failed", label)
            raise gr.Error(f"Could not load {label} ({type(error).__name__}: {error}). "
                           "The previous model stays loaded.") from None
        limit = registry.load(label).args.max_seq_len - 1
        return info, gr.update(maximum=limit, value=min(int(max_new_tokens or 1), limit))

    def after_switch(label: str, active: str):
        """After a switch: (the session's model, the menu, the model line). A preset without weights was
        only described: the menu returns to the model still loaded, and the line says so under the hint."""
        if label in registry.choices and registry.get(label).source is not None:
            return label, gr.skip(), gr.skip()
        info = f"{model_info(registry, label)}\n\nThe menu is back on **{active}**, which stays loaded."
        return gr.skip(), active, info

    def model_sampling_defaults(label: str):
        """After a switch: the sampling sliders show the checkpoint's own defaults (the user may then change them).
        A remote model's defaults are the server's to apply, so the sliders say nothing of a model default."""
        if label in registry.choices and registry.is_remote(label):
            return tuple(gr.update(label=SLIDERS[name].label) for name in MODEL_DEFAULTS)
        if not registry.is_loaded(label):
            return (gr.skip(),) * len(MODEL_DEFAULTS)
        return default_slider_updates(registry.load(label))

    def validate_stream(model_label, prompt, template, system, temperature, top_k, top_p, min_p, repetition_penalty,
                        presence_penalty, frequency_penalty, max_new_tokens, seed, stop, capture_attention,
                        request: gr.Request):
        """Checks every control before the request enters the queue (rejects answer at once)."""
        values = (model_label, prompt, template, system, temperature, top_k, top_p, min_p, repetition_penalty,
                  presence_penalty, frequency_penalty, max_new_tokens, seed, stop, capture_attention)
        errors = check_request(dict(zip(STREAM_FIELDS, values)), request)
        return [gr.validate(name not in errors, errors.get(name, "")) for name in STREAM_FIELDS]

    def api_request(values: tuple) -> dict:
        fields = {**dict(zip(API_FIELDS, values)), **API_DEFAULTS}
        if fields["model"] in ("", None):
            fields["model"] = registry.default
        return fields

    def validate_api(prompt, model, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop,
                     template, request: gr.Request):
        """The /generate endpoint's checks before the queue."""
        values = (prompt, model, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop,
                  template)
        errors = check_request(api_request(values), request)
        return [gr.validate(name not in errors, errors.get(name, "")) for name in API_FIELDS]

    def generate(model_label, prompt, template, system, temperature, top_k, top_p, min_p, repetition_penalty,
                 presence_penalty, frequency_penalty, max_new_tokens, seed, stop, capture_attention):
        """Stream the text; when the run ends, fill the inspection panels from its record."""
        values = (model_label, prompt, template, system, temperature, top_k, top_p, min_p, repetition_penalty,
                  presence_penalty, frequency_penalty, max_new_tokens, seed, stop, capture_attention)
        for _, outputs in run_updates(dict(zip(STREAM_FIELDS, values))):
            yield outputs

    def run_updates(fields: dict) -> Iterator[tuple[bool, tuple]]:
        """A page's run (Generate or Chat) as (finished, outputs): outputs are (text, status, record,
        RUN_PANELS panel values), the panels filled once finished; the record becomes the session's latest run."""
        run = prepare_run(fields, PAGE_TOP_N)
        record = run.record
        stream = run.stream(capture_attention=run.values["capture_attention"] and not record.is_remote)
        last_yield, out_of_memory = 0.0, False
        try:
            for step in stream:
                if record.stop_reason is StopReason.CANCELLED:
                    break  # Stop marked the shared record while this step was computing: drop it, end here
                record.add(step)
                now = time.perf_counter()
                if now - last_yield > 0.05 or step.stop_reason is not None:  # ~20 updates a second is plenty
                    last_yield = now
                    # The record goes into the session state as it grows, so Stop can draw what exists.
                    # A Stop or a client that left closes this generator here, which closes the stream.
                    yield False, (record.text, status_line(record, running=True), record) + (gr.skip(),) * RUN_PANELS
        except ParameterError as error:  # raised before any compute (e.g. the run would overflow the context)
            raise gr.Error(str(error)) from None
        except Exception as error:
            # Mid-stream: keep the partial text and show the error beside it; the event still completes.
            log_failure(record)
            record.error, out_of_memory = failure_message(error), is_out_of_memory(error)
            gr.Warning(record.error)
        finally:
            stream.close()  # frees the KV cache (or hangs up on the server) now, not when the generator is collected
            run.finish()
        if out_of_memory:
            gc.collect()  # give the memory back before the next request asks for it
        yield True, (record.text, status_line(record, running=False)) + panels(record)

    def panels(record: RunRecord) -> tuple:
        """The session state and what a finished run fills at once: the token view and the selected step."""
        if not record.steps:
            return record, NO_TOKENS, 0
        selected = len(record.steps) - 1
        return record, run_token_html(record, selected), selected

    def stop(record: RunRecord | None):
        """After Stop cancelled the stream: mark the run and draw the panels from what it produced."""
        if record is None:
            return (gr.skip(),) * (3 + RUN_PANELS)
        if record.stop_reason is None and record.error is None:
            record.stop_reason = StopReason.CANCELLED
        return (record.text, status_line(record, running=False)) + panels(record)

    def record_speed(record: RunRecord | None, speeds: dict | None):
        """After a run: keep its decode speed (per session); the Scaling tab draws it when it shows."""
        rate = record.timing()["decode_tokens_per_s"] if record is not None and record.steps else None
        if not rate or not registry.is_loaded(record.model_name):
            return gr.skip()
        loaded = registry.load(record.model_name)
        name = (loaded.model_card or {}).get("name", record.model_name)
        return {**(speeds or {}), name: {"params": loaded.n_params, "tokens_per_s": round(rate, 1)}}

    def generate_json(prompt: str, model: str = "", max_new_tokens: float = 32, temperature: float = 0.0,
                      top_k: float = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                      seed: float = -1, stop: str = "", template: str = "plain") -> Iterator[dict]:
        """API: generate; returns the text and every token with its probability and alternatives.

        While the run lasts it also sends the run so far every half second; the last value is the
        finished run, whose timing includes when it left the queue (`started_at`, `finished_at`).
        """
        values = (prompt, model, max_new_tokens, temperature, top_k, top_p, min_p, repetition_penalty, seed, stop,
                  template)
        yield from json_run(api_request(values))

    def json_run(fields: dict) -> Iterator[dict]:
        """An API run (/generate or /chat): the run so far every half second, then the finished run."""
        started_at = time.time()
        run = prepare_run(fields, API_TOP_N)
        record = run.record
        stream = run.stream()
        last_yield = time.perf_counter()
        try:
            for step in stream:
                record.add(step)
                if step.stop_reason is None and time.perf_counter() - last_yield > API_PARTIAL_EVERY_S:
                    last_yield = time.perf_counter()
                    yield record.to_dict()  # also where a cancelled or departed client's run is closed
        except ParameterError as error:
            raise gr.Error(str(error)) from None
        except RemoteError as error:
            log_failure(record)
            if not record.steps:
                raise gr.Error(str(error)) from None
            record.error = str(error)  # the tokens that came before the fault stay valid: the run keeps them
        except Exception as error:
            log_failure(record)
            raise gr.Error(f"{failure_message(error)} (after {len(record.steps)} tokens)") from None
        finally:
            stream.close()
            run.finish()
        result = record.to_dict()
        result["timing"].update(started_at=started_at, finished_at=time.time())
        yield result

    return {"switch_model": switch_model, "validate_stream": validate_stream, "generate": generate, "stop": stop,
            "model_sampling_defaults": model_sampling_defaults, "after_switch": after_switch, "check_request": check_request,
            "run_updates": run_updates, "json_run": json_run,
            "record_speed": record_speed,
            "validate_api": validate_api, "generate_json": generate_json}

