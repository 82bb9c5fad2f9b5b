import pytest

from llama_core.chinchilla import plan
from llama_core.errors import ParameterError
from llama_core.published import chinchilla_loss, compute_optimal


def test_compute_alone_gives_the_optimal_split():
    p = plan(flops=5.76e23)  # Chinchilla's own budget
    n_opt, d_opt = compute_optimal(5.76e23)
    assert (p.n_params, p.tokens) == pytest.approx((n_opt, d_opt))
    assert p.loss == pytest.approx(p.loss_opt) and p.loss_above_optimal == pytest.approx(0)
    assert 6 * p.n_params * p.tokens == pytest.approx(5.76e23)


@pytest.mark.parametrize("n", [1e6, 7e9, 7e10])
def test_parameters_alone_find_the_compute_for_which_they_are_optimal(n):
    p = plan(n_params=n)
    assert p.n_opt == pytest.approx(n, rel=1e-6)
    assert p.tokens == pytest.approx(p.d_opt, rel=1e-6)


def test_tokens_alone_likewise():
    p = plan(tokens=1.4e12)
    assert p.d_opt == pytest.approx(1.4e12, rel=1e-6)


def test_llama_7b_on_1t_tokens_is_past_the_compute_optimal_ratio():
    p = plan(n_params=6.7e9, tokens=1e12)
    assert p.tokens_per_param == pytest.approx(149, rel=0.01)
    assert p.flops == pytest.approx(6 * 6.7e9 * 1e12)
    assert p.loss == pytest.approx(chinchilla_loss(6.7e9, 1e12))
    assert p.loss_above_optimal > 0 and p.n_opt > 6.7e9  # the same compute would buy a bigger model


@pytest.mark.parametrize("kwargs", [{}, {"n_params": -1}, {"tokens": float("nan")}, {"flops": 1e20, "n_params": 1e9},
                                    {"n_params": True}])
def test_bad_inputs_name_the_parameter(kwargs):
    with pytest.raises(ParameterError):
        plan(**kwargs)


# --- inference-aware optimum (Sardana & Frankle 2023) ---------------------------------------------

import math  # noqa: E402

import numpy as np  # noqa: E402

from llama_core.chinchilla import (  # noqa: E402
    implied_inference_tokens, inference_aware_optimum, inference_demand_sweep, smallest_params_for, tokens_for_loss,
)
from llama_core.published import chinchilla_law  # noqa: E402

LLAMA_7B_LOSS = chinchilla_loss(6.7e9, 1e12)


def _brute_force(target_loss: float, inference_tokens: float, points: int = 400_001) -> tuple[float, float]:
    """(N, total FLOPs) of the cheapest of a dense log grid of N, written independently of the module."""
    law = chinchilla_law()
    n_min = (law.A / (target_loss - law.E)) ** (1 / law.alpha)
    # A wider range than the module's own bracket, so that a bracket missing the optimum would show.
    n = np.geomspace(n_min * 1.000001, n_min * 1e24, points)
    room = target_loss - law.E - law.A / n**law.alpha
    d = (law.B / room) ** (1 / law.beta)
    total = 6 * n * d + 2 * n * inference_tokens
    best = int(np.argmin(total))
    return float(n[best]), float(total[best])


@pytest.mark.parametrize("loss", [LLAMA_7B_LOSS, 2.5])
@pytest.mark.parametrize("inference_tokens", [0.0, 1e11, 1e12, 1e13])
def test_inference_aware_optimum_equals_brute_force_over_n(loss, inference_tokens):
    plan_ = inference_aware_optimum(loss, inference_tokens)
    n_grid, total_grid = _brute_force(loss, inference_tokens)
    step = 1e24 ** (1 / 400_000) - 1  # relative spacing of the grid (1.4e-4)
    assert plan_.n_params == pytest.approx(n_grid, rel=2 * step)
    # The search is never worse than the best grid point, and the grid's best is within a step of it;
    # near a minimum the total is flat to second order, so one step costs far less than 1e-6 of it.
    assert plan_.total_flops <= total_grid * (1 + 1e-12)
    assert plan_.total_flops == pytest.approx(total_grid, rel=1e-6)
    assert chinchilla_loss(plan_.n_params, plan_.tokens) == pytest.approx(loss, rel=1e-12)  # on the target loss


def test_zero_inference_is_the_compute_optimal_answer():
    p = inference_aware_optimum(LLAMA_7B_LOSS, 0)
    n_opt, d_opt = compute_optimal(p.training_flops)  # the closed form tested above
    # rel 1e-6: the search locates a minimum to ~sqrt(float64 eps) in log N, the closed form is exact.
    assert (p.n_params, p.tokens) == pytest.approx((n_opt, d_opt), rel=1e-6)
    assert plan(flops=p.training_flops).loss_opt == pytest.approx(LLAMA_7B_LOSS, rel=1e-9)
    assert p.inference_flops == 0 and p.total_flops == p.training_flops


def test_more_inference_means_a_smaller_longer_trained_model():
    sweep = inference_demand_sweep(2.2, [0, 1e10, 1e11, 1e12, 1e13, 1e14])
    ns, ratios = [p.n_params for p in sweep], [p.tokens_per_param for p in sweep]
    assert ns == sorted(ns, reverse=True) and ratios == sorted(ratios)
    assert all(p.n_params > smallest_params_for(2.2, chinchilla_law()) for p in sweep)
    # Sanity of the trade: at heavy use, the optimum beats the training-only optimum run just as much.
    heavy, base = sweep[-1], sweep[0]
    assert heavy.total_flops < base.training_flops + 2 * base.n_params * heavy.inference_tokens


def test_llama_7b_is_the_optimum_for_its_implied_inference_demand():
    demand = implied_inference_tokens(6.7e9, 1e12)
    assert demand > 0  # 149 tokens/param is past the law's compute optimum (~71 at this loss)
    p = inference_aware_optimum(LLAMA_7B_LOSS, demand)
    assert (p.n_params, p.tokens) == pytest.approx((6.7e9, 1e12), rel=1e-5)
    # A compute-optimal pair needs no inference to justify it; LLaMA-65B (21 tokens/param) is short of it.
    n, d = compute_optimal(1e23)
    assert implied_inference_tokens(n, d) == pytest.approx(0, abs=1e-6 * d)
    assert implied_inference_tokens(65.2e9, 1.4e12) < 0


def test_tokens_for_loss_inverts_the_law():
    law = chinchilla_law()
    assert chinchilla_loss(7e9, tokens_for_loss(7e9, 2.1, law)) == pytest.approx(2.1, rel=1e-12)
    assert tokens_for_loss(smallest_params_for(2.1, law) * 0.99, 2.1, law) == math.inf


@pytest.mark.parametrize("kwargs", [{"target_loss": 1.5}, {"target_loss": -1}, {"target_loss": float("inf")},
                                    {"target_loss": 2.0, "inference_tokens": -1},
                                    {"target_loss": 2.0, "inference_tokens": float("nan")}])
def test_inference_aware_bad_inputs_name_the_parameter(kwargs):
    name = "inference_tokens" if "inference_tokens" in kwargs else "target_loss"
    with pytest.raises(ParameterError, match=name):
        inference_aware_optimum(**kwargs)
