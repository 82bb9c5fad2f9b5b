"""The static decode step: the same logits as the model's forward, compiled once (in the background, never
blocking), eager while it compiles, on capture steps and when compiling fails."""

import json

import pytest
import torch

from llama_core.generation import generate_stream
from llama_core.kernels import compiled_decode
from llama_core.kernels.compiled_decode import CompiledDecoder, compiled_decoder, decode_step, rotate
from llama_core.kernels.int4 import quantize_int4
from llama_core.kernels.weight_layout import prepare_for_inference
from llama_core.model import Transformer, apply_rope
from llama_core.sampling import SamplingParams

from conftest import tiny_args
from numerics import FP32_REORDER, assert_close_to_scale, assert_greedy_is_robust

pytestmark = pytest.mark.numerics


def model_for(vocab: int, seed: int = 0, **changes) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(tiny_args(vocab, **changes)).eval().requires_grad_(False)
    with torch.no_grad():
        model.output.weight.mul_(10)  # peaked distributions: a greedy comparison with margins to spare
    return model


def test_rotate_is_the_complex_rotation_written_out():
    x = torch.randn(2, 3, 4, 16)
    freqs = torch.polar(torch.ones(3, 8), torch.randn(3, 8))
    # The complex product and its real form do the same two products and one sum per component.
    assert_close_to_scale(rotate(x, freqs.real[:, None], freqs.imag[:, None]), apply_rope(x, freqs), FP32_REORDER,
                          "rotate vs apply_rope")


@pytest.mark.parametrize("layout", ["plain", "fused", "int4"])
def test_the_static_step_gives_the_forward_pass_logits(layout):
    model = model_for(320, dim=128, multiple_of=128)
    if layout == "fused":
        prepare_for_inference(model)
    elif layout == "int4":
        prepare_for_inference(quantize_int4(model))
    reference = model.new_cache(max_len=12)
    static = model.new_cache(max_len=12)
    prompt = torch.randint(0, 320, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        model(prompt, reference)
        model(prompt, static)
        for token in (7, 300, 42):
            expected = model(torch.tensor([[token]]), reference).logits
            got = decode_step(model, torch.tensor([[token]]), torch.tensor([static.length]), static.k, static.v)
            static.length += 1
            # Attention over the whole preallocated cache (masked) sums the same terms in another order.
            assert_close_to_scale(got, expected, FP32_REORDER, f"static step ({layout})")


def test_no_static_step_for_dynamic_rope_models():
    model = model_for(100, rope_scaling={"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 64})
    assert compiled_decoder(model) is None


def test_the_compiled_step_is_compiled_once_and_decodes_the_same_tokens(tokenizer):
    model = prepare_for_inference(model_for(tokenizer.vocab_size))
    decoder = compiled_decoder(model)
    assert compiled_decoder(model) is decoder  # one per model
    cache = model.new_cache(max_len=4)
    with torch.inference_mode():
        model(torch.tensor([[1, 2]]), cache)
        assert decoder.step(3, cache) is None and decoder.state in ("compiling", "ready")  # never waits
    assert cache.length == 2  # an eager step is the caller's to take
    assert decoder.wait(timeout=600) == "ready", decoder.error
    calls, inner = [], decoder._compiled
    decoder._compiled = lambda *args: calls.append(1) or inner(*args)
    params = SamplingParams(temperature=0, max_new_tokens=16)
    eager = list(generate_stream(model, tokenizer, "Alice was", params))
    assert calls == []
    compiled = list(generate_stream(model, tokenizer, "Alice was", params, compile_decode=True))
    assert len(calls) == 15  # every token after the prefill's
    # Greedy tokens agree where no step's top-2 gap is within the reordering's rounding.
    ids = tokenizer.encode("Alice was", bos=True)
    with torch.no_grad():
        logits = model(torch.tensor([ids + [s.token_id for s in eager[:-1]]])).logits[0, len(ids) - 1:]
    assert_greedy_is_robust(logits, FP32_REORDER, "compiled decode greedy")
    assert [s.token_id for s in compiled] == [s.token_id for s in eager]
    for a, b in zip(compiled, eager):  # the records (alternatives, entropy, stages) come from the same logits
        assert abs(a.entropy - b.entropy) < 1e-4 and [x.token_id for x in a.top] == [x.token_id for x in b.top]
    # Another run length (another cache size) needs no second compile: the cache's length is symbolic.
    longer = list(generate_stream(model, tokenizer, "Alice was", SamplingParams(temperature=0, max_new_tokens=24),
                                  compile_decode=True))
    assert [s.token_id for s in longer[:16]] == [s.token_id for s in eager]
    # Attention capture decodes eagerly and still gets its rows.
    captured = list(generate_stream(model, tokenizer, "Alice was", params, compile_decode=True,
                                    capture_attention=True))
    assert all(s.attention is not None for s in captured) and [s.token_id for s in captured] == [
        s.token_id for s in eager]


def test_a_failed_compile_leaves_eager_decoding(tokenizer, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(compiled_decode.torch, "compile", broken)
    model = model_for(tokenizer.vocab_size, seed=2)
    decoder = CompiledDecoder(model)
    cache = model.new_cache(max_len=3)
    assert decoder.step(1, cache) is None
    assert decoder.wait(timeout=60) == "failed" and "no compiler here" in decoder.error
    assert decoder.step(1, cache) is None
    monkeypatch.setattr(compiled_decode, "_DECODERS", {model: decoder})
    params = SamplingParams(temperature=0, max_new_tokens=5)
    assert [s.token_id for s in generate_stream(model, tokenizer, "Alice", params, compile_decode=True)] == [
        s.token_id for s in generate_stream(model, tokenizer, "Alice", params)]


def test_compile_decode_is_checked():
    from llama_core.errors import ParameterError

    with pytest.raises(ParameterError, match="compile_decode must be True or False"):
        next(generate_stream(model_for(100), None, [1], SamplingParams(), compile_decode="yes"))


def test_the_cli_compiles_first_then_generates(tmp_path, tokenizer, tokenizer_path, capsys):
    import shutil

    from llama_core.cli import main
    from llama_core.formats.hf import save_hf_checkpoint

    model = model_for(tokenizer.vocab_size, seed=3)
    save_hf_checkpoint(model.state_dict(), model.args, tmp_path)
    shutil.copy(tokenizer_path, tmp_path / "tokenizer.model")
    common = ["generate", "--model", str(tmp_path), "--prompt", "Alice was", "--temperature", "0",
              "--max-new-tokens", "6", "--json"]
    assert main(common) == 0
    eager = [json.loads(line)["token_id"] for line in capsys.readouterr().out.splitlines()]
    assert main([*common, "--compile-decode"]) == 0
    out = capsys.readouterr()
    assert "[decode step compiled in " in out.err
    ids = tokenizer.encode("Alice was", bos=True)
    with torch.no_grad():  # greedy equality holds where no top-2 gap is within the reordering's rounding
        logits = model(torch.tensor([ids + eager[:-1]])).logits[0, len(ids) - 1:]
    assert_greedy_is_robust(logits, FP32_REORDER, "CLI compiled decode greedy")
    assert [json.loads(line)["token_id"] for line in out.out.splitlines()] == eager
