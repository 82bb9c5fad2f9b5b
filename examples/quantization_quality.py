"""Validation perplexity of the bundled models in fp32, bf16, weight-only int8 and int4, and from llama.cpp's own
Q4_0 and Q4_K_M files.

    python examples/quantization_quality.py [--windows 64] [--modes fp32 bf16 int4-g32 ...]

Reads the corpus's held-out split (data/corpus/val.bin; `bash scripts/build_corpus.sh` rebuilds
it) in consecutive windows of the model's context and prints one table row per model and mode: mean
loss, perplexity, and its change against bf16 (the dtype the models ship in) and fp32. The GGUF modes
export the model as an f16 GGUF and let llama.cpp's quantizer (`llama_cpp.llama_model_quantize`, from
llama-cpp-python, a test requirement) write the file a llama.cpp user would hold; we load it as it comes
(Q4_0 blocks onto the int4 kernel as stored, K-quants dequantized and re-quantized: kernels/quantized_model.py).
A group size that does not divide a model's widths is reported as not applicable.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from llama_core.errors import ParameterError
from llama_core.loading import load_checkpoint

MODES = {
    "fp32": {"dtype": "fp32"}, "bf16": {"dtype": "bf16", "fast_layout": False}, "int8": {"quantize": "int8"},
    "int4-g32": {"quantize": "int4-g32"}, "int4-g128": {"quantize": "int4-g128"},
    "gguf-q4_0": {"gguf": "LLAMA_FTYPE_MOSTLY_Q4_0"}, "gguf-q4_k_m": {"gguf": "LLAMA_FTYPE_MOSTLY_Q4_K_M"},
}


@torch.no_grad()
def mean_loss(model, tokens: np.ndarray, window: int, n_windows: int) -> float:
    losses = []
    for i in range(n_windows):
        chunk = torch.from_numpy(tokens[i * window : (i + 1) * window + 1].astype(np.int64))[None]
        logits = model(chunk[:, :-1]).logits
        losses.append(float(F.cross_entropy(logits[0], chunk[0, 1:])))
    return sum(losses) / len(losses)


def llamacpp_file(model_dir: str, file_type: str, folder: Path) -> Path:
    """The model as llama.cpp's quantizer writes it from an f16 GGUF of ours."""
    import llama_cpp

    from llama_core.formats.gguf_export import export_gguf

    source = folder / "model-f16.gguf"
    if not source.exists():
        export_gguf(model_dir, source, "f16")
    out = folder / f"model-{file_type.rsplit('_', 2)[-2]}-{file_type.rsplit('_', 1)[-1]}.gguf".lower()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = getattr(llama_cpp, file_type), 2
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not write {file_type} from {source}")
    return out


def load(path: str, options: dict, folder: Path):
    if "gguf" in options:
        return load_checkpoint(llamacpp_file(path, options["gguf"], folder)).model
    return load_checkpoint(path, **options).model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--val", default=str(ROOT / "data" / "corpus" / "val.bin"))
    parser.add_argument("--windows", type=int, default=64, help="windows of the context length each")
    parser.add_argument("--models", nargs="+", default=sorted(str(p.parent) for p in (ROOT / "models").glob("*/config.json")))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    if not Path(args.val).exists():
        sys.exit(f"{args.val} not found: build the corpus first (bash scripts/build_corpus.sh)")
    tokens = np.memmap(args.val, dtype=np.uint16, mode="r")
    print("| model | mode | tokens scored | loss | perplexity | ppl vs bf16 | ppl vs fp32 |")
    print("|---|---|---|---|---|---|---|")
    for path in args.models:
        results = {}
        with tempfile.TemporaryDirectory(prefix="quality-") as folder:
            for mode in args.modes:
                try:
                    model = load(path, MODES[mode], Path(folder))
                except ParameterError as error:  # a group size this model's widths do not allow
                    print(f"| {Path(path).name} | {mode} | – | n/a: {error} | | | |", flush=True)
                    continue
                window = model.args.max_seq_len
                n_windows = min(args.windows, (len(tokens) - 1) // window)
                results[mode] = mean_loss(model, tokens, window, n_windows)
                ppl = math.exp(results[mode])
                versus = [f"{ppl / math.exp(results[ref]) - 1:+.2%}" if ref in results else "–" for ref in ("bf16", "fp32")]
                print(f"| {Path(path).name} | {mode} | {n_windows * window:,} | {results[mode]:.4f} | {ppl:.3f} | "
                      f"{' | '.join(versus)} |", flush=True)


if __name__ == "__main__":
    main()
