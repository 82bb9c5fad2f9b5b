import math

import pytest
import torch

from llama_core.errors import ParameterError
from llama_core.generation import generate_stream
from llama_core.insight.logit_lens import logit_lens, residual_stream
from llama_core.sampling import SamplingParams
from llama_core.insight.scoring import compare_on_tokens, score_text
from numerics import FP32_REORDER, assert_greedy_is_robust

pytestmark = pytest.mark.numerics


def test_logit_lens_at_the_last_layer_is_the_models_own_prediction(tiny_model, tokenizer):
    ids = tokenizer.encode("Alice was beginning to get very tired", bos=True)
    lens = logit_lens(tiny_model, ids)
    probs = torch.softmax(tiny_model(torch.tensor([ids])).logits[0], dim=-1)
    assert lens.top_ids.shape == (tiny_model.args.n_layers + 1, len(ids))
    assert lens.top_ids[-1].tolist() == probs.argmax(-1).tolist()
    assert lens.top_probs[-1] == pytest.approx(probs.max(-1).values.numpy(), abs=1e-5)
    assert lens.labels[0] == "embeddings" and lens.labels[-1] == f"layer {tiny_model.args.n_layers}"
    assert len(residual_stream(tiny_model, ids)) == tiny_model.args.n_layers + 1


def test_score_of_a_greedy_continuation_matches_the_generation_records(tiny_model, tokenizer):
    prompt = tokenizer.encode("Alice was", bos=True)
    steps = list(generate_stream(tiny_model, tokenizer, prompt, SamplingParams(temperature=0, max_new_tokens=8)))
    score = score_text(tiny_model, tokenizer, prompt + [s.token_id for s in steps])
    generated = score.tokens[len(prompt) - 1:]
    assert [t.token_id for t in generated] == [s.token_id for s in steps]
    assert [t.prob for t in generated] == pytest.approx([s.prob for s in steps], abs=1e-5)
    # Scoring runs one full forward, generation a cached decode: their argmaxes agree where no top-2
    # gap is within the rounding of the two summation orders.
    with torch.no_grad():
        full = tiny_model(torch.tensor([prompt + [s.token_id for s in steps]])).logits[0, len(prompt) - 1:-1]
    assert_greedy_is_robust(full, FP32_REORDER, "score vs greedy generation")
    assert all(t.top[0][1] == pytest.approx(t.prob, abs=1e-5) for t in generated)  # greedy: each was the top
    # The score keeps the mean NLL in fp32 (~8.5 nats here, an ulp of 1e-6) and each prob is an fp32
    # exp of its own log-prob, so the two perplexities agree to a few fp32 ulps of the mean: 1e-5 relative.
    nll = -sum(math.log(t.prob) for t in score.tokens) / len(score.tokens)
    assert score.perplexity == pytest.approx(math.exp(nll), rel=1e-5)
    assert generated[0].surprisal_bits == pytest.approx(-math.log2(steps[0].prob), abs=1e-4)


def test_scoring_rejects_a_text_of_one_token_and_one_past_the_context(tiny_model, tokenizer):
    with pytest.raises(ParameterError, match="text"):
        score_text(tiny_model, tokenizer, [1])
    with pytest.raises(ParameterError, match="at most 128 tokens"):
        score_text(tiny_model, tokenizer, [1] + [5] * 128)


def test_a_model_compared_with_itself_never_diverges_and_with_another_does(tiny_model, tokenizer):
    ids = tokenizer.encode("Alice was beginning to get very tired", bos=True)
    same = compare_on_tokens(tiny_model, tiny_model, ids)
    assert max(same.kl_ab) < 1e-6 and all(same.argmax_agree) and same.prob_a == same.prob_b
    from llama_core.model import Transformer

    torch.manual_seed(7)
    other = Transformer(tiny_model.args).eval().requires_grad_(False)
    diff = compare_on_tokens(tiny_model, other, ids)
    assert len(diff.kl_ab) == len(ids) - 1 and max(diff.kl_ab) > 0.01
