import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_core.errors import ParameterError
from llama_core.sampling import (
    SamplingParams, apply_presence_frequency, apply_repetition_penalty, apply_temperature,
    min_p_filter, sample, sampler_stages, top_k_filter, top_p_filter,
)

NAN, INF = float("nan"), float("inf")

# (parameter, values that must be rejected, values that must be accepted) at and around each bound.
BOUNDARIES = [
    ("temperature", [-1e-9, -0.5, 2.0 + 1e-9, 1e6, 0.005, NAN, INF, -INF, "1", None, True], [0, 0.01, 1, 2.0]),
    ("top_k", [-2, 5.5, NAN, INF, "5", None, [1]], [-1, 0, 1, 40.0, 10**9]),
    ("top_p", [0, -0.1, 1 + 1e-9, NAN, INF, "0.9"], [1e-9, 0.5, 1]),
    ("min_p", [-1e-9, 1 + 1e-9, NAN, "0"], [0, 0.05, 1]),
    ("repetition_penalty", [0, -1, 10 + 1e-9, NAN, INF], [1e-9, 1, 10]),
    ("presence_penalty", [-2.000001, 2.000001, NAN], [-2, 0, 2]),
    ("frequency_penalty", [-2.000001, 2.000001, INF], [-2, 0, 2]),
    ("max_new_tokens", [0, -1, 1.5, NAN, "10", None], [1, 1.0, 4096]),
    ("seed", [-1, 2**63, 1.5, "7", NAN], [None, 0, 2**63 - 1]),
    ("stop", [[""], ["a"] * 5, ["x" * 65], [1], "", None], [(), ["###"], "\n", ["a", "b", "c", "d"]]),
]


@pytest.mark.parametrize("name, bad, good", BOUNDARIES, ids=[b[0] for b in BOUNDARIES])
def test_every_parameter_is_validated_at_its_boundaries(name, bad, good):
    for value in bad:
        with pytest.raises(ParameterError) as raised:
            SamplingParams(**{name: value})
        message = str(raised.value)
        assert message.startswith(f"{name} must be") and "got" in message, message
        assert raised.value.name == name
    for value in good:
        SamplingParams(**{name: value})


def test_error_message_names_range_and_value():
    with pytest.raises(ParameterError, match=r"^temperature must be a finite number in \[0, 2\] \(0 = greedy\), got -0.5$"):
        SamplingParams(temperature=-0.5)


def test_values_are_normalised():
    params = SamplingParams(top_k=40.0, max_new_tokens=8.0, stop=["\n"])
    assert type(params.top_k) is int and type(params.max_new_tokens) is int and params.stop == ("\n",)


LOGITS = torch.tensor([3.0, 1.0, 2.0, 0.0, -1.0])


def test_top_k_keeps_exactly_the_k_largest():
    out = top_k_filter(LOGITS, 2)
    assert torch.isfinite(out).tolist() == [True, False, True, False, False]
    assert torch.equal(top_k_filter(LOGITS, 0), LOGITS) and torch.equal(top_k_filter(LOGITS, 99), LOGITS)


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.softmax(LOGITS, -1)  # sorted: 0.636, 0.234, 0.086, 0.032, 0.012
    assert torch.isfinite(top_p_filter(LOGITS, 0.5)).tolist() == [True, False, False, False, False]
    assert torch.isfinite(top_p_filter(LOGITS, 0.8)).tolist() == [True, False, True, False, False]
    exact = float(probs[0] + probs[2])
    assert torch.isfinite(top_p_filter(LOGITS, exact - 1e-6)).sum() == 2
    assert torch.isfinite(top_p_filter(LOGITS, exact + 1e-6)).sum() == 3


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    probs = torch.softmax(LOGITS, -1)
    ratio = float(probs[2] / probs[0])  # e^-1
    assert torch.isfinite(min_p_filter(LOGITS, ratio - 1e-4)).tolist() == [True, False, True, False, False]
    assert torch.isfinite(min_p_filter(LOGITS, ratio + 1e-4)).tolist() == [True, False, False, False, False]


def test_penalties():
    seen = torch.tensor([True, False, True, False, True])
    out = apply_repetition_penalty(LOGITS, seen, 2.0)
    assert out.tolist() == [1.5, 1.0, 1.0, 0.0, -2.0]
    counts = torch.tensor([0.0, 1.0, 3.0, 0.0, 0.0])
    assert apply_presence_frequency(LOGITS, counts, 0.5, 0.25).tolist() == [3.0, 0.25, 0.75, 0.0, -1.0]
    assert torch.equal(apply_temperature(LOGITS, 0.5), LOGITS * 2)


def test_greedy_stage_is_one_hot_at_the_argmax_after_penalties():
    params = SamplingParams(temperature=0, repetition_penalty=4.0)
    seen = torch.tensor([True, False, False, False, False])
    name, out = list(sampler_stages(LOGITS, params, seen, torch.zeros(5)))[-1]
    assert name == "greedy"
    assert torch.softmax(out, -1).tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]  # 3/4 < 2


def test_stages_are_named_in_pipeline_order():
    params = SamplingParams(temperature=0.7, top_k=3, top_p=0.9, min_p=0.05)
    names = [name for name, _ in sampler_stages(LOGITS, params, torch.zeros(5, dtype=torch.bool), torch.zeros(5))]
    assert names == ["raw", "penalties", "temperature", "top_k", "top_p", "min_p"]


def test_same_generator_seed_gives_same_draws():
    logits = torch.randn(50)
    draws = [[sample(logits, torch.Generator().manual_seed(seed)) for _ in range(1)] for seed in (7, 7)]
    assert draws[0] == draws[1]
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [sample(logits, g1) for _ in range(20)] == [sample(logits, g2) for _ in range(20)]


def test_sampling_respects_the_filters():
    g = torch.Generator().manual_seed(0)
    filtered = top_k_filter(torch.randn(100), 3)
    allowed = set(torch.nonzero(torch.isfinite(filtered)).flatten().tolist())
    assert {sample(filtered, g) for _ in range(200)} <= allowed


finite_logits = st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=64).map(torch.tensor)


@settings(max_examples=200, deadline=None)
@given(finite_logits, st.floats(0.01, 1.0))
def test_top_p_mass_reaches_p_and_is_minimal(logits, p):
    kept = torch.isfinite(top_p_filter(logits, p))
    probs = torch.softmax(logits, -1)
    assert float(probs[kept].sum()) >= p - 1e-5
    # Every kept token is at least as likely as every removed one, and dropping the least
    # likely kept token would fall short of p.
    if (~kept).any():
        assert probs[kept].min() >= probs[~kept].max()
    assert float(probs[kept].sum() - probs[kept].min()) < p + 1e-5


@settings(max_examples=200, deadline=None)
@given(finite_logits, st.integers(1, 70), st.floats(0.0, 1.0))
def test_filters_always_leave_a_token_and_no_nan(logits, k, min_p):
    out = min_p_filter(top_p_filter(top_k_filter(logits, k), 0.5), min_p)
    probs = torch.softmax(out, -1)
    assert torch.isfinite(out).any() and not torch.isnan(probs).any()
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-5)
