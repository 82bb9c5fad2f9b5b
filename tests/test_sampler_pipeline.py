import pytest

from llama_core.generation import generate_stream
from llama_core.sampling import SamplingParams

pytestmark = pytest.mark.numerics


def run(tiny_model, tokenizer, **settings):
    params = SamplingParams(max_new_tokens=6, seed=3, **settings)
    return list(generate_stream(tiny_model, tokenizer, "Alice was", params, top_n=8))


def test_the_last_stage_is_the_distribution_the_sampler_drew_from(tiny_model, tokenizer):
    for step in run(tiny_model, tokenizer, temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, repetition_penalty=1.3):
        names = [name for name, _ in step.stages]
        assert names == ["raw", "penalties", "temperature", "top_k", "top_p", "min_p"]
        assert step.stages[0][1] == pytest.approx([a.prob for a in step.top], abs=1e-6)
        assert step.stages[-1][1] == pytest.approx([a.prob_filtered for a in step.top], abs=1e-6)
        for alternative, *per_stage in zip(step.top, *(values for _, values in step.stages)):
            if alternative.removed_by is not None:  # zero from the stage that removed it on
                cut = names.index(alternative.removed_by)
                assert all(p == 0 for p in per_stage[cut:]) and per_stage[cut - 1] > 0


def test_top_k_stage_keeps_exactly_k_of_the_candidates(tiny_model, tokenizer):
    for step in run(tiny_model, tokenizer, temperature=1.0, top_k=2):
        kept = [p for p in dict(step.stages)["top_k"] if p > 0]
        assert len(kept) <= 2 and sum(kept) == pytest.approx(1.0, abs=1e-5) or len(step.top) < 2


def test_greedy_pipeline_ends_one_hot_on_the_chosen_token(tiny_model, tokenizer):
    for step in run(tiny_model, tokenizer, temperature=0.0):
        final = dict(step.stages)["greedy"]
        assert [a.token_id for a, p in zip(step.top, final) if p == 1.0] == [step.token_id]
