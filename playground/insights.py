"""Handlers of the views beyond a plain playground: side by side, scoring a text, the logit lens and
the Chinchilla calculator (branching and run reports: branch_handlers.py; the sampler pipeline:
probability_handlers.py).

Each is a plain function of plain values (a `RunRecord` from the session state, labels from the
model menu); the figures come from `llama_core.insight.insight_figures`.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

import gradio as gr

from llama_core import ParameterError, SamplingParams
from llama_core.backends import RemoteError
from llama_core.chinchilla import InferenceAwarePlan, inference_aware_optimum, plan
from llama_core.errors import CheckpointError, TokenizerError
from llama_core.insight.insight_figures import (
    chinchilla_figure,
    divergence_figure,
    inference_aware_figure,
    inference_markdown,
    logit_lens_figure,
    plan_markdown,
    scored_text_html,
    surprisal_figure,
)
from llama_core.insight.run_record import RunRecord
from llama_core.insight.scoring import TextScore, compare_on_tokens
from llama_core.published import published_models
from llama_core.templates import apply_template
from llama_core.token_display import display_tokens

from .registry import ModelRegistry
from .remote_pair import pair_figure, parting_summary, side_run
from .runs import fitted_stream
from .scaling_panel import bundled_model_points
from .zerogpu import gpu_logit_lens, gpu_score

MAX_SCORE_CHARS = 20_000  # as the page's prompt box: tokenizing is the expensive part of a huge paste


def _loaded(registry: ModelRegistry, label: object):
    if not isinstance(label, str) or label not in registry.choices:
        raise gr.Error(f"model must be one of the listed models, got {label!r}")
    try:
        return registry.load(label)
    except (CheckpointError, TokenizerError) as error:
        raise gr.Error(f"Could not load {label}: {error}") from None


def _score(registry: ModelRegistry, label: object, text: str) -> TextScore | str:
    """The text's scores under `label`, or for a server that returns no prompt log-probabilities the message
    saying so; a remote fault or a bad text raises gr.Error."""
    if not isinstance(label, str) or label not in registry.choices:
        raise gr.Error(f"model must be one of the listed models, got {label!r}")
    try:
        if not registry.is_remote(label):
            loaded = _loaded(registry, label)
            return gpu_score(loaded.model, loaded.tokenizer, text)
        remote = registry.remote(label)
        result = remote.score(text)
    except ParameterError as error:
        raise gr.Error(str(error)) from None
    except RemoteError as error:
        raise gr.Error(f"{label}: {error}") from None
    if result is None:
        return (f"Scoring is unavailable on this server: {remote.server.url} returns no log-probabilities for a "
                f"prompt's tokens; {remote.score_note}. vLLM (prompt_logprobs) and llama-cpp-python (echo) give them.")
    return result


def _plan(n_params, tokens, flops):
    """The calculator's plan from what was given (0 or empty = work it out), or the error to show."""
    given = {k: v for k, v in (("n_params", n_params), ("tokens", tokens), ("flops", flops)) if v}
    try:
        return plan(**given)
    except ParameterError as error:
        raise gr.Error(str(error)) from None


@dataclass(frozen=True)
class PairRun:
    """Two models run on one prompt, settings and seed (the Side by side tab and its presets)."""

    names: tuple[str, str]
    seed: int
    texts: tuple[str, str]
    rates: tuple[float | None, float | None]  # decode tokens/s measured in this run
    summary: str
    figure: object  # the divergence figure (plotly)


def _decode_rate(steps: list) -> float | None:
    # From the first token to the last: prefill (and the model's first touch of its weights) excluded.
    decode = [b.elapsed_s - a.elapsed_s for a, b in zip(steps, steps[1:])]
    return (len(decode) / sum(decode)) if decode and sum(decode) > 0 else None


def run_pair(registry: ModelRegistry, labels: tuple[str, str], prompt: str, template: str, temperature, top_k, top_p,
             min_p, max_new_tokens, seed) -> PairRun:
    """Generate with both models (same prompt, sampler, seed), then both read the first one's text."""
    seed = None if seed is None or int(seed) < 0 else int(seed)
    seed = seed if seed is not None else int(time.time() * 1000) % 2**31  # one seed shared by both sides
    try:
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                max_new_tokens=max_new_tokens, seed=seed)
    except ParameterError as error:
        raise gr.Error(str(error)) from None
    if any(registry.is_remote(label) for label in labels if isinstance(label, str) and label in registry.choices):
        return remote_pair(registry, labels, prompt, template, params)
    runs = []
    for label in labels:
        loaded = _loaded(registry, label)
        try:
            ids, stream = fitted_stream(loaded, apply_template(template, prompt, ""), params)
            steps = list(stream)
        except ParameterError as error:
            raise gr.Error(f"{label}: {error}") from None
        runs.append((loaded, ids, steps, _decode_rate(steps)))
    (a, ids, steps_a, rate_a), (b, _, steps_b, rate_b) = runs
    if a.args.vocab_size != b.args.vocab_size:
        raise gr.Error("these two models have different vocabularies: nothing to compare token by token")
    sequence = (ids + [s.token_id for s in steps_a])[: min(a.args.max_seq_len, b.args.max_seq_len)]
    # Padding rows past the tokenizer name no token: leave them out of both distributions.
    divergence = compare_on_tokens(a.model, b.model, sequence, min(a.tokenizer.vocab_size, b.tokenizer.vocab_size))
    names = (labels[0].split(" (")[0], labels[1].split(" (")[0])
    figure = divergence_figure(divergence, [a.tokenizer.piece(i) for i in sequence], names)
    generated = divergence.argmax_agree[len(ids) - 1:]
    summary = (f"seed {seed} · {names[0]}: {rate_a or 0:.1f} tokens/s · {names[1]}: {rate_b or 0:.1f} tokens/s · "
               f"on {names[0]}'s continuation the two models' top choices agree at "
               f"{sum(generated)}/{len(generated)} positions, mean KL {sum(divergence.kl_ab) / len(divergence.kl_ab):.3f} nats")
    return PairRun(names, seed, ("".join(s.text for s in steps_a), "".join(s.text for s in steps_b)),
                   (rate_a, rate_b), summary, figure)


def remote_pair(registry: ModelRegistry, labels: tuple[str, str], prompt: str, template: str,
                params: SamplingParams) -> PairRun:
    """The pair when a server is on one side or both (playground/remote_pair.py): each side's own run."""
    for label in labels:
        if not isinstance(label, str) or label not in registry.choices:
            raise gr.Error(f"model must be one of the listed models, got {label!r}")
    records = (side_run(registry, labels[0], prompt, template, params),
               side_run(registry, labels[1], prompt, template, params))
    names = (labels[0].split(" (")[0], labels[1].split(" (")[0])
    if names[0] == names[1]:  # one model here and on a server (or on two): the origins tell them apart
        names = tuple(labels)
    rates = (_decode_rate(records[0].steps), _decode_rate(records[1].steps))
    summary = (f"seed {params.seed} · {names[0]}: {rates[0] or 0:.1f} tokens/s · {names[1]}: {rates[1] or 0:.1f} "
               f"tokens/s · {parting_summary(records, names)}")
    return PairRun(names, params.seed, (records[0].text, records[1].text), rates, summary,
                   pair_figure(records, names))


def _inference_aware(target_loss: float, inference_tokens) -> tuple[InferenceAwarePlan, InferenceAwarePlan]:
    """The optimum at this lifetime demand (empty = none) and the training-only one, or the error to show."""
    try:
        return (inference_aware_optimum(target_loss, inference_tokens or 0.0),
                inference_aware_optimum(target_loss, 0.0))
    except ParameterError as error:
        raise gr.Error(str(error)) from None


def make_insight_handlers(registry: ModelRegistry):
    def lens(record: RunRecord | None):
        if record is None or not record.steps:
            raise gr.Error("Generate first: the logit lens reads the last run's tokens")
        loaded = _loaded(registry, record.model_name)
        ids = record.token_ids[-loaded.args.max_seq_len:]
        result = gpu_logit_lens(loaded.model, loaded.tokenizer, ids, loaded.tokenizer.vocab_size)
        shown = {int(i): display_tokens(loaded.tokenizer, [int(i)])[0] for i in set(result.top_ids.flat)}
        guesses = [[shown[int(i)] for i in row] for row in result.top_ids]
        return logit_lens_figure(result, display_tokens(loaded.tokenizer, ids), guesses)

    def score(text: str, labels: list[str] | None):
        if not labels:
            raise gr.Error("choose at least one model to score the text with")
        htmls, scores = [], {}
        for label in labels:
            result = _score(registry, label, text)
            if isinstance(result, str):  # a server without prompt log-probabilities: said in place of the text
                htmls.append(f"<h4>{html.escape(label)}</h4><p class=\"score-unavailable\">{html.escape(result)}</p>")
                continue
            scores[label] = result
            htmls.append(f"<h4>{html.escape(label)}</h4>" + scored_text_html(result))
        return "".join(htmls), surprisal_figure(scores)

    def side_by_side(label_a: str, label_b: str, prompt: str, template: str, temperature, top_k, top_p, min_p,
                     max_new_tokens, seed):
        """The same prompt, settings and seed on two models; where they part, and each one's speed."""
        pair = run_pair(registry, (label_a, label_b), prompt, template, temperature, top_k, top_p, min_p,
                        max_new_tokens, seed)
        return pair.texts[0], pair.texts[1], pair.summary, pair.figure

    def calculator(n_params: float, tokens: float, flops: float, inference_tokens: float = 0):
        """The plan and its figure, then the inference-aware optimum at the plan's loss and its figure."""
        result = _plan(n_params, tokens, flops)
        optimum, base = _inference_aware(result.loss, inference_tokens)
        ours = [{"name": p["name"], "params": p["params"], "tokens": p["tokens"]} for p in bundled_model_points()
                if p.get("tokens")]
        return (plan_markdown(result), chinchilla_figure(result, published_models(), ours),
                inference_markdown(optimum, base), inference_aware_figure(result.loss, optimum.inference_tokens,
                                                                          published_models()))

    def score_api(text: str, model: str = "") -> dict:
        """Each token's probability and surprisal under `model` (default: the default model), and the perplexity."""
        if not isinstance(text, str) or len(text) > MAX_SCORE_CHARS:
            raise gr.Error(f"text must be a string of at most {MAX_SCORE_CHARS} characters, "
                           f"got {type(text).__name__} of length {len(text) if isinstance(text, str) else '?'}")
        result = _score(registry, model or registry.default, text)
        if isinstance(result, str):
            raise gr.Error(result)
        return {"model": model or registry.default, "perplexity": result.perplexity, "mean_nll": result.mean_nll,
                "tokens": [{"token_id": t.token_id, "piece": t.piece, "prob": t.prob,
                            "surprisal_bits": t.surprisal_bits, "top": [list(pair) for pair in t.top]}
                           for t in result.tokens]}

    def chinchilla_api(n_params: float = 0, tokens: float = 0, flops: float = 0, inference_tokens: float = 0) -> dict:
        """The Chinchilla calculator: give one or two of N, D, C (0 = work it out); with `inference_tokens`
        (served over the model's life) also the cheapest N, D to train and run at the plan's loss."""
        result = _plan(n_params, tokens, flops)
        optimum, _ = _inference_aware(result.loss, inference_tokens)
        return {"n_params": result.n_params, "tokens": result.tokens, "flops": result.flops, "loss": result.loss,
                "n_opt": result.n_opt, "d_opt": result.d_opt, "loss_opt": result.loss_opt,
                "tokens_per_param": result.tokens_per_param,
                "inference_aware": {"inference_tokens": optimum.inference_tokens, "n_params": optimum.n_params,
                                    "tokens": optimum.tokens, "training_flops": optimum.training_flops,
                                    "inference_flops": optimum.inference_flops, "total_flops": optimum.total_flops}}

    return {"score_api": score_api, "chinchilla_api": chinchilla_api, "lens": lens, "score": score,
            "side_by_side": side_by_side, "calculator": calculator}
