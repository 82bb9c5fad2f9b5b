"""Write the scaling-story figures as PNGs into docs/.

    python examples/scaling_figures.py [--results data/isoflop_results.json] [--out docs]

PNG export goes through kaleido 1.x, which drives a local Chrome/Chromium and needs no network;
BROWSER_PATH points it at one (default /usr/bin/chromium when that exists).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from llama_core.published import published_models  # noqa: E402
from llama_core.scaling import fit_isoflops  # noqa: E402
from llama_core.scaling_figures import (  # noqa: E402
    frontier_figure, isoflop_curves_figure, isoflop_profiles_figure, params_vs_benchmark_figure,
    tokens_per_param_figure,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(ROOT / "data" / "isoflop_results.json"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    args = parser.parse_args()
    if "BROWSER_PATH" not in os.environ and Path("/usr/bin/chromium").exists():
        os.environ["BROWSER_PATH"] = "/usr/bin/chromium"

    results = json.loads(Path(args.results).read_text())
    fits = fit_isoflops(results["runs"])  # budgets still short of three sizes are left out
    models = published_models()
    figures = {
        "isoflop_curves": isoflop_curves_figure(results),
        "isoflop_profiles": isoflop_profiles_figure(results, fits),
        "frontier": frontier_figure(fits),
        "params_vs_mmlu": params_vs_benchmark_figure(models, "mmlu_5shot"),
        "tokens_per_param": tokens_per_param_figure(models),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.write_image(out / f"{name}.png", scale=1.5)
        print(out / f"{name}.png")
    print(f"{len(results['runs'])} runs, {len(fits)} budget(s) fitted: "
          + ", ".join(f"C={f.budget:.0e} N_opt={f.n_opt:.3g} ({f.tokens_per_param:.0f} tokens/param)" for f in fits))


if __name__ == "__main__":
    main()
