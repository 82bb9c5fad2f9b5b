import copy

import pytest
import torch

from llama_core.errors import ParameterError
from llama_core.generation import GenerationError, StopReason, generate_stream
from llama_core.sampling import SamplingParams
from llama_core.templates import apply_template
from numerics import FP32_REORDER, assert_greedy_is_robust

pytestmark = pytest.mark.numerics

PROMPT = "Alice was beginning to"


def run(model, tokenizer, prompt=PROMPT, **kwargs):
    options = {k: kwargs.pop(k) for k in ("capture_attention", "top_n", "attention_budget", "fit_context") if k in kwargs}
    return list(generate_stream(model, tokenizer, prompt, SamplingParams(**kwargs), **options))


def text_of(records):
    return "".join(r.text for r in records)


def test_greedy_equals_argmax_of_a_full_forward_at_every_step(tiny_model, tokenizer):
    records = run(tiny_model, tokenizer, temperature=0, max_new_tokens=12)
    ids = tokenizer.encode(PROMPT)
    with torch.no_grad():
        for record in records:
            logits = tiny_model(torch.tensor([ids])).logits[0, -1]
            # The run decoded with a cache, this is a full forward: argmaxes agree outside rounding.
            assert_greedy_is_robust(logits, FP32_REORDER, "greedy vs full-forward argmax")
            expected = int(logits.argmax())
            assert record.token_id == expected
            assert record.prob_filtered == 1.0
            assert all(a.removed_by == "greedy" for a in record.top if a.token_id != expected)
            ids.append(expected)


def test_same_seed_same_text_and_different_seed_differs(tiny_model, tokenizer):
    a = run(tiny_model, tokenizer, temperature=1.0, seed=1234, max_new_tokens=20)
    b = run(tiny_model, tokenizer, temperature=1.0, seed=1234, max_new_tokens=20)
    c = run(tiny_model, tokenizer, temperature=1.0, seed=4321, max_new_tokens=20)
    assert [r.token_id for r in a] == [r.token_id for r in b]
    assert [r.token_id for r in a] != [r.token_id for r in c]
    assert a[0].seed == 1234


def test_random_seed_is_reported_and_reproduces(tiny_model, tokenizer):
    first = run(tiny_model, tokenizer, temperature=1.0, max_new_tokens=10)
    again = run(tiny_model, tokenizer, temperature=1.0, seed=first[0].seed, max_new_tokens=10)
    assert [r.token_id for r in first] == [r.token_id for r in again]


def test_text_deltas_equal_the_decode_of_the_generated_tokens(tiny_model, tokenizer):
    records = run(tiny_model, tokenizer, temperature=1.0, seed=5, max_new_tokens=40)
    prompt_ids = tokenizer.encode(PROMPT)
    full = tokenizer.decode(prompt_ids + [r.token_id for r in records])
    assert text_of(records) == full[len(tokenizer.decode(prompt_ids)) :]


def test_length_stop(tiny_model, tokenizer):
    records = run(tiny_model, tokenizer, temperature=0, max_new_tokens=7)
    assert len(records) == 7
    assert [r.stop_reason for r in records] == [None] * 6 + [StopReason.LENGTH]


def test_stop_sequence_split_across_tokens_never_leaks(tiny_model, tokenizer):
    free = run(tiny_model, tokenizer, temperature=1.0, seed=11, max_new_tokens=40)
    text = text_of(free)
    # Take a stop string that starts inside one token's text and ends inside a later one.
    start = len(free[0].text) + len(free[1].text) + len(free[2].text) - 1
    stop = text[start : start + 4]
    assert len(stop) == 4
    records = run(tiny_model, tokenizer, temperature=1.0, seed=11, max_new_tokens=40, stop=[stop])
    streamed = text_of(records)
    assert streamed == text[: text.find(stop)]
    assert records[-1].stop_reason is StopReason.STOP_SEQUENCE
    assert all(stop[:2] not in r.text or r.text.find(stop[:2]) < len(r.text) - 2 for r in records)
    assert stop not in streamed


def test_eos_stops_the_run(tiny_model, tokenizer):
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.output.weight[tokenizer.eos_id] = model.norm.weight.sign() * 50  # EOS wins every step
    records = run(model, tokenizer, temperature=0, max_new_tokens=10)
    assert len(records) < 10 and records[-1].token_id == tokenizer.eos_id
    assert records[-1].stop_reason is StopReason.EOS
    assert all(r.token_id != tokenizer.eos_id and r.stop_reason is None for r in records[:-1])


def test_prompt_plus_max_new_tokens_beyond_context_is_rejected_before_compute(tiny_model, tokenizer):
    n_prompt = len(tokenizer.encode(PROMPT))
    with pytest.raises(ParameterError, match=rf"max_new_tokens must be at most {128 - n_prompt} here"):
        run(tiny_model, tokenizer, max_new_tokens=200)
    never_ends = copy.copy(tokenizer)
    never_ends.eos_id = -1  # so only the context window can end this run
    records = run(tiny_model, never_ends, temperature=0, max_new_tokens=200, fit_context=True)
    assert len(records) == 128 - n_prompt and records[-1].stop_reason is StopReason.CONTEXT_FULL
    long_prompt = list(range(3, 131))
    with pytest.raises(ParameterError, match="prompt must be at most 127 tokens"):
        run(tiny_model, tokenizer, prompt=long_prompt)
    # The boundary itself: P = C - 1 with one new token is allowed.
    assert len(run(tiny_model, tokenizer, prompt=long_prompt[:127], max_new_tokens=1, temperature=0)) == 1


@pytest.mark.parametrize("prompt, message", [
    ("", "prompt must be a non-empty text"),
    ("   \n", "prompt must be a non-empty text"),
    ("x" * 200_001, "prompt must be at most 200000 characters"),
    ([], "prompt must be a non-empty text or list of token ids"),
    ([1, 512], r"prompt token id must be an integer in \[0, 511\], got 512"),
    ([1, -1], "prompt token id"),
])
def test_bad_prompts_are_rejected(tiny_model, tokenizer, prompt, message):
    with pytest.raises(ParameterError, match=message):
        run(tiny_model, tokenizer, prompt=prompt)


def test_step_records_describe_the_distribution(tiny_model, tokenizer):
    records = run(tiny_model, tokenizer, temperature=0.9, top_k=5, seed=3, max_new_tokens=10, top_n=8)
    for r in records:
        probs = [a.prob for a in r.top]
        assert r.token_id in [a.token_id for a in r.top]
        assert probs[:8] == sorted(probs[:8], reverse=True)
        assert 0 < r.prob <= 1 and abs(r.logprob - torch.log(torch.tensor(r.prob)).item()) < 1e-4
        assert 0 < r.prob_filtered <= 1 and r.entropy > 0
        assert sum(a.prob_filtered > 0 for a in r.top) <= 5  # top-k removed the rest
        assert all((a.removed_by == "top_k") == (a.prob_filtered == 0) for a in r.top)
        assert [a.removed_by for a in r.top[:5]] == [None] * 5
        assert r.piece == tokenizer.piece(r.token_id)
    assert [r.elapsed_s for r in records] == sorted(r.elapsed_s for r in records)
    with pytest.raises(ParameterError, match="top_n"):
        run(tiny_model, tokenizer, top_n=21)


def test_attention_capture_shapes_rows_and_same_tokens(tiny_model, tokenizer):
    plain = run(tiny_model, tokenizer, temperature=0, max_new_tokens=6)
    captured = run(tiny_model, tokenizer, temperature=0, max_new_tokens=6, capture_attention=True)
    assert [r.token_id for r in plain] == [r.token_id for r in captured]
    assert all(r.attention is None for r in plain)
    n_prompt, args = len(tokenizer.encode(PROMPT)), tiny_model.args
    assert captured[0].attention.shape == (args.n_layers, args.n_heads, n_prompt, n_prompt)
    for i, r in enumerate(captured[1:], start=1):
        assert r.attention.shape == (args.n_layers, args.n_heads, 1, n_prompt + i)
        torch.testing.assert_close(r.attention.float().sum(-1), torch.ones(args.n_layers, args.n_heads, 1),
                                   atol=2e-3, rtol=0)


def test_attention_memory_is_bounded_by_the_budget(tiny_model, tokenizer):
    n_prompt, args = len(tokenizer.encode(PROMPT)), tiny_model.args
    per_head = args.n_layers * args.n_heads
    budget = per_head * n_prompt**2 + per_head * (n_prompt + 1) + 1  # prefill and one row fit
    records = run(tiny_model, tokenizer, temperature=0, max_new_tokens=5, capture_attention=True,
                  attention_budget=budget)
    assert [r.attention is not None for r in records] == [True, True, False, False, False]
    assert sum(r.attention.numel() for r in records if r.attention is not None) <= budget


def test_closing_the_stream_stops_generation(tiny_model, tokenizer):
    stream = generate_stream(tiny_model, tokenizer, PROMPT, SamplingParams(max_new_tokens=50))
    next(stream)
    stream.close()
    with pytest.raises(StopIteration):
        next(stream)


def test_non_finite_logits_are_an_error_not_garbage(tiny_model, tokenizer):
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    with pytest.raises(GenerationError, match="non-finite logits at step 0"):
        run(model, tokenizer, max_new_tokens=3)


def test_templates():
    assert apply_template("plain", " x ") == " x "
    assert apply_template("alpaca", "Hi").endswith("### Instruction:\nHi\n\n### Response:\n")
    assert apply_template("vicuna", "Hi").endswith("USER: Hi ASSISTANT:")
    assert apply_template("llama-2-chat", "Hi") == "[INST] Hi [/INST]"
    assert apply_template("llama-2-chat", "Hi", system="Be brief.") == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    assert apply_template("plain", "{braces} stay") == "{braces} stay"
    with pytest.raises(KeyError, match="unknown prompt template"):
        apply_template("no-such-format", "Hi")
