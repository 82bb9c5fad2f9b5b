"""Validation perplexity of the bundled models in fp32, bf16 and weight-only int8.

    python examples/quantization_quality.py [--windows 64]

Reads the corpus's held-out split (data/corpus/val.bin; `bash scripts/build_corpus.sh` rebuilds
it) in consecutive windows of the model's context and prints one table row per model: mean
loss and perplexity per mode, and the change of each against bf16 (the dtype the models ship
in) and fp32.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from llama_core.loading import load_checkpoint  # noqa: E402

MODES = {"fp32": {"dtype": "fp32"}, "bf16": {"dtype": "bf16", "fast_layout": False}, "int8": {"quantize": "int8"}}


@torch.no_grad()
def mean_loss(model, tokens: np.ndarray, window: int, n_windows: int) -> float:
    losses = []
    for i in range(n_windows):
        chunk = torch.from_numpy(tokens[i * window : (i + 1) * window + 1].astype(np.int64))[None]
        logits = model(chunk[:, :-1]).logits
        losses.append(float(F.cross_entropy(logits[0], chunk[0, 1:])))
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", default=str(ROOT / "data" / "corpus" / "val.bin"))
    parser.add_argument("--windows", type=int, default=64, help="windows of the context length each")
    parser.add_argument("--models", nargs="+", default=sorted(str(p.parent) for p in (ROOT / "models").glob("*/config.json")))
    args = parser.parse_args()
    if not Path(args.val).exists():
        sys.exit(f"{args.val} not found: build the corpus first (bash scripts/build_corpus.sh)")
    tokens = np.memmap(args.val, dtype=np.uint16, mode="r")
    print("| model | tokens scored | fp32 loss / ppl | bf16 loss / ppl | int8 loss / ppl | int8 ppl vs bf16 | int8 ppl vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for path in args.models:
        results = {}
        for mode, options in MODES.items():
            model = load_checkpoint(path, **options).model
            window = model.args.max_seq_len
            n_windows = min(args.windows, (len(tokens) - 1) // window)
            results[mode] = mean_loss(model, tokens, window, n_windows)
        ppl = {mode: math.exp(loss) for mode, loss in results.items()}
        cells = " | ".join(f"{results[m]:.4f} / {ppl[m]:.2f}" for m in MODES)
        print(f"| {Path(path).name} | {n_windows * window:,} | {cells} | {ppl['int8'] / ppl['bf16'] - 1:+.2%} "
              f"| {ppl['int8'] / ppl['fp32'] - 1:+.2%} |", flush=True)


if __name__ == "__main__":
    main()
