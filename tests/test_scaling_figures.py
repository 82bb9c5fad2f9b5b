import math

import pytest

from llama_core.published import (
    BENCHMARKS, chinchilla_law, chinchilla_loss, chinchilla_tokens_per_param, compute_optimal, published_models,
)
from llama_core.scaling import fit_isoflops


@pytest.fixture(scope="module")
def figures():
    pytest.importorskip("plotly")  # not a runtime dependency of the engine itself
    from llama_core import scaling_figures
    return scaling_figures


@pytest.fixture(scope="module")
def models():
    return {m.name: m for m in published_models()}


def test_published_numbers_are_the_papers(models):
    assert all(models[f"LLaMA-{size}"].scores["mmlu_5shot"] is not None for size in ("7B", "13B", "33B", "65B"))
    # LLaMA paper Tables 2, 3, 9 and Llama 2 Table 3, as copied into data/published_results.json.
    assert models["LLaMA-13B"].scores["hellaswag_0shot"] == 79.2
    assert models["LLaMA-65B"].scores["mmlu_5shot"] == 63.4
    assert models["GPT-3 175B"].scores["mmlu_5shot"] == 43.9
    assert models["Llama 2 70B"].scores["mmlu_5shot"] == 68.9
    assert (models["LLaMA-33B"].params_b, models["LLaMA-33B"].training_tokens) == (32.5, 1.4e12)
    assert models["Chinchilla 70B"].tokens_per_param == pytest.approx(20.0)
    assert models["GPT-3 175B"].scores["triviaqa_0shot"] is None  # no GPT-3 row in LLaMA Table 5
    # The common-sense mean is over BoolQ, PIQA, HellaSwag, WinoGrande: 78.1, 80.1, 79.2, 73.0 for LLaMA-13B.
    assert models["LLaMA-13B"].scores["common_sense_0shot_mean"] == pytest.approx((78.1 + 80.1 + 79.2 + 73.0) / 4)


def test_every_published_number_names_its_source(models):
    for m in models.values():
        assert set(m.scores) == set(BENCHMARKS)
        assert m.source["params_b"] and m.source["training_tokens"]
        for benchmark, score in m.scores.items():
            assert (score is None) == (benchmark not in m.source), (m.name, benchmark)
    assert "Table 9" in models["LLaMA-7B"].source["mmlu_5shot"]


def test_compute_optimal_spends_the_budget_and_minimises_the_loss():
    law = chinchilla_law()
    assert (law.E, law.A, law.B, law.alpha, law.beta) == (1.69, 406.4, 410.7, 0.34, 0.28)
    for c in (1e18, 5.76e23, 1e25):
        n, d = compute_optimal(c)
        assert 6 * n * d == pytest.approx(c)
        best = chinchilla_loss(n, d)
        for factor in (0.5, 0.9, 0.99, 1.01, 1.1, 2.0):  # move along the constraint C = 6·N·D
            assert chinchilla_loss(n * factor, c / (6 * n * factor)) >= best
    # The reference's own closed-form check at the Gopher budget: 32.2B params, ~93 tokens/param.
    n, d = compute_optimal(5.76e23)
    assert n == pytest.approx(3.22e10, rel=1e-2) and d / n == pytest.approx(92.6, rel=1e-2)
    assert chinchilla_tokens_per_param() == 20


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_params_vs_benchmark_plots_llama_against_gpt3(figures, models):
    fig = figures.params_vs_benchmark_figure(list(models.values()), "mmlu_5shot")
    assert "LLaMA-13B" in trace(fig, "LLaMA").text and list(trace(fig, "GPT-3").text) == ["GPT-3 175B"]
    assert list(trace(fig, "GPT-3").y) == [43.9]
    assert "TinyLlama" not in {t.name for t in fig.data}  # no MMLU score: skipped
    assert "LLaMA-13B vs GPT-3 175B" in fig.layout.title.text and fig.layout.xaxis.type == "log"
    trivia = figures.params_vs_benchmark_figure(list(models.values()), "triviaqa_0shot")
    assert "GPT-3" not in {t.name for t in trivia.data}


def test_tokens_per_param_has_the_chinchilla_line(figures, models):
    fig = figures.tokens_per_param_figure(list(models.values()))
    assert [s.y0 for s in fig.layout.shapes] == [20]
    assert trace(fig, "TinyLlama").y[0] == pytest.approx(3e12 / 1.1e9)
    assert fig.layout.yaxis.type == "log"


def synthetic_results() -> dict:
    """Three budgets on exact parabolas in log10 N; the last has only two sizes so far, one without a curve."""
    runs = []
    for budget, sizes in {1e12: (2e5, 4e5, 8e5, 1.6e6), 4e12: (4e5, 8e5, 1.6e6), 1.6e13: (8e5, 1.6e6)}.items():
        n_opt = 0.5 * budget**0.5
        for n in sizes:
            loss = 4 + 0.5 * math.log10(n / n_opt) ** 2 - 0.1 * math.log10(budget)
            curve = [{"tokens": budget * f / (6 * n), "flops": budget * f, "val_loss": loss + 1 - f} for f in (0.5, 1)]
            runs.append({"budget_flops": budget, "size": f"n{n:.0e}", "n_params": n, "tokens": budget / (6 * n),
                         "flops": budget, "val_loss": loss, **({"curve": curve} if n != 1.6e6 else {})})
    return {"runs": runs}


def test_isoflop_figures_from_a_partial_results_file(figures):
    results = synthetic_results()
    curves = figures.isoflop_curves_figure(results)
    assert len(curves.data) == len(results["runs"]) + 1  # a line per run, then the best-run stars
    assert sum(t.showlegend is not False for t in curves.data[:-1]) == 4  # one legend entry per size
    assert len(trace(curves, "best run per budget").x) == 3

    complete = [r for r in results["runs"] if r["budget_flops"] != 1.6e13]
    fits = fit_isoflops(complete)
    profiles = figures.isoflop_profiles_figure(results, fits)
    # budgets 1e12 and 4e12: points, parabola, minimum; 1.6e13 (two sizes): points only
    assert len(profiles.data) == 3 + 3 + 1
    star = profiles.data[2]
    assert star.x[0] == pytest.approx(fits[0].n_opt) and star.y[0] == pytest.approx(fits[0].loss_opt)

    frontier = figures.frontier_figure(fits)
    names = [t.name for t in frontier.data]
    assert "Chinchilla law N_opt" in names and any(n.startswith("fit (filled points): N_opt ∝ C^0.50") for n in names)
    law_n = trace(frontier, "Chinchilla law N_opt")
    assert law_n.y[0] == pytest.approx(compute_optimal(law_n.x[0])[0])
    assert len(figures.frontier_figure([]).data) == 0


def test_our_models_figure_adds_a_speed_panel_only_when_measured(figures):
    points = [{"name": "a", "params": 1e6, "val_loss": 2.0}, {"name": "b", "params": 1e7, "val_loss": 1.5}]
    assert len(figures.our_models_figure(points).data) == 1
    points[1]["tokens_per_s"] = 120.0
    fig = figures.our_models_figure(points)
    assert len(fig.data) == 2 and list(fig.data[1].y) == [120.0]


def test_our_model_points_add_this_sessions_speeds_and_user_checkpoints():
    from playground.scaling_panel import our_model_points

    speeds = {"playground-16m": {"params": 16_128_384, "tokens_per_s": 40.0},
              "my-checkpoint": {"params": 5e7, "tokens_per_s": 9.0}}
    points = {p["name"]: p for p in our_model_points(speeds)}
    assert points["playground-16m"]["tokens_per_s"] == 40.0 and points["playground-16m"]["val_loss"] < 4
    assert points["my-checkpoint"]["val_loss"] is None
    assert "tokens_per_s" not in points["playground-1m"]


def test_our_models_figure_leaves_a_checkpoint_without_loss_out_of_the_loss_panel(figures):
    points = [{"name": "a", "params": 1e6, "val_loss": 2.0, "tokens_per_s": 50.0},
              {"name": "user", "params": 1e8, "val_loss": None, "tokens_per_s": 5.0}]
    fig = figures.our_models_figure(points)
    assert list(fig.data[0].text) == ["a"] and list(fig.data[1].text) == ["a", "user"]


def test_our_models_figure_draws_each_group_as_its_own_series(figures):
    points = [{"name": "a", "params": 1e6, "val_loss": 4.0, "group": "same tokens"},
              {"name": "b", "params": 1e7, "val_loss": 3.5, "group": "same tokens"},
              {"name": "small", "params": 2e6, "val_loss": 3.7, "group": "same compute"},
              {"name": "large", "params": 2e7, "val_loss": 4.4, "group": "same compute"}]
    fig = figures.our_models_figure(points)
    assert [(t.name, list(t.text)) for t in fig.data] == [("same tokens", ["a", "b"]), ("same compute", ["small", "large"])]
    assert all(t.showlegend for t in fig.data)  # two series: the legend says which is which
