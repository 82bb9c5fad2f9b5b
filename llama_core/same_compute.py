"""The bundled compute-matched trio: three sizes of the IsoFLOP grid trained on one FLOP budget.

At C = 6e13 FLOPs the grid's compute-optimal size is d128 (1.85M parameters, 5.4M tokens); d384
is 9.3x larger and sees 9.3x fewer tokens (LLaMA-13B against GPT-3 175B, in miniature); d96 is
smaller and over-trained (LLaMA's own regime: a little more loss for a cheaper model to run).
Each member is trained with the grid's exact recipe (`scaling.run_config`), so the grid's
recorded validation loss for the same (budget, size) is an independent check of the shipped one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .scaling import run_config
from .train import TrainConfig

BUDGET_FLOPS = 6e13
GRID_RESULTS = Path(__file__).resolve().parents[1] / "data" / "isoflop_results.json"


@dataclass(frozen=True)
class Member:
    name: str  # the bundled model's directory under models/
    size: str  # the grid's size key (scaling.SIZES)
    role: str  # one line for the model card and the UI


MEMBERS = (
    Member("same-compute-1.9m", "d128", "compute-optimal at this budget (the grid's best size)"),
    Member("same-compute-17m", "d384", "9x larger on 9x fewer tokens: GPT-3 175B against LLaMA-13B, in miniature"),
    Member("same-compute-1.1m", "d96", "smaller and over-trained, LLaMA's regime: a little more loss, cheaper to run"),
)
PAIR = (MEMBERS[0].name, MEMBERS[1].name)  # what the Side by side preset runs: compute-optimal, then 9x larger


def member(name: str) -> Member:
    """The member called `name` (its models/ directory name)."""
    for m in MEMBERS:
        if m.name == name:
            return m
    raise ValueError(f"unknown same-compute model {name!r}; expected one of {[m.name for m in MEMBERS]}")


def member_config(name: str, data_dir: str, runs_dir: str) -> TrainConfig:
    """The grid's own training configuration for this member (same shapes, lr, batch, schedule)."""
    return run_config(BUDGET_FLOPS, member(name).size, data_dir, runs_dir)


def grid_run(size: str, results_path: Path = GRID_RESULTS) -> dict | None:
    """The grid's recorded run of `size` at this budget (its curve left out), or None if absent."""
    if not results_path.exists():
        return None
    for run in json.loads(results_path.read_text())["runs"]:
        if math.isclose(run["budget_flops"], BUDGET_FLOPS) and run["size"] == size:
            return {k: v for k, v in run.items() if k not in ("curve", "config")}
    return None


def card_fields(name: str) -> dict:
    """What a member's model card adds: the budget, its share of it, and the grid run it repeats."""
    m = member(name)
    grid = grid_run(m.size)
    return {
        "budget_flops": BUDGET_FLOPS,
        "role": m.role,
        "grid_size": m.size,
        "grid_run": None if grid is None else {
            "val_loss": round(grid["val_loss"], 4), "tokens": grid["tokens"], "flops": grid["flops"],
            "device": grid["device"], "source": "data/isoflop_results.json",
        },
        "partners": [p.name for p in MEMBERS if p.name != name],
    }
