import json
import math

import pytest

from llama_core.config import parameter_count
from llama_core.scaling import GRID, SIZES, fit_isoflops, fit_power_law, merge_results, run_config, summarize


def synthetic_runs(n_opt_of_budget) -> list[dict]:
    """Losses on exact parabolas in log10 N with a known minimum per budget."""
    runs = []
    for budget, n_opt in n_opt_of_budget.items():
        for n in (n_opt / 4, n_opt / 1.5, n_opt * 1.7, n_opt * 3):
            runs.append({"budget_flops": budget, "n_params": n, "val_loss": 3 + 0.8 * (math.log10(n / n_opt)) ** 2})
    return runs


def test_isoflop_fit_recovers_the_minimum_and_the_exponent():
    # N_opt = 0.1 * C^0.5: Chinchilla's exponent.
    budgets = {c: 0.1 * c**0.5 for c in (1e12, 1e13, 1e14)}
    fits = fit_isoflops(synthetic_runs(budgets))
    for fit in fits:
        assert fit.n_opt == pytest.approx(budgets[fit.budget], rel=1e-6)
        assert fit.d_opt == pytest.approx(fit.budget / (6 * fit.n_opt))
        assert fit.loss_opt == pytest.approx(3.0)
    law = fit_power_law(fits)
    assert law["n_exponent"] == pytest.approx(0.5) and law["d_exponent"] == pytest.approx(0.5)


def test_an_optimum_outside_the_measured_sizes_is_not_extrapolated():
    falling = [(1e5, 4.0), (2e5, 3.5), (4e5, 3.2), (8e5, 3.1)]  # convex, minimum beyond the largest size
    concave = [(1e5, 3.0), (2e5, 3.5), (4e5, 3.6), (8e5, 3.2)]  # a < 0: the parabola has no minimum
    for points, expected in ((falling, 8e5), (concave, 1e5)):
        runs = [{"budget_flops": 1e12, "n_params": n, "val_loss": loss} for n, loss in points]
        assert fit_isoflops(runs)[0].n_opt == pytest.approx(expected)


def test_grid_has_at_least_three_budgets_of_four_sizes_at_their_budget():
    assert len(GRID) >= 3 and all(len(sizes) >= 4 for sizes in GRID.values())
    for budget, sizes in GRID.items():
        for size in sizes:
            config = run_config(budget, size, "data", "runs")
            flops = 6 * parameter_count(SIZES[size]) * config.total_steps * config.tokens_per_step
            assert flops == pytest.approx(budget, rel=0.05)


def test_summary_of_a_results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": synthetic_runs({1e12: 1e5, 1e13: 3e5, 1e14: 1e6})}))
    summary = summarize(str(path))
    assert [o["budget_flops"] for o in summary["optima"]] == [1e12, 1e13, 1e14]
    assert summary["optima"][0]["tokens_per_param"] == pytest.approx(1e12 / 6 / 1e5**2)


def test_an_optimum_at_the_smallest_size_is_flagged_and_left_out_of_the_interior_law(tmp_path):
    # Loss rising with N from the smallest size: the optimum is a bound, not a measurement.
    runs = synthetic_runs({c: 0.1 * c**0.5 for c in (1e12, 1e13, 1e14)})
    for run in runs:
        if run["budget_flops"] == 1e12:
            run["val_loss"] = 3.0 + 0.1 * math.log10(run["n_params"])
    fits = fit_isoflops(runs)
    assert [f.at_edge for f in fits] == [True, False, False]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": runs}))
    summary = summarize(str(path))
    assert summary["power_law_interior"]["n_exponent"] == pytest.approx(0.5, abs=0.02)
    assert summary["power_law"]["n_exponent"] != pytest.approx(summary["power_law_interior"]["n_exponent"], abs=0.02)


def test_merge_keeps_grid_order_and_lets_later_files_win(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    first = {"budget_flops": 2e13, "size": "d64", "val_loss": 9.0}
    a.write_text(json.dumps({"runs": [first, {"budget_flops": 2e12, "size": "d32", "val_loss": 5.0}]}))
    b.write_text(json.dumps({"runs": [{**first, "val_loss": 4.0}]}))
    runs = merge_results([str(a), str(b)], str(tmp_path / "out.json"))
    assert [(r["size"], r["val_loss"]) for r in runs] == [("d32", 5.0), ("d64", 4.0)]
