"""Streaming generation: prefill, then one token at a time, yielding what happened at each step."""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ParameterError, TokenizerError
from .kernels.compiled_decode import compiled_decoder
from .model import ForwardOutput, Transformer
from .sampling import SamplingParams, sample, sampler_stages
from .tokenizer import StreamDecoder, Tokenizer

MAX_PROMPT_CHARS = 200_000  # checked before tokenizing, which is the expensive part of a huge paste
MAX_TOP_N = 20
DEFAULT_ATTENTION_BUDGET = 2**25  # fp16 elements kept across one run (64 MiB)


class StopReason(str, enum.Enum):
    EOS = "eos"
    LENGTH = "length"
    STOP_SEQUENCE = "stop_sequence"
    CONTEXT_FULL = "context_full"
    CANCELLED = "cancelled"  # set by consumers that close the stream early


class GenerationError(RuntimeError):
    """The model misbehaved mid-generation (e.g. produced NaN logits)."""


@dataclass(frozen=True)
class Alternative:
    token_id: int
    piece: str
    prob: float  # under the raw model distribution
    prob_filtered: float  # under the distribution actually sampled from (0 if filtered out)
    removed_by: str | None = None  # the sampler stage that filtered it out, e.g. "top_p"


@dataclass(frozen=True)
class StepRecord:
    """One generated token and what the model and sampler saw when choosing it."""

    index: int  # 0 for the first generated token
    token_id: int
    piece: str  # the token on its own, for display
    text: str  # text that became final with this token; '' while held back (partial UTF-8, stop prefix)
    prob: float
    prob_filtered: float
    logprob: float
    entropy: float  # of the raw distribution, in nats
    top: tuple[Alternative, ...]  # most likely raw alternatives, the chosen token always among them
    elapsed_s: float  # since the call started; for index 0 this is the time to first token
    seed: int
    # Attention of the forward pass that produced this token's logits, (L, H, Tq, S) fp16:
    # the whole prompt for index 0 (Tq = S = prompt length), one query row after that.
    attention: Tensor | None = None
    stop_reason: StopReason | None = None
    # The sampler pipeline over the `top` candidates: (stage name, probability of each candidate
    # after that stage), raw first and the distribution sampled from last.
    stages: tuple[tuple[str, tuple[float, ...]], ...] = ()


def encode_prompt(tokenizer: Tokenizer, prompt: str | list[int]) -> list[int]:
    """Validate and tokenize a prompt (text, or token ids checked against the vocabulary)."""
    if isinstance(prompt, str):
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ParameterError("prompt", f"at most {MAX_PROMPT_CHARS} characters", f"{len(prompt)} characters")
        if not prompt.strip():
            raise ParameterError("prompt", "a non-empty text", prompt)
        return tokenizer.encode(prompt)  # BOS as the tokenizer's files say (SmolLM2 adds none)
    if not isinstance(prompt, (list, tuple)) or not prompt:
        raise ParameterError("prompt", "a non-empty text or list of token ids", prompt)
    for token_id in prompt:
        if isinstance(token_id, bool) or not isinstance(token_id, int) or not 0 <= token_id < tokenizer.vocab_size:
            raise ParameterError("prompt token id", f"an integer in [0, {tokenizer.vocab_size - 1}]", token_id)
    return list(prompt)


def _stop_holdback(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could still grow into a stop sequence."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


@torch.inference_mode()
def generate_stream(
    model: Transformer,
    tokenizer: Tokenizer,
    prompt: str | list[int],
    params: SamplingParams,
    *,
    capture_attention: bool = False,
    top_n: int = 10,
    attention_budget: int = DEFAULT_ATTENTION_BUDGET,
    fit_context: bool = False,
    eos_ids: Iterable[int] | None = None,
    compile_decode: bool = False,
) -> Iterator[StepRecord]:
    """Yield one `StepRecord` per generated token; the last one carries the stop reason.

    Everything is validated before any compute. Closing the generator stops the work at once.
    `fit_context=True` lets a run that would overflow the context window stop there
    (`CONTEXT_FULL`) instead of being rejected up front. `eos_ids`: the ids that end a run
    (`LoadedModel.eos_ids`: the config's, generation config's and tokenizer's); None means
    the tokenizer's eos id, an empty set that only length and stop sequences end it.

    Embedding rows beyond the tokenizer's vocabulary (padding) name no token: they are never
    sampled, shown or counted in a distribution.

    `compile_decode=True` decodes with the model's `torch.compile`d static step once it is compiled
    (in the background; eager until then, and for steps that capture attention): see
    `kernels/compiled_decode.py` for when that pays.
    """
    if isinstance(top_n, bool) or not isinstance(top_n, int) or not 0 <= top_n <= MAX_TOP_N:
        raise ParameterError("top_n", f"an integer in [0, {MAX_TOP_N}]", top_n)
    if not isinstance(compile_decode, bool):
        raise ParameterError("compile_decode", "True or False", compile_decode)
    vocab = tokenizer.vocab_size  # logits beyond it are padding rows
    if vocab > model.args.vocab_size:
        raise TokenizerError(f"the tokenizer has {vocab} tokens but the model only {model.args.vocab_size} "
                             "embedding rows; it belongs to another model")
    stop_ids = _eos_set(tokenizer, eos_ids)
    prompt_ids = encode_prompt(tokenizer, prompt)
    context = model.args.max_seq_len
    budget = params.max_new_tokens
    if len(prompt_ids) >= context:
        raise ParameterError("prompt", f"at most {context - 1} tokens for this model", f"{len(prompt_ids)} tokens")
    if len(prompt_ids) + budget > context:
        if not fit_context:
            raise ParameterError(
                "max_new_tokens", f"at most {context - len(prompt_ids)} here: prompt tokens ({len(prompt_ids)}) "
                f"+ max_new_tokens must be ≤ the context length ({context})", budget)
        budget = context - len(prompt_ids)

    seed = params.seed if params.seed is not None else secrets.randbits(63)
    generator = torch.Generator().manual_seed(seed)
    seen = torch.zeros(vocab, dtype=torch.bool)
    seen[torch.tensor(prompt_ids)] = True
    counts = torch.zeros(vocab)  # occurrences in the generated text only
    decoder = StreamDecoder(tokenizer, prompt_ids)
    pending = ""  # decoded text not yet yielded: it may be the start of a stop sequence
    attention_left = attention_budget if capture_attention else 0
    start = time.perf_counter()

    # Capture only what fits the budget: (L, H, Tq, S) elements per forward pass.
    heads = model.args.n_layers * model.args.n_heads
    capture = capture_attention and heads * len(prompt_ids) ** 2 <= attention_left
    attention_left = attention_left if capture else 0  # rows without the prompt's square are not worth keeping
    cache = model.new_cache(max_len=len(prompt_ids) + budget)
    compiled = compiled_decoder(model) if compile_decode else None
    device = model.input_device()  # the KV cache is already there (new_cache)
    out = model(torch.tensor([prompt_ids], device=device), cache, capture_attention=capture, last_only=True)
    for index in range(budget):
        # Dropping padding rows = their logits at -inf, at no cost. The sampler and the record work on the CPU:
        # one copy of V floats a step from an accelerator (a no-op on the CPU).
        logits = out.logits[0, -1, :vocab].cpu()
        if not torch.isfinite(logits).all():
            raise GenerationError(f"the model produced non-finite logits at step {index}; the weights may be corrupt "
                                  "or overflow in this dtype (try float32)")
        stages = list(sampler_stages(logits, params, seen, counts))
        filtered = stages[-1][1]
        token = int(filtered.argmax()) if params.temperature == 0.0 else sample(filtered, generator)
        seen[token] = True
        counts[token] += 1

        stop_reason = None
        pending += decoder.push(token)
        if token in stop_ids:
            stop_reason = StopReason.EOS
        cut = min((i for i in (pending.find(s) for s in params.stop) if i >= 0), default=-1)
        if cut >= 0:
            pending, stop_reason = pending[:cut], StopReason.STOP_SEQUENCE
        elif stop_reason is None and index + 1 == budget:
            stop_reason = StopReason.LENGTH if budget == params.max_new_tokens else StopReason.CONTEXT_FULL
        if stop_reason is None:
            keep = _stop_holdback(pending, params.stop)
            text, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
        else:
            text = pending + (decoder.flush() if stop_reason is not StopReason.STOP_SEQUENCE else "")

        attention = None
        if out.attention is not None:
            attention = torch.stack([a[0] for a in out.attention]).half().cpu()  # (L, H, Tq, S)
            attention_left -= attention.numel()
        yield _record(index, token, text, logits, stages, tokenizer, top_n, start, seed, attention, stop_reason)
        if stop_reason is not None:
            return
        capture = capture_attention and heads * (cache.length + 1) <= attention_left
        logits = compiled.step(token, cache) if compiled is not None and not capture else None
        out = ForwardOutput(logits) if logits is not None else model(
            torch.tensor([[token]], device=device), cache, capture_attention=capture)


def _eos_set(tokenizer: Tokenizer, eos_ids: Iterable[int] | None) -> frozenset[int]:
    if eos_ids is None:
        return frozenset([tokenizer.eos_id]) if tokenizer.eos_id is not None else frozenset()
    if isinstance(eos_ids, (str, bytes)) or not isinstance(eos_ids, Iterable):
        raise ParameterError("eos_ids", "an iterable of token ids or None", eos_ids)
    ids = list(eos_ids)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ParameterError("eos_ids", "an iterable of integer token ids or None", ids)
    return frozenset(ids)


def _removed_by(token_ids: list[int], stages: list[tuple[str, Tensor]]) -> list[str | None]:
    """For each token, the first sampler stage that set its logit to -inf (None if it survived)."""
    index = torch.tensor(token_ids)
    removed = torch.stack([torch.isneginf(logits[index]) for _, logits in stages]).T.tolist()  # (n, stages)
    return [next((stages[j][0] for j, gone in enumerate(row) if gone), None) for row in removed]


def _record(index, token, text, logits, stages, tokenizer, top_n, start, seed, attention, stop_reason) -> StepRecord:
    logprobs = torch.log_softmax(logits, dim=-1)
    probs = logprobs.exp()
    entropy = float(-(probs * logprobs).nan_to_num().sum())
    top_ids = torch.topk(probs, top_n).indices.tolist() if top_n else []
    if token not in top_ids:
        top_ids.append(token)
    stage_probs, previous, distribution = [], None, None
    for name, stage_logits in stages:  # the first stage is the raw logits, whose softmax is `probs`
        if stage_logits is not previous:  # a stage that changed nothing returns its input: no new softmax
            distribution = probs if previous is None else torch.softmax(stage_logits, dim=-1)
            previous = stage_logits
        stage_probs.append((name, tuple(distribution[top_ids].tolist())))
    probs_filtered = distribution  # the last stage's: what the sampler drew from
    top_probs, top_filtered = probs[top_ids].tolist(), probs_filtered[top_ids].tolist()
    top = tuple(
        Alternative(i, tokenizer.piece(i), p, q, stage)
        for i, p, q, stage in zip(top_ids, top_probs, top_filtered, _removed_by(top_ids, stages))
    )
    return StepRecord(
        index=index, token_id=token, piece=tokenizer.piece(token), text=text,
        prob=float(probs[token]), prob_filtered=float(probs_filtered[token]), logprob=float(logprobs[token]),
        entropy=entropy, top=top, elapsed_s=time.perf_counter() - start, seed=seed,
        attention=attention, stop_reason=stop_reason, stages=tuple(stage_probs),
    )
