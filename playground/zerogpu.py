"""Local generation on a Hugging Face ZeroGPU Space: big weights on CUDA in bf16, each run inside `@spaces.GPU`.

A ZeroGPU Space holds a GPU only while a function decorated with `spaces.GPU` runs. The app's own process never
touches the GPU: `import spaces` makes CUDA look present there, and `.to("cuda")` only marks the weights. Each call
runs in a worker process forked from the app, which holds the real GPU, moves the marked weights onto it, receives
the call's arguments pickled and sends every yielded value back pickled. Hence the shape of this module:

- a run's arguments are plain values (prompt, SamplingParams, options); the model and tokenizer are captured by a
  generator made for that model when it first runs, so the worker forked for it has them in its memory (a worker
  forked before the model was loaded would not, and ZeroGPU keeps one worker per decorated function);
- every StepRecord holds CPU tensors only (generate_stream copies the logits and attention rows off the GPU);
- an exception raised in the worker comes back as itself, not as ZeroGPU's bare "worker error: <class name>".

Without the `spaces` package (not a Space, and the tests) nothing is wrapped: `gpu_stream` is `generate_stream`.
Weights left on the CPU (small checkpoints, CPU hardware) run as they always do. On a Space with a dedicated GPU,
`spaces.GPU` returns the function unchanged, and runs go to CUDA directly.

Handlers call `gpu_stream` where they called `generate_stream`, and the registry loads through `load_model`.
"""

from __future__ import annotations

import math
import pickle
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from llama_core import (
    GenerationError, LoadedModel, SamplingParams, StepRecord, generate_stream, load_checkpoint, parameter_count,
)
from llama_core.insight.logit_lens import LogitLens, logit_lens
from llama_core.insight.scoring import TextScore, score_text
from llama_core.loading import estimate_checkpoint_bytes
from llama_core.model import Transformer
from llama_core.tokenizer import Tokenizer

try:  # on ZeroGPU this must come before anything initialises CUDA; importing this module early does it
    import spaces
except ImportError:
    spaces = None

# Checkpoints smaller than this stay on the CPU even where a GPU is offered: the bundled models decode at hundreds
# of tokens a second there, while a ZeroGPU run costs the visitor's daily quota and a place in the GPU queue.
GPU_MIN_BYTES = 2**30

# The duration asked of ZeroGPU for one run, from the model's size, the prompt and max_new_tokens. ZeroGPU lends a
# slice of an H200 (about 70 GB); these rates are a few times below what that slice does, since asking too little
# ends the run mid-way while asking more only costs queue priority and the quota check (the time used is billed).
WORKER_SETUP_S = 10.0  # forking the worker, initialising CUDA, the scheduler's round trip
HOST_TO_GPU_BYTES_PER_S = 4e9  # a new worker copies the weights from host memory onto the GPU first
PREFILL_FLOPS_PER_S = 5e13  # the prompt: 2 FLOPs a weight a token, in bf16 matrix products
DECODE_BYTES_PER_S = 5e11  # each new token reads every weight once: decoding is bound by memory bandwidth
STEP_OVERHEAD_S = 0.03  # per token: eager kernel launches (~20 a layer) and the CPU sampler over the vocabulary
# ZeroGPU refuses a request above the visitor's per-call cap ("illegal duration"), which Hugging Face does not
# publish (300 s has been refused); 120 s is the cap Space authors use for visitors without PRO. A longer run is
# stopped when its time is up, and the handlers keep the tokens it produced.
MAX_GPU_S = 120
MIN_GPU_S = 15


def gpu_seconds(n_params: int, bytes_per_weight: int, prompt_tokens: int, max_new_tokens: int) -> int:
    """The ZeroGPU duration to ask for one run (seconds, within [MIN_GPU_S, MAX_GPU_S])."""
    weight_bytes = n_params * bytes_per_weight
    seconds = (WORKER_SETUP_S + weight_bytes / HOST_TO_GPU_BYTES_PER_S
               + 2 * n_params * prompt_tokens / PREFILL_FLOPS_PER_S
               + max_new_tokens * (weight_bytes / DECODE_BYTES_PER_S + STEP_OVERHEAD_S))
    return int(min(MAX_GPU_S, max(MIN_GPU_S, math.ceil(seconds))))


def accelerator_load_options(source: str | Path) -> dict:
    """The `load_checkpoint` arguments that put `source` on CUDA in bf16: where CUDA is available (ZeroGPU's app
    process says it is) and the checkpoint is not a small local one; {} otherwise (the CPU defaults)."""
    if not torch.cuda.is_available():
        return {}
    path = Path(source).expanduser()
    if path.exists() and estimate_checkpoint_bytes(path) < GPU_MIN_BYTES:
        return {}
    # bf16 whatever the file stores: fp32 would double the memory, and a GGUF file's blocks are CPU kernels.
    return {"dtype": "bf16", "device_map": "cuda"}


def load_model(source: str | Path, **options) -> LoadedModel:
    """`load_checkpoint(source, **options)`, on CUDA in bf16 where `accelerator_load_options` says so."""
    return load_checkpoint(source, **options, **accelerator_load_options(source))


def on_accelerator(model: Transformer) -> bool:
    """Whether the model's weights sit off the CPU (on CUDA; ZeroGPU's emulated CUDA in the app's process)."""
    return model.input_device().type != "cpu"


def gpu_stream(model: Transformer, tokenizer: Tokenizer, prompt: str | list[int], params: SamplingParams,
               **options) -> Iterator[StepRecord]:
    """`generate_stream(model, tokenizer, prompt, params, **options)`, inside `@spaces.GPU` when the `spaces`
    package is there and the weights are off the CPU. Closing the stream closes the run in the worker too."""
    if spaces is None or not on_accelerator(model):
        return generate_stream(model, tokenizer, prompt, params, **options)
    return _relay(_runner(model, tokenizer)(prompt, params, options))


@dataclass(frozen=True)
class _Raised:
    """An exception of the worker's run, sent back as a yielded value to be raised again in the app's process."""

    error: BaseException


_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its GPU-decorated generator


def _runner(model: Transformer, tokenizer: Tokenizer) -> Callable[..., Iterator[StepRecord | _Raised]]:
    """The model's decorated generator, made on its first run. It holds the model weakly: ZeroGPU keeps every
    decorated function for good, and an unloaded model must not stay in memory through it."""
    if model in _RUNNERS:
        return _RUNNERS[model]
    model_ref = weakref.ref(model)
    n_params, bytes_per_weight = parameter_count(model.args), model.tok_embeddings.weight.element_size()

    def run(prompt: str | list[int], params: SamplingParams, options: dict) -> Iterator[StepRecord | _Raised]:
        live = model_ref()
        if live is None:
            yield _Raised(GenerationError("the model was unloaded before its run started; choose it again"))
            return
        try:
            yield from generate_stream(live, tokenizer, prompt, params, **options)
        except Exception as error:  # every failure goes back to the handler, as itself
            yield _Raised(_picklable(error))

    def duration(prompt: str | list[int], params: SamplingParams, options: dict) -> int:
        # A text prompt counts as one token a character: an upper bound, and tokenizing twice is not worth it.
        return gpu_seconds(n_params, bytes_per_weight, len(prompt), params.max_new_tokens)

    runner = spaces.GPU(duration=duration)(run)
    _RUNNERS[model] = runner
    return runner


_CALLERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its GPU-decorated forward passes
# The views that run a forward pass of their own (Score text, the logit lens): by name, so that only the name and
# plain arguments cross to the worker.
_PASSES: dict[str, Callable] = {
    "score": lambda model, tokenizer, text: score_text(model, tokenizer, text),
    "lens": lambda model, tokenizer, token_ids, vocab_size: logit_lens(model, token_ids, vocab_size),
}


def gpu_score(model: Transformer, tokenizer: Tokenizer, text: str) -> TextScore:
    """`score_text(model, tokenizer, text)`, inside `@spaces.GPU` where `gpu_stream` would be."""
    return _forward_pass(model, tokenizer, "score", text)


def gpu_logit_lens(model: Transformer, tokenizer: Tokenizer, token_ids: list[int], vocab_size: int) -> LogitLens:
    """`logit_lens(model, token_ids, vocab_size)`, inside `@spaces.GPU` where `gpu_stream` would be."""
    return _forward_pass(model, tokenizer, "lens", token_ids, vocab_size)


def _forward_pass(model: Transformer, tokenizer: Tokenizer, name: str, *args):
    if spaces is None or not on_accelerator(model):
        return _PASSES[name](model, tokenizer, *args)
    result = _caller(model, tokenizer)(name, args)
    if isinstance(result, _Raised):
        raise result.error
    return result


def _caller(model: Transformer, tokenizer: Tokenizer) -> Callable[[str, tuple], object]:
    """The model's decorated forward-pass function, made on first use and holding the model weakly (as `_runner`)."""
    if model in _CALLERS:
        return _CALLERS[model]
    model_ref = weakref.ref(model)
    n_params, bytes_per_weight = parameter_count(model.args), model.tok_embeddings.weight.element_size()

    def forward_pass(name: str, args: tuple) -> object:
        live = model_ref()
        if live is None:
            return _Raised(GenerationError("the model was unloaded before this view ran; choose it again"))
        try:
            return _PASSES[name](live, tokenizer, *args)
        except Exception as error:  # back to the handler, as itself
            return _Raised(_picklable(error))

    def duration(name: str, args: tuple) -> int:
        # One pass over the text (a character counts as a token: an upper bound) and nothing generated.
        return gpu_seconds(n_params, bytes_per_weight, len(args[0]), 0)

    caller = spaces.GPU(duration=duration)(forward_pass)
    _CALLERS[model] = caller
    return caller


def _picklable(error: Exception) -> Exception:
    """`error` if it survives the trip back through pickle; else a GenerationError with its type and message
    (ParameterError, for one, cannot be rebuilt from its pickled message)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # any failure to round-trip: send the text instead
        return GenerationError(f"{type(error).__name__}: {error}")


def _relay(stream: Iterator[StepRecord | _Raised]) -> Iterator[StepRecord]:
    """The worker's records, with a failure raised again here; closing this closes the worker's run."""
    try:
        for item in stream:
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stream.close()


def gpu_device_name() -> str:
    """The accelerator's name as a GPU worker sees it ("cpu" without one)."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if spaces is not None:
    # ZeroGPU's start-up step (run as the app launches) reports the Space's GPU functions only if one is decorated
    # by then, and the models' runners are made later, on first use: this one is there from import on.
    gpu_device_name = spaces.GPU(duration=MIN_GPU_S)(gpu_device_name)
