"""ZeroGPU (playground/zerogpu.py) and the device-agnostic model and generation code it relies on.

There is no GPU here. The `spaces` package is replaced by a recording fake that does what ZeroGPU's worker does
where it matters: it asks for the duration (a callable gets the call's arguments) before the run, and the
arguments and every yielded value go through pickle, as they cross from the app's process to the worker and back.
"Off the CPU" is the meta device: a tensor made on the CPU by mistake and mixed with meta ones is an error there.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_args
from llama_core import GenerationError, SamplingParams, TokenizerError, generate_stream, load_checkpoint
from llama_core.config import parameter_count, preset
from llama_core.model import Transformer
from playground import zerogpu

BUNDLED_1M = Path(__file__).resolve().parents[1] / "models" / "playground-1m"
PROMPT = "Alice was beginning to"
# Sampling at T = 0.8 with top-p and a repetition penalty: the records carry every stage of the pipeline.
PARAMS = SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.2, max_new_tokens=12, seed=7)


class FakeSpaces(types.ModuleType):
    """A recording `spaces` module: `decorated` names each function given to `spaces.GPU`, `scheduled` holds
    (function name, duration in seconds) for each call, as ZeroGPU schedules it."""

    def __init__(self):
        super().__init__("spaces")
        self.decorated: list[str] = []
        self.scheduled: list[tuple[str, int]] = []

    def GPU(self, task=None, *, duration=None, size=None):  # the real package's name
        if task is None:
            return functools.partial(self.GPU, duration=duration, size=size)
        self.decorated.append(task.__name__)

        def schedule(args, kwargs):
            seconds = duration(*args, **kwargs) if callable(duration) else duration
            self.scheduled.append((task.__name__, seconds))
            return pickle.loads(pickle.dumps((args, kwargs)))  # into the worker

        if not inspect.isgeneratorfunction(task):
            @functools.wraps(task)
            def call(*args, **kwargs):
                args, kwargs = schedule(args, kwargs)
                return pickle.loads(pickle.dumps(task(*args, **kwargs)))
            return call

        @functools.wraps(task)
        def stream(*args, **kwargs):
            args, kwargs = schedule(args, kwargs)
            run = task(*args, **kwargs)
            try:
                for value in run:
                    yield pickle.loads(pickle.dumps(value))  # back from the worker
            finally:
                run.close()  # Stop: ZeroGPU's worker closes the run at its next step
        return stream


def _reload_with(spaces_module):
    sys.modules["spaces"] = spaces_module  # None: `import spaces` raises ImportError
    return importlib.reload(zerogpu)


@pytest.fixture
def fake_spaces():
    saved = sys.modules.get("spaces")
    fake = FakeSpaces()
    try:
        yield fake, _reload_with(fake)
    finally:
        _reload_with(saved)


@pytest.fixture
def no_spaces():
    saved = sys.modules.get("spaces")
    try:
        yield _reload_with(None)
    finally:
        _reload_with(saved)


def comparable(record):
    """A record without its timing (the only field two identical runs may differ in) and its attention tensor."""
    return dataclasses.replace(record, elapsed_s=0.0, attention=None)


def assert_same_records(got, expected):
    assert [comparable(r) for r in got] == [comparable(r) for r in expected]
    for a, b in zip(got, expected):
        assert (a.attention is None) == (b.attention is None)
        if a.attention is not None:
            assert a.attention.device.type == "cpu" and torch.equal(a.attention, b.attention)


def test_without_spaces_nothing_is_wrapped(no_spaces, tiny_model, tokenizer):
    assert no_spaces.spaces is None
    got = list(no_spaces.gpu_stream(tiny_model, tokenizer, PROMPT, PARAMS))
    assert_same_records(got, list(generate_stream(tiny_model, tokenizer, PROMPT, PARAMS)))
    assert len(no_spaces._RUNNERS) == 0


def test_weights_on_the_cpu_run_without_a_gpu_request_on_a_space(fake_spaces, tiny_model, tokenizer):
    fake, module = fake_spaces
    assert fake.decorated == ["gpu_device_name"]  # decorated at import, before the app launches
    got = list(module.gpu_stream(tiny_model, tokenizer, PROMPT, PARAMS))
    assert_same_records(got, list(generate_stream(tiny_model, tokenizer, PROMPT, PARAMS)))
    assert fake.scheduled == []


def test_a_gpu_run_goes_through_spaces_gpu_with_its_duration_and_streams_the_same_records(
        fake_spaces, tiny_model, tokenizer, monkeypatch):
    fake, module = fake_spaces
    monkeypatch.setattr(module, "on_accelerator", lambda model: True)  # the weights count as on CUDA
    options = {"capture_attention": True, "top_n": 5}
    expected = list(generate_stream(tiny_model, tokenizer, PROMPT, PARAMS, **options))
    for _ in range(2):  # the second run reuses the model's decorated generator
        got = list(module.gpu_stream(tiny_model, tokenizer, PROMPT, PARAMS, **options))
        assert_same_records(got, expected)  # same seed, same process: the same numbers bit for bit
    seconds = module.gpu_seconds(parameter_count(tiny_model.args), 4, len(PROMPT), PARAMS.max_new_tokens)
    assert fake.decorated == ["gpu_device_name", "run"]
    assert fake.scheduled == [("run", seconds)] * 2


def test_closing_the_stream_closes_the_run_in_the_worker(fake_spaces, tiny_model, tokenizer, monkeypatch):
    _, module = fake_spaces
    monkeypatch.setattr(module, "on_accelerator", lambda model: True)
    closed = []

    def watched_stream(*args, **kwargs):
        try:
            yield from generate_stream(*args, **kwargs)
        finally:
            closed.append(True)

    monkeypatch.setattr(module, "generate_stream", watched_stream)
    stream = module.gpu_stream(tiny_model, tokenizer, PROMPT, dataclasses.replace(PARAMS, max_new_tokens=50))
    next(stream), next(stream)
    assert closed == []
    stream.close()  # what Stop does to the handler's generator
    assert closed == [True]


def test_an_error_in_the_worker_comes_back_as_itself_or_as_its_message(fake_spaces, tokenizer, tiny_model,
                                                                       monkeypatch):
    _, module = fake_spaces
    monkeypatch.setattr(module, "on_accelerator", lambda model: True)
    small = Transformer(tiny_args(tokenizer.vocab_size - 1)).eval()
    with pytest.raises(TokenizerError, match=f"the tokenizer has {tokenizer.vocab_size} tokens"):
        list(module.gpu_stream(small, tokenizer, PROMPT, PARAMS))
    # ParameterError cannot be rebuilt from its pickled message: its text comes back in a GenerationError.
    too_long = dataclasses.replace(PARAMS, max_new_tokens=tiny_model.args.max_seq_len)
    with pytest.raises(GenerationError, match=r"ParameterError: max_new_tokens must be at most \d+ here"):
        list(module.gpu_stream(tiny_model, tokenizer, PROMPT, too_long))


def test_bf16_weights_off_the_cpu_take_the_gpu_path_and_generation_follows_their_device(fake_spaces):
    fake, module = fake_spaces
    # The loading path a CUDA placement takes (accelerate's single-device dispatch), onto the meta device.
    loaded = load_checkpoint(BUNDLED_1M, dtype="bf16", device_map="meta")
    model = loaded.model
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("meta", torch.bfloat16)}
    seen = []
    model.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].device.type))
    # Prefill ran on meta (cache, rotary table, masks and all); the stream then copies the last logits row to the
    # CPU for the sampler, which a meta tensor refuses: the error of that copy is relayed from the "worker".
    with pytest.raises(NotImplementedError, match="meta tensor"):
        list(module.gpu_stream(model, loaded.tokenizer, PROMPT, PARAMS))
    assert seen == ["meta"]
    seconds = module.gpu_seconds(loaded.n_params, 2, len(PROMPT), PARAMS.max_new_tokens)
    assert fake.scheduled == [("run", seconds)]


def test_forward_passes_keep_every_tensor_on_the_weights_device():
    args = tiny_args(100, max_seq_len=64)
    with torch.device("meta"):
        model = Transformer(args).eval()
    model.reset_rope()  # the rotary table on the CPU, as after loading; rope() moves it
    cache = model.new_cache(max_len=16)
    assert {t.device.type for t in cache.k + cache.v} == {"meta"}
    device = model.input_device()
    prefill = model(torch.tensor([[1, 2, 3, 4]], device=device), cache, capture_attention=True, last_only=True)
    step = model(torch.tensor([[5]], device=device), cache)
    chunk = model(torch.tensor([[6, 7]], device=device), cache)  # queries after a cached prefix: an explicit mask
    captured = model(torch.tensor([[8, 9]], device=device), cache, capture_attention=True)
    for out, queries, keys in ((prefill, 1, 4), (step, 1, 5), (chunk, 2, 7), (captured, 2, 9)):
        assert out.logits.device.type == "meta" and out.logits.shape == (1, queries, args.vocab_size)
    assert prefill.attention[0].shape == (1, args.n_heads, 4, 4) and captured.attention[0].shape[-1] == 9
    assert cache.length == 9


def test_duration_grows_with_the_work_and_stays_within_zerogpu_limits():
    seconds = zerogpu.gpu_seconds
    llama_7b, llama_70b = parameter_count(preset("llama-2-7b")), parameter_count(preset("llama-2-70b"))
    base = seconds(llama_7b, 2, 100, 256)
    assert zerogpu.MIN_GPU_S < base < zerogpu.MAX_GPU_S  # a 7B bf16 run of 256 tokens: the estimate decides
    assert seconds(llama_7b, 2, 100, 512) > base and seconds(llama_7b, 2, 4000, 256) >= base
    assert seconds(llama_7b, 4, 100, 256) > base
    assert seconds(llama_70b, 2, 100, 256) == zerogpu.MAX_GPU_S  # capped: 70B belongs on a remote server
    assert seconds(1_000_000, 4, 10, 32) == zerogpu.MIN_GPU_S


def test_cuda_placement_is_chosen_for_big_checkpoints_when_cuda_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert zerogpu.accelerator_load_options("meta-llama/Llama-3.1-8B-Instruct") == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = {"dtype": "bf16", "device_map": "cuda"}
    assert zerogpu.accelerator_load_options("meta-llama/Llama-3.1-8B-Instruct") == on_gpu  # a Hub id: big
    assert zerogpu.accelerator_load_options(BUNDLED_1M) == {}  # a small local checkpoint stays on the CPU
    monkeypatch.setattr(zerogpu, "GPU_MIN_BYTES", 1)
    assert zerogpu.accelerator_load_options(BUNDLED_1M) == on_gpu


def test_the_apps_local_runs_go_through_the_gpu_path(fake_spaces, monkeypatch):
    """The registry hands out local backends whose runs take `gpu_stream`, so Generate, Chat and the APIs (all
    through `registry.backend`) run inside `spaces.GPU` on a Space whose weights are on CUDA."""
    from playground.registry import ModelRegistry, discover

    fake, module = fake_spaces
    monkeypatch.setattr(module, "on_accelerator", lambda model: True)
    registry = ModelRegistry(discover(None, [str(BUNDLED_1M)]))
    label = next(label for label, choice in registry.choices.items() if choice.source == str(BUNDLED_1M))
    backend = registry.backend(label)
    got = list(backend.generate(PROMPT, PARAMS, top_n=5))
    loaded = registry.load(label)
    expected = list(generate_stream(loaded.model, loaded.tokenizer, PROMPT, PARAMS, top_n=5, eos_ids=loaded.eos_ids))
    assert_same_records(got, expected)
    assert [name for name, _ in fake.scheduled] == ["run"]


def test_score_text_and_the_logit_lens_run_inside_spaces_gpu_for_weights_on_the_gpu(
        fake_spaces, tiny_model, tokenizer, monkeypatch):
    """The two views that run a forward pass of their own take the GPU path too, with the same results."""
    from llama_core.insight.logit_lens import logit_lens
    from llama_core.insight.scoring import score_text

    fake, module = fake_spaces
    expected_score = score_text(tiny_model, tokenizer, PROMPT)
    ids = tokenizer.encode(PROMPT)
    expected_lens = logit_lens(tiny_model, ids, tokenizer.vocab_size)
    monkeypatch.setattr(module, "on_accelerator", lambda model: True)
    assert module.gpu_score(tiny_model, tokenizer, PROMPT) == expected_score
    lens = module.gpu_logit_lens(tiny_model, tokenizer, ids, tokenizer.vocab_size)
    assert all(np.array_equal(getattr(lens, f.name), getattr(expected_lens, f.name))
               for f in dataclasses.fields(expected_lens))
    passes = module.gpu_seconds(parameter_count(tiny_model.args), 4, len(PROMPT), 0)
    assert fake.scheduled == [("forward_pass", passes), ("forward_pass", module.gpu_seconds(
        parameter_count(tiny_model.args), 4, len(ids), 0))]
    # A failure in the worker comes back (a ParameterError, which pickle cannot rebuild, as its type and message).
    with pytest.raises(GenerationError, match="ParameterError"):
        module.gpu_score(tiny_model, tokenizer, " ")
