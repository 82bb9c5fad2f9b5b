"""llama.cpp as a benchmark peer: greedy decoding of a GGUF file exported by `python -m llama_core export-gguf`.

    pip install llama-cpp-python    # compiles llama.cpp (minutes); not a project dependency
    python examples/llamacpp_peer.py --gguf model.gguf --prompt-ids 1,391,308,426,618,295,266 --new-tokens 64 --threads 2
    python examples/llamacpp_peer.py --compare models/playground-16m --new-tokens 64

The first form prints one JSON object (tokens, prefill time, decode rate, peak RSS), so a benchmark
can run it in its own process, where the peak RSS belongs to llama.cpp alone. The second exports
the model in f32, f16 and q8_0 and prints how many of llama.cpp's greedy tokens equal ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from benchmark import decode_rate, llamacpp_engine, peak_rss_mb  # noqa: E402 (the same measurement as the benchmark's)

DEFAULT_PROMPT = "The history of the"


def run_llamacpp(gguf_path: str | Path, prompt_ids: list[int], n_new: int, threads: int) -> dict:
    """Greedy-decode `n_new` tokens after `prompt_ids` (BOS included) with llama.cpp, timing each token."""
    stream = llamacpp_engine(Path(gguf_path), threads, n_ctx=len(prompt_ids) + n_new)
    stream(prompt_ids, min(n_new, 8))  # warm-up, as examples/benchmark.py does for every engine
    start, stamps, tokens = stream(prompt_ids, n_new)
    return {
        "tokens": tokens,
        "prefill_ms": (stamps[0] - start) * 1000,  # time to first token
        "decode_tokens_per_s": decode_rate(stamps) if len(stamps) > 1 else None,
        "peak_rss_mb": peak_rss_mb(),
    }


def compare(model_dir: Path, prompt: str, n_new: int, threads: int, dtypes: list[str]) -> list[dict]:
    """Export `model_dir` in each dtype and count how many of llama.cpp's greedy tokens equal ours (fp32)."""
    import torch

    from llama_core.generation import generate_stream
    from llama_core.formats.gguf_export import export_gguf
    from llama_core.loading import load_checkpoint
    from llama_core.sampling import SamplingParams

    torch.set_num_threads(threads)
    loaded = load_checkpoint(model_dir, dtype=torch.float32)
    prompt_ids = loaded.tokenizer.encode(prompt, bos=True)
    params = SamplingParams(temperature=0.0, max_new_tokens=n_new)
    ours = [r.token_id for r in generate_stream(loaded.model, loaded.tokenizer, prompt_ids, params)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gguf-peer-") as folder:
        for dtype in dtypes:
            path = export_gguf(loaded, Path(folder) / f"model-{dtype}.gguf", dtype)
            theirs = run_llamacpp(path, prompt_ids, n_new, threads)
            # Ours stops at EOS; llama.cpp's generate() does not, so compare our length.
            same = next((i for i, (a, b) in enumerate(zip(ours, theirs["tokens"])) if a != b), len(ours))
            rows.append({"model": model_dir.name, "dtype": dtype, "matching_prefix": same, "of": len(ours),
                         "equal": sum(a == b for a, b in zip(ours, theirs["tokens"])),
                         "llamacpp_tokenizes_alike": _llamacpp_tokens(path, prompt) == prompt_ids,
                         "llamacpp_decode_tokens_per_s": theirs["decode_tokens_per_s"]})
    return rows


def _llamacpp_tokens(gguf_path: Path, text: str) -> list[int]:
    """llama.cpp's own tokenization of `text`: a check that the exported vocabulary works as ours does."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    return llm.tokenize(text.encode("utf-8"), add_bos=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, help="GGUF file to run (prints one JSON object)")
    parser.add_argument("--prompt-ids", help="comma-separated prompt token ids, BOS included")
    parser.add_argument("--compare", type=Path, metavar="MODEL_DIR", help="export this model and compare tokens")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text for --compare")
    parser.add_argument("--dtypes", nargs="+", default=["f32", "f16", "q8_0"], choices=["f32", "f16", "q8_0"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.compare:
        for row in compare(args.compare, args.prompt, args.new_tokens, args.threads, args.dtypes):
            print(json.dumps(row))
    elif args.gguf and args.prompt_ids:
        ids = [int(x) for x in args.prompt_ids.split(",")]
        print(json.dumps(run_llamacpp(args.gguf, ids, args.new_tokens, args.threads)))
    else:
        parser.error("pass --gguf with --prompt-ids, or --compare MODEL_DIR")


if __name__ == "__main__":
    main()
