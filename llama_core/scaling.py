"""The toy Chinchilla experiment: an IsoFLOP grid of small LLaMAs, and the compute-optimal fit.

For each compute budget C, several model sizes N are each trained for D = C / (6N) tokens
and evaluated on the same validation split. A parabola in log N through each budget's
losses gives the compute-optimal N (Hoffmann et al. 2022, approach 2); D_opt = C / (6 N_opt).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelArgs, parameter_count
from .train import TrainConfig, read_log, train

VOCAB_SIZE = 4096
SEQ_LEN = 256
BATCH_SIZE = 8  # 2,048 tokens a step: the smallest runs still take ~100 steps


def grid_model(dim: int, n_layers: int, n_heads: int) -> ModelArgs:
    return ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads, vocab_size=VOCAB_SIZE, multiple_of=32,
                     max_seq_len=SEQ_LEN)


# Shapes with roughly constant aspect ratio, 0.29M-36M parameters (embeddings included).
SIZES = {
    "d32": grid_model(32, 2, 2), "d48": grid_model(48, 2, 4), "d64": grid_model(64, 2, 4), "d96": grid_model(96, 3, 4),
    "d128": grid_model(128, 4, 4), "d192": grid_model(192, 5, 6), "d256": grid_model(256, 6, 8),
    "d384": grid_model(384, 8, 8), "d512": grid_model(512, 10, 8),
}
# Each budget gets five sizes around its optimum. (The first grid had four, from d48 up, for
# 2e12: loss rose with size from the smallest one, so d32 was added to bracket the minimum.)
GRID = {
    2e12: ["d32", "d48", "d64", "d96", "d128"],
    6e12: ["d48", "d64", "d96", "d128", "d192"],
    2e13: ["d64", "d96", "d128", "d192", "d256"],
    6e13: ["d96", "d128", "d192", "d256", "d384"],
    2e14: ["d128", "d192", "d256", "d384", "d512"],
}


def peak_lr(args: ModelArgs) -> float:
    # Smaller models tolerate (and need) larger steps; as in most scaling studies, lr shrinks with width.
    return 2e-3 * min(1.0, (128 / args.dim) ** 0.5)


def run_config(budget: float, size: str, data_dir: str, runs_dir: str) -> TrainConfig:
    args = SIZES[size]
    tokens = int(budget / (6 * parameter_count(args)))
    steps = max(1, tokens // (BATCH_SIZE * SEQ_LEN))
    return TrainConfig(
        model=args, data_dir=data_dir, out_dir=str(Path(runs_dir) / f"C{budget:.0e}-{size}"), tokens=tokens,
        batch_size=BATCH_SIZE, seq_len=SEQ_LEN, lr=peak_lr(args), warmup_steps=max(5, steps // 10),
        eval_every=max(10, steps // 10), eval_batches=32, checkpoint_every=25,
    )


def run_result(budget: float, size: str, config: TrainConfig) -> dict | None:
    """The measured result of one grid run, or None while it is unfinished."""
    log = read_log(config.out_dir)
    if not log or log[-1]["step"] < config.total_steps:
        return None
    n_params = parameter_count(config.model)
    return {
        "budget_flops": budget, "size": size, "config": config.model.to_dict(), "n_params": n_params,
        "tokens": log[-1]["tokens"], "flops": log[-1]["flops"], "steps": log[-1]["step"],
        "val_loss": log[-1]["val_loss"], "train_loss": log[-1]["loss"], "wall_s": round(log[-1]["elapsed_s"], 1),
        "device": log[-1].get("device", "cpu"),
        "lr": config.lr,
        "curve": [{"tokens": e["tokens"], "flops": e["flops"], "val_loss": round(e["val_loss"], 4)}
                  for e in log if "val_loss" in e],
    }


def run_grid(data_dir: str, runs_dir: str, results_path: str, progress: bool = True, train_runs: bool = True,
             device: str = "cpu", budgets: list[float] | None = None) -> list[dict]:
    """Train every run of the grid (resuming unfinished ones; or, with `train_runs=False`, only
    collect the finished ones) and write the results JSON after each run. `budgets` picks a
    subset, so that budgets can run in parallel processes with a results file each."""
    results = []
    for budget, sizes in GRID.items():
        if budgets is not None and not any(math.isclose(budget, b) for b in budgets):
            continue
        for size in sizes:
            config = run_config(budget, size, data_dir, runs_dir)
            if train_runs:
                train(config, progress=progress, device=device)
            if (result := run_result(budget, size, config)) is not None:
                results.append(result)
            Path(results_path).write_text(json.dumps({"runs": results}, indent=1) + "\n")
    return results


def merge_results(paths: list[str], results_path: str) -> list[dict]:
    """Combine results files (e.g. one per budget from parallel processes) into one, in grid
    order; a run in a later file replaces the same (budget, size) from an earlier one."""
    by_key = {}
    for path in paths:
        for run in json.loads(Path(path).read_text())["runs"]:
            by_key[(run["budget_flops"], run["size"])] = run
    order = {(b, s): i for i, (b, s) in enumerate((b, s) for b, sizes in GRID.items() for s in sizes)}
    runs = sorted(by_key.values(), key=lambda r: order.get((r["budget_flops"], r["size"]), len(order)))
    Path(results_path).write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    return runs


@dataclass(frozen=True)
class IsoFlopFit:
    budget: float
    n_opt: float
    d_opt: float
    loss_opt: float
    coefficients: tuple[float, float, float]  # loss = a·x² + b·x + c with x = log10 N
    at_edge: bool = False  # the optimum is the smallest or largest size tried: only a bound

    @property
    def tokens_per_param(self) -> float:
        return self.d_opt / self.n_opt


def fit_isoflops(runs: list[dict]) -> list[IsoFlopFit]:
    """Per budget, the minimum of a parabola through val loss vs log10 N; budgets with fewer
    than three sizes (an unfinished grid) have no parabola and are left out."""
    fits = []
    for budget in sorted({r["budget_flops"] for r in runs}):
        points = sorted((r["n_params"], r["val_loss"]) for r in runs if r["budget_flops"] == budget)
        if len(points) < 3:
            continue
        x = np.log10([n for n, _ in points])
        y = np.array([loss for _, loss in points])
        a, b, c = np.polyfit(x, y, 2)
        if a <= 0:  # no interior minimum: report the best measured size rather than extrapolate
            x_opt = x[int(np.argmin(y))]
        else:
            x_opt = float(np.clip(-b / (2 * a), x.min(), x.max()))
        n_opt = 10**x_opt
        at_edge = bool(np.isclose(x_opt, x.min()) or np.isclose(x_opt, x.max()))
        fits.append(IsoFlopFit(budget, n_opt, budget / (6 * n_opt), float(np.polyval([a, b, c], x_opt)),
                               (float(a), float(b), float(c)), at_edge))
    return fits


def fit_power_law(fits: list[IsoFlopFit]) -> dict:
    """N_opt ∝ C^a and D_opt ∝ C^b by least squares in log-log (Chinchilla found a ≈ b ≈ 0.5)."""
    log_c = np.log10([f.budget for f in fits])
    a, log_k_n = np.polyfit(log_c, np.log10([f.n_opt for f in fits]), 1)
    b, log_k_d = np.polyfit(log_c, np.log10([f.d_opt for f in fits]), 1)
    return {"n_exponent": float(a), "d_exponent": float(b), "n_coefficient": float(10**log_k_n),
            "d_coefficient": float(10**log_k_d)}


def summarize(results_path: str) -> dict:
    """The fit of a results file: per-budget optima, exponents and the tokens-per-parameter ratio."""
    runs = json.loads(Path(results_path).read_text())["runs"]
    fits = fit_isoflops(runs)
    interior = [f for f in fits if not f.at_edge]  # an edge optimum bounds N_opt but does not place it
    return {
        "optima": [{"budget_flops": f.budget, "n_opt": f.n_opt, "d_opt": f.d_opt, "loss_opt": f.loss_opt,
                    "tokens_per_param": f.tokens_per_param, "at_edge": f.at_edge} for f in fits],
        "power_law": fit_power_law(fits) if len(fits) >= 2 else None,
        "power_law_interior": fit_power_law(interior) if len(interior) >= 2 else None,
        "mean_tokens_per_param": geometric_mean([f.tokens_per_param for f in fits]),
        "mean_tokens_per_param_interior": geometric_mean([f.tokens_per_param for f in interior]),
    }


def geometric_mean(values: list[float]) -> float | None:
    return float(math.exp(np.mean(np.log(values)))) if values else None
