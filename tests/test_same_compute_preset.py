"""The "Same compute" preset's table and sentence, from cards made up here (no model runs)."""

from __future__ import annotations

import pytest

from playground.same_compute import comparison_table, flops_match, verdict


def _card(name: str, n: int, d: int, loss: float) -> dict:
    return {"name": name, "parameters": n, "tokens_seen": d, "training_flops": 6 * n * d,
            "val_loss_as_shipped": loss, "same_compute": {"budget_flops": 6e13}}


SMALL = _card("small", 1_852_544, 5_398_528, 3.68)
LARGE = _card("large", 17_308_032, 579_584, 4.42)


def test_table_puts_cost_and_result_side_by_side():
    table = comparison_table((SMALL, LARGE), (812.4, 190.0))
    assert "| parameters N | 1.85M | 17.31M |" in table
    assert "| training tokens D | 5.40M | 0.58M |" in table
    assert "| validation loss (bf16, as shipped) | 3.680 | 4.420 |" in table
    assert "| decode tokens/s (this run) | 812 | 190 |" in table
    assert "6.001e+13" in table and "6.019e+13" in table


def test_sentence_carries_this_runs_numbers():
    text = verdict((SMALL, LARGE), (812.4, 190.0))
    assert text.startswith("At the same training compute (6.0e+13 FLOPs)")
    assert "**3.680** vs **4.420**" in text and "4.3× faster here (812 vs 190 tokens/s)" in text
    assert "wins on both counts" in text


@pytest.mark.parametrize("rates, loss", [((100.0, 400.0), 3.68), ((800.0, 190.0), 4.9), ((None, 190.0), 3.68)])
def test_sentence_does_not_claim_what_this_run_did_not_show(rates, loss):
    text = verdict(({**SMALL, "val_loss_as_shipped": loss}, LARGE), rates)
    assert "wins on both counts" not in text and "does not show the usual result" in text


def test_unequal_compute_is_said_so():
    assert flops_match((SMALL, LARGE))  # 0.3% apart, from the grid's whole-step rounding
    unequal = {**LARGE, "training_flops": 1.1 * SMALL["training_flops"]}
    assert not flops_match((SMALL, unequal))
    assert verdict((SMALL, unequal), (800.0, 190.0)).startswith("At unequal training compute")
