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
