"""The model line above the prompt: what the loaded checkpoint is, its context window, and the
sampling defaults its generation_config.json sets, which the sliders then show as the model's."""

from __future__ import annotations

import logging

import gradio as gr

from llama_core import ParameterError, parameter_count
from llama_core.chat import model_template

from .controls import PAGE_TOP_N, SLIDERS
from .registry import ModelRegistry

# The sliders a checkpoint's generation_config.json may set; the page shows its values as the defaults.
MODEL_DEFAULTS = ("temperature", "top_k", "top_p", "repetition_penalty")

log = logging.getLogger(__name__)


def model_defaults(loaded) -> dict[str, float | int]:
    """The checkpoint's sampling defaults that a slider can show (a value outside its range is left out)."""
    defaults = {}
    for name, value in (getattr(loaded, "generation_defaults", None) or {}).items():
        if name in MODEL_DEFAULTS:
            try:
                defaults[name] = SLIDERS[name].check(value)
            except ParameterError:
                log.warning("%s: generation default %s=%r is outside the slider's range", loaded.source, name, value)
    return defaults


def default_slider_updates(loaded) -> tuple:
    """One update per MODEL_DEFAULTS slider: the model's value, labelled as the model's, or the label alone."""
    defaults = model_defaults(loaded)
    return tuple(gr.update(value=defaults[name], label=f"{SLIDERS[name].label} · model default")
                 if name in defaults else gr.update(label=SLIDERS[name].label) for name in MODEL_DEFAULTS)


def remote_model_info(registry: ModelRegistry, label: str) -> str:
    """One markdown line about a model served elsewhere: the server, the model's id there, its context
    when the server reports it, and what the views can show of it."""
    remote = registry.remote(label)
    context = remote.context_length
    owner = f" (owned by {remote.info.owned_by})" if remote.info.owned_by else ""
    return (f"**{label}** · served by {remote.server.config.url} · model `{remote.info.id}`{owner} · "
            + (f"context {context}" if context else "context length not reported by the server")
            + f" · the server's top {min(PAGE_TOP_N, remote.capabilities.top_n_max)} alternatives of each token: entropy over them is "
              "a lower bound, the sampler pipeline is recomputed on them; attention and the logit lens need a local "
              "model")


def model_info(registry: ModelRegistry, label: str) -> str:
    """One markdown line about the chosen model (loading it first, when it is local)."""
    choice = registry.get(label)
    if choice.source is None:
        return f"ℹ️ {choice.hint}"
    if registry.is_remote(label):
        return remote_model_info(registry, label)
    loaded = registry.load(label)
    a = loaded.args
    card = loaded.model_card or {}
    trained = (f" · trained on {card['tokens_seen']:,} tokens, val loss {card['val_loss']}"
               if "tokens_seen" in card else "")
    gqa = f", {a.kv_heads} kv heads" if a.kv_heads != a.n_heads else ""
    trained_context = getattr(loaded, "trained_context_length", a.max_seq_len)
    context = f"context {a.max_seq_len}" + (
        "" if trained_context == a.max_seq_len else
        f" (trained on {trained_context}" + ("; beyond it quality drops)" if a.max_seq_len > trained_context else ")"))
    defaults = model_defaults(loaded)
    sampling = (" · sampling defaults from the checkpoint's generation_config.json: "
                + ", ".join(f"{name} {value:g}" for name, value in defaults.items()) if defaults else "")
    chat = " · its own chat template" if loaded.tokenizer is not None and model_template(loaded.tokenizer) else ""
    # How the weights are held and why, with the kernel probe's GB/s (llama_core/kernels/dtype_choice.py).
    kernels = getattr(loaded, "kernels", None)
    weights = kernels.describe() if kernels else str(loaded.dtype).removeprefix("torch.")
    return (f"**{label}** · {parameter_count(a) / 1e6:,.1f}M parameters · {loaded.format} · "
            f"{weights} · {loaded.n_bytes / 2**20:,.1f} MiB · "
            f"dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads{gqa}, {context}{trained}{chat}{sampling}")


def template_note(registry: ModelRegistry, label: str, template: str) -> str:
    """One line under the prompt-template choice when an instruction format meets a model without a chat
    template of its own (most likely a base model, as the bundled ones are); empty otherwise."""
    if template == "plain" or label not in registry.choices:
        return ""
    if registry.is_remote(label):
        name = label.split(" (")[0]
        return (f"ℹ️ The **{template}** format is applied here; {name} gets the formatted text, and only the "
                "server knows whether the model was trained on it.")
    if not registry.is_loaded(label):
        return ""
    if model_template(registry.load(label).tokenizer):
        return ""
    return (f"ℹ️ **{template}** is an instruction format and {label.split(' (')[0]} has no chat template of its own: "
            "most likely a base model, which continues the formatted text instead of following it.")

